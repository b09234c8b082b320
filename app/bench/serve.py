"""`apprentice bench serve`: what the serving core delivers on this machine, in three measurements.

1. Throughput: N concurrent streams through the embedded engine vs one stream of plain `model.generate`, aggregate
   tokens/s and their ratio (target >= 3x), time to first token p50/p99.
2. Swap under load: `swaps` activations alternating two versions while N streams run: failed requests (must be 0),
   replies that mixed versions (must be 0), the longest gap between two tokens of any stream during a swap (while the
   new version is loaded and switched to, and when the old one is unloaded once its replies ended; the longest gap
   over the whole drain is reported too) vs the steady p99 gap (target <= 1.5x), swap time.
   The two versions are random LoRA adapters (peft, r=16, alpha=32, attention and MLP projections, the learner's
   defaults) made on the base model and saved to a temporary folder: serving cost does not depend on what they learned.
3. App overhead: the same load through the HTTP API (`apprentice serve` in a subprocess, streamed chat completions,
   recorded in its database) vs the engine called directly, in tokens/s (target <= 5%).

Every reply is greedy with a fixed length (`ignore_eos`), so all runs do the same work. Run it on a quiet machine:
other processes on the same cores move every number (the load average is recorded in the JSON).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.engines.base import Limits, Sampling
from app.engines.transformers import TransformersEngine
from app.services import model_folder, open_database
from learner.chat import encode_chat
from learner.model_files import load_model
from storage import users

if TYPE_CHECKING:  # the measurements run where only torch, transformers and peft are installed (a GPU check)
    from app.settings import Settings

PROMPTS = [
    "What is the capital of France?",
    "Explain photosynthesis in simple words.",
    "Write a short poem about the sea.",
    "How do I boil an egg?",
    "Name three uses of a paperclip.",
    "Why is the sky blue?",
    "Give me a tip for learning a new language.",
    "What does a compiler do?",
]
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class BenchConfig:
    streams: int = 8  # concurrent streams
    tokens: int = 64  # tokens per reply (throughput and overhead runs)
    rounds: int = 2  # replies per stream in the throughput and overhead runs
    swaps: int = 10  # activations under load
    swap_tokens: int = 32  # tokens per reply during the swap run (a retired version drains within one reply)
    steady_seconds: float = 8.0  # the steady run the swap gaps are compared with
    threads: int = 0  # torch CPU threads here and in the API server (0: the server's default, cores - 1)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))] if ordered else 0.0


def _messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]


async def _engine_reply(engine: TransformersEngine, i: int, tokens: int, stamps: list[float]) -> tuple[int, set[str]]:
    """One greedy reply of exactly `tokens`; appends the arrival time of each delta to `stamps`."""
    sampling = Sampling(temperature=0, max_tokens=tokens, ignore_eos=True)
    count, versions = 0, set()
    async for delta in engine.chat(_messages(i), sampling):
        stamps.append(time.perf_counter())
        count, versions = delta.completion_tokens, versions | {delta.version}
    return count, versions


def baseline_tps(engine: TransformersEngine, tokens: int) -> float:
    """One stream of plain `model.generate` (greedy, fixed length) on the engine's model while the engine idles."""
    import torch

    model, elapsed = engine._gen.model, 0.0
    for i in range(2):
        ids = torch.tensor([encode_chat(engine.tokenizer, _messages(i))], device=engine._gen.device)
        started = time.perf_counter()
        with torch.inference_mode():
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens, min_new_tokens=tokens,
                           do_sample=False, pad_token_id=engine.tokenizer.pad_token_id)  # fmt: skip
        elapsed += time.perf_counter() - started
    return 2 * tokens / elapsed


async def engine_load(engine: TransformersEngine, cfg: BenchConfig) -> dict[str, float]:
    """`streams` workers, `rounds` replies each, straight into the engine: aggregate tokens/s and TTFT."""
    ttft: list[float] = []
    total = 0

    async def worker(w: int) -> None:
        nonlocal total
        for r in range(cfg.rounds):
            stamps: list[float] = []
            started = time.perf_counter()
            count, _ = await _engine_reply(engine, w + r, cfg.tokens, stamps)
            ttft.append(stamps[0] - started)
            total += count

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(cfg.streams)))
    wall = time.perf_counter() - started
    return {"tps": total / wall, "ttft_p50_s": percentile(ttft, 50), "ttft_p99_s": percentile(ttft, 99)}


def static_batch_tps(engine: TransformersEngine, cfg: BenchConfig) -> float:
    """For reference: plain `model.generate` on all the streams' prompts at once (left-padded, one fixed batch)."""
    import torch

    tok, device = engine.tokenizer, engine._gen.device
    ids = [encode_chat(tok, _messages(i)) for i in range(cfg.streams)]
    width = max(map(len, ids))
    batch = torch.tensor([[tok.pad_token_id] * (width - len(x)) + x for x in ids], device=device)
    mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=device)
    started = time.perf_counter()
    with torch.inference_mode():
        engine._gen.model.generate(batch, attention_mask=mask, max_new_tokens=cfg.tokens, min_new_tokens=cfg.tokens,
                                   do_sample=False, pad_token_id=tok.pad_token_id)  # fmt: skip
    return cfg.streams * cfg.tokens / (time.perf_counter() - started)


def throughput(engine: TransformersEngine, cfg: BenchConfig) -> dict[str, float]:
    """Baseline and engine runs alternate (twice each), so a machine whose load drifts weighs on both alike."""
    base, static, runs = [], [], []
    for _ in range(2):
        base.append(baseline_tps(engine, cfg.tokens))
        static.append(static_batch_tps(engine, cfg))
        runs.append(asyncio.run(engine_load(engine, cfg)))
    engine_tps, base_tps = _mean([r["tps"] for r in runs]), _mean(base)
    return {
        "baseline_tps": base_tps,
        "engine_tps": engine_tps,
        "ratio": engine_tps / base_tps,
        "ttft_p50_s": _mean([r["ttft_p50_s"] for r in runs]),
        "ttft_p99_s": max(r["ttft_p99_s"] for r in runs),
        "static_batch_generate_tps": _mean(static),
        "runs": {"baseline": base, "engine": [r["tps"] for r in runs], "static_batch": static},
    }


def make_adapters(folder: str, out: Path) -> dict[str, str]:
    """Two random LoRA adapters written by peft's save_pretrained (on a second copy of the base model)."""
    import torch
    from peft import LoraConfig, get_peft_model

    model, _ = load_model(folder)
    paths = {}
    for seed, name in enumerate(("bench-a", "bench-b")):
        torch.manual_seed(seed)
        config = LoraConfig(r=16, lora_alpha=32, target_modules=LORA_TARGETS, init_lora_weights=False)
        peft_model = get_peft_model(model, config)
        peft_model.save_pretrained(out / name)
        model = peft_model.unload()
        paths[name] = str(out / name)
    return paths


async def swap_under_load(engine: TransformersEngine, paths: dict[str, str], cfg: BenchConfig) -> dict[str, Any]:
    """Streams run on the active version for `steady_seconds`, then `swaps` activations alternate the two `paths`
    (the first one first), each waiting until the replaced version has drained and been unloaded."""
    gaps: list[tuple[float, float]] = []  # (previous token time, this token time), every stream
    failures: list[str] = []  # each failed request's error: a failed request is what this measures, so any counts
    mixed, running = 0, True

    async def worker(w: int) -> None:
        nonlocal mixed
        r = 0
        while running:
            stamps: list[float] = []
            try:
                _, versions = await _engine_reply(engine, w + r, cfg.swap_tokens, stamps)
                mixed += len(versions) > 1
            except Exception as e:
                failures.append(f"{type(e).__name__}: {e}")
            gaps.extend(zip(stamps, stamps[1:], strict=False))
            r += 1

    async def swapper() -> list[tuple[float, float, float]]:
        nonlocal running
        await asyncio.sleep(cfg.steady_seconds)
        windows = []
        for k in range(cfg.swaps):
            name = list(paths)[k % 2]
            old, started = engine.active, time.perf_counter()
            await engine.activate(name, paths[name])
            flipped = time.perf_counter()
            while old in engine.retiring():  # the old version drains, then is unloaded
                await asyncio.sleep(0.01)
            windows.append((started, flipped, time.perf_counter()))
            await asyncio.sleep(0.5)
        running = False
        return windows

    steady_start = time.perf_counter()
    windows, *_ = await asyncio.gather(swapper(), *(worker(w) for w in range(cfg.streams)))
    steady_end = windows[0][0]
    steady = [b - a for a, b in gaps if steady_start + 1.0 < b < steady_end]  # skip the ramp-up second
    # A swap's own work: from the activate call until the new version serves, and the old version's unloading.
    # In between, replies on the old version finish as usual; those gaps are reported apart (window_max_gap_s).
    during = [b - a for a, b in gaps if any((a < flip and b > start) or a <= end <= b for start, flip, end in windows)]
    window = [b - a for a, b in gaps if any(a < end and b > start for start, _, end in windows)]
    p99 = percentile(steady, 99)
    return {
        "activations": len(windows),
        "failed_requests": len(failures),
        "failures": sorted(set(failures))[:10],
        "mixed_version_replies": mixed,
        "steady_gap_p50_s": percentile(steady, 50),
        "steady_gap_p99_s": p99,
        "steady_gap_max_s": max(steady, default=0.0),
        "swap_max_gap_s": max(during, default=0.0),
        "window_max_gap_s": max(window, default=0.0),
        "gap_ratio": max(during, default=0.0) / p99 if p99 else 0.0,
        "swap_time_p50_s": percentile([f - s for s, f, _ in windows], 50),
        "swap_time_max_s": max(f - s for s, f, _ in windows),
        "drain_time_max_s": max(e - f for _, f, e in windows),
    }


@contextlib.contextmanager
def api_server(settings: Settings, cfg: BenchConfig, data: Path) -> Iterator[tuple[str, str]]:
    """`apprentice serve` in a subprocess on a free port with a fresh database; yields (url, API key)."""
    import socket

    import httpx

    db = open_database(settings.model_copy(update={"data_dir": data, "database_url": ""}))
    users.create_user(db, name="bench", role="admin", password="bench-password")
    key = users.create_api_key(db, name="bench")
    db.dispose()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "APPRENTICE_HOME": str(data),
        "APPRENTICE_DATABASE_URL": "",
        "APPRENTICE_MODEL": settings.model,
        "APPRENTICE_MODEL_CACHE": str(settings.model_cache),
        "APPRENTICE_DEVICE": settings.device,
        "APPRENTICE_MAX_CONCURRENT_GENERATIONS": str(cfg.streams),
        "APPRENTICE_LEARN_IN_SERVER": "false",
    }
    if cfg.threads:
        env["APPRENTICE_THREADS"] = str(cfg.threads)
    cmd = [sys.executable, "-m", "app.cli", "serve", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the benchmark server exited: {proc.stderr.read()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the benchmark server did not start within 300 s")
            time.sleep(0.5)
        yield url, key
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
        if proc.poll() is None:
            proc.kill()


async def http_load(url: str, key: str, cfg: BenchConfig) -> float:
    """The engine_load run through /v1/chat/completions (streamed): aggregate completion tokens/s."""
    import json

    import httpx

    total = 0

    async def worker(client: httpx.AsyncClient, w: int) -> None:
        nonlocal total
        for r in range(cfg.rounds):
            body = {"messages": _messages(w + r), "max_tokens": cfg.tokens, "temperature": 0, "ignore_eos": True,
                    "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                response.raise_for_status()
                async for line in response.aiter_lines():
                    if line.startswith("data: {") and '"usage"' in line:
                        total += json.loads(line[6:])["usage"]["completion_tokens"]

    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=600) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client, w) for w in range(cfg.streams)))
    return total / (time.perf_counter() - started)


def run_serve_bench(settings: Settings, cfg: BenchConfig, say: Callable[[str], None] = print) -> dict[str, Any]:
    import torch

    folder = model_folder(settings)
    load_before = os.getloadavg()
    torch.set_num_threads(cfg.threads or settings.generation_threads())  # as `apprentice serve` does
    limits = Limits(max_concurrent=cfg.streams, max_new_tokens=max(cfg.tokens, cfg.swap_tokens), request_timeout=3600)
    engine = TransformersEngine.from_folder(folder, device=settings.device, limits=limits)
    gc.collect()
    gc.freeze()  # as `apprentice serve` does: no full-collection stalls walking the model
    out: dict[str, Any] = {"model": settings.model, "device": str(engine._gen.device), "config": asdict(cfg)}
    out["torch_threads"] = torch.get_num_threads()
    try:
        asyncio.run(engine_load(engine, BenchConfig(streams=1, tokens=4, rounds=1)))  # warm-up
        say(f"throughput: one stream of plain model.generate, then {cfg.streams} streams through the engine, twice ...")
        out["throughput"] = throughput(engine, cfg)
        with tempfile.TemporaryDirectory(prefix="apprentice-bench-") as tmp:
            say("swap under load: making two random LoRA adapters (peft) in a temporary folder ...")
            paths = make_adapters(folder, Path(tmp))
            started = time.perf_counter()
            # Serve a LoRA version from the start, so the steady gaps and the swap gaps cost the same per step (a
            # LoRA version costs more per step than the bare base). The first adapter wraps the layers, once.
            asyncio.run(engine.activate("bench-b", paths["bench-b"]))
            out["first_adapter_load_s"] = time.perf_counter() - started
            say(f"swap under load: {cfg.swaps} activations while {cfg.streams} streams run ...")
            out["swap"] = asyncio.run(swap_under_load(engine, paths, cfg))
            out["swap"]["adapters"] = "two random LoRA adapters (r=16, alpha=32, attention+MLP) made by the bench"
            asyncio.run(engine.activate("v0", None))
            say("app overhead: the same load through the engine directly and over HTTP, alternately, twice ...")
            direct, http = [], []
            with api_server(settings, cfg, Path(tmp) / "server") as (url, key):
                asyncio.run(http_load(url, key, BenchConfig(streams=1, tokens=4, rounds=1)))  # warm-up
                for _ in range(2):  # alternating evens out a machine whose load drifts
                    direct.append(asyncio.run(engine_load(engine, cfg))["tps"])
                    http.append(asyncio.run(http_load(url, key, cfg)))
        d, h = _mean(direct), _mean(http)
        out["api"] = {"direct_tps": d, "http_tps": h, "overhead_pct": 100 * (d - h) / d, "runs": [direct, http]}
    finally:
        asyncio.run(engine.close())
    out["load_average"] = {"before": load_before, "after": os.getloadavg(), "cpus": os.cpu_count()}
    out["throughput_ratio"] = out["throughput"]["ratio"]
    out["swap_failed_requests"] = out["swap"]["failed_requests"]
    out["swap_gap_ratio"] = out["swap"]["gap_ratio"]
    out["api_overhead_pct"] = out["api"]["overhead_pct"]
    out["targets"] = {"throughput_ratio": ">= 3", "swap_failed_requests": "0", "swap_gap_ratio": "<= 1.5",
                      "api_overhead_pct": "<= 5"}  # fmt: skip
    return out


def summary(r: dict[str, Any]) -> list[str]:
    t, s, a = r["throughput"], r["swap"], r["api"]
    n = r["config"]["streams"]
    return [
        f"throughput: {n} streams {t['engine_tps']:.1f} tok/s vs one plain model.generate {t['baseline_tps']:.1f} "
        f"tok/s = {t['ratio']:.2f}x (target >= 3x); time to first token p50 {t['ttft_p50_s']:.2f} s, "
        f"p99 {t['ttft_p99_s']:.2f} s; for reference, plain generate on one fixed batch of {n}: "
        f"{t['static_batch_generate_tps']:.1f} tok/s",
        f"swap under load: {s['activations']} activations, {s['failed_requests']} failed requests"
        f"{' (' + '; '.join(s['failures']) + ')' if s.get('failures') else ''}, "
        f"{s['mixed_version_replies']} replies mixing versions; longest gap during swaps {s['swap_max_gap_s']:.3f} s "
        f"vs steady p99 {s['steady_gap_p99_s']:.3f} s = {s['gap_ratio']:.2f}x (target <= 1.5x; longest while old "
        f"replies drained {s.get('window_max_gap_s', 0):.3f} s); swap time p50 "
        f"{s['swap_time_p50_s']:.2f} s, max {s['swap_time_max_s']:.2f} s (random LoRA adapters made by the bench)",
        f"app overhead: {a['http_tps']:.1f} tok/s over HTTP vs {a['direct_tps']:.1f} tok/s direct = "
        f"{a['overhead_pct']:.1f}% (target <= 5%)",
        f"load average before/after: {r['load_average']['before'][0]:.1f} / {r['load_average']['after'][0]:.1f} "
        f"on {r['load_average']['cpus']} CPUs; torch threads {r['torch_threads']}; device {r['device']}",
    ]
