"""One user must never hurt another (issue 13), over real HTTP against our server on the tiny model: sampling values
at the edge of the range, lone surrogates, ids past the database's integers, a 10 MB message, one user asking for
every slot, adapters from anywhere, and sign-in timing. The SIGTERM case runs `apprentice serve` in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch

from app.engines.base import Sampling
from app.engines.sampling import choose_token
from app.settings import Settings
from storage import users
from tests.serving_helpers import free_port, running_server, sse_events, torch_threads

USER = [{"role": "user", "content": "hi"}]
TINY = [1e-40, 1e-300, 5e-324]
HUGE = 2**70


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("hostile-data"),
        model=tiny_model_dir,
        max_input_tokens=300,
        max_concurrent_generations=2,
        max_queued_requests=6,
        max_requests_per_user=3,
        version_poll_seconds=60,
        learn_in_server=False,
    )
    with running_server(settings) as running:
        yield running


def post(server, path: str, body: object, who: str = "bob", **kw) -> httpx.Response:
    content = json.dumps(body) if not isinstance(body, bytes) else body
    headers = {**server.headers(who), "content-type": "application/json"}
    return httpx.post(server.url + path, content=content, headers=headers, timeout=kw.pop("timeout", 60), **kw)


@pytest.mark.parametrize("temperature", [*TINY, 1e-5, 1.0, 2.0])
@pytest.mark.parametrize("top_p", [*TINY, 0.5, 1.0])
def test_sampling_cannot_fail_on_any_accepted_value(temperature, top_p):
    logits = torch.randn(49152) * 30
    for row in (logits, torch.full_like(logits, float("nan")), logits.clone().index_fill_(0, torch.tensor([3]), 1e38)):
        token = choose_token(row, Sampling(temperature=temperature, top_p=top_p), None)
        assert 0 <= token < len(logits)


def test_a_tiny_temperature_is_answered_and_the_stream_beside_it_finishes(server):
    long = {"messages": USER, "max_tokens": 40, "temperature": 1.0, "ignore_eos": True, "stream": True}
    events: list = []

    def stream() -> None:
        with httpx.stream("POST", server.url + "/v1/chat/completions", json=long, headers=server.headers("bob"),
                          timeout=60) as r:  # fmt: skip
            events.extend(sse_events(r.iter_lines()))

    beside = threading.Thread(target=stream)
    beside.start()
    time.sleep(0.3)
    for value in TINY:
        for field in ("temperature", "top_p"):
            r = post(server, "/v1/chat/completions", {"messages": USER, "max_tokens": 4, field: value}, "eve")
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["finish_reason"] in ("stop", "length")
    beside.join(timeout=60)
    assert events[-1] == "[DONE]" and events[-2]["choices"][0]["finish_reason"] == "length"


def test_lone_surrogates_are_400(server):
    bad = b'{"messages": [{"role": "user", "content": "hi \\ud800"}], "max_tokens": 2}'
    for path, body in (
        ("/v1/chat/completions", bad),
        ("/v1/completions", b'{"prompt": "x\\udfff", "max_tokens": 1}'),
        ("/v1/feedback", b'{"response_id": "x", "correction": "\\ud83d"}'),
    ):
        r = post(server, path, body)
        assert r.status_code == 400 and "lone surrogate" in r.json()["error"]["message"], r.text
    r = post(server, "/api/admin/demonstrations/bulk", b'{"ids": [1], "action": "reject", "reason": "\\ud800"}', "ann")
    assert r.status_code == 400, r.text


def test_ids_past_the_database_range_are_400_and_the_connection_lives_on(server):
    with httpx.Client(base_url=server.url, headers=server.headers("ann"), timeout=30) as c:
        for method, path, params in (
            ("GET", f"/api/admin/demonstrations/{HUGE}", None),
            ("POST", f"/api/admin/demonstrations/{HUGE}/approve", None),
            ("GET", f"/api/admin/rounds/{HUGE}", None),
            ("GET", f"/api/admin/jobs/{HUGE}", None),
            ("GET", "/api/admin/demonstrations", {"before": HUGE}),
            ("GET", "/api/admin/demonstrations", {"after": HUGE}),
            ("GET", "/api/admin/demonstrations", {"round": HUGE}),
            ("GET", "/api/admin/demonstrations", {"before": -1}),
        ):
            r = c.request(method, path, params=params)
            assert r.status_code == 400, (path, params, r.text)
        r = c.post("/api/admin/demonstrations/bulk", json={"ids": [HUGE], "action": "approve"})
        assert r.status_code == 400, r.text
        assert c.get("/api/admin/demonstrations").status_code == 200  # same connection, still served


def test_loose_types_are_refused_not_coerced(server):
    for body in (
        {"messages": USER, "max_tokens": "12"},
        {"messages": USER, "temperature": "0.5"},
        {"messages": USER, "stream": "true"},
        {"messages": USER, "seed": HUGE},
    ):
        assert post(server, "/v1/chat/completions", body).status_code == 400, body
    for prompt in ([[False]], [True, 3], [1.5]):
        assert post(server, "/v1/completions", {"prompt": prompt, "max_tokens": 1}).status_code == 400, prompt


def test_healthz_answers_while_a_10mb_message_is_refused(server):
    big = {"messages": [{"role": "user", "content": "word " * 2_000_000}], "max_tokens": 4}
    answer: list[httpx.Response] = []
    sender = threading.Thread(target=lambda: answer.append(post(server, "/v1/chat/completions", big)))
    sender.start()
    slowest = 0.0
    while sender.is_alive():
        started = time.monotonic()
        assert httpx.get(server.url + "/healthz", timeout=5).status_code == 200
        slowest = max(slowest, time.monotonic() - started)
        time.sleep(0.05)
    sender.join()
    assert answer[0].status_code == 400 and "max_input_tokens" in answer[0].json()["error"]["message"]
    assert slowest < 1.0


def test_one_user_cannot_take_every_slot(server):
    """eve (share 3) asks for more prompts than her share, then fills it: a 400, then 503s whose queued work is
    cancelled at once; bob is served meanwhile."""
    r = post(server, "/v1/completions", {"prompt": ["a", "b", "c", "d"], "max_tokens": 1}, "eve")
    assert r.status_code == 400 and "at most 3 prompts" in r.json()["error"]["message"]
    long = {"messages": USER, "max_tokens": 200, "temperature": 1.0, "ignore_eos": True, "stream": True}
    with httpx.Client(base_url=server.url, headers=server.headers("eve"), timeout=60) as eve:
        streams = [eve.stream("POST", "/v1/chat/completions", json=long) for _ in range(2)]
        opened = [s.__enter__() for s in streams]
        try:
            assert all(r.status_code == 200 for r in opened)
            r = post(server, "/v1/completions", {"prompt": ["a", "b"], "max_tokens": 50, "ignore_eos": True}, "eve")
            assert r.status_code == 503 and "max_requests_per_user" in r.json()["error"]["message"]
            gen = server.state.engine._gen
            assert len(gen._waiting) == 0 and len(gen._admitted) == 2  # the 503's other prompt is gone
            started = time.monotonic()
            r = post(server, "/v1/chat/completions", {"messages": USER, "max_tokens": 3, "temperature": 0}, "bob")
            assert r.status_code == 200 and time.monotonic() - started < 30
        finally:
            for s in streams:
                s.__exit__(None, None, None)


def test_adapters_load_only_from_the_versions_folder(server, tmp_path):
    outside = tmp_path / "evil"
    outside.mkdir()
    link = server.state.settings.data_dir / "versions" / "escape"
    link.parent.mkdir(exist_ok=True)
    link.symlink_to(outside)
    for path in (str(outside), str(link), str(link / "..")):
        r = post(server, "/v1/load_lora_adapter", {"lora_name": "x", "lora_path": path}, "ann")
        assert r.status_code == 403 and "only from" in r.json()["error"]["message"], path


def test_sign_in_takes_as_long_for_an_unknown_name(engine):
    users.create_user(engine, name="real", role="user", password="password-123")

    def timed(name: str) -> float:
        started = time.perf_counter()
        assert users.authenticate(engine, name=name, password="wrong-password") is None
        return time.perf_counter() - started

    timed("nobody")  # the stand-in hash is made once
    known = statistics.median(timed("real") for _ in range(7))
    unknown = statistics.median(timed("nobody") for _ in range(7))
    assert 0.6 < unknown / known < 1.6, (known, unknown)


def test_sigterm_stops_a_streaming_server_within_10_s(tiny_model_dir, tmp_path):
    apprentice = str(Path(sys.executable).with_name("apprentice"))
    env = {**os.environ, "APPRENTICE_HOME": str(tmp_path), "APPRENTICE_MODEL": tiny_model_dir,
           "APPRENTICE_THREADS": "1", "APPRENTICE_LEARN_IN_SERVER": "0"}  # fmt: skip
    subprocess.run([apprentice, "users", "add", "u", "--role", "user", "--password", "password-123"], env=env,
                   check=True, capture_output=True)  # fmt: skip
    key = subprocess.run([apprentice, "users", "key", "u"], env=env, check=True, capture_output=True, text=True)
    headers = {"Authorization": f"Bearer {key.stdout.strip().splitlines()[-1]}"}
    port = free_port()
    proc = subprocess.Popen([apprentice, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        tiny = {"messages": USER, "max_tokens": 4, "temperature": 1e-300}
        assert httpx.post(url + "/v1/chat/completions", json=tiny, headers=headers, timeout=30).status_code == 200
        body = {"messages": USER, "max_tokens": 1000, "temperature": 1.0, "ignore_eos": True, "stream": True}
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, headers=headers, timeout=30) as r:
            next(r.iter_lines())  # a reply is streaming
            sent = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
        assert time.monotonic() - sent < 10
    finally:
        if proc.poll() is None:
            proc.kill()
