"""Continue a finished round of a `bench lifelong` job under learner overrides, as run on 2026-12-02:

    SEED=1 PYTHONPATH=. python fork.py SRC_JOB METHOD UPTO STOP OUT_DIR [FIELD=VALUE ...]

copies SRC_JOB's records and database copies of rounds 1..UPTO into the job folder that OUT_DIR's run gives the
overridden config, then runs rounds UPTO+1..STOP there (its adapters stay where the source job wrote them)."""

import json
import os
import shutil
import sys
from pathlib import Path

import torch

from app.bench.lifelong import LifelongOptions, job_dir, prepare, run_job
from app.commands.learn import parse_overrides
from app.services import model_folder
from app.settings import Settings

src, method, upto, stop, out = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5])
over = parse_overrides(sys.argv[6:])
seed = int(os.environ.get("SEED", "0"))
torch.set_num_threads(1)
options = LifelongOptions(model_dir=model_folder(Settings()), out_dir=out, methods=[method], seeds=[seed],
                          overrides={method: over}, progress=False, threads=1)  # fmt: skip
run = prepare(options)  # with the default 8 rounds, so the run's cache (and its base.json) is the full run's
dst = job_dir(run, method, seed)
(dst / "rounds").mkdir(parents=True, exist_ok=True)
(dst / "data").mkdir(exist_ok=True)
if not (dst / "rounds" / "r1.json").exists():
    for k in range(1, upto + 1):
        for ext in ("json", "db"):
            shutil.copyfile(src / "rounds" / f"r{k}.{ext}", dst / "rounds" / f"r{k}.{ext}")
print("job", dst, over, flush=True)
run.options.rounds = stop
for r in run_job(run, method, seed):
    keys = ("round", "promoted", "reason", "general", "direct_mc", "indirect_mc", "same_gen", "para_gen", "train_s",
            "gate_s", "kl_last")  # fmt: skip
    print(json.dumps({k: r.get(k) for k in keys}), flush=True)
