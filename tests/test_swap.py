"""Hot swap under load, over real HTTP: 8 streams run while the database's active version alternates between two
adapters (as `apprentice activate` sets it); no request fails, every reply comes from exactly one version (its text
is that version's greedy reply), retired versions are unloaded, and a restarted server serves the active version."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from app.cli import main
from app.services.versions import activate
from app.settings import Settings
from storage import versions
from tests.serving_helpers import make_adapter, running_server, sse_events, torch_threads

PROMPTS = ["Hello there", "What is the capital of France?", "Count to five.", "Tell me about cats"]
STREAMS = 8
SWAPS = 6


def chat_body(prompt: str, version: str | None = None) -> dict:
    body = {"messages": [{"role": "user", "content": prompt}], "temperature": 0, "max_tokens": 24, "stream": True}
    return body | ({"model": version} if version else {})


async def one_reply(client: httpx.AsyncClient, prompt: str, version: str | None = None) -> dict:
    async with client.stream("POST", "/v1/chat/completions", json=chat_body(prompt, version)) as r:
        lines = [line async for line in r.aiter_lines()]
    events = sse_events(lines)
    chunks = [e for e in events if isinstance(e, dict)]
    return {
        "status": r.status_code,
        "header": r.headers.get("X-Model-Version"),
        "models": {c["model"] for c in chunks},
        "text": "".join(c["choices"][0]["delta"].get("content", "") for c in chunks),
        "done": events[-1:] == ["[DONE]"] and chunks[-1]["choices"][0]["finish_reason"] is not None,
        "prompt": prompt,
    }


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("swap")
    settings = Settings(data_dir=root / "data", model=tiny_model_dir, version_poll_seconds=0.1)
    adapters = {name: make_adapter(tiny_model_dir, root / name, seed) for name, seed in (("v1", 11), ("v2", 12))}
    return settings, adapters


def test_eight_streams_across_swaps(setup):
    settings, adapters = setup
    with running_server(settings) as server:
        db, engine = server.state.db, server.state.engine
        for name, path in adapters.items():
            versions.create_version(db, name=name, adapter_path=path, parent="v0")

        async def scenario() -> tuple[dict, list[dict], list[str]]:
            async with httpx.AsyncClient(base_url=server.url, headers=server.headers(), timeout=120) as client:
                for name, path in adapters.items():  # references: each version's greedy reply, alone
                    await engine.load(name, path)
                refs = {(v, p): (await one_reply(client, p, v))["text"] for v in ("v0", *adapters) for p in PROMPTS}
                for name in adapters:
                    await engine.unload(name)
                swapping, replies, order = True, [], []

                async def stream(i: int) -> None:
                    while swapping:
                        replies.append(await one_reply(client, PROMPTS[i % len(PROMPTS)]))

                async def swapper() -> None:
                    nonlocal swapping
                    await asyncio.sleep(0.5)
                    for k in range(SWAPS):
                        name = ("v1", "v2")[k % 2]
                        await asyncio.to_thread(activate, db, name)  # what `apprentice activate` does
                        while engine.active != name:
                            await asyncio.sleep(0.02)
                        order.append(name)
                        done_before = len(replies)  # let replies end on, and start from, this version
                        while len(replies) < done_before + STREAMS // 2:
                            await asyncio.sleep(0.05)
                    swapping = False

                await asyncio.gather(swapper(), *(stream(i) for i in range(STREAMS)))
                return refs, replies, order

        refs, replies, order = asyncio.run(scenario())
        assert order == ["v1", "v2"] * (SWAPS // 2)
        failed = [r for r in replies if r["status"] != 200 or not r["done"]]
        assert len(replies) >= SWAPS * STREAMS // 2 and not failed, failed
        for r in replies:
            assert r["models"] == {r["header"]}, r  # one version per reply
            assert r["text"] == refs[(r["header"], r["prompt"])], r  # ... and its tokens came from that version
        assert {"v1", "v2"} <= {r["header"] for r in replies}
        deadline = time.monotonic() + 10
        while engine.loaded() != ["v0", "v2"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert engine.loaded() == ["v0", "v2"]  # v1 retired and was unloaded once its replies ended

    with running_server(settings) as restarted:  # the database says v2 is live
        assert restarted.state.engine.active == "v2"
        r = httpx.post(restarted.url + "/v1/chat/completions", json=chat_body("hi") | {"stream": False},
                       headers=restarted.headers())  # fmt: skip
        assert r.headers["X-Model-Version"] == "v2"


def test_cli_activate_reaches_a_running_server(setup, capsys):
    settings, _ = setup
    argv = ["--data-dir", str(settings.data_dir), "--model", settings.model]
    with running_server(settings) as server:
        assert main(["versions", "--json", *argv]) == 0
        assert [v["name"] for v in json.loads(capsys.readouterr().out)] == ["v0", "v1", "v2"]
        assert main(["activate", "v1", *argv]) == 0
        assert "activated v1 (was v2)" in capsys.readouterr().out
        deadline = time.monotonic() + 10
        while server.state.engine.active != "v1" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.state.engine.active == "v1"
        assert main(["activate", "v9", *argv]) == 1
        assert capsys.readouterr().err.strip() == "error: no model version named 'v9'"


def test_bench_swap_measurement_on_the_tiny_model(setup):
    """The measurement behind `apprentice bench serve`'s swap figures, small: 4 streams, 2 swaps."""
    from app.bench.serve import BenchConfig, swap_under_load
    from app.engines.base import Limits
    from app.engines.transformers import TransformersEngine

    settings, adapters = setup
    engine = TransformersEngine.from_folder(settings.model, device="cpu", limits=Limits(max_concurrent=4))
    cfg = BenchConfig(streams=4, swaps=2, swap_tokens=8, steady_seconds=1.5)
    paths = {"bench-a": adapters["v1"], "bench-b": adapters["v2"]}
    try:
        result = asyncio.run(swap_under_load(engine, paths, cfg))
    finally:
        asyncio.run(engine.close())
    assert result["activations"] == 2 and result["failed_requests"] == 0 and result["mixed_version_replies"] == 0
    assert result["failures"] == []  # the errors of failed requests, kept for the report
    assert result["steady_gap_p99_s"] > 0 and result["swap_max_gap_s"] > 0 and result["swap_time_max_s"] > 0
    assert engine.active == "bench-b"
