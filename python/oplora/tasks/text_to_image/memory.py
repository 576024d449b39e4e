"""The plan's text-to-image activation terms (plan.py's `memory_terms` hook), from the UNet, VAE and text
encoder configs, the batch size and the resolution; no weights are loaded.

Unit: one element per token-channel, n·C with n = batch x h x w tokens of a C-channel feature map (latent
h = w = resolution / VAE scale, halved at each UNet level). What autograd saves for backward, per block:

    resnet            3·n·C_in + 3·n·C    (GroupNorm, SiLU, conv inputs: x, norm(x), silu(norm(x)) of each half)
                                          up blocks concatenate the skip: C_in ≈ 2·C there
    transformer       3·n·C               (GroupNorm, proj_in, proj_out inputs)
      + per layer     28·n·C + 2·b·L·C    (3 LayerNorms' in/out 6, self-attention q k v out 4, cross-attention
                                          q out 2, GEGLU feed-forward (4C inner) 16; cross-attention K, V of
                                          L text tokens; CPU/flash attention keeps no n x n map)
    down/upsample     n·C                 (the conv's input)
    output            3·n_0·C_0           (norm_out, SiLU, conv_out inputs)

Blocks before the first adapted layer save nothing (their inputs need no gradient): with the default
attention targets the first resnets do not count. Under gradient checkpointing (diffusers checkpoints
every resnet and transformer) see plan.py's `saved_activations`. The text encoder runs under no_grad
unless it is trained (then 9·D + 2·I per token per layer, b·L tokens); the VAE encode runs under
no_grad and holds about three maps of its first level (3·b·R²·C_vae0 at resolution R) while nothing
else of the step is live: it counts only beyond the UNet's activations.
"""

from __future__ import annotations

from typing import Any

from ...plan import activation_bytes, saved_activations

RESNET_MODULES = {"conv1", "conv2", "conv_shortcut", "time_emb_proj"}


def _per_level(value: Any, levels: int) -> list[int]:
    return list(value) if isinstance(value, list | tuple) else [int(value)] * levels


def unet_blocks(
    cfg: dict[str, Any], b: int, side: int, text_len: int, targets: list[str]
) -> list[tuple[int, int]]:
    """(saved elements, input elements) of each UNet block in forward order (see the module docstring)."""
    ch = list(cfg["block_out_channels"])
    levels = len(ch)
    lpb = _per_level(cfg["layers_per_block"], levels)
    tpb = _per_level(cfg.get("transformer_layers_per_block") or 1, levels)
    tokens = [b * (side >> i) ** 2 for i in range(levels)]
    resnet_adapted = any(t.split(".")[-1] in RESNET_MODULES for t in targets)
    out: list[tuple[int, int]] = []
    live = [False]  # autograd records once the first adapted layer has run

    def resnet(c_in: int, c: int, n: int) -> None:
        live[0] = live[0] or resnet_adapted
        out.append((3 * n * c_in + 3 * n * c, n * c_in) if live[0] else (0, 0))

    def transformer(c: int, n: int, layers: int) -> None:
        live[0] = True
        out.append((3 * n * c + layers * (28 * n * c + 2 * b * text_len * c), n * c))

    def conv(c: int, n: int) -> None:
        out.append((n * c, n * c) if live[0] else (0, 0))

    c_in = ch[0]
    for i, kind in enumerate(cfg["down_block_types"]):
        for _ in range(lpb[i]):
            resnet(c_in, ch[i], tokens[i])
            c_in = ch[i]
            if "CrossAttn" in kind:
                transformer(ch[i], tokens[i], tpb[i])
        if i < levels - 1:
            conv(ch[i], tokens[i])
    mid = cfg.get("mid_block_type") or ""
    if mid:
        resnet(ch[-1], ch[-1], tokens[-1])
        if "CrossAttn" in mid:
            transformer(ch[-1], tokens[-1], tpb[-1])
        resnet(ch[-1], ch[-1], tokens[-1])
    for j, kind in enumerate(cfg["up_block_types"]):
        i = levels - 1 - j
        for _ in range(lpb[i] + 1):
            resnet(2 * ch[i], ch[i], tokens[i])
            if "CrossAttn" in kind:
                transformer(ch[i], tokens[i], tpb[i])
        if i > 0:
            conv(ch[i], tokens[i - 1])
    out.append((3 * tokens[0] * ch[0], tokens[0] * ch[0]))
    return out


def _configs(spec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], list[tuple[dict[str, Any], int]]]:
    """UNet config, VAE config, [(text encoder config, tokenizer max length)] of the spec's pipeline."""
    from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel
    from transformers import AutoConfig, AutoTokenizer

    model = spec["model"]
    path, rev = model["pretrained"], model.get("revision")
    unet = UNet2DConditionModel.load_config(path, subfolder="unet", revision=rev)
    vae_kw = {} if model.get("vae") else {"subfolder": "vae", "revision": rev}
    vae = AutoencoderKL.load_config(model.get("vae") or path, **vae_kw)
    index = DiffusionPipeline.load_config(path, revision=rev)
    encoders = []
    for te, tok in (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2")):
        if index.get(te) and index[te][0]:
            cfg = AutoConfig.from_pretrained(path, subfolder=te, revision=rev).to_dict()
            length = AutoTokenizer.from_pretrained(path, subfolder=tok, revision=rev).model_max_length
            encoders.append(
                (cfg.get("text_config", cfg), int(min(length, cfg.get("max_position_embeddings", length))))
            )
    return unet, vae, encoders


def memory_terms(spec: dict[str, Any]) -> dict[str, tuple[int, str]]:
    """UNet and text-encoder activations and the VAE encode's transient (see the module docstring)."""
    unet, vae, encoders = _configs(spec)
    b, res = int(spec["train"]["batch_size"]), int(spec["data"]["resolution"])
    side = res // 2 ** (len(vae["block_out_channels"]) - 1)
    text_len = max((n for _, n in encoders), default=77)
    ckpt, nbytes = bool(spec["train"]["gradient_checkpointing"]), activation_bytes(spec)
    unet_acts = saved_activations(
        unet_blocks(unet, b, side, text_len, spec["adapter"]["target_modules"]), ckpt
    )
    text_acts = 0
    if spec["adapter"]["train_text_encoder"]:
        for cfg, length in encoders:
            d, inner = int(cfg["hidden_size"]), int(cfg["intermediate_size"])
            layer = (9 * d + 2 * inner) * b * length
            text_acts += saved_activations([(layer, b * length * d)] * int(cfg["num_hidden_layers"]), ckpt)
    vae_acts = 3 * b * res * res * int(vae["block_out_channels"][0])  # fp32: the VAE stays fp32
    vae_extra = max(0, vae_acts * 4 - (unet_acts + text_acts) * nbytes)
    return {
        "unet_activations": (
            unet_acts * nbytes,
            "UNet activations saved for backward: per block from the UNet config at batch x (resolution / "
            "VAE scale)² tokens (resnet 3·n·C_in + 3·n·C, transformer 3·n·C + 28·n·C + 2·b·L·C per layer, "
            "down/upsample n·C), from the first adapted block on; checkpointing: block inputs + the "
            f"largest block; x {nbytes} bytes",
        ),
        "text_encoder_activations": (
            text_acts * nbytes,
            "text encoders: 0 under no_grad (not trained); trained: (9·D + 2·I) x batch x L per layer",
        ),
        "vae_encode_transient": (
            vae_extra,
            "VAE encode under no_grad: 3 x batch x resolution² x its first block's channels x 4 bytes, "
            "beyond the UNet activations (the two are not live at once)",
        ),
    }
