"""``python -m rspose_tune.search``: see :mod:`rspose_tune.search`."""

import sys

from rspose_tune.search._run import main

if __name__ == "__main__":
    sys.exit(main())
