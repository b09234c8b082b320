"""CUDA check on a lent GPU machine: the learner's bf16 round and the embedded engine's device placement, on the tiny
random model. Prints one JSON line per check and exits non-zero on the first failure.

    python scripts/gpu_check.py TINY_MODEL_DIR [DEVICE]

TINY_MODEL_DIR holds the tiny model (config, tokenizer, weights); DEVICE is cuda (default) or cpu for a dry run.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

DEVICE = sys.argv[2] if len(sys.argv) > 2 else "cuda"


def report(check: str, **fields: object) -> None:
    print(json.dumps({"check": check, **fields}), flush=True)


def check_training(model_dir: str) -> None:
    import torch

    from learner.config import LearnerConfig
    from learner.prompts import Example
    from learner.training import train

    examples = [
        Example([{"role": "user", "content": f"What is the capital of Veltoria{i}?"}], f"It is Quellmar{i}.")
        for i in range(4)
    ]
    for method in ("sdft", "sft"):
        config = LearnerConfig(method=method, steps=3, batch_size=2, device=DEVICE, dtype="bfloat16")
        t0 = time.perf_counter()
        result = train(model_dir, examples, config)
        model = result.session.model
        lora = [p for n, p in model.named_parameters() if "lora_B" in n and ".default." in n]
        base = [p for n, p in model.named_parameters() if "lora_" not in n]
        assert all(p.device.type == DEVICE for p in lora + base), "every weight must live on the chosen device"
        assert all(p.dtype == torch.bfloat16 for p in base), "the round trains in bf16"
        moved = max(p.detach().abs().max().item() for p in lora)
        assert moved > 0, "the student's LoRA B matrices must move from zero"
        losses = [s["loss"] for s in result.steps]
        assert all(torch.isfinite(torch.tensor(x)) for x in losses), losses
        with tempfile.TemporaryDirectory() as out:
            result.save(Path(out))
            saved = sorted(p.name for p in Path(out).iterdir())
        report(
            f"train-{method}",
            ok=True,
            seconds=round(time.perf_counter() - t0, 2),
            losses=losses,
            lora_b_max=moved,
            saved=saved,
            step_split={k: v for k, v in result.metrics.items() if k.endswith(("_s_total", "per_step"))},
        )


def check_engine(model_dir: str) -> None:
    from app.engines.base import Sampling
    from app.engines.transformers import TransformersEngine

    engine = TransformersEngine.from_folder(model_dir, device=DEVICE)
    device = str(next(engine._gen.model.parameters()).device)
    assert device.startswith(DEVICE), device

    async def one(i: int) -> tuple[str, set[str]]:
        text, versions = "", set()
        async for d in engine.chat([{"role": "user", "content": f"hello {i}"}], Sampling(temperature=0, max_tokens=12)):
            text += d.text
            versions.add(d.version)
        return text, versions

    async def run() -> list[tuple[str, set[str]]]:
        alone = await one(0)
        together = await asyncio.gather(*(one(i) for i in range(6)))
        await engine.close()
        return [alone, *together]

    results = asyncio.run(run())
    assert results[0][0] == results[1][0], "greedy output must not depend on batching"
    report(
        "engine", ok=True, device=device, replies=len(results), versions=sorted(set().union(*(v for _, v in results)))
    )


if __name__ == "__main__":
    import torch

    report(
        "device",
        cuda=torch.cuda.is_available(),
        name=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        torch=torch.__version__,
    )
    check_training(sys.argv[1])
    check_engine(sys.argv[1])
