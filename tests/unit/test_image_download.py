"""The agent's downloader against a real HTTP server on 127.0.0.1 (corral.lab.fileserver)."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.agent import download as downloader
from corral.errors import HostError, InsufficientResources, InvalidInput, NotFound
from corral.lab.fileserver import FileServer, serving
from corral.safeurls import UrlPolicy

SIZE = 3 << 20
LOOPBACK = UrlPolicy.build(["127.0.0.0/8"])  # the test server's: refused by default


def download(url: str, dest: Path, **kw: Any) -> downloader.Downloaded:
    return downloader.download(url, dest, guard=LOOPBACK, **kw)


@pytest.fixture()
def files(tmp_path: Path) -> Path:
    d = tmp_path / "srv"
    d.mkdir()
    data = os.urandom(1 << 20) + bytes(1 << 20) + os.urandom(1 << 20)  # a hole in the middle
    (d / "disk.raw").write_bytes(data)
    (d / "zeros.raw").write_bytes(bytes(8 << 20))
    return d


@pytest.fixture()
def server(files: Path) -> Iterator[FileServer]:
    with serving(files) as srv:
        yield srv


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_streams_the_whole_file_with_its_sha256(server: FileServer, files: Path,
                                                         tmp_path: Path) -> None:
    dest = tmp_path / "out"
    seen: list[tuple[int, int | None]] = []
    got = download(server.url("disk.raw"), dest, progress=lambda n, t, _m: seen.append((n, t)),
                   sha256=True)
    assert dest.read_bytes() == (files / "disk.raw").read_bytes()
    assert got.size == SIZE and got.sha256 == _sha(files / "disk.raw")
    assert got.resumes == 0 and got.restarts == 0
    assert all(t == SIZE for _, t in seen)


def test_zero_runs_are_left_as_holes(server: FileServer, files: Path, tmp_path: Path) -> None:
    dest = tmp_path / "zeros"
    got = download(server.url("zeros.raw"), dest)
    assert got.sha256 is None  # not asked for: not computed
    assert got.size == dest.stat().st_size == 8 << 20
    assert dest.stat().st_blocks * 512 < 1 << 20  # sparse: almost nothing allocated
    assert dest.read_bytes() == bytes(8 << 20)


def test_dropped_connection_resumes_with_range(server: FileServer, files: Path,
                                               tmp_path: Path) -> None:
    dest = tmp_path / "out"
    got = download(server.url("disk.raw", "drop=1500000"), dest, backoff=0.01, sha256=True)
    assert dest.read_bytes() == (files / "disk.raw").read_bytes()
    assert got.sha256 == _sha(files / "disk.raw")
    assert got.resumes == 1 and got.restarts == 0
    ranges = [r for _m, _p, r in server.requests]
    assert ranges[0] is None and ranges[1] is not None and ranges[1].startswith("bytes=")
    assert int(ranges[1].removeprefix("bytes=").rstrip("-")) >= 1 << 20  # resumed, not restarted


def test_server_without_range_makes_it_start_over(server: FileServer, files: Path,
                                                  tmp_path: Path) -> None:
    dest = tmp_path / "out"
    got = download(server.url("disk.raw", "drop=1500000&norange=1"), dest, backoff=0.01,
                   expected_sha256=_sha(files / "disk.raw"))
    assert got.restarts == 1 and got.sha256 == _sha(files / "disk.raw")
    assert dest.read_bytes() == (files / "disk.raw").read_bytes()


def test_truncated_download_fails_and_leaves_no_file(server: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    with pytest.raises(HostError, match=r"incomplete after 3 attempts \(2000000 of 3145728 bytes\)"):
        download(server.url("disk.raw", "truncate=2000000"), dest, retries=2, backoff=0.01)
    assert not dest.exists()


def test_404_is_not_found(server: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    with pytest.raises(NotFound, match="404 Not Found"):
        download(server.url("missing.raw"), dest)
    assert not dest.exists()


def test_unreachable_host_fails_soon(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dest = tmp_path / "out"
    with pytest.raises(HostError, match=r"cannot reach .*connection refused"):
        download(f"http://127.0.0.1:{port}/x.raw", dest, backoff=0.01)
    assert not dest.exists()


def test_wrong_checksum_is_refused(server: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    with pytest.raises(InvalidInput, match="checksum mismatch") as exc:
        download(server.url("disk.raw"), dest, expected_sha256="0" * 64)
    assert exc.value.field == "checksum"
    assert not dest.exists()


def test_larger_than_free_space_is_refused_before_writing(server: FileServer,
                                                          tmp_path: Path) -> None:
    dest = tmp_path / "out"
    with pytest.raises(InsufficientResources, match="more than the free space"):
        download(server.url("disk.raw", f"length={1 << 50}"), dest,
                 free_bytes=lambda: shutil.disk_usage(tmp_path).free)
    assert not dest.exists()
    with pytest.raises(InsufficientResources):
        download(server.url("disk.raw"), dest, free_bytes=lambda: 66 << 20)
    assert not dest.exists()


def test_slow_server_reports_progress(server: FileServer, files: Path, tmp_path: Path) -> None:
    seen: list[int] = []
    download(server.url("disk.raw", f"rate={4 << 20}"), tmp_path / "out",
             progress=lambda n, _t, _m: seen.append(n))
    assert len(seen) >= 2 and seen == sorted(seen) and 0 < seen[0] < SIZE


def test_download_reads_stay_below_the_agents_mmap_threshold() -> None:
    """A read buffer at or above the agent's fixed mmap threshold is mapped and unmapped for
    every chunk: 3x slower downloads (see corral.agent.download)."""
    from corral.agent import download as dl
    from corral.agent.__main__ import M_MMAP_THRESHOLD, MALLOC_TUNING

    threshold = next(value for param, value, _ in MALLOC_TUNING if param == M_MMAP_THRESHOLD)
    assert threshold > dl._READ_SIZE + 4096  # the buffer plus its object header
