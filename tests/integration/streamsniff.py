"""What crosses a lab host's interfaces to QEMU's migration ports, read as raw frames (an
AF_PACKET socket in the lab host's namespace: no tcpdump needed): the first bytes of each
connection's first payload, and whether QEMU's stream magic ``QEVM`` showed in the clear.

A plain QEMU migration stream starts with ``QEVM``; one under TLS starts with a TLS record
(0x16 0x03: a handshake), and nothing of the stream is readable after it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from corral.lab.host import LabHost

# QEMU's incoming migration ports as libvirt hands them out (qemu.conf migration_port_min/max)
PORTS = (49152, 49215)
TLS_HANDSHAKE = "1603"

_SNIFFER = r"""
import json, signal, socket, struct, sys
iface, out, low, high = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
if iface != "any":
    s.bind((iface, 0))
s.settimeout(0.5)
flows, magic, stop = {}, False, []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
def dump():
    with open(out + ".tmp", "w") as f:
        json.dump({"flows": flows, "qevm": magic}, f)
    import os; os.replace(out + ".tmp", out)
dump()  # ready
while not stop:
    try:
        frame = s.recv(262144)
    except socket.timeout:
        continue
    except InterruptedError:
        continue
    if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
        continue
    ihl = (frame[14] & 0x0F) * 4
    tcp = 14 + ihl
    sport, dport = struct.unpack("!HH", frame[tcp:tcp + 4])
    if not (low <= dport <= high):
        continue
    payload = frame[tcp + (frame[tcp + 12] >> 4) * 4:]
    total = struct.unpack("!H", frame[16:18])[0]  # the IP length: no Ethernet padding
    payload = payload[:max(0, total - ihl - (frame[tcp + 12] >> 4) * 4)]
    if not payload:
        continue
    key = f"{sport}>{dport}"
    if key not in flows:
        flows[key] = {"first": payload[:16].hex(), "bytes": 0}
    flows[key]["bytes"] += len(payload)
    magic = magic or b"QEVM" in payload
dump()
"""


@dataclass
class Seen:
    flows: dict[str, dict[str, object]]  # "SPORT>DPORT": first payload bytes (hex), bytes
    qevm: bool  # QEMU's stream magic crossed in the clear

    def firsts(self) -> list[str]:
        return [str(f["first"]) for f in self.flows.values()]


@contextmanager
def sniffing(host: LabHost, out: Path, iface: str = "any") -> Iterator[list[Seen]]:
    """Sniff ``host``'s ``iface`` (``any``: all of its interfaces; lab hosts reach each other
    over the router's link, not lab0) while the block runs; the list holds what was seen
    once the block ended (the sniffer stopped, even when the block failed)."""
    out.unlink(missing_ok=True)
    proc = host.popen([sys.executable, "-c", _SNIFFER, iface, str(out), str(PORTS[0]),
                       str(PORTS[1])], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen: list[Seen] = []
    try:
        deadline = time.monotonic() + 30
        while not out.exists():  # it writes an empty record once it listens
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"sniffer did not start: {proc.stderr.read() if proc.stderr else ''}")
            time.sleep(0.1)
        yield seen
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    data = json.loads(out.read_text())
    seen.append(Seen(flows=data["flows"], qevm=bool(data["qevm"])))
