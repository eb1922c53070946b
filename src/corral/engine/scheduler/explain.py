"""A placement in words: the table `corral vm create --explain` and `corral vm placement`
print, and the 409 a refusal becomes."""

from __future__ import annotations

from collections import Counter

from corral.engine.scheduler.placement import Placement, Verdict
from corral.errors import InsufficientResources


def _cells(v: Verdict) -> list[str]:
    h = v.host
    state = h.state.value
    if v.weight is None:
        return [h.name, state, "no", "", "", "", "; ".join(str(r) for r in v.reasons)]
    w = v.weight
    group = ""  # a soft group's term: members here draw (affinity) or push away (anti)
    if w.group:
        group = f"{abs(w.group)} of the group here ({'drawn' if w.group < 0 else 'pushed away'})"
    return [h.name, state, "yes", str(v.rank), f"{w.free_vcpus_after}",
            f"{w.free_memory_mib_after} MiB", group]


HEAD = ["HOST", "STATE", "ELIGIBLE", "RANK", "FREE vCPUs AFTER", "FREE MEMORY AFTER",
        "GROUP / WHY NOT"]


def render(p: Placement, limit: int | None = None) -> list[str]:
    """The explanation as plain text lines: what was asked, the outcome, then one row per
    host (eligible ones best first, then the refused ones by name, with every reason).
    ``limit`` caps the rows (the rest is counted in a last line)."""
    verdicts = p.verdicts
    lines = [f"request: {p.request.describe()}", f"policy: {p.policy.describe()}"]
    if p.chosen is not None:
        lines.append(f"chosen: {p.chosen} (best of {len(p.eligible)} eligible of "
                     f"{len(verdicts)} hosts)")
    else:
        lines.append(f"refused: {summary(p)}")
    shown = verdicts if limit is None else verdicts[:limit]
    rows = [HEAD, *(_cells(v) for v in shown)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEAD) - 1)]
    lines.append("")
    for r in rows:
        lines.append("  ".join([*(c.ljust(w) for c, w in zip(r, widths, strict=False)),
                                r[-1]]).rstrip())
    if len(shown) < len(verdicts):
        lines.append(f"... {len(verdicts) - len(shown)} more hosts")
    return lines


def summary(p: Placement) -> str:
    """One line: why no host could take the request, counting the hosts each filter refused
    (a host refused by two filters counts for both)."""
    what = p.request.name or "the VM"
    verdicts = p.verdicts
    if not verdicts:
        return f"no host can take {what}: there are no hosts"
    pin = p.request.host
    if pin is not None:  # the others are refused for not being it: its reasons are the story
        mine = [v for v in verdicts if v.host.name == pin]
        if not mine:
            return f"no host can take {what}: there is no host named {pin}"
        return (f"no host can take {what}: pinned host {pin} refuses it: "
                + "; ".join(str(r) for r in mine[0].reasons))
    if len(verdicts) == 1:  # one host (a single node): its reasons, with their figures
        only = verdicts[0]
        return (f"no host can take {what} ({p.request.describe()}): host {only.host.name} "
                "refuses it: " + "; ".join(str(r) for r in only.reasons))
    counts = Counter(r.filter for v in verdicts for r in v.reasons)
    why = ", ".join(f"{f} on {n}" for f, n in counts.most_common())
    return (f"no host can take {what} ({p.request.describe()}): {len(verdicts)} hosts, "
            f"refused by {why}")


def insufficient(p: Placement) -> InsufficientResources:
    """The 409 ``insufficient_resources`` of a refusal: the summary as its message, every
    host's reasons in ``details``."""
    return InsufficientResources(
        summary(p), request=p.request.describe(), policy=p.policy.describe(),
        hosts={v.host.name: [str(r) for r in v.reasons] for v in p.verdicts})
