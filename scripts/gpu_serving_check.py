"""The serving core on a CUDA GPU (a lent machine with torch, transformers and peft only): correctness of the
embedded engine on the GPU and `apprentice bench serve`'s engine measurements on a SmolLM2-135M-shaped model.

    python scripts/gpu_serving_check.py MODEL_FILES_DIR OUT_DIR [DEVICE]

MODEL_FILES_DIR holds the built-in model's config and tokenizer without weights (its weights cannot be carried to
the machine): the checks build random-weight models from that config (a 2-layer tiny one, and the full 30-layer
shape, whose speed is the real model's). Prints one JSON line per check and writes them all to OUT_DIR/gpu.json.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

RESULTS: list[dict[str, Any]] = []


def report(check: str, **fields: Any) -> None:
    RESULTS.append({"check": check, **fields})
    print(json.dumps(RESULTS[-1]), flush=True)


def random_model(files: Path, out: Path, **shape: int) -> str:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(files)
    config.update(shape)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        if (files / name).exists():
            shutil.copy(files / name, out / name)
    return str(out)


async def reply(engine: Any, text: str, version: str | None = None, tokens: int = 16) -> tuple[str, set[str]]:
    from app.engines.base import Sampling

    out, versions = "", set()
    async for d in engine.chat([{"role": "user", "content": text}], Sampling(temperature=0, max_tokens=tokens),
                               version=version):  # fmt: skip
        out, versions = out + d.text, versions | {d.version}
    return out, versions


def check_engine(model_dir: str, work: Path, device: str) -> None:
    from app.bench.serve import make_adapters
    from app.engines.transformers import TransformersEngine

    engine = TransformersEngine.from_folder(model_dir, device=device)
    prompts = ["Hello there", "What is the capital of France?", "Count to five.", "Tell me about cats"]

    async def scenario() -> dict[str, Any]:
        alone = [(await reply(engine, p))[0] for p in prompts]
        together = [r[0] for r in await asyncio.gather(*(reply(engine, p) for p in prompts))]
        paths = make_adapters(model_dir, work)
        t0 = time.perf_counter()
        await engine.load("a", paths["bench-a"])
        first_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        await engine.load("a-again", paths["bench-a"])
        fast_load = time.perf_counter() - t0
        same = (await reply(engine, prompts[0], "a"))[0] == (await reply(engine, prompts[0], "a-again"))[0]
        mixed = await asyncio.gather(*(reply(engine, p, v) for p in prompts for v in ("v0", "a")))
        rows = await engine.prompt_logprobs("The capital of France is Paris", version="a", top=2)
        device_of_lora = str(next(p.device for n, p in engine._gen.model.named_parameters() if "lora_A" in n))
        return {
            "batched_equals_alone": together == alone,
            "mismatches": sum(a != b for a, b in zip(alone, together, strict=True)),
            "first_adapter_load_s": round(first_load, 3),
            "fast_path_load_s": round(fast_load, 3),
            "fast_path_same_output": same,
            "one_version_per_reply": all(len(v) == 1 for _, v in mixed),
            "logprobs_finite": all(r.logprob is None or r.logprob > -1e9 for r in rows),
            "lora_device": device_of_lora,
            "model_device": str(engine._gen.device),
            "dtype": str(next(engine._gen.model.parameters()).dtype),
        }

    try:
        report("engine_tiny", **asyncio.run(scenario()))
    finally:
        asyncio.run(engine.close())


def bench(model_dir: str, work: Path, device: str) -> None:
    from app.bench.serve import BenchConfig, baseline_tps, engine_load, make_adapters, swap_under_load
    from app.engines.base import Limits
    from app.engines.transformers import TransformersEngine

    cfg = BenchConfig(tokens=128, rounds=2, swaps=10, swap_tokens=64, steady_seconds=5.0)
    engine = TransformersEngine.from_folder(model_dir, device=device, limits=Limits(request_timeout=3600))
    try:
        asyncio.run(engine_load(engine, BenchConfig(streams=1, tokens=4, rounds=1)))
        base = baseline_tps(engine, cfg.tokens)
        batched = asyncio.run(engine_load(engine, cfg))
        report("throughput_135m_shape", baseline_tps=base, ratio=batched["tps"] / base, **batched)
        paths = make_adapters(model_dir, work)
        t0 = time.perf_counter()
        asyncio.run(engine.load("warm", paths["bench-a"]))
        asyncio.run(engine.unload("warm"))
        report("first_adapter_135m_shape", seconds=time.perf_counter() - t0)
        report("swap_135m_shape", **asyncio.run(swap_under_load(engine, paths, cfg)))
    finally:
        asyncio.run(engine.close())


def main() -> int:
    files, out = Path(sys.argv[1]), Path(sys.argv[2])
    device = sys.argv[3] if len(sys.argv) > 3 else "cuda"
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    report("machine", device=device, cuda=torch.cuda.is_available(), gpu=gpu, torch=torch.__version__)
    tiny = random_model(files, work / "tiny", num_hidden_layers=2, hidden_size=64, intermediate_size=128,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=16)  # fmt: skip
    try:
        check_engine(tiny, work / "tiny-adapters", device)
        full = random_model(files, work / "full")
        bench(full, work / "full-adapters", device)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        (out / "gpu.json").write_text(json.dumps(RESULTS, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
