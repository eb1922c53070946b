"""Small fence agents for the tests, written as shell scripts into a directory put on PATH:
each speaks the ClusterLabs protocol (options on stdin, exit 0/1/2) in one odd way."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# A device whose power lives in a file: off writes off, on writes on, status reads it
# (what fence_dummy does, and what a lying device does wrong).
FILE_DEVICE = """#!/bin/sh
state=""
while IFS='=' read -r k v; do
  case "$k" in action) action="$v" ;; state) state="$v" ;; esac
done
case "$action" in
  off) echo off > "$state" ;;
  on) echo on > "$state" ;;
  status) [ "$(cat "$state" 2>/dev/null)" = off ] && { echo "Status: OFF"; exit 2; }
          echo "Status: ON" ;;
esac
exit 0
"""
SCRIPTS = {
    "fence_test_file": FILE_DEVICE,
    # every action fails, with a reason on stderr
    "fence_test_fail": "#!/bin/sh\ncat >/dev/null\necho 'Failed: unable to connect to BMC' >&2\n"
                       "exit 1\n",
    # hangs past any timeout
    "fence_test_hang": "#!/bin/sh\ncat >/dev/null\nsleep 60\nexit 0\n",
    # says "done" to off, but its status says on: never a confirmation
    "fence_test_liar": "#!/bin/sh\ncat >/dev/null\necho 'Status: ON'\nexit 0\n",
    # fails, telling all it was given on stderr
    "fence_test_blab": "#!/bin/sh\ncat >&2\nexit 1\n",
    # writes what it was given (to check that secrets come on stdin, not argv)
    "fence_test_echo": "#!/bin/sh\necho \"argv: $*\" > \"$FENCE_ECHO\"\ncat >> \"$FENCE_ECHO\"\n"
                       "exit 0\n",
}


def install(directory: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Write the scripts into ``directory`` and put it first on PATH; the directory."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in SCRIPTS.items():
        path = directory / name
        path.write_text(text)
        path.chmod(0o755)
    monkeypatch.setenv("PATH", f"{directory}:{os.environ.get('PATH', '')}")
    return directory
