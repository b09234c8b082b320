"""Shared fixtures: a temp data dir and database, the built-in model folder, and a tiny random model built from
SmolLM2's config with its real tokenizer and chat template (for fast tests)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from learner.model_files import BUILTIN, default_cache_dir, load_tokenizer, resolve_model
from storage.db import make_engine, upgrade
from storage.versions import ensure_base_version

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def builtin_dir() -> str:
    """The converted built-in model (the shared cache; `make model` prepared it)."""
    return resolve_model(BUILTIN, default_cache_dir())


@pytest.fixture(scope="session")
def tiny_model_dir(builtin_dir: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(builtin_dir)
    config.update(
        {
            "num_hidden_layers": 2,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
        }
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    out = tmp_path_factory.mktemp("tiny-smollm2")
    model.save_pretrained(out)
    load_tokenizer(builtin_dir).save_pretrained(out)
    return str(out)


@pytest.fixture()
def engine(tmp_path: Path):
    eng = make_engine(f"sqlite:///{tmp_path / 'test.db'}")
    upgrade(eng)
    ensure_base_version(eng)
    yield eng
    eng.dispose()
