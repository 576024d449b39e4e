"""The plan's LLaVA activation terms (plan.py's `memory_terms` hook), from the model config, the batch size
and data.max_length (the longest sequence a batch pads to, image tokens included); no weights are loaded.
A batch pads to its longest record, so the term is exact for a batch that holds a max_length record and a
bound otherwise (bench/memory.py: 0.96-0.98x the measured tensor peak at max_length = the longest record,
1.49x for the small LLaVA with the tests' max_length 64 over 28-29-token records).

Per token (b x S tokens, S = data.max_length), what autograd saves for backward in one decoder layer of
hidden size H, MLP size I (every default target is a decoder-layer Linear, so every layer counts):

    2 RMSNorms        4·H       (input and normalised output of each)
    attention         5·H       (q, k, v with the key/value heads repeated to all heads, output; CPU/flash
                                attention keeps no S x S map) + the o_proj input after the head merge
    MLP               4·I       (gate, SiLU(gate), up, their product: down_proj's input)
    LoRA              r per adapted layer (the x·Aᵀ that B multiplies)

and after the layers: the final norm 2·H and the logits: 3·V per token (lm_head output, its fp32 shifted
copy, log-softmax). The vision tower and projector are frozen and run before any adapted layer: they save
nothing (their no_grad-like transient is over before the language model's activations exist).
Gradient checkpointing: plan.py's `saved_activations` (layer inputs + one layer recomputed).
"""

from __future__ import annotations

from typing import Any

from ...plan import activation_bytes, saved_activations
from .model import DTYPES, language_model_prefix, llava_config, lora_layer_shapes, meta_model


def memory_terms(spec: dict[str, Any]) -> dict[str, tuple[int, str]]:
    """The language model's activations (see the module docstring)."""
    config = llava_config(spec["model"]["pretrained"], spec["model"].get("revision"))
    text = config.text_config
    h, inner, vocab = int(text.hidden_size), int(text.intermediate_size), int(text.vocab_size)
    tokens = int(spec["train"]["batch_size"]) * int(spec["data"]["max_length"])
    prefix = language_model_prefix(meta_model(config))
    adapted = [name for name, _, _ in lora_layer_shapes(spec) if name.startswith(prefix + ".")]
    r, layers = int(spec["adapter"]["r"]), int(text.num_hidden_layers)
    per_layer = (9 * h + 4 * inner) * tokens + r * tokens * len(adapted) // max(layers, 1)
    blocks = [(per_layer, h * tokens)] * (layers if adapted else 0)
    acts = saved_activations(blocks, bool(spec["train"]["gradient_checkpointing"]))
    acts += (2 * h + 3 * vocab) * tokens if adapted else 0
    nbytes = activation_bytes(spec) if DTYPES[spec["model"]["dtype"]].itemsize == 4 else 2
    return {
        "lm_activations": (
            acts * nbytes,
            "language-model activations saved for backward: batch x data.max_length tokens x ((9·H + 4·I + "
            "r per adapted layer) per decoder layer + 2·H + 3·V for the final norm and the logits); "
            f"checkpointing: layer inputs + one layer; x {nbytes} bytes; the frozen vision tower saves none; "
            "a bound: a batch pads to its longest record, so records shorter than max_length use less",
        ),
    }
