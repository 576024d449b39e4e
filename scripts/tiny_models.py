"""Tiny models built from configs, shared by the tests, the benchmarks and the fixture scripts
(`make_tiny_sd.py`, `make_tiny_llava.py`): one place for the sizes, each caller choosing its own.

    from tiny_models import llama_config, unet
    LlamaForCausalLM(llama_config())                  # 2 layers, hidden 32: test-sized
    LlamaForCausalLM(llama_config(hidden=256, layers=4, heads=4, kv_heads=4, vocab=2048, positions=256))
    unet(channels=(32, 64))                           # UNet2DConditionModel, cross-attention dim 32

Importable as `tiny_models` with `scripts/` on sys.path (test/python/conftest.py and bench/ put it there).
"""

from __future__ import annotations

from typing import Any

CROSS_ATTN_LAST = (("CrossAttnDownBlock2D", "DownBlock2D"), ("UpBlock2D", "CrossAttnUpBlock2D"))
CROSS_ATTN_FIRST = (("DownBlock2D", "CrossAttnDownBlock2D"), ("CrossAttnUpBlock2D", "UpBlock2D"))


def llama_config(
    hidden: int = 32,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    vocab: int = 100,
    positions: int = 64,
    intermediate: int | None = None,
    **extra: Any,
) -> Any:
    """A `LlamaConfig` (intermediate size 2 x hidden unless given); `extra` goes to the config as is."""
    from transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=hidden,
        intermediate_size=intermediate or 2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        vocab_size=vocab,
        max_position_embeddings=positions,
        **extra,
    )


def unet_kwargs(
    channels: tuple[int, ...] = (32, 64),
    layers_per_block: int = 1,
    sample_size: int = 16,
    cross_attention_dim: int = 32,
    head_dim: int | tuple[int, ...] = 8,
    groups: int = 8,
    blocks: tuple[tuple[str, ...], tuple[str, ...]] = CROSS_ATTN_LAST,
) -> dict[str, Any]:
    """`UNet2DConditionModel` keyword arguments for a 4-channel latent UNet of the given size."""
    return {
        "block_out_channels": channels,
        "layers_per_block": layers_per_block,
        "sample_size": sample_size,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": blocks[0],
        "up_block_types": blocks[1],
        "cross_attention_dim": cross_attention_dim,
        "attention_head_dim": head_dim,
        "norm_num_groups": groups,
    }


def unet(extra: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    """`UNet2DConditionModel(**unet_kwargs(**kwargs), **extra)` (random weights: seed torch first)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**unet_kwargs(**kwargs), **(extra or {}))
