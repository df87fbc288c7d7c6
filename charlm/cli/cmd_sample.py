"""``charlm sample``: sampling, batches, best-of, beam search, interactive, novelty."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..config import MAX_TEMPERATURE
from ..errors import CharlmError, echo
from ..files import atomic_write_text
from ..text.corpus import read_text
from ..text.novelty import longest_copied
from ..use.sample import MAX_BATCH, MAX_LENGTH, beam_search, encode_prime, generate, keep_best
from .base import CHECKPOINT_HELP, Finite, dumps, main, network_only_option, open_model, option, predictor


@main.command()
@option("--checkpoint", "-c", default=None, type=click.Path(path_type=str), show_default="the bundled model",
        help=CHECKPOINT_HELP)
@option("--length", "-n", default=1000, type=click.IntRange(0, MAX_LENGTH), help="Characters to generate after the prime.")
@option("--temperature", "-t", default=1.0, type=Finite(0, MAX_TEMPERATURE, lo_open=True),
        help="Divide the logits by this; lower is more conservative.")
@option("--top-k", default=None, type=click.IntRange(min=1), show_default="all",
        help="Sample only among the K most likely characters.")
@option("--top-p", default=None, type=Finite(0, 1, lo_open=True), show_default="off",
        help="Nucleus sampling: only among the most likely characters whose probability adds up to P.")
@option("--prime", "-p", default="\n", show_default="a newline", help="Text fed through the model first, and printed.")
@option("--prime-file", type=click.Path(dir_okay=False, path_type=str), default=None,
        help="The prime is this file's text, exactly as it is (newlines and all), instead of --prime.")
@option("--seed", "-s", default=None, type=click.IntRange(min=0), show_default="random",
        help="Random seed (0 or more); the same seed gives the same text.")
@option("--greedy", is_flag=True, help="Always take the most likely character (deterministic).")
@option("--num-samples", "-N", default=1, type=click.IntRange(1, MAX_BATCH), help="Samples to generate, as one batch.")
@option("--best-of", default=1, type=click.IntRange(1, 100),
        help="Generate this many candidates per sample and keep the most likely (lowest bits per character).")
@option("--beam", default=None, type=click.IntRange(1, 100), metavar="WIDTH",
        help="Beam search of this width for the most likely continuation (deterministic; no sampling options).")
@option("--stop", default=None, help="End a sample at this string (left out), e.g. $'\\n\\n' for a blank line.")
@option("--json", "as_json", is_flag=True,
        help="One JSON object per sample: prime, text, chars, log_prob_nats, log_prob_bits, bits_per_char, stopped.")
@option("--output", "-o", type=click.Path(dir_okay=False, path_type=str), default=None,
        help="Write the samples to this file (whole, atomically) instead of stdout.")
@option("--interactive", "-i", is_flag=True,
        help="Read primes from stdin, one per line, and stream each continuation; an empty line or end of input quits.")
@option("--check-novel", type=click.Path(path_type=str), default=None, metavar="CORPUS",
        help="Report each sample's longest substring that also occurs in CORPUS (does the model compose or copy?).")
@network_only_option
@click.pass_context
def sample(ctx, checkpoint, length, temperature, top_k, top_p, prime, prime_file, seed, greedy, num_samples, best_of,
           beam, stop, as_json, output, interactive, check_novel, network_only):
    """Generate text from a trained model; a single sample streams to stdout as it is generated."""
    given = {p for p in ("temperature", "top_k", "top_p", "greedy", "num_samples", "best_of", "seed", "prime")
             if ctx.get_parameter_source(p) not in (click.core.ParameterSource.DEFAULT, None)}
    sampling = sorted(given - {"prime"})
    if beam and sampling:
        raise click.UsageError(f"--beam searches, it does not sample: leave out "
                               f"{', '.join('--' + p.replace('_', '-') for p in sampling)}")
    if interactive and (output or "prime" in given):
        raise click.UsageError("--interactive reads its primes from stdin and writes to stdout: leave out --prime and -o")
    if stop == "":
        raise click.UsageError("--stop needs at least one character")
    if prime_file is not None:
        if "prime" in given or interactive:
            raise click.UsageError("--prime-file is the prime: leave out --prime and --interactive")
        prime = read_prime(prime_file)
    ck = open_model(checkpoint)
    if not interactive:
        encode_prime(ck.vocab, prime)  # refused before anything is printed
    job = _SampleJob(ck, predictor(ck, network_only), length, temperature, top_k, top_p, seed, greedy, num_samples,
                     best_of, beam, stop, check_novel)
    if interactive:
        _interactive(job, as_json)
    elif output is None and not as_json and job.streams:
        _stream(job, prime)
    else:
        _write_samples(job, job.make(prime), as_json, output)


class _SampleJob:
    """The options of one ``charlm sample``: makes samples for a prime, and describes them."""

    def __init__(self, ck, model, length, temperature, top_k, top_p, seed, greedy, num_samples, best_of, beam, stop,
                 check_novel):
        self.ck, self.model = ck, model
        self.length, self.temperature, self.top_k, self.top_p = length, temperature, top_k, top_p
        self.seed, self.greedy, self.n, self.best_of, self.beam, self.stop = seed, greedy, num_samples, best_of, beam, stop
        self.novel_path = check_novel
        self.corpus_text = read_text(check_novel) if check_novel else None
        self.streams = not beam and num_samples * best_of == 1  # one sample, sampled: it can stream

    def make(self, prime, on_text=None):
        if self.beam:
            return [beam_search(self.model, self.ck.vocab, prime, self.length, self.beam, stop=self.stop)]
        samples = generate(self.model, self.ck.vocab, prime, self.length, n=self.n * self.best_of,
                           temperature=self.temperature, top_k=self.top_k, top_p=self.top_p, greedy=self.greedy,
                           seed=self.seed, stop=self.stop, on_text=on_text if self.streams else None)
        return keep_best(samples, self.best_of) if self.best_of > 1 else samples

    def record(self, i, s) -> dict:
        d = {"sample": i, **s.to_dict(), "checkpoint": self.ck.meta["path"]}
        if self.corpus_text is not None:
            d["novelty"] = longest_copied(s.text, self.corpus_text).to_dict()
        return d

    def report_novelty(self, s) -> None:
        if self.corpus_text is None:
            return
        c = longest_copied(s.text, self.corpus_text)
        click.echo(f"novelty: the longest run also in {self.novel_path} is {c.length} of {s.chars} characters"
                   + (f": {echo(c.text)} (corpus offset {c.offset:,})" if c.length else ""), err=True)


def read_prime(path: str) -> str:
    """A prime file's text exactly as it is; ``CharlmError`` for one that is missing, empty or
    not UTF-8."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise CharlmError(f"{path}: the prime file does not exist") from None
    except OSError as e:
        raise CharlmError(f"{path}: cannot read the prime file: {e.strerror}") from None
    if not raw:
        raise CharlmError(f"{path}: the prime file is empty (a prime needs at least one character)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CharlmError(f"{path}: the prime file is not UTF-8 text (byte 0x{raw[e.start]:02X} at offset "
                          f"{e.start})") from None


def _stream(job: _SampleJob, prime: str) -> None:
    """The prime, then the continuation as it is generated, then its novelty (stderr)."""
    out = sys.stdout
    out.write(prime)
    out.flush()
    samples = job.make(prime, on_text=lambda piece: (out.write(piece), out.flush()))
    out.write("\n")
    out.flush()
    for s in samples:
        job.report_novelty(s)


def _write_samples(job: _SampleJob, samples, as_json: bool, output) -> None:
    if as_json:
        text = "".join(dumps(job.record(i, s)) + "\n" for i, s in enumerate(samples, 1))
    else:
        parts = []
        for i, s in enumerate(samples, 1):
            bpc = "-" if s.bits_per_char is None else f"{s.bits_per_char:.3f}"
            head = f"=== sample {i} of {len(samples)}: {bpc} bits/char ===\n" if len(samples) > 1 else ""
            parts.append(f"{head}{s.prime}{s.text}\n")
        text = "\n".join(parts)
    if output:
        atomic_write_text(output, text)
        click.echo(f"wrote {len(samples)} sample(s) to {output}", err=True)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    if not as_json:
        for s in samples:
            job.report_novelty(s)


def _interactive(job: _SampleJob, as_json: bool) -> None:
    """Each line of stdin is a prime; an empty line or the end of input quits."""
    while True:
        if sys.stdin.isatty():
            click.echo("> ", nl=False, err=True)
        prime = sys.stdin.readline().rstrip("\r\n")
        if not prime:
            return
        if as_json or not job.streams:
            _write_samples(job, job.make(prime), as_json, None)
        else:
            _stream(job, prime)


