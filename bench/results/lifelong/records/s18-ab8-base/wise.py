"""Score an adapter with its LoRA update scaled by a (WiSE-FT toward the base: lora_alpha x a), as run 2026-12-03:

    PYTHONPATH=TREE python wise.py VERSION_DIR N_FACTS a [a ...]

scores the first N_FACTS taught facts and the whole general suite, as `bench lifelong` scores a live version."""

import json
import shutil
import sys
import time
from pathlib import Path

import torch

from app.bench.lifelong import LifelongOptions, prepare, score_version, summarize_facts
from app.services import model_folder
from app.settings import Settings

torch.set_num_threads(1)
src, n = Path(sys.argv[1]), int(sys.argv[2])
run = prepare(LifelongOptions(model_dir=model_folder(Settings()), out_dir=Path("/work/exp/wise"), methods=["sdft"],
                              seeds=[0], progress=False, threads=1))  # fmt: skip
facts = run.taught[:n]
for a in map(float, sys.argv[3:]):
    dst = Path("/work/exp/wise") / f"{src.parent.parent.parent.name}-{src.name}-a{a}"
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "adapter_config.json").read_text())
    cfg["lora_alpha"] = cfg["lora_alpha"] * a
    (dst / "adapter_config.json").write_text(json.dumps(cfg))
    t = time.time()
    out = score_version(run, facts, str(dst), general=True)
    last = [f.id for f in facts[-6:]]
    every = summarize_facts(out["facts"], [f.id for f in facts])
    newest = summarize_facts(out["facts"], last)
    record = {"version": str(src), "a": a, "general": round(out["general"] * 100, 1),
              "all": {k: round(v * 100) for k, v in every.items()},
              "last6": {k: round(v * 100) for k, v in newest.items()}, "s": round(time.time() - t)}  # fmt: skip
    print(json.dumps(record), flush=True)
