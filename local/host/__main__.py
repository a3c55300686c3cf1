"""`python -m local.host`: see local/host/runner.py."""

import sys

from local.host.runner import main

sys.exit(main())
