"""The engine's own password hasher: argon2id with argon2-cffi's defaults (RFC 9106's second
choice), also for the stand-in hash an unknown user's login is checked against. The other
unit tests hash at the lowest cost (conftest.py's real_password_hasher)."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher, Type

from corral.engine.services import passwords

PASSWORD = "correct horse battery"
RFC_9106_LOW_MEMORY = "$argon2id$v=19$m=65536,t=3,p=4$"  # 3 passes over 64 MiB, 4 lanes


def test_the_engine_hashes_with_argon2id_at_rfc_9106_cost(
        real_password_hasher: tuple[PasswordHasher, str], monkeypatch: pytest.MonkeyPatch) -> None:
    hasher, dummy = real_password_hasher
    assert hasher.type is Type.ID
    assert dummy.startswith(RFC_9106_LOW_MEMORY)  # an unknown user costs as much as a known one
    monkeypatch.setattr(passwords, "_HASHER", hasher)
    monkeypatch.setattr(passwords, "_DUMMY", dummy)
    stored = passwords.hash_password(PASSWORD)
    assert stored.startswith(RFC_9106_LOW_MEMORY) and PASSWORD not in stored
    assert passwords.verify(stored, PASSWORD)
    assert not passwords.verify(stored, PASSWORD + "!")
    assert not passwords.verify(None, PASSWORD)  # an unknown user never logs in
    assert passwords.hash_password(PASSWORD) != stored  # salted
