"""LLaVA models: check a path is one, find the language model's linear layers, plan without weights.

spec.model.pretrained ──llava_config──► LlavaConfig (refuses other model types)
                      ──meta_model──► LlavaForConditionalGeneration on the meta device (no weights)
meta model ──default_target_modules──► regex over every nn.Linear of the language model
                                       (`model.language_model.layers.N.{self_attn,mlp}.*` in transformers 5;
                                       not the vision tower, not the projector, not lm_head)
           ──targeted_linears──► [(name, d_in, d_out)] that PEFT will adapt, by PEFT's own matching rule
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import looks_local
from .data import DataError

#: spec.model.dtype -> torch dtype.
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PROJECTOR = "multi_modal_projector"


def llava_config(pretrained: str, revision: str | None = None) -> Any:
    """The model's config; DataError when the path is no LLaVA model (or cannot be read)."""
    from transformers import AutoConfig

    if looks_local(pretrained) and not Path(pretrained).expanduser().exists():
        raise DataError(f"model.pretrained: {pretrained} does not exist")
    try:
        config = AutoConfig.from_pretrained(pretrained, revision=revision)
    except (OSError, ValueError) as e:
        raise DataError(f"model.pretrained: cannot read a model config from {pretrained!r} ({e})") from e
    if getattr(config, "model_type", None) != "llava":
        raise DataError(
            f"model.pretrained: {pretrained!r} is not a LLaVA model (config model_type "
            f"{getattr(config, 'model_type', None)!r}; expected 'llava', e.g. llava-hf/llava-1.5-7b-hf)"
        )
    return config


def meta_model(config: Any) -> nn.Module:
    """LlavaForConditionalGeneration with every tensor on the meta device (shapes only, no memory)."""
    import torch
    from transformers import LlavaForConditionalGeneration

    with torch.device("meta"):
        return LlavaForConditionalGeneration(config)


def language_model_prefix(model: nn.Module) -> str:
    """The module name of the language model inside a LLaVA model (`model.language_model` in transformers 5)."""
    inner = model.get_decoder() if hasattr(model, "get_decoder") else None
    for name, module in model.named_modules():
        if module is inner:
            return name
    for name, _ in model.named_modules():
        if name.endswith("language_model"):
            return name
    raise ValueError("cannot find the language model inside this LLaVA model")


def default_target_modules(model: nn.Module) -> str | list[str]:
    """A PEFT regex matching every nn.Linear of the language model's decoder layers; an explicit name list
    when the layers do not follow the `<prefix>.layers.N.<path>` pattern."""
    prefix = language_model_prefix(model)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.startswith(prefix + ".")]
    if not names:
        raise ValueError(f"no linear layers under {prefix}")
    layer = re.compile(rf"^{re.escape(prefix)}\.layers\.\d+\.(.+)$")
    suffixes = sorted({m.group(1) for n in names if (m := layer.match(n))})
    if len(suffixes) and all(layer.match(n) for n in names):
        alt = "|".join(re.escape(s) for s in suffixes)
        return rf"{re.escape(prefix)}\.layers\.\d+\.({alt})"
    return names


def targeted_linears(model: nn.Module, target_modules: str | list[str]) -> list[tuple[str, int, int]]:
    """(name, d_in, d_out) of every nn.Linear PEFT would adapt for `target_modules` (PEFT's matching rule)."""
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists

    cfg = LoraConfig(target_modules=target_modules)
    return [
        (n, m.in_features, m.out_features)
        for n, m in model.named_modules()
        if isinstance(m, nn.Linear) and n and check_target_module_exists(cfg, n)
    ]


def resolve_targets(spec: dict[str, Any], model: nn.Module) -> str | list[str]:
    return spec["adapter"].get("target_modules") or default_target_modules(model)


def lora_layer_shapes(spec: dict[str, Any]) -> list[tuple[str, tuple[int, ...], tuple[int, ...]]]:
    """(name, lora_A weight shape (r, d_in), lora_B weight shape (d_out, r)) per adapted layer, from the
    config alone (meta device)."""
    model = meta_model(llava_config(spec["model"]["pretrained"], spec["model"].get("revision")))
    r = int(spec["adapter"]["r"])
    return [
        (n, (r, d_in), (d_out, r)) for n, d_in, d_out in targeted_linears(model, resolve_targets(spec, model))
    ]


def base_parameter_count(spec: dict[str, Any]) -> int:
    """Parameters of the base model (vision tower + projector + language model + lm_head), from the config."""
    model = meta_model(llava_config(spec["model"]["pretrained"], spec["model"].get("revision")))
    return sum(p.numel() for p in model.parameters())
