"""Round UPTO+1 of a job, but from the base: the round-UPTO database with v0 made live again (a rollback), so the
round trains a fresh adapter on every approved demonstration so far.
    SEED=s PYTHONPATH=<tree> python frombase.py SRC_JOB METHOD UPTO OUT_DIR [FIELD=VALUE ...]"""

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
from storage import versions
from storage.db import make_engine

src, method, upto, out = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
over = parse_overrides(sys.argv[5:])
seed = int(os.environ.get("SEED", "0"))
torch.set_num_threads(1)
options = LifelongOptions(model_dir=model_folder(Settings()), out_dir=out, methods=[method], seeds=[seed],
                          overrides={method: over}, progress=False, threads=1)  # fmt: skip
run = prepare(options)
dst = job_dir(run, method, seed)
(dst / "rounds").mkdir(parents=True, exist_ok=True)
(dst / "data").mkdir(exist_ok=True)
if not (dst / "rounds" / "r1.json").exists():
    for k in range(1, upto + 1):
        for ext in ("json", "db"):
            shutil.copyfile(src / "rounds" / f"r{k}.{ext}", dst / "rounds" / f"r{k}.{ext}")
    db = make_engine(f"sqlite:///{dst / 'rounds' / f'r{upto}.db'}")
    print("rolled back to", versions.set_active(db, name="v0").name, flush=True)
    db.dispose()
run.options.rounds = upto + 1
for r in run_job(run, method, seed):
    keys = ("round", "promoted", "reason", "general", "direct_mc", "indirect_mc", "same_gen", "para_gen", "train_s",
            "gate_s", "steps")  # fmt: skip
    print(json.dumps({k: r.get(k) for k in keys}), flush=True)
