"""``python -m s2sauth``: the command line."""

import sys

from .cli import main

sys.exit(main())
