"""`python bench/image_import.py`: image import from a URL, corral against `curl -o` + `qemu-img convert`.

Writes its own section (``<!-- image-import -->``, see sections.py) of
docs/benchmarks.md, leaving the others as they are.

A 1 GiB sparse raw disk image (``truncate`` + ``mke2fs -t ext4`` + 64 MiB of random data at
256 MiB: a disk that is mostly holes, with a file system and some data) is served by
corral.lab.fileserver (``sendfile``) on the loopback of a lab host of its own ("imbench",
index 61: a network + mount namespace with its own libvirtd, see corral.lab) where
``corral up`` runs. Then, ``--runs`` times, interleaved, the order alternating, one warm-up
pair not counted:

- corral: ``Client.import_image(ImageImport(source=URL, format="raw"))`` until the operation
  succeeded (SDK over HTTPS from the machine's namespace; the agent downloads with httpx
  into the image store, computing the SHA-256, then ``qemu-img convert -p`` to qcow2);
- raw: inside the same lab host, ``curl -sS --fail -o FILE URL`` then ``qemu-img convert -f
  raw -O qcow2 FILE OUT``, into the same file system.

Each image/file is removed right after its run (untimed). Page caches are not dropped (the
machine is shared); both sides read the same cached source. Traffic stays on the lab host's
127.0.0.1 and its address. Needs root, curl, qemu-img.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import outcome
import sections
from benchnode import BenchNode
from corral.api import ImageImport
from corral.lab import LabHost
from timing import median, say

REPO = Path(__file__).resolve().parents[1]
REPORT = REPO / "docs" / "benchmarks.md"
LAB_NAME, LAB_INDEX = "imbench", 61
SIZE = 1 << 30
DATA_AT, DATA_SIZE = 256 << 20, 64 << 20
RATIO_TARGET = 1.10


class BenchError(Exception):
    pass


@dataclass
class Result:
    started: str = ""
    corral_s: list[float] = field(default_factory=list)
    curl_s: list[float] = field(default_factory=list)
    convert_s: list[float] = field(default_factory=list)
    corral_sum_s: list[float] = field(default_factory=list)  # with --checksum
    raw_sum_s: list[float] = field(default_factory=list)  # curl + sha256sum + convert
    sha256sum_s: list[float] = field(default_factory=list)
    order: list[str] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)
    checks: list[str] = field(default_factory=list)
    error: str | None = None
    duration_s: float = 0.0

    @property
    def raw_s(self) -> list[float]:
        return [a + b for a, b in zip(self.curl_s, self.convert_s, strict=True)]


def make_source(path: Path) -> None:
    path.unlink(missing_ok=True)
    with path.open("wb") as f:
        f.truncate(SIZE)
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", str(path)], check=True, timeout=120)
    with path.open("r+b") as f:
        f.seek(DATA_AT)
        left = DATA_SIZE
        while left:
            chunk = os.urandom(min(left, 4 << 20))
            f.write(chunk)
            left -= len(chunk)


def start_server(host: LabHost, root: Path) -> tuple[subprocess.Popen[str], int]:
    proc = host.popen([sys.executable, "-m", "corral.lab.fileserver", str(root)],
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    if not ready:
        proc.kill()
        raise BenchError("the file server in the lab host did not start in 30 s")
    return proc, int(proc.stdout.readline())


def run_corral(node: BenchNode, url: str, name: str, checksum: str | None = None) -> float:
    with node.client(timeout=120) as c:
        t0 = time.perf_counter()
        op = c.import_image(ImageImport(name=name, source=url, format="raw", checksum=checksum))
        c.wait(op.id, timeout=900)
        elapsed = time.perf_counter() - t0
    return elapsed


def delete_image(node: BenchNode, name: str) -> None:
    with node.client(timeout=120) as c:
        c.wait(c.delete_image(name).id, timeout=300)


def run_raw(host: LabHost, url: str, work: Path, sha256: str | None = None
            ) -> tuple[float, float, float]:
    """(curl, sha256sum, convert) seconds; sha256sum only when a digest is to be checked."""
    dl, out = work / "curl.raw", work / "curl.qcow2"
    t0 = time.perf_counter()
    host.run(["curl", "-sS", "--fail", "-o", str(dl), url], timeout=900)
    t1 = time.perf_counter()
    if sha256 is not None:
        got = host.run(["sha256sum", str(dl)], timeout=900).stdout.split()[0]
        if got != sha256:
            raise BenchError(f"sha256sum of the download: {got}, expected {sha256}")
    t2 = time.perf_counter()
    host.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(dl), str(out)], timeout=900)
    t3 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2


def same_image(a: Path, b: Path) -> bool:
    return subprocess.run(["qemu-img", "compare", "-q", str(a), str(b)], check=False,
                          timeout=300).returncode == 0


def measure(res: Result, node: BenchNode, url: str, source: Path, work: Path, runs: int) -> None:
    images = node.data_dir / "agent" / "storage" / "images"
    digest = subprocess.run(["sha256sum", str(source)], capture_output=True, text=True,
                            check=True).stdout.split()[0]
    for i in range(runs + 1):  # round 0: warm-up
        order = ("corral", "raw") if i % 2 == 0 else ("raw", "corral")
        said = []
        for checked in (False, True):
            for side in order:
                if side == "corral":
                    name = f"bi-{i}-{int(checked)}"
                    t = run_corral(node, url, name, f"sha256:{digest}" if checked else None)
                    if i == 1 and not checked:
                        ok = same_image(source, images / f"{name}.qcow2")
                        res.checks.append(f"corral's image equals the source (qemu-img compare): {ok}")
                    delete_image(node, name)
                    said.append(f"corral{' --checksum' if checked else ''} {t:.2f} s")
                    if i:
                        (res.corral_sum_s if checked else res.corral_s).append(t)
                else:
                    curl_s, sum_s, convert_s = run_raw(node.host, url, work,
                                                       digest if checked else None)
                    if i == 1 and not checked:
                        ok = same_image(source, work / "curl.qcow2")
                        res.checks.append(f"the raw tools' image equals the source: {ok}")
                    for f in ("curl.raw", "curl.qcow2"):
                        (work / f).unlink(missing_ok=True)
                    said.append(f"curl {curl_s:.2f} s" + (f" + sha256sum {sum_s:.2f} s" if checked
                                                         else "") + f" + convert {convert_s:.2f} s")
                    if i and checked:
                        res.raw_sum_s.append(curl_s + sum_s + convert_s)
                        res.sha256sum_s.append(sum_s)
                    elif i:
                        res.curl_s.append(curl_s)
                        res.convert_s.append(convert_s)
        if i:
            res.order.append("/".join(order))
        say(f"round {i}{' (warm-up)' if not i else ''}: " + "; ".join(said))


def missed(res: Result) -> list[str]:
    """The target missed, if it was: the ratio of medians corral / raw above RATIO_TARGET."""
    if not (res.corral_s and res.raw_s):
        return []
    ratio = median(res.corral_s) / median(res.raw_s)
    return [] if ratio <= RATIO_TARGET else [
        f"image import ratio corral / raw {ratio:.2f} > {RATIO_TARGET:.2f}"]


def _stats(xs: list[float]) -> str:
    return f"{median(xs):.2f} s | {min(xs):.2f} s | {max(xs):.2f} s"


def section(res: Result) -> str:
    lines = ["## Image import: 1 GiB sparse raw image from a URL (bench/image_import.py)", ""]
    lines.append(f"Written by `bench/image_import.py` on {res.started}; the run took "
                 f"{res.duration_s / 60:.1f} min.")
    lines.append("")
    if res.error:
        lines += sections.error_lines("**The run did not finish:**", res.error)
    lines += ["| Measure | Result | Target | Verdict |", "| --- | --- | --- | --- |"]
    if res.corral_s and res.raw_s:
        c, r = median(res.corral_s), median(res.raw_s)
        ratio = c / r
        paired = median([a / b for a, b in zip(res.corral_s, res.raw_s, strict=True)])
        verdict = "**MISS**" if missed(res) else "**PASS**"
        lines.append(
            f"| import of a 1 GiB sparse raw image over HTTP (loopback) to qcow2: corral vs "
            f"`curl -o` + `qemu-img convert` ({len(res.corral_s)} + {len(res.raw_s)} runs) | "
            f"ratio of medians {ratio:.2f} (corral {c:.2f} s = {SIZE / c / (1 << 20):.0f} MiB/s, "
            f"raw {r:.2f} s = {SIZE / r / (1 << 20):.0f} MiB/s; median of the per-round ratios "
            f"{paired:.2f}) | ratio <= {RATIO_TARGET:.2f} | {verdict} |")
    else:
        lines.append(f"| image import vs `curl -o` + `qemu-img convert` | not measured | "
                     f"ratio <= {RATIO_TARGET:.2f} | n/a |")
    if res.corral_sum_s and res.raw_sum_s:
        cs, rs = median(res.corral_sum_s), median(res.raw_sum_s)
        lines.append(
            f"| the same with a SHA-256 checksum verified: corral `--checksum` vs curl + "
            f"`sha256sum` + `qemu-img convert` | ratio of medians {cs / rs:.2f} (corral "
            f"{cs:.2f} s, raw {rs:.2f} s) | (informational) | info |")
    lines += ["", "|  | n | median | min | max |", "| --- | --- | --- | --- | --- |"]
    if res.corral_s:
        lines.append(f"| corral: `import_image` until the operation succeeded | "
                     f"{len(res.corral_s)} | {_stats(res.corral_s)} |")
        lines.append(f"| raw: curl + qemu-img convert | {len(res.raw_s)} | {_stats(res.raw_s)} |")
        lines.append(f"| raw: `curl -o` alone | {len(res.curl_s)} | {_stats(res.curl_s)} |")
        lines.append(f"| raw: `qemu-img convert` alone | {len(res.convert_s)} | "
                     f"{_stats(res.convert_s)} |")
    if res.corral_sum_s and res.raw_sum_s:
        lines.append(f"| corral with `--checksum sha256:...` (verified as it streams) | "
                     f"{len(res.corral_sum_s)} | {_stats(res.corral_sum_s)} |")
        lines.append(f"| raw: curl + `sha256sum` + qemu-img convert | {len(res.raw_sum_s)} | "
                     f"{_stats(res.raw_sum_s)} |")
        lines.append(f"| raw: `sha256sum` alone | {len(res.sha256sum_s)} | "
                     f"{_stats(res.sha256sum_s)} |")
        lines += ["", "Samples corral (s, in order): "
                  + ", ".join(f"{x:.2f}" for x in res.corral_s),
                  "", "Samples raw (s, in order): " + ", ".join(f"{x:.2f}" for x in res.raw_s),
                  "", "Samples corral --checksum (s, in order): "
                  + ", ".join(f"{x:.2f}" for x in res.corral_sum_s),
                  "", "Samples raw with sha256sum (s, in order): "
                  + ", ".join(f"{x:.2f}" for x in res.raw_sum_s),
                  "", "Order of each round: " + ", ".join(res.order)]
    lines += ["", "How: a 1 GiB raw file made with `truncate`, `mke2fs -t ext4` and 64 MiB of "
              "random data at 256 MiB, served by `corral.lab.fileserver` (sendfile) on the "
              f"loopback of lab host {LAB_NAME} (index {LAB_INDEX}), where `corral up` runs. "
              "corral: SDK `import_image(format=raw)` until the operation succeeded; the "
              "agent streams the body with httpx into the image store (1 MiB reads, runs of "
              "zeros left as holes, progress in the operation), "
              "then `qemu-img convert -p` to qcow2. raw: in the lab host, `curl -sS --fail -o` "
              "then `qemu-img convert -f raw -O qcow2`, into the same file system. Rounds "
              "interleaved, order alternating, one warm-up round not counted; each image and "
              "file removed after its run; page caches not dropped (shared machine). Where "
              "corral gains: its download leaves runs of zeros as holes instead of writing them "
              "(curl writes every byte), so less is written and `qemu-img convert` skips the "
              "holes. The SHA-256 is computed only when a checksum is given, in a thread of "
              "its own that overlaps the transfer (the informational row: against curl, then "
              "`sha256sum`, then convert).", ""]
    for check in res.checks:
        lines.append(f"- {check}")
    for k, v in res.facts.items():
        lines.append(f"- {k}: {v}")
    return "\n".join(lines) + "\n"


def facts() -> dict[str, str]:
    model = next((ln.split(":", 1)[1].strip() for ln in
                  Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")),
                 "?")
    qemu_img = subprocess.run(["qemu-img", "--version"], capture_output=True, text=True,
                              check=False).stdout.splitlines()[:1]
    curl = subprocess.run(["curl", "--version"], capture_output=True, text=True,
                          check=False).stdout.split()[:2]
    return {
        "CPUs": f"{os.cpu_count()} ({model})",
        "kernel": platform.release(),
        "qemu-img": qemu_img[0] if qemu_img else "?",
        "curl": " ".join(curl) or "?",
        "Python": platform.python_version(),
        "load average (1/5/15 min) at start": " / ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def _sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(143)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--root", type=Path, default=Path("/tmp/corral-bench-image"))
    p.add_argument("--runs", type=int, default=5, help="measured rounds (corral + raw each)")
    p.add_argument("--report", type=Path, default=REPORT)
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/image_import.py needs root (namespaces, libvirtd)", file=sys.stderr)
        return 2
    if args.runs < 1:
        p.error("--runs must be >= 1")
    for tool in ("curl", "qemu-img", "mke2fs"):
        if shutil.which(tool) is None:
            print(f"bench/image_import.py needs {tool} (scripts/install-deps.sh)", file=sys.stderr)
            return 2
    signal.signal(signal.SIGTERM, _sigterm)
    root: Path = args.root.absolute()
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    measured = sections.Measured.now()
    res = Result(started=f"{measured.started:%Y-%m-%d %H:%M} UTC", facts=facts())
    t_start = time.monotonic()
    host = LabHost(LAB_NAME, LAB_INDEX, root / "host")
    node: BenchNode | None = None
    server: subprocess.Popen[str] | None = None
    try:
        if Path(f"/run/netns/corral-{LAB_NAME}").exists() or (root / "host/run/holder.pid").exists():
            say(f"lab host {LAB_NAME} left by an earlier run: stopping it first")
            host.stop()
        host.start()
        node = BenchNode(root, host)
        shutil.rmtree(node.data_dir, ignore_errors=True)
        served, work = root / "served", root / "raw"
        for d in (served, work):
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir()
        say("making the 1 GiB sparse raw source")
        make_source(served / "disk.raw")
        say("corral up in the lab host")
        node.up()
        server, port = start_server(host, served)
        url = f"http://127.0.0.1:{port}/disk.raw"
        measure(res, node, url, served / "disk.raw", work, args.runs)
    except (Exception, KeyboardInterrupt, SystemExit) as exc:
        res.error = f"{type(exc).__name__}: {exc}"
        say(f"benchmark failed: {res.error}")
    finally:
        if server is not None:
            server.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(10)
        if node is not None:
            node.down()
        with contextlib.suppress(Exception):
            host.stop()
        shutil.rmtree(root / "raw", ignore_errors=True)
        shutil.rmtree(root / "served", ignore_errors=True)
        res.facts["load average (1/5/15 min) at the end"] = " / ".join(
            f"{x:.2f}" for x in os.getloadavg())
        res.duration_s = time.monotonic() - t_start
    text = section(res)
    sections.write_section(args.report, "image-import", text, measured)
    print(text)
    return outcome.finish(res.error, missed(res))


if __name__ == "__main__":
    sys.exit(main())
