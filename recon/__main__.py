"""``python -m recon``: see :mod:`recon.cli`."""

import sys

from recon.cli import main

sys.exit(main())
