"""`python -m switchctl ...` is the `switchctl` command."""

import sys

from .cli import main

sys.exit(main())
