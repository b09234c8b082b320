"""A round's candidate against the live version it started from, on the 305 general probes, as run on 2026-12-02
(second session): python flips.py OUT.json (the job folders as run). Round 2 of each fork starts from the v1 of the
full run's SDFT seed-0 job (the 318-prompt pool default); "full run" rows are that run's own rounds."""

import json
import sqlite3
import sys
from collections import Counter
from pathlib import Path

FULL = Path("/work/exp/full8p/cache/43015d22b114")
FORKS = Path("/work/exp/forks/cache/43015d22b114")
JOBS = {  # name: (job folder, round, live version, candidate)
    "default, seed 0 (full run)": (FULL / "sdft-s0-1cf01c24", 2, "v1", "v2"),
    "default, seed 1": (FORKS / "sdft-s1-c5450ccd", 2, "v1", "v2"),
    "default, seed 2": (FORKS / "sdft-s2-208191ed", 2, "v1", "v2"),
    "parent_a_lr_factor=0, seed 0": (FORKS / "sdft-s0-8fa59714", 2, "v1", "v2"),
    "parent_a_lr_factor=0, seed 1": (FORKS / "sdft-s1-b18b9754", 2, "v1", "v2"),
    "parent_a_lr_factor=0, seed 2": (FORKS / "sdft-s2-d5712035", 2, "v1", "v2"),
    "default, seed 0, round 3 (full run)": (FULL / "sdft-s0-1cf01c24", 3, "v2", "v3"),
    "SFT, seed 0, round 3 (full run)": (FULL / "sft-s0-7db5e46c", 3, "v2", "v3"),
}
out = {}
for name, (job, k, live, cand) in JOBS.items():
    db = sqlite3.connect(job / "rounds" / f"r{k}.db")
    rows = db.execute("select version, details from eval_results where skill='general'")
    by = {v: json.loads(d)["probes"] for v, d in rows}
    pairs = list(zip(by[live], by[cand], strict=True))
    lost = [(x, y) for x, y in pairs if x["correct"] and not y["correct"]]
    gained = [(x, y) for x, y in pairs if y["correct"] and not x["correct"]]
    out[name] = {
        "job": job.name,
        "reason": json.loads((job / "rounds" / f"r{k}.json").read_text())["reason"],
        live: sum(x["correct"] for x, _ in pairs) / len(pairs),
        cand: sum(y["correct"] for _, y in pairs) / len(pairs),
        "lost": dict(Counter(x["category"] for x, _ in lost)),
        "gained": dict(Counter(x["category"] for x, _ in gained)),
        "lost_replies": [[x["external_id"], x["reply"][:80], y["reply"][:80]] for x, y in lost],
    }
    print(f"{name:38s} {100 * out[name][cand]:.1f} lost {out[name]['lost']} gained {out[name]['gained']}")
Path(sys.argv[1]).write_text(json.dumps(out, indent=1))
