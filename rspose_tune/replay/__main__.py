"""``python -m rspose_tune.replay``: see :mod:`rspose_tune.replay`."""

import sys

from rspose_tune.replay._cli import main

sys.exit(main())
