"""``python -m pipeline.cli``: the ``trading-pipeline`` command."""

import sys

from pipeline.cli.app import main

sys.exit(main())
