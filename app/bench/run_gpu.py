"""The GPU run behind bench/results/: the full learning benchmark (3 seeds, frontier, sequential skills) and the SDFT
variants, as parallel worker processes on one GPU (one job = one training + its scoring, each process its own model
copies). Usage, from the repository root on a machine with the built-in model converted:

    python -m app.bench.run_gpu OUT_DIR WORKERS
"""

from __future__ import annotations

import sys
from pathlib import Path

from app.bench.learn import BenchOptions
from app.bench.learn_report import run_many
from learner.model_files import BUILTIN, default_cache_dir, resolve_model

SMALL_TEMPLATE = "{question}\n\nHere is the correct answer:\n{demonstration}\n\nNow answer the question yourself."
VARIANTS = {  # SDFT changes measured at the default point and at lr 1e-3 (seed 0), against the default preset
    "t1.0": {"temperature": 1.0},
    "t0.5": {"temperature": 0.5},
    "small_template": {"teacher_template": SMALL_TEMPLATE},
    "ema_teacher": {"teacher": "ema"},
    "skip0": {"skip_first_tokens": 0},
    "reverse_kl": {"loss": "reverse_kl"},
}


def main(out: Path, workers: int) -> None:
    common = {"model_dir": resolve_model(BUILTIN, default_cache_dir()), "cache_dir": out / "cache",
              "eval_batch_size": 64, "threads": 1}  # fmt: skip
    runs = [BenchOptions(out_dir=out / "full", learning_rates=[1e-4, 3e-4, 1e-3, 3e-3], **common)]
    for name, changes in VARIANTS.items():
        runs.append(BenchOptions(out_dir=out / "variants" / name, seeds=[0], learning_rates=[1e-3], step_factors=[1.0],
                                 sequential=False, overrides={"sdft": changes}, **common))  # fmt: skip
    run_many(runs, workers)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
