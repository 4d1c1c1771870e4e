"""`python -m backend.exchange [--data-dir DIR] [--rate N] ...`: the local exchange in the
foreground until SIGTERM (see backend.exchange.run)."""

import sys

from backend.exchange.run import main

if __name__ == "__main__":
    sys.exit(main())
