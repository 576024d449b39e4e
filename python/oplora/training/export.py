"""Export: the trained adapter as a standard PEFT adapter directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn


def save_peft_dir(model: nn.Module, out_dir: Path, adapter_name: str = "default") -> Path:
    """Write a PEFT adapter directory (adapter_config.json + adapter_model.safetensors) for `model`: a
    `PeftModel` saves itself; a model with injected adapters (diffusers' `unet.add_adapter`) is saved
    through PEFT's own state-dict helper, so the files are the same either way."""
    from peft import PeftModel, get_peft_model_state_dict
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(model, PeftModel):
        model.save_pretrained(str(out_dir))
        return out_dir
    state = get_peft_model_state_dict(model, adapter_name=adapter_name)
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in state.items()},
        str(out_dir / "adapter_model.safetensors"),
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
