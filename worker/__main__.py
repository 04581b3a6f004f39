"""`python -m worker` is the same as `sitemap-worker`."""

import sys

from .cli import main

sys.exit(main())
