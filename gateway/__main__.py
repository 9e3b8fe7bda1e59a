"""``python -m gateway``: the ``gateway`` command, for when the venv's bin/ is not on PATH."""

import sys

from gateway.cli import main

if __name__ == "__main__":
    sys.exit(main())
