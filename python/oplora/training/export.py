"""Export: the trained adapter as a standard PEFT adapter directory.

    out_dir/adapter_config.json          the LoraConfig
    out_dir/adapter_model.safetensors    base_model.model.<module>.lora_A.weight / .lora_B.weight

One layout for every model, the one `PeftModel.save_pretrained` writes, so `PeftModel.from_pretrained(base,
out_dir)` loads it. A model with injected adapters (diffusers' `unet.add_adapter`) also gets the LoraConfig in
the file's header under diffusers' `lora_adapter_metadata` key, prefixed like the tensors, so diffusers'
`unet.load_lora_adapter(out_dir, weight_name="adapter_model.safetensors", prefix="base_model.model")` reads
the same file with its `lora_alpha`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

PEFT_PREFIX = "base_model.model"  # a PeftModel's state-dict prefix for its wrapped model


def lora_config_dict(model: nn.Module, adapter_name: str = "default") -> dict[str, Any]:
    """`model`'s LoraConfig as a JSON-ready dict (sets as sorted lists)."""
    cfg = model.peft_config[adapter_name].to_dict()  # type: ignore[index, union-attr]
    return {k: sorted(v) if isinstance(v, set) else v for k, v in cfg.items()}


def save_peft_dir(model: nn.Module, out_dir: Path, adapter_name: str = "default") -> Path:
    """Write a PEFT adapter directory (adapter_config.json + adapter_model.safetensors) for `model`: a
    `PeftModel` saves itself; a model with injected adapters is saved through PEFT's own state-dict helper
    under the prefix a `PeftModel` gives it, so the files are the same either way."""
    from peft import PeftModel, get_peft_model_state_dict
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(model, PeftModel):
        model.save_pretrained(str(out_dir))
        return out_dir
    state = get_peft_model_state_dict(model, adapter_name=adapter_name)
    config = {f"{PEFT_PREFIX}.{k}": v for k, v in lora_config_dict(model, adapter_name).items()}
    save_file(
        {f"{PEFT_PREFIX}.{k}": v.detach().cpu().contiguous() for k, v in state.items()},
        str(out_dir / "adapter_model.safetensors"),
        metadata={"format": "pt", "lora_adapter_metadata": json.dumps(config, sort_keys=True)},
    )
    model.peft_config[adapter_name].save_pretrained(str(out_dir))  # type: ignore[union-attr, index]
    return out_dir


def save_adapter(
    module: nn.Module,
    out_dir: Path,
    ctx: Any | None = None,
    step: int | None = None,
    label: str | None = None,
) -> nn.Module:
    """Collapse (OP-LoRA) or keep (LoRA) the adapter, write it as a PEFT adapter directory, and emit an
    "adapter" artifact when `ctx` is given. Returns the plain model (collapse changes it in place: call once)."""
    from ..adapter import finalize_adapter

    plain = finalize_adapter(module)
    save_peft_dir(plain, out_dir)
    if ctx is not None:
        ctx.artifact("adapter", Path(out_dir), step=step, label=label)
    return plain
