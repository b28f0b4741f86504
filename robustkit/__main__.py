"""``python -m robustkit``: the ``robustkit`` command."""

import sys

from robustkit.cli import main

sys.exit(main())
