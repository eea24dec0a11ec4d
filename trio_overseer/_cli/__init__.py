"""Command-line interface of trio-overseer (``trio-overseer start [-c FILE]``)."""
