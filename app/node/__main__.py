"""``python -m app.node serve|status``."""

import sys

from .cli import main

sys.exit(main())
