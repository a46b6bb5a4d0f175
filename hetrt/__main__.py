"""``python -m hetrt``: the hetrt command."""

import sys

from engine.cli import main

sys.exit(main())
