"""Round-2 candidates against v1 on the 305 general probes: python flips.py OUT.json (the job folders as run)."""

import json
import sqlite3
import sys
from collections import Counter
from pathlib import Path

CACHE = Path("/work/runs/base8/cache/43015d22b114")
JOBS = {
    "anchor_to=base (SDFT)": "sdft-s0-4da285a6",
    "anchor_to=base (SFT)": "sft-s0-c9ed2ca9",
    "default (SDFT)": "sdft-s0-6f511fb7",
    "lr 1e-3": "sdft-s0-47996a17",
    "lr 5e-4": "sdft-s0-9e1ea770",
    "anchor weight 30": "sdft-s0-9669edb3",
    "318-prompt pool": "sdft-s0-8b7287f2",
    "318-prompt pool, anchor batch 8": "sdft-s0-fd3a8848",
    "default, seed 1": "sdft-s1-99b9768a",
    "318-prompt pool, seed 1": "sdft-s1-3386890c",
    "318-prompt pool, lr 1e-3": "sdft-s0-d20529b8",
    "318-prompt pool, lr 1e-3, seed 1": "sdft-s1-f9b46a8c",
    "default, seed 2": "sdft-s2-20a84d0e",
    "318-prompt pool, seed 2": "sdft-s2-f52aec20",
}
out = {}
for name, job in JOBS.items():
    db = sqlite3.connect(CACHE / job / "rounds" / "r2.db")
    rows = db.execute("select version, details from eval_results where skill='general'")
    by = {v: json.loads(d)["probes"] for v, d in rows}
    pairs = list(zip(by["v1"], by["v2"], strict=True))
    lost = [(x, y) for x, y in pairs if x["correct"] and not y["correct"]]
    gained = [(x, y) for x, y in pairs if y["correct"] and not x["correct"]]
    out[name] = {
        "job": job,
        "reason": json.loads((CACHE / job / "rounds" / "r2.json").read_text())["reason"],
        "v1": sum(x["correct"] for x, _ in pairs) / len(pairs),
        "v2": sum(y["correct"] for _, y in pairs) / len(pairs),
        "lost": dict(Counter(x["category"] for x, _ in lost)),
        "gained": dict(Counter(x["category"] for x, _ in gained)),
        "lost_replies": [[x["external_id"], x["reply"][:80], y["reply"][:80]] for x, y in lost],
    }
    print(f"{name:35s} {100 * out[name]['v2']:.1f} lost {out[name]['lost']} gained {out[name]['gained']}")
Path(sys.argv[1]).write_text(json.dumps(out, indent=1))
