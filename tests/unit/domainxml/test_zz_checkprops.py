"""Every property of the domain XML model is read or written by some test of this directory
(named to run after them; conftest.py records what they touch)."""

from __future__ import annotations

from pathlib import Path

import pytest
from prop_coverage import RAN, TOUCHED

import corral.domainxml  # noqa: F401  (every model module registers its classes)
from corral.domainxml import xmlnode

DESCRIPTORS = (xmlnode.XMLProperty, xmlnode.FlagProperty, xmlnode.Child, xmlnode.Children)


def _subclasses(cls: type) -> list[type]:
    subs: list[type] = cls.__subclasses__()
    return [c for sub in subs for c in (sub, *_subclasses(sub))]


def test_every_xml_property_is_touched_by_a_test() -> None:
    others = {p.stem for p in Path(__file__).parent.glob("test_*.py")} - {Path(__file__).stem}
    if not others <= RAN:
        pytest.skip(f"run with the whole directory (not run here: {sorted(others - RAN)})")
    untouched = sorted(
        f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__name__}.{name}"
        for cls in _subclasses(xmlnode.XMLNode)
        for name, value in vars(cls).items()
        if isinstance(value, DESCRIPTORS) and id(value) not in TOUCHED
    )
    assert not untouched, f"no test reads or writes these properties: {untouched}"
