"""`python -m mlapi ...`: the same command line as the `mlapi` console script."""

import sys

from mlapi.cli import main

sys.exit(main())
