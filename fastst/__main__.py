"""``python -m fastst <command>``: the same as the ``fastst`` console script."""

import sys

from fastst.cli import main

if __name__ == "__main__":
    sys.exit(main())
