"""``python -m rspose_tune.report``: see :mod:`rspose_tune.report`."""

import sys

from rspose_tune.report._cli import main

if __name__ == "__main__":
    sys.exit(main())
