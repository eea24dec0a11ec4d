"""Command-line interface of trio-overseer (``trio-overseer start [-c FILE]``).

`main` is the console script; everything else is private.  PyYAML (the
``cli`` extra) is imported only when a config file is read, so the library
itself never needs it.
"""

from ._main import main as main

__all__ = ["main"]
