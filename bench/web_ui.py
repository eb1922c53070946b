"""`python bench/web_ui.py`: the web UI with 1,000 VMs in 50 projects: the dashboard's and
the VM list's server time, their first contentful paint in Chromium, and the SSE fan-out of
100 open event streams while 50 VMs change state. Writes its own section
(``<!-- web_ui -->``) of docs/benchmarks.md. No lab host: the engine alone on loopback.

Method: the engine as `corral up --no-local-agent` runs it (bench/web_ui_engine.py calls
corral.node.up.run_up: uvicorn over HTTPS with the engine's TLS) on a free loopback port with
a fresh data dir, seeded before it starts as bench/api_projects.py seeds it (one host in
maintenance, 50 projects ``p00``..``p49`` of 20 VMs, one NIC each; rows only). The admin
logs in through the login form (its CSRF token, the session cookie), then:

- server time: ``GET /`` (dashboard), ``GET /vms`` (the list's first page: 100 of 1,000 VMs)
  and ``GET /vms?sort=-size&page=10`` (its last page in another order) on one kept-alive
  HTTPS connection (httpx, the node's CA), one after another, in turn, each timed until
  its whole body is read; warm-ups first, not counted. Every answer is checked
  (200, the page's own text). What the browser would wait for, less its rendering.
- first contentful paint: Debian's chromium through Playwright (``--no-sandbox
  --disable-gpu``, headless, 1280x800), logged in, loads each page ``--paints`` times
  (alternating); the figure is the page's own ``first-contentful-paint`` performance entry
  (from the navigation's start: request, HTML, CSS, first pixels).
- SSE fan-out: 100 event streams of the UI (``GET /ui/events`` with the session cookie, what
  each open page holds) on 100 connections (one asyncio task each, in this process), then 50
  VMs (``p00``..``p02``) are set ``running`` and, once every stream heard all 50, ``stopped``
  — through ``vm_define.set_fields``, the reconciler's own write, in the engine
  (bench/web_ui_engine.py): 100 events, each to be delivered to all 100 streams. Measured:
  events heard per stream (all must hear all), the time from the change to the last stream
  hearing it, and the engine's CPU (its process' user + system time from /proc) during it.

Targets: p99 of the server time under 100 ms for each page; FCP (p50) under 500 ms; every
event delivered to every stream. The engine is stopped (SIGTERM) and its data dir removed at
the end, whatever happened.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

import sections
from api_projects import PER_PROJECT, PROJECTS, free_port, seed
from benchmain import run_bench
from corral.node.paths import NodePaths
from timing import BenchError, median, percentile, say

REPO = Path(__file__).resolve().parents[1]
REPORT = REPO / "docs" / "benchmarks.md"
SECTION = "web_ui"
PASSWORD = "bench web ui password"
CHROMIUM = "/usr/bin/chromium"
WARMUP = 10
STREAMS, CHANGING = 100, 50
TARGET_P99_S, TARGET_FCP_S = 0.100, 0.500
START_TIMEOUT_S, DELIVERY_TIMEOUT_S = 120.0, 60.0
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Result:
    server: dict[str, list[float]] = field(default_factory=dict)
    paint: dict[str, list[float]] = field(default_factory=dict)
    fanout: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)


class Engine:
    """bench/web_ui_engine.py on ``port``; SIGTERM (and a wait) at the end."""

    def __init__(self, data_dir: Path, port: int) -> None:
        pw = data_dir / "admin-password"
        pw.write_text(PASSWORD + "\n")
        self.data_dir, self.log = data_dir, (data_dir / "engine.log").open("wb")
        # this tree's corral (src first), not the one the venv may have installed elsewhere
        path = [str(REPO / "bench"), str(REPO / "src"), os.environ.get("PYTHONPATH", "")]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in path if p))
        argv = [sys.executable, str(REPO / "bench" / "web_ui_engine.py"), str(data_dir),
                str(port)]
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env)
        self.url = f"https://127.0.0.1:{port}"

    def wait_ready(self) -> str:
        """The CA file once the engine answers its health."""
        deadline = time.monotonic() + START_TIMEOUT_S
        config = NodePaths(self.data_dir).client_config
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"the engine exited {self.proc.returncode}: "
                                 f"{(self.data_dir / 'engine.log').read_text()[-1500:]}")
            if config.exists():
                ca = str(json.loads(config.read_text())["ca"])
                try:
                    if httpx.get(f"{self.url}/api/v1/health", verify=ca, timeout=2).is_success:
                        return ca
                except httpx.HTTPError:
                    pass
            time.sleep(0.2)
        raise BenchError(f"the engine did not answer in {START_TIMEOUT_S:.0f} s")

    def cpu_s(self) -> float:
        """User + system seconds of the engine's process so far (/proc/PID/stat)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


def log_in(http: httpx.Client) -> None:
    """The admin's UI session (its cookie stays in ``http``)."""
    form = http.get("/login")
    found = _CSRF.search(form.text)
    if found is None:
        raise BenchError(f"no CSRF token in the login form ({form.status_code})")
    r = http.post("/login", data={"csrf": found.group(1), "username": "admin",
                                  "password": PASSWORD, "next": "/"})
    if r.status_code != 303 or "corral_session" not in http.cookies:
        raise BenchError(f"login: {r.status_code} {r.text[:300]}")


# the VM list is paged (100 a page, services/vm_pages.py): its first page, and its last in
# another order (the database sorts and skips 900 rows); each answer must show its own text
PAGES = {"dashboard": ("/", "Dashboard"), "vms": ("/vms", "p04.vm19")}
TIMED = {**PAGES, "vms_last": ("/vms?sort=-size&page=10", "p00.vm00")}


def server_time(res: Result, http: httpx.Client, rounds: int) -> None:
    for key in TIMED:
        res.server[key] = []
    for i in range(WARMUP + rounds):
        for key, (path, must) in TIMED.items():
            t = time.perf_counter()
            r = http.get(path)
            took = time.perf_counter() - t
            if r.status_code != 200 or must not in r.text:
                raise BenchError(f"GET {path}: {r.status_code}, {must!r} not in it")
            if i >= WARMUP:
                res.server[key].append(took)
    res.facts["VM list page"] = f"{len(http.get('/vms').content) / 1024:,.0f} KiB of HTML"


def list_cost(res: Result, data_dir: Path, n: int = 20) -> None:
    """``services.vms.list_vms`` of every project and ``services.vm_pages.page`` (the list's
    first page) in this process (no HTTP, no page): what of the VM list's time is the
    database and the API models."""
    from corral.engine.app import build_context
    from corral.engine.context import EngineSettings
    from corral.engine.services import vm_pages, vms

    ctx = build_context(EngineSettings(data_dir=data_dir))
    names = [f"p{p:02d}" for p in range(PROJECTS)]
    res.server["list_vms"], res.server["vm_page"] = [], []
    try:
        for i in range(3 + n):
            t = time.perf_counter()
            vms.list_vms(ctx, names)
            t2 = time.perf_counter()
            vm_pages.page(ctx, names, vm_pages.VmQuery())
            if i >= 3:
                res.server["list_vms"].append(t2 - t)
                res.server["vm_page"].append(time.perf_counter() - t2)
    finally:
        ctx.ops.shutdown()
        ctx.db.engine.dispose()


def paints(res: Result, url: str, rounds: int) -> None:
    from playwright.sync_api import sync_playwright

    for key in PAGES:
        res.paint[key] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox", "--disable-gpu"])
        try:
            ctx = browser.new_context(ignore_https_errors=True,
                                      viewport={"width": 1280, "height": 800})
            page = ctx.new_page()
            page.goto(f"{url}/login")
            page.get_by_label("User name").fill("admin")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
            page.wait_for_url(f"{url}/", timeout=30_000)
            for i in range(2 + rounds):  # two warm-ups
                for key, (path, _) in PAGES.items():
                    page.goto(f"{url}{path}", wait_until="load", timeout=30_000)
                    fcp: Any = page.evaluate(
                        "() => new Promise(done => { const look = () => { const e = "
                        "performance.getEntriesByName('first-contentful-paint')[0]; "
                        "if (e) done(e.startTime); else setTimeout(look, 20); }; look(); })")
                    if i >= 2:
                        res.paint[key].append(float(fcp) / 1000)
        finally:
            browser.close()


async def fanout(res: Result, engine: Engine, url: str, ca: str, cookies: httpx.Cookies
                 ) -> None:
    names = [f"p{p:02d}.vm{i:02d}" for p in range(3) for i in range(PER_PROJECT)][:CHANGING]
    wanted = set(names)
    heard: list[dict[str, list[float]]] = [{"running": [], "stopped": []}
                                           for _ in range(STREAMS)]
    lags: list[float] = []
    connected = 0
    tls = ssl.create_default_context(cafile=ca)
    limits = httpx.Limits(max_connections=STREAMS + 5, max_keepalive_connections=STREAMS + 5)

    async def listen(n: int, client: httpx.AsyncClient) -> None:
        nonlocal connected
        async with client.stream("GET", "/ui/events") as resp:
            if resp.status_code != 200:
                raise BenchError(f"stream {n}: {resp.status_code}")
            kind = ""
            async for line in resp.aiter_lines():
                if line == ": connected":
                    connected += 1
                elif line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind == "vm":
                    event = json.loads(line[6:])
                    data, now = event["data"], time.time()
                    state = data.get("state")
                    if data.get("name") in wanted and state in heard[n]:
                        heard[n][state].append(time.monotonic())
                        # from the engine's publish (the event's time) to this stream
                        sent = datetime.fromisoformat(event["time"])
                        sent = sent if sent.tzinfo else sent.replace(tzinfo=UTC)  # naive: UTC
                        lags.append(now - sent.timestamp())

    async with httpx.AsyncClient(base_url=url, verify=tls, cookies=cookies, limits=limits,
                                 timeout=httpx.Timeout(10, read=None)) as client:
        tasks = [asyncio.create_task(listen(n, client)) for n in range(STREAMS)]
        try:
            deadline = time.monotonic() + 60
            while connected < STREAMS:
                if time.monotonic() > deadline:
                    raise BenchError(f"only {connected} of {STREAMS} streams connected")
                for t in tasks:
                    if t.done() and t.exception() is not None:
                        raise BenchError(f"a stream failed: {t.exception()}")
                await asyncio.sleep(0.05)
            say(f"{STREAMS} streams open")
            for state in ("running", "stopped"):
                cpu0, t0, mine0 = engine.cpu_s(), time.monotonic(), time.process_time()
                (engine.data_dir / "bench-flip").write_text("\n".join([state, *names]) + "\n")
                deadline = t0 + DELIVERY_TIMEOUT_S
                while (min(len(h[state]) for h in heard) < CHANGING
                       and time.monotonic() < deadline):
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.3)  # late duplicates, if any, would show
                last = max((max(h[state]) for h in heard if h[state]), default=t0)
                res.fanout[state] = {
                    "per_stream": [len(h[state]) for h in heard],
                    "last_s": last - t0,
                    "cpu_s": engine.cpu_s() - cpu0,
                    "reader_cpu_s": time.process_time() - mine0,
                    "wall_s": time.monotonic() - t0}
                say(f"{state}: min {min(res.fanout[state]['per_stream'])} events a stream, "
                    f"last after {res.fanout[state]['last_s'] * 1000:.0f} ms")
            res.fanout["lags"] = lags
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def section(res: Result, duration_s: float, rounds: int, n_paints: int
            ) -> tuple[str, list[str]]:
    total = PROJECTS * PER_PROJECT
    lines = [f"## Web UI: {total:,} VMs in {PROJECTS} projects (`bench/web_ui.py`)", "",
             f"{duration_s:.0f} s. Method: see the docstring of `bench/web_ui.py`: the engine "
             "as `corral up --no-local-agent` runs it, on loopback (HTTPS), its database "
             f"seeded with {total:,} VM rows; the admin logged in through the form; "
             f"{WARMUP} warm-ups, then {rounds} of each page alternating on one kept-alive "
             f"connection; Chromium loads each page {n_paints} times.", "",
             "| measure | n | p50 | p90 | p99 | max |", "|---|---|---|---|---|---|"]
    for key, label in (("dashboard", "server time, dashboard `/`"),
                       ("vms", f"server time, VM list `/vms` (page 1: 100 of {total:,})"),
                       ("vms_last", "server time, VM list `/vms?sort=-size&page=10`")):
        xs = res.server.get(key, [])
        if xs:
            lines.append(f"| {label} | {len(xs)} | {percentile(xs, 50) * 1000:.1f} ms | "
                         f"{percentile(xs, 90) * 1000:.1f} ms | "
                         f"{percentile(xs, 99) * 1000:.1f} ms | {max(xs) * 1000:.1f} ms |")
    for key, label in (("dashboard", "first contentful paint, dashboard"),
                       ("vms", "first contentful paint, VM list")):
        xs = res.paint.get(key, [])
        if xs:
            lines.append(f"| {label} | {len(xs)} | {percentile(xs, 50) * 1000:.0f} ms | "
                         f"{percentile(xs, 90) * 1000:.0f} ms | "
                         f"{percentile(xs, 99) * 1000:.0f} ms | {max(xs) * 1000:.0f} ms |")
    lines.append("")
    missed: list[str] = []
    verdicts = ["| target | figure | verdict |", "|---|---|---|"]

    def judge(name: str, shown: str | None, ok: bool) -> None:
        if shown is None:
            verdicts.append(f"| {name} | not measured | n/a |")
            return
        verdicts.append(f"| {name} | {shown} | **{'PASS' if ok else 'MISS'}** |")
        if not ok:
            missed.append(f"{name}: {shown}")

    for key, page in (("dashboard", "dashboard"), ("vms", "VM list"),
                      ("vms_last", "VM list, last page")):
        xs = res.server.get(key, [])
        p99 = percentile(xs, 99) if xs else None
        judge(f"server time p99 < 100 ms, {page}",
              f"{p99 * 1000:.1f} ms" if p99 is not None else None,
              p99 is not None and p99 < TARGET_P99_S)
    for key, page in (("dashboard", "dashboard"), ("vms", "VM list")):
        xs = res.paint.get(key, [])
        p50 = median(xs) if xs else None
        judge(f"first contentful paint (p50) < 500 ms, {page}",
              f"{p50 * 1000:.0f} ms" if p50 is not None else None,
              p50 is not None and p50 < TARGET_FCP_S)
    for state in ("running", "stopped"):
        f = res.fanout.get(state)
        if f is None:
            judge(f"SSE: {CHANGING} VMs -> {state}, every event to all {STREAMS} streams",
                  None, False)
            continue
        got = sum(f["per_stream"])
        ok = min(f["per_stream"]) == CHANGING and max(f["per_stream"]) == CHANGING
        judge(f"SSE: {CHANGING} VMs -> {state}, every event to all {STREAMS} streams",
              f"{got:,} of {CHANGING * STREAMS:,} delivered; the last "
              f"{f['last_s'] * 1000:.0f} ms after the change began; engine CPU "
              f"{f['cpu_s']:.2f} s in {f['wall_s']:.2f} s (the 100 readers': "
              f"{f['reader_cpu_s']:.2f} s)", ok)
    listing, one, page = (res.server.get("list_vms"), res.server.get("vm_page"),
                          res.server.get("vms"))
    if listing and one and page:
        lines += ["", "Where the VM list's time goes: it shows a page of 100 VMs "
                  f"({res.facts.get('VM list page', '?')}), filtered, sorted and cut by the "
                  "database (`services.vm_pages.page`: two counts, the page's rows, their "
                  f"NICs); that call, in this process (no HTTP, no page), has a median of "
                  f"{median(one) * 1000:.1f} ms, {median(one) / median(page):.0%} of the "
                  f"page's; every VM's `services.vms.list_vms` (what the unpaged list read) "
                  f"has {median(listing) * 1000:.1f} ms. The dashboard counts VMs by state "
                  "in the database (no VM rows).", ""]
    lags = res.fanout.get("lags") or []
    lines += verdicts
    if lags:
        lines += ["", f"Each event's delivery, from the engine publishing it (the event's "
                  f"`time`) to a stream reading it, over all {len(lags):,} deliveries: p50 "
                  f"{percentile(lags, 50) * 1000:.0f} ms, p99 {percentile(lags, 99) * 1000:.0f} "
                  f"ms, max {max(lags) * 1000:.0f} ms. The changes themselves are "
                  f"{CHANGING} row updates one after another (their time is most of the "
                  "\"last after\" figure above). The readers (TLS and parsing of 100 "
                  "streams in one Python process, on the same 2 CPUs) take part of the lag."]
    lines += ["", "The fan-out's engine CPU covers publishing the events, filtering them for "
              "each stream's user and writing them over TLS to the 100 connections (the "
              "streams are read in this benchmark's own process, not counted); the changes "
              "are row updates (`vm_define.set_fields`) made one after another in the "
              "engine, as the reconciler makes them.", ""]
    lines += sections.closing_lines(res.errors, res.facts)
    return "\n".join(lines), missed


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=100, help="requests of each page")
    parser.add_argument("--paints", type=int, default=20, help="browser loads of each page")


def _measure(res: Result, args: argparse.Namespace) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="corral-bench-webui-"))
    engine: Engine | None = None
    try:
        t = time.monotonic()
        made = seed(data_dir)
        res.facts["seeded"] = (f"{made['projects']} projects, {made['vms']:,} VMs in "
                               f"{time.monotonic() - t:.1f} s")
        engine = Engine(data_dir, free_port())
        ca = engine.wait_ready()
        with httpx.Client(base_url=engine.url, verify=ssl.create_default_context(cafile=ca),
                          timeout=30) as http:
            log_in(http)
            say(f"server time: {args.rounds} of each page")
            server_time(res, http, args.rounds)
            list_cost(res, data_dir)
            say(f"first contentful paint: {args.paints} of each page")
            paints(res, engine.url, args.paints)
            say(f"SSE fan-out: {STREAMS} streams, {CHANGING} VMs")
            asyncio.run(fanout(res, engine, engine.url, ca, http.cookies))
    finally:
        if engine is not None:
            engine.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def main() -> int:
    return run_bench(
        SECTION, __doc__, REPORT, options=_options, positive=["rounds", "paints"],
        result=lambda _args, facts: Result(facts=facts), body=_measure,
        section=lambda res, ran: section(res, ran.duration_s, ran.args.rounds,
                                         ran.args.paints))


if __name__ == "__main__":
    sys.exit(main())
