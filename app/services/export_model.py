"""A version as a plain transformers folder: the base model with the version's LoRA adapter merged into its weights
(peft's merge_and_unload), saved with its config, generation config and tokenizer (chat template included), so
`AutoModelForCausalLM.from_pretrained(folder)` and vLLM load it without peft or Apprentice.

The merge is done in float32 and the weights are saved in the base model's own dtype (its config's torch_dtype). The
folder appears under its final name only when complete (written beside it, then renamed).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from sqlalchemy import Engine as Database

from learner.adapters import verify_adapter
from learner.model_files import load_tokenizer
from storage import versions
from storage.errors import ApprenticeError


def export_merged(db: Database, *, name: str, base_folder: str, out: Path) -> Path:
    """Write version `name` merged into the base model at `base_folder` to the new folder `out`; returns `out`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    version = versions.get_version(db, name=name)
    out = out.resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ApprenticeError(f"{out} already exists and is not an empty folder; choose a new --out")
    if version.adapter_path is not None:
        verify_adapter(version.adapter_path, version.checksum)  # a damaged adapter is refused, not exported
    config = AutoConfig.from_pretrained(base_folder)
    saved_dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or torch.float32
    if isinstance(saved_dtype, str):
        saved_dtype = getattr(torch, saved_dtype)
    model = AutoModelForCausalLM.from_pretrained(base_folder, dtype=torch.float32)
    if version.adapter_path is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, version.adapter_path).merge_and_unload()
    model = model.to(saved_dtype).eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-export-{out.name}-", dir=out.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        load_tokenizer(base_folder).save_pretrained(tmp)
        note = {"version": version.name, "parent": version.parent, "base_model": base_folder,
                "adapter": version.adapter_path, "adapter_checksum": version.checksum}  # fmt: skip
        (tmp / "apprentice_export.json").write_text(json.dumps(note, indent=2))
        if out.exists():
            out.rmdir()  # the empty folder checked above
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
