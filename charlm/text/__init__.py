"""Text and ids: what a corpus is made of (sources), its vocabulary, its ids (corpus, with the
encoded-corpus cache), how training reads them (batches), and what is in them (audit,
novelty). Imports nothing above it."""
