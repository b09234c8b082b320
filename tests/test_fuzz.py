"""Schemathesis over the OpenAPI document against the real app in process (tiny model, UI mounted): every operation
that does not train, with an admin's key, must answer without a 5xx, with a status, content type and body the
document declares, in bounded time; and a method no API path takes is a 405.

    .venv/bin/python -m pytest -q tests/test_fuzz.py
"""

from __future__ import annotations

import time

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance
from starlette.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from storage import users
from tests.serving_helpers import torch_threads

TRAINING = ("POST /api/admin/rounds", "POST /api/admin/evaluations")
# Every other check runs. "Schema-valid data is accepted" does not hold, by design: a document cannot say that the
# last message must be the user's, that a prompt must fit the token limit, or which ids exist (400 / 404 for those).
SECONDS_PER_CALL = 10.0
EXAMPLES = 25  # per operation: about a minute for the whole document on 2 CPU cores


@pytest.fixture(scope="module")
def fuzzed_app(tiny_model_dir, tmp_path_factory):
    with torch_threads(1):
        app = create_app(
            Settings(
                data_dir=tmp_path_factory.mktemp("fuzz-data"),
                model=tiny_model_dir,
                max_input_tokens=256,
                max_new_tokens=8,
                request_timeout=SECONDS_PER_CALL,
                version_poll_seconds=60,
                learn_in_server=False,
            )
        )
        state = app.state.apprentice
        users.create_user(state.db, name="ann", role="admin", password="password-123")
        app.state.fuzz_key = users.create_api_key(state.db, name="ann")
        yield app


@pytest.fixture(scope="module")
def api_schema(fuzzed_app):
    return schemathesis.openapi.from_asgi("/openapi.json", fuzzed_app)


def test_every_operation_answers_as_documented(api_schema, fuzzed_app, subtests):
    headers = {"Authorization": f"Bearer {fuzzed_app.state.fuzz_key}"}
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) > 25  # the whole document, not a stray subset
    for operation in operations:
        if f"{operation.method.upper()} {operation.path}" in TRAINING:
            continue

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def answers_as_documented(case: schemathesis.Case) -> None:
            started = time.monotonic()
            case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance])
            assert time.monotonic() - started < SECONDS_PER_CALL, f"{case.method} {case.formatted_path} was slow"

        with subtests.test(msg=f"{operation.method.upper()} {operation.path}"):
            answers_as_documented()


def test_a_method_an_api_path_does_not_take_is_405(fuzzed_app):
    with TestClient(fuzzed_app) as client:
        for method, path in (("DELETE", "/v1/models"), ("PUT", "/v1/chat/completions"), ("GET", "/v1/feedback"),
                             ("DELETE", "/api/admin/demonstrations/1"), ("POST", "/healthz")):  # fmt: skip
            r = client.request(method, path)
            assert r.status_code == 405, (method, path, r.status_code)
            assert r.headers["Allow"] and r.json()["error"]["message"]
        assert client.get("/no/such/page").status_code == 404
