"""What the parts of the command line agree on: exit statuses, the socket's path.

Pure and import-free, so that `_main` can use it without importing Trio.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_SOCKET",
    "EXIT_BROKEN_PIPE",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
]

EXIT_OK = 0
EXIT_FAILED = 1  # a proc failed (start), or a request failed (control commands)
EXIT_USAGE = 2  # a usage or config error: nothing ran
EXIT_INTERRUPTED = 130  # SIGINT, SIGTERM or SIGHUP (start); Ctrl+C (clients)
EXIT_BROKEN_PIPE = 141  # start's stdout was closed or cannot be written

#: The control socket of an instance, relative to the directory it runs in.
DEFAULT_SOCKET = ".trio-overseer.sock"
