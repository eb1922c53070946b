"""The settings of the whole cluster (`corral cluster set|unset|show`).

Each setting is declared once here, with its kind, default and help; the table keeps only
what an admin set, so a setting added later needs no migration and `unset` brings the
default back. Values are parsed and checked when they are set (a bad one is a 422 naming
the setting), and read typed by the code that uses them (:func:`get`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session

from corral.api.cluster_settings import ClusterSetting as SettingOut
from corral.api.cluster_settings import Value
from corral.engine.context import EngineContext
from corral.engine.db.models import ClusterSetting, utcnow
from corral.errors import InvalidInput, NotFound

_TRUE, _FALSE = {"on", "true", "yes", "1"}, {"off", "false", "no", "0"}
_DURATION = re.compile(r"^(\d+)\s*(s|m|h)?$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600}


@dataclass(frozen=True)
class Setting:
    key: str
    kind: str  # bool, int, percent, duration, cidr, choice
    default: Value
    help: str
    low: int = 0
    high: int = 1 << 31
    choices: tuple[str, ...] = ()


def _bool(s: Setting, raw: object) -> Value:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise _bad(s, raw, "on or off")


def _number(s: Setting, raw: object, unit: str = "") -> int:
    if isinstance(raw, bool):
        raise _bad(s, raw, f"a whole number from {s.low} to {s.high}{unit}")
    text = str(raw).strip().removesuffix(unit).strip() if unit else str(raw).strip()
    if isinstance(raw, float) and raw.is_integer():
        text = str(int(raw))
    if not text.isdigit() or not s.low <= int(text) <= s.high:
        raise _bad(s, raw, f"a whole number from {s.low} to {s.high}{unit}")
    return int(text)


def _duration(s: Setting, raw: object) -> Value:
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    found = _DURATION.match(str(raw).strip().lower())
    seconds = int(found[1]) * _UNIT_S[found[2] or "s"] if found else -1
    if not s.low <= seconds <= s.high:
        raise _bad(s, raw, f"a duration from {s.low} s to {s.high} s, like 90s, 10m or 1h")
    return seconds


def _cidr(s: Setting, raw: object) -> Value:
    try:
        return str(ipaddress.ip_network(str(raw).strip(), strict=False))
    except ValueError:
        raise _bad(s, raw, "a network in CIDR form, like 10.20.0.0/24") from None


def _choice(s: Setting, raw: object) -> Value:
    text = str(raw).strip().lower()
    if text not in s.choices:
        raise _bad(s, raw, " or ".join(s.choices))
    return text


_PARSERS: dict[str, Callable[[Setting, object], Value]] = {
    "bool": _bool, "int": _number, "percent": lambda s, raw: _number(s, raw, "%"),
    "duration": _duration, "cidr": _cidr, "choice": _choice}


def _bad(s: Setting, raw: object, wanted: str) -> InvalidInput:
    return InvalidInput(f"cluster setting {s.key}: {raw!r} is not {wanted}", field="value",
                        key=s.key)


SETTINGS: dict[str, Setting] = {s.key: s for s in (
    Setting("migration.network", "cidr", None,
            "The network migrations travel over: each host's address in it is the one its "
            "peers migrate to (a storage or migration LAN instead of the management one). "
            "Unset: the address the engine reaches the host's agent at."),
    Setting("migration.tls", "bool", True,
            "Encrypt migration traffic with QEMU's native TLS and certificates from corral's "
            "CA. Off only on a network nobody else reaches."),
    Setting("migration.converge_s", "duration", 600,
            "How long a live migration may stay in pre-copy: then it switches to post-copy "
            "where the request allowed it, else it is cancelled (the VM keeps running on its "
            "host) with the reason.", low=10, high=86_400),
    Setting("migration.parallel", "int", 2,
            "How many VMs an evacuation (`corral host maintenance`) moves at once.",
            low=1, high=16),
    # Load balancing (`corral cluster policy set balance`: engine/services/balancing.py).
    Setting("balance.mode", "choice", "none",
            "none: VMs stay where they are placed; balance: VMs move live off hosts that stay "
            "above balance.cpu_percent or balance.memory_percent for balance.window_s.",
            choices=("none", "balance")),
    Setting("balance.cpu_percent", "percent", 80,
            "A host whose VMs use more of its CPUs than this over the window gives VMs away.",
            low=1, high=100),
    Setting("balance.memory_percent", "percent", 85,
            "A host using more of its memory than this over the window gives VMs away.",
            low=1, high=100),
    Setting("balance.interval_s", "duration", 60,
            "How often the balancer weighs the hosts (at most one move each time).",
            low=1, high=3600),
    Setting("balance.window_s", "duration", 180,
            "How long a host must stay above a threshold before a VM moves off it (and how "
            "long a host that gave or took a VM is watched before it counts again).",
            low=1, high=1800),
    Setting("balance.cooldown_s", "duration", 1800,
            "A VM that moved (for any reason) stays put this long.", low=0, high=86_400),
    # High availability (engine/ha_loop.py, corral.ha.policy).
    Setting("ha.detect_s", "duration", 3,
            "How long a host with HA VMs may stay silent (agents report every second) before "
            "it is lost: then it is fenced, and its HA VMs start on other hosts.",
            low=1, high=600),
    Setting("ha.lease_s", "duration", 10,
            "How long a host keeps its HA VMs running with neither the engine nor a quorum "
            "behind it; the engine restarts them elsewhere without power fencing only after "
            "this (plus a margin) out of quorum.", low=2, high=600),
    Setting("ha.fence_retry_s", "duration", 5,
            "A fence run that could not confirm the host off is tried again after this.",
            low=1, high=3600),
    # Restart in place (engine/services/vm_restart.py, corral.ha.restart_budget).
    Setting("ha.restart_max", "int", 3,
            "How many times an HA VM that goes down on a healthy host is restarted in place "
            "within ha.restart_window_s; one more and it stays down with the reason (0: "
            "never restarted in place).", low=0, high=100),
    Setting("ha.restart_window_s", "duration", 600,
            "The window ha.restart_max counts restarts in place over.", low=10,
            high=86_400),
    Setting("balance.margin_percent", "percent", 10,
            "Hysteresis: a target must stay this far below each threshold with the VM, so "
            "that it never becomes the next host to give VMs away.", low=1, high=50),
)}


def _setting(key: str) -> Setting:
    found = SETTINGS.get(key)
    if found is None:
        raise NotFound(f"no cluster setting {key!r} (`corral cluster show` lists them: "
                       f"{', '.join(sorted(SETTINGS))})", field="key")
    return found


def parse(key: str, raw: object) -> Value:
    """``raw`` (text from the CLI, or a JSON value) as setting ``key``'s typed value."""
    s = _setting(key)
    return _PARSERS[s.kind](s, raw)


def get(ctx: EngineContext, key: str) -> Value:
    """What applies now: the value an admin set, else the default."""
    s = _setting(key)
    with ctx.db.session() as db:
        row = db.get(ClusterSetting, key)
        return row.value if row is not None else s.default


def _out(s: Setting, row: ClusterSetting | None) -> SettingOut:
    return SettingOut(key=s.key, value=row.value if row is not None else s.default,
                      default=s.default, set=row is not None,
                      kind=s.kind, choices=list(s.choices) or None, help=s.help,
                      updated_at=row.updated_at if row is not None else None)


def listing(ctx: EngineContext) -> list[SettingOut]:
    with ctx.db.session() as db:
        rows = {r.key: r for r in db.query(ClusterSetting)}
        return [_out(s, rows.get(k)) for k, s in sorted(SETTINGS.items())]


def show(ctx: EngineContext, key: str) -> SettingOut:
    s = _setting(key)
    with ctx.db.session() as db:
        return _out(s, db.get(ClusterSetting, key))


def put(db: Session, key: str, raw: object) -> SettingOut:
    """Set ``key`` in the caller's transaction (a policy setting several keys at once)."""
    s = _setting(key)
    value = _PARSERS[s.kind](s, raw)
    row = db.get(ClusterSetting, key)
    if row is None:
        row = ClusterSetting(key=key, value=value)
        db.add(row)
    row.value, row.updated_at = value, utcnow()
    db.flush()
    return _out(s, row)


def set_value(ctx: EngineContext, key: str, raw: object) -> SettingOut:
    with ctx.db.session() as db:
        return put(db, key, raw)


def unset(ctx: EngineContext, key: str) -> SettingOut:
    s = _setting(key)
    with ctx.db.session() as db:
        row = db.get(ClusterSetting, key)
        if row is not None:
            db.delete(row)
        return _out(s, None)
