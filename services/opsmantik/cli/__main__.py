"""`python -m opsmantik.cli` is the `opsmantik` command."""

import sys

from opsmantik.cli.main import main

sys.exit(main())
