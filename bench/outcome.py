"""How a benchmark ends, for `make bench` (bench/all.py): an exit code, and a status file.

    0  PASSED  it ran to the end and met every target it checks (or checks none)
    3  MISSED  it ran to the end, but some target was missed (named in its report)
    else       FAILED: it did not finish (1: an error; 2: it cannot run here, e.g. not root)

When bench/all.py runs a benchmark it sets ``CORRAL_BENCH_STATUS`` to a file; :func:`finish`
writes there what the summary shows: the outcome, the targets missed, the error's first line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

PASSED, FAILED, CANNOT_RUN, MISSED = 0, 1, 2, 3
STATUS_ENV = "CORRAL_BENCH_STATUS"


def finish(error: str | None, missed: Sequence[str] = ()) -> int:
    """The exit code of a benchmark that has written its report (see the table above)."""
    code = FAILED if error else (MISSED if missed else PASSED)
    where = os.environ.get(STATUS_ENV)
    if where:
        word = {PASSED: "passed", MISSED: "missed", FAILED: "failed"}[code]
        Path(where).write_text(json.dumps({
            "outcome": word, "missed": list(missed),
            "error": error.partition("\n")[0] if error else None}) + "\n")
    return code
