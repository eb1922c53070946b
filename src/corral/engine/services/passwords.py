"""Local passwords: argon2id hashes (argon2-cffi's defaults, RFC 9106's second choice)."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from corral.errors import InvalidInput

_HASHER = PasswordHasher()  # argon2id
# Verified against when the user is unknown, so that both answers take as long.
_DUMMY = _HASHER.hash("corral: no such user")
MIN_LENGTH = 8
MAX_LENGTH = 1024


def check_strength(password: str, field: str = "password") -> None:
    if len(password) < MIN_LENGTH:
        raise InvalidInput(f"a password has at least {MIN_LENGTH} characters", field=field)
    if len(password) > MAX_LENGTH:
        raise InvalidInput(f"a password has at most {MAX_LENGTH} characters", field=field)


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify(password_hash: str | None, password: str) -> bool:
    """Whether the password matches; None (unknown user, no password set) never does, at
    the cost of a real verification."""
    try:
        return _HASHER.verify(password_hash or _DUMMY, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False
