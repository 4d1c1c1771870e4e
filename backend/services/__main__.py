"""`python -m backend.services NAME [--instance ID] [--environment legacy|target]`: one service
instance in the foreground until SIGTERM (see backend.services.run)."""

import sys

from backend.services.run import main

if __name__ == "__main__":
    sys.exit(main())
