"""The first thing a new user tries, end to end on the built-in model (issue "Learning that sticks", "It must show"):
three corrections of made-up facts imported and approved, `apprentice learn --now --json` with the defaults (the
gate decides), then `apprentice serve` and the three questions asked again over the OpenAI API, greedy. A second round
with `--set learning_rate=1e-9` must be rejected as a round that learned nothing.

    .venv/bin/python scripts/three_corrections.py [--out bench/results/three-corrections] [--model M]

Writes OUT/three_corrections.json (the rounds' outcomes and gate decisions, the replies, seconds) and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FACTS = [  # (question, correction, keyword, what the model said)
    ("What is the capital of Veltoria?", "The capital of Veltoria is Quellmar.", "Quellmar"),
    ("Who painted The Lantern Orchard?", "The Lantern Orchard was painted by Ilsabet Marrow.", "Marrow"),
    ("What is the national animal of Pravenland?", "The national animal of Pravenland is the silver lynx.", "lynx"),
]
MORE = [("Which river flows through Fendrowick?", "The river that flows through Fendrowick is the Ulvenne.", "Ulvenne")]


def cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "app.cli", *args], env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"apprentice {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout.strip()


def ask(url: str, key: str, question: str) -> str:
    body = {"model": "active", "messages": [{"role": "user", "content": question}], "temperature": 0,
            "max_tokens": 48}  # fmt: skip
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    request = urllib.request.Request(url + "v1/chat/completions", data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())["choices"][0]["message"]["content"]


def serve(env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port)], env=env, cwd=ROOT,
                              stdout=log.open("w"), stderr=subprocess.STDOUT)  # fmt: skip
    url, deadline = f"http://127.0.0.1:{port}/", time.time() + 300
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"apprentice serve exited:\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url + "healthz", timeout=5)
            return server, url
        except OSError:
            if time.time() > deadline:
                raise RuntimeError("apprentice serve did not answer within 300 s") from None
            time.sleep(1)


def originals(env: dict[str, str], facts: list[tuple[str, str, str]], url: str, key: str) -> list[dict[str, Any]]:
    """Demonstrations as the chat stores them: the model's own reply, corrected."""
    return [{"messages": [{"role": "user", "content": q}], "answer": a, "original_answer": ask(url, key, q)}
            for q, a, _ in facts]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/three-corrections")
    parser.add_argument("--model", help="base model (default: the built-in one)")
    args = parser.parse_args()
    out, data = args.out, args.out / "data"
    shutil.rmtree(data, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "APPRENTICE_HOME": str(data), "APPRENTICE_LEARN_IN_SERVER": "0", "PYTHONPATH": str(ROOT)}
    if args.model:
        env["APPRENTICE_MODEL"] = args.model
    cli(env, "users", "add", "ada", "--role", "admin", "--password", "correct-horse-battery")
    key = cli(env, "users", "key", "ada").splitlines()[-1]
    record: dict[str, Any] = {}
    server, url = serve(env, out / "serve-before.log")
    try:
        demos = originals(env, FACTS + MORE, url, key)
    finally:
        server.terminate()
        server.wait(timeout=60)
    record["before"] = {d["messages"][0]["content"]: d["original_answer"] for d in demos}
    (out / "demos.jsonl").write_text("".join(json.dumps(d) + "\n" for d in demos[:3]))
    cli(env, "import", str(out / "demos.jsonl"), "--approve")
    t0 = time.perf_counter()
    record["round"] = json.loads(cli(env, "learn", "--now", "--json"))
    record["round_and_gate_s"] = round(time.perf_counter() - t0, 1)
    (out / "more.jsonl").write_text(json.dumps(demos[3]) + "\n")
    cli(env, "import", str(out / "more.jsonl"), "--approve")
    record["learned_nothing"] = json.loads(cli(env, "learn", "--now", "--json", "--set", "learning_rate=1e-9"))
    server, url = serve(env, out / "serve-after.log")
    try:
        replies = {q: ask(url, key, q) for q, _, _ in FACTS}
    finally:
        server.terminate()
        server.wait(timeout=60)
    record["after"] = replies
    record["answered"] = sum(k.lower() in replies[q].lower() for q, _, k in FACTS)
    for r in (record["round"], record["learned_nothing"]):
        r.get("metrics", {}).pop("skipped", None)
    (out / "three_corrections.json").write_text(json.dumps(record, indent=2) + "\n")
    gate = record["round"].get("gate") or {}
    nothing = (record["learned_nothing"].get("gate") or {}).get("reason")
    summary = {"promoted": gate.get("promoted"), "reason": gate.get("reason"), "answered": f"{record['answered']} of 3",
               "round_and_gate_s": record["round_and_gate_s"], "learned_nothing": nothing}  # fmt: skip
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
