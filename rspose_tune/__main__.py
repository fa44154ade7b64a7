"""``python -m rspose_tune`` is ``python -m rspose_tune.search``."""

import sys

from rspose_tune.search import main

sys.exit(main())
