"""``python -m synthetic``: the generator's command line."""

import sys

from .cli import main

sys.exit(main())
