"""Fault and load, from outside: `apprentice serve` in a subprocess, real HTTP clients, the database read back after.
Run by hand (not in CI), from the repository root; the figures go in docs/robustness.md:

    .venv/bin/python scripts/fault_load.py                          # built-in model, 8 users, every phase
    .venv/bin/python scripts/fault_load.py --users 4 --phases round --json bench/results/fault_load.json
    .venv/bin/python scripts/fault_load.py --model TINY_DIR --users 4 --seconds 20 --json /tmp/fault_load.json

Four phases (`--phases`, in the order given), each on its own server start over one data folder; `--json` keeps
the phases a file holds already, so a run may be split:
1. kill9: users chat (streamed and not) and correct every reply; the server is killed with SIGKILL mid-traffic
   (`--kills` times, restarting in between). Afterwards every acknowledged write (a reply whose final chunk arrived,
   a correction answered 200) must be in the database as acknowledged. Goal: 0 lost.
2. load: the users chat and correct for `--seconds` while the active version flips between two LoRA adapters every
   few seconds (`apprentice activate`'s path). Goal: 0 errors; latency p50/p99; acknowledged = stored.
3. round: the users chat and correct while an admin approves `--approve` of their corrections and clicks Train now
   (POST /api/admin/rounds: a round in a worker process with the deployment's settings, or `--round-steps` steps;
   the gate; the hot swap when it promotes); they go on until the job ends. Goal: 0 errors; latency during the
   round; acknowledged = stored; the round's outcome.
4. hostile: one user sends the issue's inputs (temperature 1e-300, top_p 5e-324, lone surrogates, a 10 MB message,
   100 prompts in one completion, ids of 2^70, more streams than its share) beside well-behaved users. Goals: the
   hostile user gets no 5xx, every well-behaved reply finishes, /healthz stays under 1 s; then SIGTERM with
   replies streaming stops the server within 10 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.services.versions import activate  # noqa: E402
from learner.model_files import BUILTIN, default_cache_dir, resolve_model  # noqa: E402
from storage import users, versions  # noqa: E402
from storage.db import make_engine, reading, upgrade  # noqa: E402
from storage.models import Demonstration, Message  # noqa: E402

APPRENTICE = str(Path(sys.executable).with_name("apprentice"))
# question -> the correction users send (a true answer, so that a round has something to learn)
QUESTIONS = {
    "What is the capital of France?": "The capital of France is Paris.",
    "Name a prime number.": "7 is a prime number.",
    "What colour is the sky?": "The sky is blue on a clear day.",
    "Say hello.": "Hello! How can I help you today?",
}


class Server:
    """`apprentice serve` on a free port over one data directory."""

    def __init__(self, data: Path, model: str) -> None:
        self.data, self.model, self.proc = data, model, None
        self.url = ""

    def start(self, **settings: str) -> None:
        """Start it; `settings` adds APPRENTICE_* variables for this start."""
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "APPRENTICE_HOME": str(self.data), "APPRENTICE_MODEL": self.model,
               "APPRENTICE_LEARN_IN_SERVER": "0", "APPRENTICE_VERSION_POLL_SECONDS": "0.5",
               "APPRENTICE_MAX_NEW_TOKENS": "64", **settings}  # fmt: skip
        log = open(self.data / "server.log", "a")  # noqa: SIM115 - the server writes to it while it runs
        self.proc = subprocess.Popen([APPRENTICE, "serve", "--port", str(port)], env=env, stdout=log, stderr=log)
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 900  # a busy machine starts a server slowly
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the server exited; see {self.data / 'server.log'}"
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.5)
        raise RuntimeError("the server did not start")

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def sigterm(self) -> float:
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return float("inf")
        return time.monotonic() - started


class Ledger:
    """What the server acknowledged, and how each request went."""

    def __init__(self) -> None:
        self.replies: dict[str, str] = {}  # response id -> text received
        self.corrections: dict[int, str] = {}  # demonstration id -> correction sent
        self.latency: list[tuple[float, float]] = []  # (when the reply finished, seconds it took)
        self.errors: list[tuple[float, str]] = []  # (when, what)
        self.served: dict[str, int] = {}  # version -> replies it wrote
        self.finished = 0

    def error(self, what: str) -> None:
        self.errors.append((time.monotonic(), what))

    def figures(self, start: float = 0.0, end: float = float("inf")) -> dict[str, Any]:
        """Replies finished, errors and reply latency p50/p99 between `start` and `end` (monotonic seconds)."""
        lat = sorted(s for t, s in self.latency if start <= t <= end)
        errors = [what for t, what in self.errors if start <= t <= end]
        return {
            "replies": len(lat), "errors": len(errors), "error_samples": errors[:5],
            "reply_p50_s": round(statistics.median(lat), 2) if lat else None,
            "reply_p99_s": round(lat[min(len(lat) - 1, int(0.99 * len(lat)))], 2) if lat else None,
        }  # fmt: skip


async def chat_turn(client: httpx.AsyncClient, ledger: Ledger, stream: bool, correct: bool = True) -> None:
    question = random.choice(list(QUESTIONS))
    body = {"messages": [{"role": "user", "content": question}], "max_tokens": 24, "temperature": 0.7,
            "stream": stream}  # fmt: skip
    started = time.monotonic()
    try:
        if stream:
            rid, text, finish, version = await _streamed(client, body)
        else:
            r = await client.post("/v1/chat/completions", json=body)
            if r.status_code != 200:
                ledger.error(f"chat {r.status_code}: {r.text[:120]}")
                return
            out = r.json()
            rid, text, finish = out["id"], out["choices"][0]["message"]["content"], out["choices"][0]["finish_reason"]
            version = out["model"]
        if finish is None:
            ledger.error("a reply ended without finish_reason")
            return
        ledger.replies[rid], ledger.finished = text, ledger.finished + 1
        ledger.latency.append((time.monotonic(), time.monotonic() - started))
        ledger.served[version] = ledger.served.get(version, 0) + 1
        if correct:
            fix = QUESTIONS[question]
            r = await client.post("/v1/feedback", json={"response_id": rid, "correction": fix, "skill": "load"})
            if r.status_code != 200:
                ledger.error(f"feedback {r.status_code}: {r.text[:120]}")
                return
            ledger.corrections[r.json()["demonstration"]["id"]] = fix
    except httpx.HTTPError as e:
        ledger.error(f"transport: {type(e).__name__}: {str(e)[:120]}")


async def _streamed(client: httpx.AsyncClient, body: dict[str, Any]) -> tuple[str, str, str | None, str]:
    rid, text, finish, version = "", "", None, ""
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            raise httpx.HTTPStatusError(f"status {r.status_code}", request=r.request, response=r)
        async for line in r.aiter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise httpx.HTTPStatusError(chunk["error"]["message"], request=r.request, response=r)
            rid, version = chunk["id"], chunk["model"]
            for choice in chunk["choices"]:
                text += choice["delta"].get("content", "")
                finish = choice["finish_reason"] or finish
    return rid, text, finish, version


def timer(seconds: float) -> asyncio.Event:
    """An event set `seconds` from now (call it inside the event loop)."""
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(seconds, stop.set)
    return stop


async def users_chat(url: str, keys: list[str], ledger: Ledger, stop: asyncio.Event) -> None:
    """Each key chats (half the turns streamed) and corrects every reply, one turn after another, until `stop`."""

    async def one(key: str) -> None:
        async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=300) as c:
            while not stop.is_set():
                await chat_turn(c, ledger, stream=random.random() < 0.5)

    await asyncio.gather(*(one(k) for k in keys))


def lost_writes(db_url: str, ledger: Ledger) -> dict[str, int]:
    """Acknowledged writes missing (or different) in the database, read directly."""
    db = make_engine(db_url)
    with reading(db) as s:
        stored = dict(s.query(Message.response_id, Message.content).filter(Message.response_id.in_(ledger.replies)))
        demos = dict(s.query(Demonstration.id, Demonstration.corrected_answer).filter(
            Demonstration.id.in_(ledger.corrections)))  # fmt: skip
    db.dispose()
    return {
        "replies_acknowledged": len(ledger.replies),
        "replies_lost": sum(stored.get(rid) != text for rid, text in ledger.replies.items()),
        "corrections_acknowledged": len(ledger.corrections),
        "corrections_lost": sum(demos.get(i) != fix for i, fix in ledger.corrections.items()),
    }


def setup(data: Path, n_users: int, model_dir: str) -> tuple[str, list[str], str, str]:
    """A database with an admin, `n_users` users, a hostile reviewer (its keys) and two LoRA versions to swap."""
    db_url = f"sqlite:///{(data / 'apprentice.db').resolve()}"
    db = make_engine(db_url)
    upgrade(db)
    versions.ensure_base_version(db)
    keys = []
    for name, role in [("admin", "admin"), *((f"user{i}", "user") for i in range(n_users)), ("mallory", "reviewer")]:
        users.create_user(db, name=name, role=role, password="password-123")
        keys.append(users.create_api_key(db, name=name))
    for name, seed in (("swap-a", 1), ("swap-b", 2)):
        folder = data / "versions" / name
        _random_adapter(model_dir, folder, seed)
        versions.create_version(db, name=name, adapter_path=str(folder), parent="v0")
    db.dispose()
    return db_url, keys[1:-1], keys[-1], keys[0]


def _random_adapter(model_dir: str, out: Path, seed: int) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(out)


async def _kill_after(server: Server, seconds: float) -> None:
    await asyncio.sleep(seconds)
    server.kill9()


def phase_kill(server: Server, db_url: str, keys: list[str], kills: int, seconds: float) -> dict[str, Any]:
    ledger = Ledger()
    for _ in range(kills):
        server.start()

        async def traffic() -> None:
            chat = asyncio.ensure_future(users_chat(server.url, keys, ledger, asyncio.Event()))
            await _kill_after(server, random.uniform(0.6, 1.0) * seconds)
            await asyncio.sleep(0.5)
            chat.cancel()
            await asyncio.gather(chat, return_exceptions=True)

        asyncio.run(traffic())
    return {"kills": kills, **lost_writes(db_url, ledger)}


def phase_load(server: Server, db_url: str, keys: list[str], seconds: float) -> dict[str, Any]:
    server.start()
    ledger = Ledger()
    swaps = 0

    async def swapping() -> None:
        nonlocal swaps
        db = make_engine(db_url)
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            await asyncio.sleep(seconds / 8)
            await asyncio.to_thread(activate, db, ("swap-a", "swap-b")[swaps % 2])
            swaps += 1
        db.dispose()

    async def run() -> None:
        await asyncio.gather(users_chat(server.url, keys, ledger, timer(seconds)), swapping())

    asyncio.run(run())
    server.sigterm()
    return {"users": len(keys), "seconds": seconds, "swaps": swaps, **ledger.figures(), "served": ledger.served,
            **lost_writes(db_url, ledger)}  # fmt: skip


def distinct(corrections: dict[int, str], n: int) -> list[int]:
    """Up to `n` demonstrations, one per correction text (a reviewer approves no duplicates), then any others."""
    first = {text: demo for demo, text in reversed(corrections.items())}
    others = [demo for demo in corrections if demo not in first.values()]
    return [*sorted(first.values()), *others][:n]


def phase_round(
    server: Server, db_url: str, keys: list[str], admin_key: str, *, approve: int, steps: int, after: float,
    score_live: bool = True, activate: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Users chat and correct while an admin approves `approve` of their corrections (one per question) and clicks
    Train now (POST /api/admin/rounds: a round in a worker process, of `steps` optimizer steps or the deployment's
    number when 0, then the gate, then the hot swap when it promotes); they go on until the job ends and `after`
    seconds more. With `score_live` the live version is scored first, before any traffic (as it is after any
    earlier round), so that the gate scores only the candidate. With `activate` the deployment makes a round's
    version live at once (learn_activate: no gate)."""
    scored = time.monotonic()
    if score_live and not activate:
        from learner.evaluate import evaluate_version  # torch: only for this phase

        db = make_engine(db_url)
        evaluate_version(db, server.model, versions.active_version(db).name)
        db.dispose()
    scored = time.monotonic() - scored
    env = {"APPRENTICE_LEARN_ACTIVATE": str(activate).lower()}
    server.start(**env, **({"APPRENTICE_LEARN_CONFIG": json.dumps({"steps": steps})} if steps else {}))
    ledger, marks, job = Ledger(), {}, {}

    async def admin(stop: asyncio.Event) -> None:
        headers = {"Authorization": f"Bearer {admin_key}"}
        try:
            async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=60) as c:
                wanted = min(approve, len(QUESTIONS))
                while len(ledger.corrections) < approve or len(set(ledger.corrections.values())) < wanted:
                    await asyncio.sleep(0.5)
                for demo in distinct(ledger.corrections, approve):
                    r = await c.post(f"/api/admin/demonstrations/{demo}/approve", params={"confirm_flagged": True})
                    r.raise_for_status()
                marks["train_now"] = time.monotonic()
                job.update((await c.post("/api/admin/rounds")).raise_for_status().json())
                while job["status"] == "running":
                    await asyncio.sleep(1)
                    job.update((await c.get(f"/api/admin/jobs/{job['id']}")).raise_for_status().json())
                    if "gate" not in marks and "for the gate" in job["message"]:
                        marks["gate"] = time.monotonic()
                marks["done"] = time.monotonic()
                await asyncio.sleep(after)
        finally:
            stop.set()

    async def run() -> None:
        stop = asyncio.Event()
        await asyncio.gather(users_chat(server.url, keys, ledger, stop), admin(stop))

    asyncio.run(run())
    server.sigterm()
    t0, gate, done = marks["train_now"], marks.get("gate"), marks["done"]
    result = job.get("result") or {}
    return {
        "users": len(keys), "approved": approve, "steps": steps, "policy": "activate" if activate else "gate",
        "live_scored_before_s": round(scored, 1),
        "job_status": job["status"],
        "round": {k: result.get(k) for k in ("status", "round", "version", "promoted", "live", "gate")},
        "job_message": job["message"], "train_s": round((gate or done) - t0, 1),
        "gate_s": round(done - gate, 1) if gate else None, "during_round": ledger.figures(t0, done),
        "whole_phase": ledger.figures(), "served": ledger.served, **lost_writes(db_url, ledger),
    }  # fmt: skip


HOSTILE_BODIES: list[tuple[str, str, Any]] = [
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
                                      "temperature": 1e-300}),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
                                      "top_p": 5e-324}),
    ("POST", "/v1/chat/completions", b'{"messages": [{"role": "user", "content": "x\\ud800"}]}'),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "word " * 2_000_000}]}),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": "12"}),
    ("POST", "/v1/completions", {"prompt": ["go on"] * 100, "max_tokens": 64, "ignore_eos": True}),
    ("POST", "/v1/completions", {"prompt": [[False]]}),
    ("GET", f"/api/admin/demonstrations/{2**70}", None),
    ("GET", f"/api/admin/demonstrations?before={2**70}", None),
    ("DELETE", "/v1/models", None),
]  # fmt: skip


async def hostile(url: str, key: str, stop: float, statuses: list[int]) -> None:
    headers = {"Authorization": f"Bearer {key}", "content-type": "application/json"}
    long = {"messages": [{"role": "user", "content": "go on"}], "max_tokens": 64, "ignore_eos": True,
            "temperature": 1.0}  # fmt: skip
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=300) as c:

        async def one(method: str, path: str, body: Any) -> None:
            content = body if isinstance(body, bytes) else None if body is None else json.dumps(body)
            try:
                statuses.append((await c.request(method, path, content=content)).status_code)
            except httpx.HTTPError:
                statuses.append(-1)

        while time.monotonic() < stop:
            await asyncio.gather(*(one(m, p, b) for m, p, b in HOSTILE_BODIES),
                                 *(one("POST", "/v1/chat/completions", long) for _ in range(24)))  # fmt: skip


async def health(url: str, stop: float, times: list[float]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        while time.monotonic() < stop:
            started = time.monotonic()
            await c.get("/healthz")
            times.append(time.monotonic() - started)
            await asyncio.sleep(0.2)


def phase_hostile(server: Server, keys: list[str], bad_key: str, seconds: float) -> dict[str, Any]:
    server.start()
    ledger, statuses, health_s = Ledger(), [], []

    async def run() -> None:
        stop = time.monotonic() + seconds
        await asyncio.gather(
            users_chat(server.url, keys, ledger, timer(seconds)),
            hostile(server.url, bad_key, stop, statuses),
            health(server.url, stop, health_s),
        )

    asyncio.run(run())

    async def streaming_then_sigterm() -> float:
        async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {keys[0]}"}) as c:
            body = {"messages": [{"role": "user", "content": "go on"}], "max_tokens": 64, "stream": True,
                    "ignore_eos": True}  # fmt: skip
            async with c.stream("POST", "/v1/chat/completions", json=body) as r:
                await r.aiter_lines().__anext__()
                return await asyncio.to_thread(server.sigterm)

    stopped = asyncio.run(streaming_then_sigterm())
    counts: dict[str, int] = {}
    for code in statuses:
        counts[str(code)] = counts.get(str(code), 0) + 1
    return {
        "hostile_requests": len(statuses), "hostile_statuses": counts,
        "hostile_5xx": sum(1 for c in statuses if c >= 500 and c != 503), "hostile_503": counts.get("503", 0),
        "well_behaved_replies": ledger.finished, "well_behaved_errors": len(ledger.errors),
        "error_samples": [what for _, what in ledger.errors[:5]],
        "healthz_max_s": round(max(health_s), 2) if health_s else None,
        "sigterm_exit_s": round(stopped, 1),
    }  # fmt: skip


PHASES = ("kill9", "load", "round", "hostile")


def run_phase(name: str, args: argparse.Namespace, server: Server, db_url: str, keys: list[str],
              bad_key: str, admin_key: str) -> dict[str, Any]:  # fmt: skip
    if name == "kill9":
        return phase_kill(server, db_url, keys, args.kills, max(10.0, args.seconds / 4))
    if name == "load":
        return phase_load(server, db_url, keys, args.seconds)
    if name == "round":
        return phase_round(server, db_url, keys, admin_key, approve=args.approve, steps=args.round_steps,
                           after=args.after, score_live=not args.gate_both, activate=args.activate)  # fmt: skip
    return phase_hostile(server, keys, bad_key, args.seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=BUILTIN, help="base model (default: the built-in one)")
    parser.add_argument("--users", type=int, default=8, help="well-behaved users (8)")
    parser.add_argument("--seconds", type=float, default=60, help="length of the load and hostile phases (60)")
    parser.add_argument("--kills", type=int, default=3, help="kill -9 rounds (3)")
    parser.add_argument("--phases", default=",".join(PHASES), help=f"which phases, in order ({','.join(PHASES)})")
    parser.add_argument("--approve", type=int, default=4, help="round: corrections the admin approves (4)")
    parser.add_argument(
        "--round-steps", type=int, default=0, help="round: optimizer steps (0: the deployment's, derived from epochs)"
    )
    parser.add_argument("--after", type=float, default=10, help="round: seconds of chat after its job ends (10)")
    parser.add_argument(
        "--gate-both",
        action="store_true",
        help="round: leave the live version unscored, so that the gate scores it too (a deployment's first round; "
        "about twice the gate's time)",
    )
    parser.add_argument(
        "--activate",
        action="store_true",
        help="round: the deployment makes a round's version live at once, no gate (learn_activate); its figures go "
        "under round_activated",
    )
    parser.add_argument("--json", type=Path, help="write the figures here too (phases already there are kept)")
    parser.add_argument(
        "--keep", type=Path, help="an empty folder to run in and keep (the server's log); default: a temporary one"
    )
    args = parser.parse_args(argv)
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    if unknown := set(phases) - set(PHASES):
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    model_dir = resolve_model(args.model, default_cache_dir()) if args.model == BUILTIN else args.model
    result = json.loads(args.json.read_text()) if args.json and args.json.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        data = args.keep or Path(tmp)
        data.mkdir(parents=True, exist_ok=True)
        db_url, keys, bad_key, admin_key = setup(data, args.users, model_dir)
        server = Server(data, model_dir)
        for name in phases:
            started, load = time.monotonic(), [round(x, 2) for x in os.getloadavg()]
            figures = run_phase(name, args, server, db_url, keys, bad_key, admin_key)
            key = "round_activated" if name == "round" and args.activate else name
            result[key] = {"model": args.model, "load_average_before": load, **figures,
                           "phase_s": round(time.monotonic() - started, 1)}  # fmt: skip
            print(f"{key}:", json.dumps(result[key]), flush=True)
            if args.json:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
