"""``python -m folk``: the ``folk`` command line."""

import sys

from folk.cli import main

sys.exit(main())
