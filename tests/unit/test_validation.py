"""Names and sizes are checked before they reach a path, an interface name or XML."""

from __future__ import annotations

import pytest

from corral.errors import InvalidInput
from corral.validation import parse_size, validate_name


@pytest.mark.parametrize("name", ["a", "demo", "web-1", "db_2", "A9", "x" * 63])
def test_good_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "x" * 64, "../x", "a/b", "with space", "é", "-lead", "_lead", "a.b", "x\n", None, 5]
)
def test_bad_names_name_the_field(name: object) -> None:
    with pytest.raises(InvalidInput) as exc:
        validate_name(name, "vm")
    assert exc.value.field == "vm"
    assert exc.value.status == 422


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [("512M", "M", 512 << 20), ("2G", "M", 2 << 30), ("1024", "M", 1 << 30), (256, "M", 256 << 20),
     ("10G", "G", 10 << 30), ("64KiB", "M", 64 << 10), ("1T", "M", 1 << 40)],
)
def test_sizes(value: object, unit: str, expected: int) -> None:
    assert parse_size(value, "memory", unit) == expected


@pytest.mark.parametrize("value", ["0", 0, "-1", -1, "1X", "", "1.5G", True, None, "1 2M"])
def test_bad_sizes(value: object) -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_size(value, "memory")
    assert exc.value.field == "memory"
