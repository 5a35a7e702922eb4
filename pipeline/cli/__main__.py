"""`python -m pipeline.cli` runs the `layering` command."""

import sys

from pipeline.cli import main

sys.exit(main())
