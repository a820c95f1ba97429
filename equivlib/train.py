"""``python -m equivlib.train ...`` is ``python -m equivlib train ...`` (kept for old
commands and scripts)."""

import sys

from equivlib.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
