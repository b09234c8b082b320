"""Sign-in limits and access that ends at once, over real HTTP against our server (UI mounted, tiny model): the 6th
wrong password in a minute for one name is refused unchecked (429, saying why), failures are logged, a revoked API
key and a disabled user's key get 401 on their next request."""

from __future__ import annotations

import logging

import httpx
import pytest

from app.settings import Settings
from app.ui.sign_in import SignInLimiter
from storage import people, users
from tests.serving_helpers import running_server


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_limits_per_name_and_address_expire_after_the_window():
    clock = Clock()
    limiter = SignInLimiter(per_name=5, per_address=8, window_s=60, clock=clock)
    for _ in range(5):
        assert limiter.refusal("bob", "10.0.0.1") is None
        limiter.failed("bob", "10.0.0.1")
    assert limiter.refusal("bob", "10.0.0.9") == "Too many wrong passwords for 'bob': wait 60 s, then try again."
    assert limiter.refusal("eve", "10.0.0.9") is None
    for _ in range(3):
        limiter.failed("eve", "10.0.0.1")
    assert "from your address" in limiter.refusal("zed", "10.0.0.1")  # 8 failures from one address
    clock.now += 59.5
    assert "wait 1 s" in limiter.refusal("bob", "10.0.0.9")
    clock.now += 0.5
    assert limiter.refusal("bob", "10.0.0.1") is None  # a minute after the first failure


def test_a_success_clears_the_names_failures():
    limiter = SignInLimiter(clock=Clock())
    for _ in range(4):
        limiter.failed("bob", "a")
    limiter.succeeded("bob")
    limiter.failed("bob", "a")
    assert limiter.refusal("bob", "b") is None


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    settings = Settings(data_dir=tmp_path_factory.mktemp("sign-in"), model=tiny_model_dir, max_new_tokens=4)
    with running_server(settings, ui=True) as running:
        yield running


def login(server, name: str, password: str) -> httpx.Response:
    return httpx.post(f"{server.url}/login", data={"username": name, "password": password}, timeout=30)


def test_the_sixth_wrong_password_in_a_minute_is_refused_unchecked(server, caplog):
    caplog.set_level(logging.WARNING, logger="app.ui.sign_in")
    assert login(server, "eve", "password-123").status_code == 200
    for _ in range(5):
        assert login(server, "eve", "wrong-password").status_code == 400
    refused = login(server, "eve", "password-123")  # the right password, refused without a check
    assert refused.status_code == 429
    assert refused.json()["detail"].startswith("Too many wrong passwords for 'eve': wait ")
    assert login(server, "ann", "password-123").status_code == 200  # another name from the same address
    failures = [r.getMessage() for r in caplog.records if "sign-in failed" in r.getMessage()]
    assert len(failures) == 5 and "'eve' from 127.0.0.1" in failures[0]
    assert any("refused unchecked" in r.getMessage() for r in caplog.records)


def test_a_revoked_key_and_a_disabled_users_key_get_401_at_once(server):
    db = server.state.db
    spare = users.create_api_key(db, name="bob")

    def status(key: str) -> int:
        return httpx.get(f"{server.url}/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code

    assert status(server.keys["bob"]) == 200 and status(spare) == 200
    first = next(k for k in people.list_keys(db, name="bob") if server.keys["bob"].startswith(k.prefix))
    people.revoke_key(db, key_id=first.id)
    assert status(server.keys["bob"]) == 401 and status(spare) == 200
    assert people.list_keys(db, name="bob")[-1].last_used is not None
    people.set_disabled(db, name="bob", disabled=True)
    assert status(spare) == 401
    assert login(server, "bob", "password-123").status_code == 400
    people.set_disabled(db, name="bob", disabled=False)
    assert status(spare) == 200
