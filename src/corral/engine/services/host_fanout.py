"""Calling several hosts' agents at once: up to ``MAX_PARALLEL`` hosts at a time, each
host's answer or error collected (``each_host``), and setting one thing up on several hosts:
all of them, or none (``put_on_hosts``)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

from corral.engine.agent_client import AgentClient
from corral.engine.context import EngineContext
from corral.engine.operations import OpContext
from corral.errors import CorralError, NotFound

# Hosts called at once: a cluster-wide call takes as long as its slowest few hosts, not
# the sum of them all, without one thread per host of a large cluster.
MAX_PARALLEL = 8

T = TypeVar("T")
Call = Callable[[AgentClient], T]


@dataclass
class Outcome(Generic[T]):
    """One host's answer, or the corral error it failed with."""

    host_id: str
    answer: T | None = None
    error: CorralError | None = None


def _run(ctx: EngineContext, host_id: str, call: Call[T]) -> Outcome[T]:
    try:
        return Outcome(host_id, answer=call(ctx.agent(host_id)))
    except CorralError as exc:  # anything else is a bug: it propagates
        return Outcome(host_id, error=exc)


def each_host(ctx: EngineContext, calls: Sequence[tuple[str, Call[T]]],
              done: Callable[[int], None] = lambda n: None) -> list[Outcome[T]]:
    """Run every (host id, call) at once, up to ``MAX_PARALLEL``; the outcomes in the order
    of ``calls``. ``done(n)`` runs in the caller's thread as the n-th call finishes."""
    if len(calls) <= 1:  # one host (a single-host node: every VM create): no thread
        outcomes = [_run(ctx, host_id, call) for host_id, call in calls]
        for n in range(1, len(outcomes) + 1):
            done(n)
        return outcomes
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(calls)),
                            thread_name_prefix="host-fanout") as pool:
        futures = [pool.submit(_run, ctx, host_id, call) for host_id, call in calls]
        for n, _ in enumerate(as_completed(futures), 1):
            done(n)
        return [f.result() for f in futures]


def answers(outcomes: Sequence[Outcome[T]], missing_ok: bool = False) -> list[T]:
    """Every answer, or the error of the first host (in call order) that failed.
    ``missing_ok``: a host that answered NotFound (it has no such thing) is left out."""
    kept = [o for o in outcomes if not (missing_ok and isinstance(o.error, NotFound))]
    for o in kept:
        if o.error is not None:
            raise o.error
    return [cast(T, o.answer) for o in kept]


def put_on_hosts(ctx: EngineContext, op: OpContext, applies: Sequence[tuple[str, Call[T]]],
                 undo: Call[object], doing: str) -> list[T]:
    """Run each host's ``apply`` (up to ``MAX_PARALLEL`` hosts at once; progress 10-90 % as
    they finish); each host's answer, in order. When one fails, the hosts not started yet
    are not asked, every host asked (the failed ones included: they may have done part) gets
    ``undo``, and the error of the first failed host (in order) goes on."""
    started: list[str] = []
    lock = threading.Lock()

    def step(host_id: str, apply: Call[T]) -> Outcome[T]:
        with lock:
            started.append(host_id)
        return _run(ctx, host_id, apply)

    if not applies:
        return []
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(applies)),
                            thread_name_prefix="host-fanout") as pool:
        futures: list[Future[Outcome[T]]] = [pool.submit(step, h, a) for h, a in applies]
        for n, future in enumerate(as_completed(futures), 1):
            op.progress(10 + 80 * n // len(applies), f"{doing} on {n} of {len(applies)} hosts")
            if future.result().error is not None:
                for f in futures:
                    f.cancel()  # not started yet: never asked, nothing to undo
                break  # leaving the pool waits for the calls under way
    outcomes = [f.result() for f in futures if not f.cancelled()]
    if any(o.error is not None for o in outcomes):
        each_host(ctx, [(h, undo) for h in started])  # best effort: errors are dropped
    return answers(outcomes)
