"""Storage fencing of RBD images: ``POST /v1/pools/{pool}/volumes/{volume}/fence`` and
``POST /v1/pools/{pool}/roots/{vm}/fence`` (corral.agent.pools.rbd_fence)."""

from __future__ import annotations

from pydantic import Field

from corral.agent_api import Answer, Body

# A blocklist entry names one client instance (address and nonce): a QEMU started later,
# on any host, is a new instance and is never refused by it. So a long expiry costs nothing,
# while a short one would let a fenced QEMU that still lives (on a host cut off for longer,
# whose self-fencing failed) write again once its entry expires; a week covers a host left
# cut off over a weekend. Ceph's own default (1 h) is too short for that.
DEFAULT_EXPIRE_S = 7 * 24 * 3600
MOST_EXPIRE_S = 365 * 24 * 3600


class FenceBody(Body):
    """Blocklist every Ceph client that has the image open (watches it or holds its lock)."""

    expire_s: int = Field(default=DEFAULT_EXPIRE_S, ge=60, le=MOST_EXPIRE_S)


class Fenced(Answer):
    """The image (``CEPH_POOL/IMAGE``) and the client addresses now blocklisted (empty:
    no client had it open)."""

    image: str
    addresses: list[str]
    expire_s: int
