"""LoRA adapters inside the embedded engine's single model (peft), one per model version.

An adapter folder is what peft's `save_pretrained` writes (adapter_config.json + adapter_model.safetensors).
Every step that changes the model's modules runs in the generation thread between steps (GenerationLoop.call), so
its length is a pause for every stream. Two ways in:
- the first adapter (or one targeting layers no earlier adapter touched) goes through peft's `add_adapter`, which
  wraps the targeted layers: a pause of about a second for the built-in model on 2 CPU cores;
- later adapters on already-wrapped layers are built off the generation thread (`prepare`: modules made on the meta
  device, weights assigned from the file) and only attached in it (`attach`: a few dictionary entries per layer),
  a pause of milliseconds. This covers plain LoRA (no DoRA, no bias, no rank/alpha patterns); anything else takes
  peft's path. Deleting pops the same entries from every LoRA layer, without peft's walk over all modules.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.engines.base import EngineError


def read_adapter(path: str, device: Any) -> tuple[Any, dict[str, Any]]:
    """(peft config, weights on `device`) of a LoRA adapter folder; a clear EngineError when it is not one."""
    from peft import LoraConfig, PeftType
    from peft.utils import load_peft_weights

    folder = Path(path)
    config_file = folder / "adapter_config.json"
    if not config_file.is_file():
        raise EngineError(f"{path} is not a LoRA adapter folder (no adapter_config.json in it)")
    try:
        raw = json.loads(config_file.read_text())
        if raw.get("peft_type", "LORA") != PeftType.LORA:
            raise EngineError(f"{path} holds a {raw.get('peft_type')} adapter; only LoRA adapters can be served")
        config = LoraConfig.from_pretrained(str(folder))
        weights = load_peft_weights(str(folder), device=str(device))
    except EngineError:
        raise
    except Exception as e:  # corrupt JSON or safetensors, missing weights file
        raise EngineError(f"cannot read the adapter in {path}: {e}") from e
    config.inference_mode = True
    return config, weights


def _loaded_linear() -> type:
    import torch

    class Loaded(torch.nn.Linear):
        """A Linear whose weights come from a file: no random initialisation to pay for first."""

        def reset_parameters(self) -> None:
            pass

    return Loaded


_WEIGHT_KEY = re.compile(r"^base_model\.model\.(.+)\.lora_([AB])\.weight$")


@dataclass
class Prepared:
    """An adapter's modules, built off the generation thread, ready to attach to already-wrapped layers."""

    config: Any
    parts: list[tuple[Any, Any, Any, int, float]]  # (layer, lora_A, lora_B, r, scaling)


class AdapterSet:
    """The peft wrapper around the engine's model, created with the first adapter. `names` is read by forward
    pre-hooks on every LoRA layer so each batch row uses its own adapter (peft's mixed-batch `adapter_names`)."""

    def __init__(self, model: Any, names: Any) -> None:
        self.model = model
        self.names = names  # an object whose `adapter_names` attribute is the current batch's list
        self.peft: Any = None
        self._hooked: set[int] = set()
        self._layers: list[Any] = []  # every LoRA layer, in model order

    def inject(self, key: str, config: Any, weights: dict[str, Any]) -> None:
        from peft import PeftModel, set_peft_model_state_dict

        try:
            if self.peft is None:
                self.peft = PeftModel(self.model, config, adapter_name=key, low_cpu_mem_usage=True)
            else:
                self.peft.add_adapter(key, config, low_cpu_mem_usage=True)
            result = set_peft_model_state_dict(self.peft, weights, adapter_name=key, low_cpu_mem_usage=True)
            missing = [k for k in result.missing_keys if "lora_" in k and f".{key}." in k]
            if missing:
                raise EngineError(f"the adapter lacks {len(missing)} weights its config asks for, e.g. {missing[0]}")
        except Exception as e:
            if self.peft is not None and key in self.peft.peft_config:
                self.peft.delete_adapter(key)
            if isinstance(e, EngineError):
                raise
            raise EngineError(f"the adapter does not fit this base model: {e}") from e
        self.model.eval()  # new dropout modules start in training mode
        self._hook_new_layers()

    def prepare(self, config: Any, weights: dict[str, Any]) -> Prepared | None:
        """The fast path's modules (any thread), or None when the adapter needs peft's injection."""
        import torch
        from peft.tuners.lora.layer import Linear as LoraLinear

        if self.peft is None or config.use_dora or config.lora_bias or config.rank_pattern or config.alpha_pattern:
            return None
        if config.modules_to_save or getattr(config, "trainable_token_indices", None):
            return None
        pairs: dict[str, dict[str, Any]] = {}
        for name, tensor in weights.items():
            match = _WEIGHT_KEY.match(name)
            if match is None:
                return None
            pairs.setdefault(match.group(1), {})[match.group(2)] = tensor
        parts, loaded = [], _loaded_linear()
        for path, ab in pairs.items():
            try:
                layer = self.model.get_submodule(path)
            except AttributeError:
                return None
            if not isinstance(layer, LoraLinear) or set(ab) != {"A", "B"}:
                return None
            if not parts and layer.resolve_lora_variant(config=config) is not None:  # DoRA and the like: peft's way
                return None
            base = layer.get_base_layer().weight
            r = ab["A"].shape[0]
            if ab["A"].shape != (r, layer.in_features) or ab["B"].shape != (layer.out_features, r):
                raise EngineError(f"the adapter's {path} weights do not fit this base model's layer")
            modules = []
            for tensor, (n_in, n_out) in ((ab["A"], (layer.in_features, r)), (ab["B"], (r, layer.out_features))):
                linear = loaded(n_in, n_out, bias=False, device="meta")
                dtype = torch.float32 if tensor.dtype in (torch.float16, torch.bfloat16) else tensor.dtype  # as peft
                linear.weight = torch.nn.Parameter(tensor.to(base.device, dtype), requires_grad=False)
                modules.append(linear)
            scaling = config.lora_alpha / (math.sqrt(r) if config.use_rslora else r)
            parts.append((layer, modules[0], modules[1], r, scaling))
            time.sleep(0)  # hand the GIL to the generation thread often: this runs beside live streams
        return Prepared(config, parts) if parts else None

    def attach(self, key: str, prepared: Prepared) -> None:
        """Hook a prepared adapter into its layers (generation thread): what peft's update_layer records."""
        import torch

        for layer, lora_a, lora_b, r, scaling in prepared.parts:
            layer.r[key] = r
            layer.lora_alpha[key] = prepared.config.lora_alpha
            layer.scaling[key] = scaling
            layer.lora_dropout[key] = torch.nn.Identity()
            layer.lora_bias[key] = False
            layer.use_dora[key] = False
            layer.lora_A[key] = lora_a
            layer.lora_B[key] = lora_b
        self.peft.peft_config[key] = prepared.config

    def delete(self, key: str) -> None:
        """Remove `key` from every LoRA layer (generation thread); the layers stay wrapped for the next adapter."""
        from peft.tuners.lora import LoraLayer

        if self.peft is None or key not in self.peft.peft_config:
            return
        for module in self._layers:
            if isinstance(module, LoraLayer):
                for attr in module.adapter_layer_names + module.other_param_names:
                    entries = getattr(module, attr, None)
                    if entries is not None and key in entries:
                        del entries[key]
        del self.peft.peft_config[key]

    def _hook_new_layers(self) -> None:
        from peft.tuners.lora import LoraLayer

        names = self.names

        def pass_names(_module: Any, args: Any, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
            kwargs["adapter_names"] = names.adapter_names
            return args, kwargs

        for module in self.model.modules():
            if isinstance(module, LoraLayer) and id(module) not in self._hooked:
                module.register_forward_pre_hook(pass_names, with_kwargs=True)
                self._hooked.add(id(module))
                self._layers.append(module)
