"""`apprentice export-model`: a version with a real LoRA adapter (tiny model) merged into a plain transformers folder
that AutoModelForCausalLM loads without peft and that answers like the version (greedy, the same tokens)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

from app.services.export_model import export_merged
from learner.adapters import adapter_checksum
from storage import versions
from storage.errors import ApprenticeError
from tests.serving_helpers import make_adapter
from tests.test_browser_chat import cli

PROMPT = [{"role": "user", "content": "What is the capital of Zorbia?"}]


def greedy(model, tokenizer, n: int = 12) -> list[int]:
    ids = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=n, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return out[0, ids["input_ids"].shape[1] :].tolist()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_exported_folder_loads_plainly_and_answers_like_the_version(engine, tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = make_adapter(tiny_model_dir, tmp_path / "versions" / "v1", seed=3)
    versions.create_version(
        engine, name="v1", adapter_path=folder, parent="v0", checksum=adapter_checksum(Path(folder))
    )
    out = export_merged(engine, name="v1", base_folder=tiny_model_dir, out=tmp_path / "export" / "v1")
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    assert not (out / "adapter_config.json").exists()

    exported = AutoModelForCausalLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    version = PeftModel.from_pretrained(base, folder).eval()
    as_served = greedy(version, tokenizer)
    assert greedy(exported, tokenizer) == as_served
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    assert greedy(plain, tokenizer) != as_served  # the adapter changes the answer, so the test above means something

    with pytest.raises(ApprenticeError, match="not an empty folder"):
        export_merged(engine, name="v1", base_folder=tiny_model_dir, out=out)
    (Path(folder) / "adapter_model.safetensors").write_bytes(b"damaged")
    with pytest.raises(ApprenticeError, match="checksum"):
        export_merged(engine, name="v1", base_folder=tiny_model_dir, out=tmp_path / "export" / "again")
    assert not (tmp_path / "export" / "again").exists()


def test_cli_exports_the_base_version_and_names_an_unknown_one(tiny_model_dir, tmp_path):
    env = {"APPRENTICE_HOME": str(tmp_path), "APPRENTICE_MODEL": tiny_model_dir}

    done = subprocess.run(cli("export-model", "v0", "--out", str(tmp_path / "v0")), capture_output=True, text=True,
                          env={**os.environ, **env})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "exported v0" in done.stdout and (tmp_path / "v0" / "config.json").is_file()
    bad = subprocess.run(cli("export-model", "v9", "--out", str(tmp_path / "v9")), capture_output=True, text=True,
                         env={**os.environ, **env})  # fmt: skip
    assert bad.returncode == 1 and bad.stderr.strip() == "error: no model version named 'v9'"
