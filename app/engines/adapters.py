"""LoRA adapters inside the embedded engine's single model (peft), one per model version.

An adapter folder is what peft's `save_pretrained` writes (adapter_config.json + adapter_model.safetensors).
`read_adapter` does the slow part (reading and checking the files) in any thread; `AdapterSet.inject` and `delete`
change the model's modules and must run in the generation thread between steps (GenerationLoop.call). Adapters are
created on the meta device and filled by assignment, so an injection costs no initialisation compute.
"""

from __future__ import annotations

import json
import warnings
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


class AdapterSet:
    """The peft wrapper around the engine's model, created with the first adapter. `names` is read by forward
    pre-hooks on every LoRA layer so each batch row uses its own adapter (peft's mixed-batch `adapter_names`)."""

    def __init__(self, model: Any, names: Any) -> None:
        self.model = model
        self.names = names  # an object whose `adapter_names` attribute is the current batch's list
        self.peft: Any = None
        self._hooked: set[int] = set()

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

    def delete(self, key: str) -> None:
        if self.peft is not None and key in self.peft.peft_config:
            with warnings.catch_warnings():  # "adapter X was active": peft's notion of active is unused here
                warnings.simplefilter("ignore")
                self.peft.delete_adapter(key)

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
