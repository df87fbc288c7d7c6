"""``python -m charlm`` and the ``charlm`` command: the command line, with no traceback for a
Ctrl-C that comes while it loads (what a worker that is still starting may get)."""

import sys


def main() -> None:
    try:
        from .cli import main as cli
    except KeyboardInterrupt:
        sys.exit(130)
    cli(prog_name="charlm")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
