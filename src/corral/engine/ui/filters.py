"""Jinja2 filters of the web UI's templates: sizes, ages, state colours."""

from __future__ import annotations

from datetime import UTC, datetime

from jinja2 import Environment

# A VM's or host's state → the badge's colour class (ui.css).
_TONES = {"running": "ok", "up": "ok", "ready": "ok", "succeeded": "ok", "active": "ok",
          "stopped": "idle", "maintenance": "idle",
          "paused": "warn", "shutting-down": "warn", "creating": "busy", "deleting": "busy",
          "unresponsive": "warn", "crashed": "bad", "error": "bad", "down": "bad",
          "unknown": "warn", "fenced": "bad"}


_OP_TONES = {"pending": "idle", "running": "busy", "success": "ok", "failure": "bad",
             "cancelled": "idle"}


def tone(state: object) -> str:
    return _TONES.get(str(state), "idle")


def op_tone(status: object) -> str:
    """An operation's status → its colour (``running`` is busy here, not a VM's green)."""
    return _OP_TONES.get(str(status), "idle")


def size(n: int | None) -> str:
    """Bytes, the way people read them: 1.5 GiB."""
    if n is None:
        return "\u2013"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" or value >= 100 else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def mib(n: int | None) -> str:
    return "\u2013" if n is None else size(n << 20)


def ago(when: datetime | None) -> str:
    if when is None:
        return "never"
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    secs = int((datetime.now(UTC) - when).total_seconds())
    if secs < 5:
        return "just now"
    for unit, span in (("d", 86400), ("h", 3600), ("min", 60)):
        if secs >= span:
            return f"{secs // span} {unit} ago"
    return f"{secs} s ago"


def percent(part: int | None, whole: int | None) -> int:
    if not part or not whole:
        return 0
    return max(0, min(100, round(100 * part / whole)))


def install(env: Environment) -> None:
    env.filters.update(tone=tone, op_tone=op_tone, size=size, mib=mib, ago=ago)
    env.globals.update(percent=percent)
