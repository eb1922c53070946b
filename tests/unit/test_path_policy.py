"""corral.safepaths: what a user may name for corral to read, write, or make a pool of."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from qemu_reach import let_qemu_reach

from corral import safepaths
from corral.agent.pools import PoolSpec, host_registry
from corral.errors import Conflict, InvalidInput
from corral.safepaths import PathPolicy


@pytest.fixture()
def layout(tmp_path: Path) -> dict[str, Path]:
    """A node's data dir (engine DB, agent state and storage) and an admin's import dir."""
    data = tmp_path / "corral"
    storage = data / "agent" / "storage"
    for d in (data / "import", storage / "images", tmp_path / "srv" / "images"):
        d.mkdir(parents=True)
    (data / "corral.db").write_bytes(b"SQLite format 3\x00 the agent token")
    return {"data": data, "storage": storage, "import": data / "import",
            "srv": tmp_path / "srv" / "images", "tmp": tmp_path}


def _policy(layout: dict[str, Path], *extra: Path) -> PathPolicy:
    return PathPolicy(import_dirs=(layout["import"], *extra), protected=(layout["data"],),
                      pools=(layout["storage"],), pool_homes=(layout["storage"] / "pools",))


def test_reads_only_from_import_dirs(layout: dict[str, Path]) -> None:
    policy = _policy(layout, layout["srv"])
    ok = layout["import"] / "disk.raw"
    ok.write_bytes(b"x")
    assert policy.check_read(ok, "source") == ok
    (layout["srv"] / "d.qcow2").write_bytes(b"x")
    assert policy.check_read(layout["srv"] / "d.qcow2", "source") == layout["srv"] / "d.qcow2"
    with pytest.raises(InvalidInput, match="not in an import directory") as exc:
        policy.check_read(layout["tmp"] / "elsewhere.raw", "source")
    assert exc.value.field == "source"
    with pytest.raises(InvalidInput, match="must be an absolute path"):
        policy.check_read("relative.raw", "source")


def test_corral_data_is_never_a_source_even_below_an_import_dir(layout: dict[str, Path]) -> None:
    policy = _policy(layout, layout["tmp"])  # the admin added a dir that holds the data dir
    db = layout["data"] / "corral.db"
    with pytest.raises(InvalidInput, match="corral's own data"):
        policy.check_read(db, "source")
    with pytest.raises(InvalidInput, match="corral's own data"):  # a storage pool's volume
        policy.check_read(layout["storage"] / "images" / "x.qcow2", "file")
    # DATA_DIR/import is in the data dir, but deeper: its files are sources
    (layout["import"] / "ok.raw").write_bytes(b"x")
    policy.check_read(layout["import"] / "ok.raw", "source")
    # an import dir that is the data dir itself does not open it up (a tie is a refusal)
    with pytest.raises(InvalidInput, match="corral's own data"):
        _policy(layout, layout["data"]).check_read(db, "source")


def test_symlinks_are_judged_where_they_lead(layout: dict[str, Path]) -> None:
    policy = _policy(layout)
    (layout["import"] / "passwd.raw").symlink_to("/etc/passwd")
    with pytest.raises(InvalidInput, match=r"resolves to /etc/passwd\) is in /etc, a system"):
        policy.check_read(layout["import"] / "passwd.raw", "source")
    (layout["import"] / "db.raw").symlink_to(layout["data"] / "corral.db")
    with pytest.raises(InvalidInput, match=r"corral.db\) is not in an import directory"):
        policy.check_read(layout["import"] / "db.raw", "source")
    (layout["import"] / "etc").symlink_to("/etc")
    with pytest.raises(InvalidInput, match="system directory"):
        policy.check_read(layout["import"] / "etc" / "hostname", "source")
    for system in ("/proc/self/environ", "/sys/kernel/notes", "/dev/sda", "/etc/shadow"):
        with pytest.raises(InvalidInput, match="system directory corral never reads from"):
            PathPolicy(import_dirs=(Path("/"),)).check_read(system, "source")


def test_opened_reads_the_checked_file_and_refuses_a_swap(layout: dict[str, Path],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    policy = _policy(layout)
    good = layout["import"] / "disk.raw"
    good.write_bytes(b"the image")
    with policy.opened(good, "source") as pinned:
        assert str(pinned).startswith(f"/proc/{os.getpid()}/fd/")
        assert pinned.read_bytes() == b"the image"
        good.unlink()  # renamed or replaced meanwhile: the open file is still what is read
        good.symlink_to(layout["data"] / "corral.db")
        assert pinned.read_bytes() == b"the image"
    # A symlink put in after the check (the check saw a plain file): O_NOFOLLOW refuses it.
    monkeypatch.setattr(PathPolicy, "check_read", lambda self, p, f: Path(p))
    with pytest.raises(InvalidInput, match="not a readable file"), policy.opened(good, "source"):
        pytest.fail("opened through a symlink")
    fifo = layout["import"] / "pipe.raw"
    os.mkfifo(fifo)
    # no wait for a writer
    with pytest.raises(InvalidInput, match="not a regular file"), policy.opened(fifo, "source"):
        pytest.fail("opened a FIFO")


def test_errors_about_the_open_file_name_the_users_path(layout: dict[str, Path]) -> None:
    good = layout["import"] / "disk.raw"
    good.write_bytes(b"x")
    with pytest.raises(InvalidInput, match=f"^cannot read {re.escape(str(good))}$"), \
            _policy(layout).opened(good, "source") as pinned:
        raise InvalidInput(f"cannot read {pinned}", field="source")


def test_writes_refuse_system_and_corral_dirs(layout: dict[str, Path]) -> None:
    policy = _policy(layout)
    assert policy.check_write(layout["tmp"] / "vm.ova", "file") == layout["tmp"] / "vm.ova"
    for bad in ("/proc/x.ova", "/sys/x.ova", "/dev/x.ova", "/etc/x.ova", "/usr/bin/x.ova",
                "/var/lib/libvirt/images/x.ova", str(layout["data"] / "x.ova"),
                str(layout["storage"] / "images" / "x.ova")):
        with pytest.raises(InvalidInput, match="corral does not write files there") as exc:
            policy.check_write(bad, "file")
        assert exc.value.field == "file"
    (layout["tmp"] / "out").symlink_to("/etc")
    with pytest.raises(InvalidInput, match=r"resolves to /etc/x.ova\)"):
        policy.check_write(layout["tmp"] / "out" / "x.ova", "file")


def test_pool_directories(layout: dict[str, Path]) -> None:
    policy = _policy(layout)
    home = layout["storage"] / "pools"
    assert policy.check_pool(home / "p1") == home / "p1"  # the default place of dir pools
    assert policy.check_pool(layout["tmp"] / "vmdata") == layout["tmp"] / "vmdata"
    for bad, words in [("/", "system directory"), ("/etc/corral", "system directory"),
                       ("/proc/pool", "system directory"), ("/usr/local/pool", "system"),
                       ("/var/lib", "system directory"), (str(layout["data"]), "keeps"),
                       (str(layout["data"] / "tls"), "keeps for itself"),
                       (str(layout["tmp"]), "holds"), (str(home), "keeps for itself")]:
        with pytest.raises(InvalidInput, match=words) as exc:
            policy.check_pool(bad)
        assert exc.value.field == "path"
    other = PathPolicy(pools=(layout["tmp"] / "vmdata",))
    for nested in (layout["tmp"] / "vmdata" / "inner", layout["tmp"]):
        with pytest.raises(Conflict, match="pools do not nest"):
            other.check_pool(nested)


def test_the_agent_refuses_such_pools_too(layout: dict[str, Path]) -> None:
    tmp = layout["tmp"]
    let_qemu_reach(tmp)  # QEMU's user must reach volumes; the dir pools check it
    state = layout["data"] / "agent"
    (state / "token").write_text("secret\n")
    pools = host_registry(state, layout["storage"])
    pools.ensure(PoolSpec(name="default", type="dir", path=str(layout["storage"])))
    for path, error in [("/etc/corral-pool", InvalidInput), (str(state / "pools"), InvalidInput),
                        (str(state), InvalidInput)]:
        with pytest.raises(error):
            pools.check(PoolSpec(name="p", type="dir", path=path))
        with pytest.raises(error):
            pools.ensure(PoolSpec(name="p", type="dir", path=path))
    assert not Path("/etc/corral-pool").exists()
    with pytest.raises(InvalidInput, match="ceph_conf"):
        pools.check(PoolSpec(name="c", type="rbd", ceph_pool="rbd",
                             ceph_conf=str(state / "token")))
    pools.ensure(PoolSpec(name="p", type="dir", path=str(layout["storage"] / "pools" / "p")))
    with pytest.raises(Conflict, match="pools do not nest"):
        pools.check(PoolSpec(name="q", type="dir",
                             path=str(layout["storage"] / "pools" / "p" / "q")))


def test_the_lists_are_absolute_and_cover_the_reported_dirs() -> None:
    for d in ("/etc", "/proc", "/sys", "/dev"):
        assert d in safepaths.READ_DENIED and d in safepaths.WRITE_DENIED
    assert all(p.startswith("/") for p in (*safepaths.WRITE_DENIED, *safepaths.POOL_DENIED_EXACT))
