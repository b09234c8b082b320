"""The first admin: `apprentice serve` on a database without users creates the account `admin`, with the password
in APPRENTICE_ADMIN_PASSWORD or, without one, a generated password printed once in the server's log. Never a fixed
default. A database that has any user is left alone (containers that create their admin first keep theirs)."""

from __future__ import annotations

import secrets

from sqlalchemy import Engine as Database

from storage import users
from storage.errors import Conflict

FIRST_ADMIN = "admin"
PASSWORD_VARIABLE = "APPRENTICE_ADMIN_PASSWORD"


def ensure_first_admin(db: Database, *, password: str = "") -> str | None:
    """Create `admin` when the database has no user; the line to print about it, or None when nothing was done."""
    if users.has_users(db):
        return None
    chosen = password or secrets.token_urlsafe(12)
    try:
        users.create_user(db, name=FIRST_ADMIN, role="admin", password=chosen)
    except Conflict:  # another server starting on the same database made it first; its log holds the password
        return None
    if password:
        return f"First run: created the admin account '{FIRST_ADMIN}' with the password in {PASSWORD_VARIABLE}."
    return (
        f"First run: created the admin account '{FIRST_ADMIN}' with the password {chosen}\n"
        f"  (shown only this once: sign in with it, then change it in the Users tab or with "
        f"`apprentice users password {FIRST_ADMIN}`; or set {PASSWORD_VARIABLE} before the first start)"
    )
