"""Records which properties of corral.domainxml the tests of this directory touch, for
test_zz_checkprops.py (virt-manager's tests/test_checkprops.py does the same for virtinst):
a property no test reads or writes is XML that nothing checks against libvirt."""

from __future__ import annotations

from typing import Any

from corral.domainxml import xmlnode

TOUCHED: set[int] = set()  # id() of each descriptor read or written through an instance
RAN: set[str] = set()  # test modules of this directory that ran


def _tracked(cls: type, name: str) -> None:
    original = cls.__dict__[name]

    def wrapper(self: Any, obj: Any, *args: Any) -> Any:
        if obj is not None:
            TOUCHED.add(id(self))
        return original(self, obj, *args)

    setattr(cls, name, wrapper)


for _cls in (xmlnode.XMLProperty, xmlnode.FlagProperty, xmlnode.Child, xmlnode.Children):
    for _name in ("__get__", "__set__"):
        if _name in _cls.__dict__:
            _tracked(_cls, _name)
