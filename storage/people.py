"""User administration: accounts with their activity, role changes, password resets, disabling, removal, and API
keys listed and revoked one by one. (Creating users and checking credentials: storage/users.py.)

The last enabled admin cannot be demoted, disabled or removed: somebody must be able to sign in and administer.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from storage.db import reading, transaction
from storage.errors import ApprenticeError, Conflict, NotFound
from storage.models import ROLES, ApiKey, User, utcnow
from storage.users import MIN_PASSWORD, hash_password


@dataclass(frozen=True)
class Person:
    name: str
    role: str
    created: dt.datetime
    last_sign_in: dt.datetime | None
    disabled: bool
    keys: int  # API keys not revoked


@dataclass(frozen=True)
class Key:
    id: int
    user: str
    prefix: str
    created: dt.datetime
    last_used: dt.datetime | None
    revoked: dt.datetime | None


def list_people(db: Engine) -> list[Person]:
    """Every user, oldest first, with the number of their live API keys."""
    live = (
        select(ApiKey.user_id, func.count().label("n"))
        .where(ApiKey.revoked.is_(None))
        .group_by(ApiKey.user_id)
        .subquery()
    )
    with reading(db) as s:
        rows = s.execute(select(User, live.c.n).outerjoin(live, live.c.user_id == User.id).order_by(User.id)).all()
    return [Person(u.name, u.role, u.created, u.last_sign_in, u.disabled, n or 0) for u, n in rows]


def _locked_user(s: Session, name: str) -> User:
    user = s.scalar(select(User).where(User.name == name).with_for_update())
    if user is None:
        raise NotFound(f"no user named {name!r}")
    return user


def _keep_an_admin(s: Session, user: User, doing: str) -> None:
    """Refuse when `user` is the last enabled admin (the admins' rows locked, so two admins demoting each other at
    once cannot both pass on PostgreSQL; SQLite's writers take turns anyway)."""
    if user.role != "admin" or user.disabled:
        return
    admins = s.scalars(select(User.id).where(User.role == "admin", User.disabled.is_(False)).with_for_update()).all()
    if len(admins) <= 1:
        raise Conflict(f"cannot {doing} {user.name!r}: the last enabled admin (make another admin first)")


def set_role(db: Engine, *, name: str, role: str) -> None:
    if role not in ROLES:
        raise ApprenticeError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    with transaction(db) as s:
        user = _locked_user(s, name)
        if role != "admin":
            _keep_an_admin(s, user, f"make a {role} of")
        user.role = role


def reset_password(db: Engine, *, name: str, password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise ApprenticeError(f"a password needs at least {MIN_PASSWORD} characters")
    hashed = hash_password(password)  # scrypt outside the write transaction
    with transaction(db) as s:
        _locked_user(s, name).password_hash = hashed


def set_disabled(db: Engine, *, name: str, disabled: bool) -> None:
    """A disabled user cannot sign in, their keys get 401 and their open sessions are refused at the next action;
    enabling them again restores all of it (keys not revoked meanwhile included)."""
    with transaction(db) as s:
        user = _locked_user(s, name)
        if disabled:
            _keep_an_admin(s, user, "disable")
        user.disabled = disabled


def remove_user(db: Engine, *, name: str) -> None:
    """Delete the account with its API keys, conversations and ratings; demonstrations they wrote or reviewed stay,
    without the name. Disabling keeps everything and is reversible."""
    with transaction(db) as s:
        user = _locked_user(s, name)
        _keep_an_admin(s, user, "remove")
        s.delete(user)


def list_keys(db: Engine, *, name: str) -> list[Key]:
    """A user's API keys, oldest first, revoked ones included (marked)."""
    with reading(db) as s:
        user = s.scalar(select(User).where(User.name == name))
        if user is None:
            raise NotFound(f"no user named {name!r}")
        keys = s.scalars(select(ApiKey).where(ApiKey.user_id == user.id).order_by(ApiKey.id)).all()
    return [Key(k.id, name, k.prefix, k.created, k.last_used, k.revoked) for k in keys]


def revoke_key(db: Engine, *, key_id: int) -> Key:
    """Revoke one key; requests with it get 401 from the next one on. Revoking a revoked key is an error."""
    with transaction(db) as s:
        key = s.scalar(select(ApiKey).where(ApiKey.id == key_id).with_for_update())
        if key is None:
            raise NotFound(f"no API key with id {key_id}")
        if key.revoked is not None:
            raise Conflict(f"API key {key_id} ({key.prefix}...) was already revoked on {key.revoked:%Y-%m-%d %H:%M}")
        key.revoked = utcnow()
        owner = s.get(User, key.user_id)
        return Key(key.id, owner.name if owner else "", key.prefix, key.created, key.last_used, key.revoked)
