"""How large a request body the engine takes (the middleware: corral.httpserve.BodyLimit).

Settings are small: 1 MiB is far more than any create, patch or login needs, and a larger
body is refused (413, ``error.field`` "body") before it is read whole and parsed. Routes that
carry data rather than settings take more: files injected into a guest (up to 1 MiB raw, as
base64 in JSON) and a program's stdin (up to 1 MiB of text, JSON-escaped). Routes that stream
their body and bound it themselves (image file copies) would be listed with ``None``; the
engine has none today (images are imported from a URL or a host path, not uploaded).
"""

from __future__ import annotations

import re

from corral.httpserve import BODY_MAX, RouteLimit

DEFAULT = 1 << 20  # bytes: settings, names, cloud-init (2 x 256 KiB at most) with room left

_SEGMENT = "[^/]+"
ROUTES: tuple[RouteLimit, ...] = (
    ("POST", re.compile(f"/api/v1/(images|vms)/{_SEGMENT}/customize"), BODY_MAX),
    ("POST", re.compile(f"/api/v1/vms/{_SEGMENT}/exec"), BODY_MAX),
)
