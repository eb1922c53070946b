"""corral's Python SDK.

    from corral.client import Client
    with Client.from_config() as c:
        op = c.create_vm(VmCreate(name="web", image="tiny", start=True))
        c.wait(op.id)

Errors are the ones of :mod:`corral.errors`, rebuilt from the API's error body.
"""

from corral.client._client import Client

__all__ = ["Client"]
