"""From a spec's `adapter` block to a trainable module, and back to a plain PEFT model.

    spec.adapter.kind == "lora"     train PEFT's own lora_A / lora_B
    spec.adapter.kind == "op-lora"  attach a FactorGenerator; train only its parameters; collapse at the end

Tasks call `apply_adapter` after PEFT has injected LoRA layers, and `finalize_adapter` before export.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def lora_alpha(adapter: dict[str, Any]) -> float:
    """PEFT's `lora_alpha`; the spec leaves it out to mean `r` (scaling 1)."""
    return float(adapter.get("lora_alpha") or adapter["r"])


def lora_config_kwargs(adapter: dict[str, Any]) -> dict[str, Any]:
    """The `LoraConfig` fields every task takes from the spec's adapter block: `r`, `lora_alpha`,
    `use_rslora` (PEFT then scales ΔW by lora_alpha / sqrt(r)) and `use_dora` (PEFT's DoRA: W' = m · (W + ΔW)
    / ||W + ΔW||_c). OP-LoRA's generated factors go through the same PEFT forward, so the scale, the DoRA
    math, and after collapse the exported config, are PEFT's own."""
    return {
        "r": int(adapter["r"]),
        "lora_alpha": lora_alpha(adapter),
        "use_rslora": bool(adapter.get("use_rslora")),
        "use_dora": bool(adapter.get("use_dora")),
    }


def apply_adapter(peft_model: nn.Module, adapter: dict[str, Any]) -> tuple[nn.Module, list[nn.Parameter]]:
    """Returns (module to call while training, its trainable parameters)."""
    if adapter["kind"] == "op-lora":
        from .bind import attach
        from .config import OPLoRAConfig

        op = attach(peft_model, OPLoRAConfig.from_dict(adapter["generator"]))
        return op, op.trainable_parameters()
    params = list(lora_parameters(peft_model).values())
    for p in peft_model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    return peft_model, params


def lora_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The LoRA parameters PEFT injected (lora_A, lora_B, embedding variants), by qualified name, found
    through PEFT's own layer type (`peft.tuners.lora.LoraLayer`) rather than by parameter name."""
    from peft.tuners.lora import LoraLayer

    out: dict[str, nn.Parameter] = {}
    for module_name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            for attr in module.adapter_layer_names:
                for name, p in getattr(module, attr).named_parameters():
                    out[f"{module_name}.{attr}.{name}"] = p
    return out


def finalize_adapter(module: nn.Module) -> nn.Module:
    """The plain PEFT model: collapsed if OP-LoRA (generator gone), unchanged if LoRA."""
    from .bind import OPLoRAModel
    from .collapse import collapse

    return collapse(module) if isinstance(module, OPLoRAModel) else module


def count_parameters(params: list[nn.Parameter]) -> int:
    return sum(p.numel() for p in params)


def set_seed(seed: int) -> torch.Generator:
    """Seed torch (and numpy/random through accelerate's helper when present); return a CPU generator."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
