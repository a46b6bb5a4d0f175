"""``python -m engine.cli``: the hetrt command."""

import sys

from engine.cli.app import main

sys.exit(main())
