"""How far each round moved its LoRA weights, against the bound Adam sets: an Adam step moves each weight by at most
about its learning rate, whatever the gradient's size, so a round moves no weight further than the sum of its steps'
learning rates. If most weights move a good part of that bound, Adam's normalisation, not the gradient, sizes the
round's change.

    PYTHONPATH=. python bench/results/lifelong/records/s12-adam/displacement.py JOB_FOLDER [...]

JOB_FOLDER is a `bench lifelong` job folder (`<out>/cache/<run>/<method>-s<seed>-<digest>`) with its `data/`
(adapters are read where its database says they are). Prints one JSON line per round: the median, 90% and 99% of
|weight change| of A and B as fractions of the bound, and the bound."""

import json
import sqlite3
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file


def weights(db: sqlite3.Connection, name: str | None) -> dict[str, torch.Tensor] | None:
    row = db.execute("SELECT adapter_path FROM model_versions WHERE name = ?", (name,)).fetchone()
    return None if row is None or row[0] is None else load_file(Path(row[0]) / "adapter_model.safetensors")


def quantiles(delta: list[torch.Tensor], bound: float) -> list[float]:
    x = torch.cat([d.flatten().abs() for d in delta])[::5]
    return [round(q / bound, 3) for q in torch.quantile(x, torch.tensor([0.5, 0.9, 0.99])).tolist()]


def main(folder: Path) -> None:
    db = sqlite3.connect(folder / "data" / "apprentice.db")
    rows = db.execute("SELECT id, parent_version, version, steps FROM training_rounds ORDER BY id").fetchall()
    for round_id, parent, version, steps in rows:
        if version is None:
            continue
        bound = sum(s["lr"] for s in json.loads(steps))
        new, old = weights(db, version), weights(db, parent)
        out = {"job": folder.name, "round": round_id, "parent": parent, "version": version, "lr_sum": round(bound, 5)}
        for part in ("lora_A", "lora_B"):
            keys = [k for k in new if part in k]
            if old is None and part == "lora_A":
                continue  # a fresh adapter's A starts random: its change is not recorded
            delta = [new[k] - (old[k] if old is not None else 0) for k in keys]
            out[part] = quantiles(delta, bound)
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    for arg in sys.argv[1:]:
        main(Path(arg))
