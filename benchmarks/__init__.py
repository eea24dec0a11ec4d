"""Benchmarks of trio_overseer against raw Trio and peer supervisors.

Run ``python -m benchmarks`` (``--quick`` for a smoke run, ``--only NAME``
for one benchmark); see ``benchmarks/README.md`` and ``docs/performance.md``.
"""
