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


def apply_adapter(peft_model: nn.Module, adapter: dict[str, Any]) -> tuple[nn.Module, list[nn.Parameter]]:
    """Returns (module to call while training, its trainable parameters)."""
    if adapter["kind"] == "op-lora":
        from .bind import attach
        from .config import OPLoRAConfig

        op = attach(peft_model, OPLoRAConfig.from_dict(adapter["generator"]))
        return op, list(op.generator.parameters())
    params = [p for n, p in peft_model.named_parameters() if "lora_" in n]
    for n, p in peft_model.named_parameters():
        p.requires_grad_("lora_" in n)
    return peft_model, params


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
