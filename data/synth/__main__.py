"""``python -m data.synth``: builds the synthetic corpus, or speaks one line with ``--say``."""

import sys

from data.synth.corpus import main

if __name__ == "__main__":
    sys.exit(main())
