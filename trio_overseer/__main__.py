"""``python -m trio_overseer``: the ``trio-overseer`` command line."""

import sys

from trio_overseer._cli import main

if __name__ == "__main__":
    sys.exit(main())
