"""Users, password hashes (scrypt, stdlib) and API keys (random, stored as SHA-256)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets

from sqlalchemy import Engine, select, update
from sqlalchemy.exc import IntegrityError

from storage.db import reading, transaction
from storage.errors import ApprenticeError, Conflict, NotFound
from storage.models import ROLES, ApiKey, User, utcnow

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
KEY_PREFIX = "apk-"
MIN_PASSWORD = 8


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # a lone surrogate from a JSON escape must not crash a check


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(_bytes(password), salt=salt, dklen=32, **_SCRYPT)
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        _, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    got = hashlib.scrypt(_bytes(password), salt=bytes.fromhex(salt), dklen=32, n=int(n), r=int(r), p=int(p))
    return hmac.compare_digest(got.hex(), digest)


def create_user(db: Engine, *, name: str, role: str, password: str) -> User:
    name = name.strip()
    if not name:
        raise ApprenticeError("a user name cannot be empty")
    if role not in ROLES:
        raise ApprenticeError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD:
        raise ApprenticeError(f"a password needs at least {MIN_PASSWORD} characters")
    try:
        with transaction(db) as s:
            user = User(name=name, role=role, password_hash=hash_password(password))
            s.add(user)
            s.flush()
            return user
    except IntegrityError:
        raise Conflict(f"user {name!r} already exists") from None


def get_user(db: Engine, *, name: str) -> User:
    with reading(db) as s:
        user = s.scalar(select(User).where(User.name == name))
    if user is None:
        raise NotFound(f"no user named {name!r}")
    return user


def has_users(db: Engine) -> bool:
    with reading(db) as s:
        return s.scalar(select(User.id).limit(1)) is not None


def list_users(db: Engine) -> list[User]:
    with reading(db) as s:
        return list(s.scalars(select(User).order_by(User.id)))


_UNKNOWN_USER_HASH: list[str] = []  # made once: an unknown name costs the same scrypt as a known one


def authenticate(db: Engine, *, name: str, password: str) -> User | None:
    """The user when name and password match and the account is not disabled (its last sign-in is recorded). As
    slow for an unknown name as for a known one (the same scrypt runs against a stand-in hash), so timing does not
    tell which names exist."""
    with reading(db) as s:
        user = s.scalar(select(User).where(User.name == name))
    if user is None:
        if not _UNKNOWN_USER_HASH:
            _UNKNOWN_USER_HASH.append(hash_password(secrets.token_urlsafe(16)))
        check_password(password, _UNKNOWN_USER_HASH[0])
        return None
    if not check_password(password, user.password_hash) or user.disabled:
        return None
    with transaction(db) as s:
        s.execute(update(User).where(User.id == user.id).values(last_sign_in=utcnow()))
    return user


def _key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_api_key(db: Engine, *, name: str) -> str:
    """A new API key for the user; only its hash is stored, so this is the one time it is seen."""
    user = get_user(db, name=name)
    if user.disabled:
        raise ApprenticeError(f"user {name!r} is disabled; enable the account first")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    with transaction(db) as s:
        s.add(ApiKey(user_id=user.id, key_hash=_key_hash(key), prefix=key[:10]))
    return key


LAST_USED_RESOLUTION = dt.timedelta(minutes=1)  # a key's last use is written at most once a minute, not per request


def user_for_api_key(db: Engine, *, key: str) -> User | None:
    """The user behind a key that is neither revoked nor of a disabled user (checked on every request, so a
    revocation holds at once); None otherwise."""
    with reading(db) as s:
        row = s.execute(
            select(User, ApiKey.id, ApiKey.last_used)
            .join(ApiKey, ApiKey.user_id == User.id)
            .where(ApiKey.key_hash == _key_hash(key), ApiKey.revoked.is_(None), User.disabled.is_(False))
        ).first()
    if row is None:
        return None
    user, key_id, last_used = row
    now = utcnow()
    if last_used is None or now - last_used >= LAST_USED_RESOLUTION:
        with transaction(db) as s:
            s.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used=now))
    return user
