"""The first admin on an empty database: the password from APPRENTICE_ADMIN_PASSWORD or a generated one, never a
fixed default, and nothing at all once any user exists. (`apprentice serve` end to end: test_browser_first_run.py.)"""

from __future__ import annotations

import pytest

from app.services.first_run import ensure_first_admin
from storage import users
from storage.errors import ApprenticeError


def test_generated_password_is_printed_once_and_works(engine):
    line = ensure_first_admin(engine)
    password = line.split("with the password ")[1].split()[0]
    assert users.authenticate(engine, name="admin", password=password).role == "admin"
    assert ensure_first_admin(engine) is None  # the second start: nothing new, nothing printed


def test_two_fresh_databases_get_different_passwords(tmp_path):
    from storage.db import make_engine, upgrade

    lines = []
    for name in ("a", "b"):
        db = make_engine(f"sqlite:///{tmp_path / name}.db")
        upgrade(db)
        lines.append(ensure_first_admin(db))
        db.dispose()
    assert lines[0] != lines[1]


def test_password_from_the_environment(engine):
    line = ensure_first_admin(engine, password="from-a-secret-123")
    assert "from-a-secret-123" not in line and "APPRENTICE_ADMIN_PASSWORD" in line
    assert users.authenticate(engine, name="admin", password="from-a-secret-123") is not None


def test_existing_users_are_left_alone(engine):
    users.create_user(engine, name="ann", role="user", password="password-123")
    assert ensure_first_admin(engine, password="from-a-secret-123") is None
    assert [u.name for u in users.list_users(engine)] == ["ann"]


def test_a_short_password_from_the_environment_is_a_clear_error(engine):
    with pytest.raises(ApprenticeError, match="at least 8"):
        ensure_first_admin(engine, password="short")
    assert not users.has_users(engine)


def test_the_setting_reads_the_variable(monkeypatch):
    from app.settings import Settings

    monkeypatch.setenv("APPRENTICE_ADMIN_PASSWORD", "from-a-secret-123")
    settings = Settings()
    assert settings.admin_password.get_secret_value() == "from-a-secret-123"
    assert "from-a-secret-123" not in repr(settings)
