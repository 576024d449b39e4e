"""Export after collapse: PEFT adapter dirs per component and one diffusers LoRA file.

    DIR/adapter/unet/                 adapter_config.json + adapter_model.safetensors (PEFT's layout:
                                      PeftModel.from_pretrained(pipe.unet, DIR/adapter/unet))
    DIR/adapter/text_encoder[_2]/     (with adapter.train_text_encoder)
    DIR/diffusers_lora/pytorch_lora_weights.safetensors   pipe.load_lora_weights(DIR/diffusers_lora)

The diffusers file carries each component's LoraConfig as metadata (`*_lora_adapter_metadata`), so
`lora_alpha` survives a reload (without it diffusers assumes lora_alpha = r).
"""

from __future__ import annotations

from typing import Any

from torch import nn


def export_adapters(
    module: nn.Module, pipe: Any, ctx: Any, adapter: dict[str, Any], step: int
) -> dict[str, Any]:
    """Collapse `module` (OP-LoRA) in place, write the PEFT dirs and the diffusers file, emit artifacts.
    Returns {"adapter_dir", "adapter_dirs", "diffusers_lora"} (paths relative to the run dir)."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    from ...adapter import finalize_adapter
    from ...training.export import lora_config_dict, save_peft_dir
    from .pipeline import text_encoders

    finalize_adapter(module)  # OP-LoRA: collapsed in place, the Denoiser's LoRA layers now hold plain A, B
    components: list[tuple[str, nn.Module]] = [("unet", pipe.unet)]
    if adapter["train_text_encoder"]:
        components += [(name, te) for name, _, te in text_encoders(pipe)]
    dirs = {}
    kwargs: dict[str, Any] = {}
    for name, m in components:
        d = save_peft_dir(m, ctx.path("adapter", name, "x").parent)
        dirs[name] = ctx.rel(d)
        layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(m))
        kwargs[f"{name}_lora_layers"] = layers if name == "unet" else text_encoder_dora_keys(layers)
        kwargs[f"{name}_lora_adapter_metadata"] = lora_config_dict(m)
    ctx.artifact("adapter", ctx.path("adapter", "x").parent, step=step, label="PEFT adapter dirs")
    out = ctx.path("diffusers_lora", "x").parent
    type(pipe).save_lora_weights(str(out), **kwargs)
    ctx.artifact("diffusers_lora", out / "pytorch_lora_weights.safetensors", step=step)
    return {
        "adapter_dir": ctx.rel(ctx.path("adapter", "x").parent),
        "adapter_dirs": dirs,
        "diffusers_lora": ctx.rel(out / "pytorch_lora_weights.safetensors"),
    }


def text_encoder_dora_keys(layers: dict[str, Any]) -> dict[str, Any]:
    """A text encoder's DoRA magnitudes as `<layer>.lora_magnitude_vector.weight` in the diffusers file.

    PEFT saves them without `.weight`, and `load_lora_weights` passes a text encoder's keys to transformers'
    `load_adapter`, which inserts the adapter name at the end (`...lora_magnitude_vector.default_0`) where
    PEFT's DoRA module holds `...lora_magnitude_vector.default_0.weight`: the magnitudes were reported
    unexpected and stayed at their initial values (diffusers 0.42.1, transformers 5.25). With the suffix they
    load; the UNet's keys go through PEFT's own loader and keep PEFT's form. test_export.py checks both.
    """
    suffix = ".lora_magnitude_vector"
    return {(k + ".weight" if k.endswith(suffix) else k): v for k, v in layers.items()}
