"""`apprentice users ...` for administration, run as a user runs it (a real subprocess): list with activity, role,
password, disable/enable, keys by id and revoke-key, remove (confirmed), the last admin kept; errors one line."""

from __future__ import annotations

import json

from storage import users
from storage.db import make_engine
from tests.test_cli import run


def test_users_administration(tmp_path):
    data = ["--data-dir", str(tmp_path)]
    for name, role in (("ann", "admin"), ("bob", "user")):
        assert run("users", "add", name, "--role", role, "--password", f"{name}-password", *data).returncode == 0
    key = run("users", "key", "bob", *data).stdout.strip().splitlines()[-1]
    run("users", "key", "bob", *data)
    table = run("users", "list", *data).stdout.splitlines()
    assert table[0] == "name\trole\tcreated\tlast sign-in\tkeys\tstate"
    assert table[2].startswith("bob\tuser\t") and table[2].endswith("\tnever\t2\tenabled")
    keys = json.loads(run("users", "keys", "bob", "--json", *data).stdout)
    assert [k["prefix"] for k in keys][0] == key[:10] and keys[0]["revoked"] is None
    revoked = run("users", "revoke-key", str(keys[0]["id"]), *data)
    assert revoked.stdout.strip() == f"revoked API key {keys[0]['id']} ({key[:10]}...) of bob"
    again = run("users", "revoke-key", str(keys[0]["id"]), *data)
    assert again.returncode == 1 and "already revoked" in again.stderr and "Traceback" not in again.stderr
    assert "\t-" not in run("users", "keys", "bob", *data).stdout.splitlines()[1]  # revoked shows its date
    db = make_engine(f"sqlite:///{tmp_path / 'apprentice.db'}")
    assert users.user_for_api_key(db, key=key) is None

    assert run("users", "role", "bob", "reviewer", *data).stdout.strip() == "bob is now a reviewer"
    assert run("users", "password", "bob", "--password", "new-password-1", *data).returncode == 0
    assert users.authenticate(db, name="bob", password="new-password-1") is not None
    assert run("users", "disable", "bob", *data).stdout.strip() == "bob is disabled"
    assert json.loads(run("users", "list", "--json", *data).stdout)[1]["disabled"] is True
    assert users.authenticate(db, name="bob", password="new-password-1") is None
    assert run("users", "enable", "bob", *data).returncode == 0
    last = run("users", "disable", "ann", *data)
    assert last.returncode == 1 and "last enabled admin" in last.stderr
    unconfirmed = run("users", "remove", "bob", *data)
    assert unconfirmed.returncode == 1 and "--yes" in unconfirmed.stderr
    assert run("users", "remove", "bob", "--yes", *data).stdout.strip() == "removed bob"
    missing = run("users", "keys", "bob", *data)
    assert missing.returncode == 1 and missing.stderr.strip() == "error: no user named 'bob'"
    db.dispose()
