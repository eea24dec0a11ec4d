"""One measurement in a fresh process: ``python -m benchmarks._worker MODULE FUNC PARAMS``.

Imports ``benchmarks.MODULE``, calls ``FUNC(params)`` and prints its result
as one JSON line prefixed with ``BENCH-RESULT`` on stdout.  A crash becomes a
result with the traceback as its problem.
"""

from __future__ import annotations

import importlib
import json
import sys
import traceback

from benchmarks._common import RESULT_MARK


def main(argv: list[str]) -> int:
    module, func, params = argv[1], argv[2], json.loads(argv[3])
    try:
        fn = getattr(importlib.import_module(f"benchmarks.{module}"), func)
        result = fn(params)
    except BaseException:
        tb = traceback.format_exc()
        result = {"value": None, "problems": [f"crashed: {tb.strip().splitlines()[-1]}"]}
        print(tb, file=sys.stderr)
        print(RESULT_MARK + json.dumps(result), flush=True)
        return 1
    print(RESULT_MARK + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
