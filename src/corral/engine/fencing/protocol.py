"""One action of a fence agent, by the ClusterLabs protocol: the options as ``key=value``
lines on standard input (secrets too: argv is readable by every user in /proc), the exit
status as the answer. Bounded: an agent past its timeout is killed (its whole process
group) and counts as an error. Values are checked for line breaks, which would smuggle
another option in."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from corral.engine.fencing.secrets import is_secret
from corral.errors import InvalidInput

ACTIONS = ("off", "on", "reboot", "status", "monitor", "metadata", "validate-all")
DEFAULT_TIMEOUT_S = 20.0
EXIT_OK, EXIT_ERROR, EXIT_OFF = 0, 1, 2
_KEEP = 2000  # characters of an agent's output kept for the reason


@dataclass(frozen=True)
class AgentRun:
    """What an agent answered. ``code`` None: it did not end in time (killed)."""

    action: str
    code: int | None
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.code == EXIT_OK

    @property
    def power(self) -> str | None:
        """For ``status``: "on", "off", or None when the agent could not tell."""
        return {EXIT_OK: "on", EXIT_OFF: "off"}.get(self.code) if self.code is not None \
            else None

    def reason(self) -> str:
        """Why it failed, in a line: the agent's last words on stderr (or stdout)."""
        if self.code is None:
            return f"{self.action}: no answer in time (killed)"
        said = [ln.strip() for ln in (self.stderr or self.stdout).splitlines() if ln.strip()]
        # fence-agents print Python warnings first; their last line is the message
        tail = said[-1] if said else "no message"
        return f"{self.action}: exit {self.code}: {tail[:300]}"


def check_options(options: dict[str, str], field: str = "options") -> None:
    for key, value in options.items():
        if not key or not all(c.isalnum() or c in "_-" for c in key):
            raise InvalidInput(f"fence option {key!r}: letters, digits, _ or - only",
                               field=field)
        if any(c in value for c in "\n\r\0"):
            raise InvalidInput(f"fence option {key}: its value holds a line break or NUL",
                               field=field)


def stdin_text(action: str, options: dict[str, str]) -> str:
    check_options(options)
    lines = [f"action={action}"]
    lines += [f"{k}={v}" for k, v in options.items() if k != "action"]
    return "\n".join(lines) + "\n"


def run_agent(path: Path, action: str, options: dict[str, str],
              timeout_s: float = DEFAULT_TIMEOUT_S) -> AgentRun:
    """Run ``action`` of the agent at ``path`` (from agents.find_agent) with ``options``."""
    if action not in ACTIONS:
        raise InvalidInput(f"fence action {action!r}: one of {', '.join(ACTIONS)}",
                           field="action")
    text = stdin_text(action, options)
    # An agent that prints what it was given (verbose, or a bug) must not put a password
    # into an event, the log or an operation's error
    hidden = [v for k, v in options.items() if is_secret(k) and v]
    proc = subprocess.Popen([str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "LC_ALL": "C"})
    try:
        out, err = proc.communicate(text, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        # Its children (ipmitool, ssh) too: they are in its session's process group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        try:
            out, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:  # a daemon it left holds the pipes: let them be
            proc.wait(timeout=5)
            out, err = "", ""
        return AgentRun(action, None, _scrub(out, hidden), _scrub(err, hidden))
    return AgentRun(action, proc.returncode, _scrub(out, hidden), _scrub(err, hidden))


def _scrub(text: str, hidden: list[str]) -> str:
    for value in hidden:
        text = text.replace(value, "***")
    return text[-_KEEP:]
