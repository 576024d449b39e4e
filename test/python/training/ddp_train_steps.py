"""OP-LoRA training steps on a tiny llama, for test_loop_ddp.py: one process, or one rank of a DDP launch.

    python -m torch.distributed.run --nproc_per_node 2 ... ddp_train_steps.py OUT_DIR [dora-direct]

Every rank trains on its share (rows rank::world) of the same global micro-batches through
``optimizer_step`` (one generation per optimizer step, accumulation 2) and writes its trainable
parameters to OUT_DIR/rank-<rank>.safetensors. ``train(0, 1)`` is the single-process run over the
whole global batch. "dora-direct": DoRA layers whose magnitudes train as plain parameters next to the
generator, so one optimizer step mixes DDP's usual gradient hooks with the generator's second backward.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "scripts"))  # tiny_models.py

STEPS, ACCUM, GLOBAL_BATCH, SEQ, LR = 3, 2, 4, 12, 2.0


def _loss(module: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return module(input_ids=ids, labels=ids).loss


def train(rank: int, world: int, steps: int = STEPS, mode: str = "lora") -> dict[str, torch.Tensor]:
    """The trainable parameters after `steps` optimizer steps (SGD with momentum)."""
    from oplora.bind import attach
    from oplora.config import OPLoRAConfig
    from oplora.training.loop import build_accelerator, build_optimizer, optimizer_step
    from peft import LoraConfig, get_peft_model
    from tiny_models import llama_config
    from transformers import LlamaForCausalLM

    accelerator = build_accelerator(
        {"gradient_accumulation_steps": ACCUM, "mixed_precision": "no"}, torch.device("cpu")
    )
    assert accelerator.num_processes == world, (accelerator.num_processes, world)
    torch.manual_seed(0)
    model = get_peft_model(
        LlamaForCausalLM(llama_config()),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"], use_dora=mode == "dora-direct"),
    )
    op = attach(model, OPLoRAConfig(embedding_dim=16, hidden_dim=8, magnitude="direct"))
    noise = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in op.generator.parameters():  # B != 0, so every generator tensor gets a gradient at step 1
            p.add_(torch.randn(p.shape, generator=noise) * 0.1)
    params = op.trainable_parameters()
    optimizer = build_optimizer(params, {"name": "momentum", "lr": LR, "momentum": 0.9})
    module, optimizer = accelerator.prepare(op, optimizer)
    module.train()
    ids = torch.randint(0, 100, (STEPS, ACCUM, GLOBAL_BATCH, SEQ), generator=torch.Generator().manual_seed(3))
    for step in range(steps):
        micro = [functools.partial(_loss, module, ids[step, m, rank::world]) for m in range(ACCUM)]
        optimizer_step(accelerator, module, optimizer, params, 1e9, micro, step + 1)
    accelerator.wait_for_everyone()
    trained = accelerator.unwrap_model(module).named_parameters()
    return {n: p.detach().clone() for n, p in trained if p.requires_grad}


def main(out_dir: str, mode: str = "lora") -> None:
    from safetensors.torch import save_file

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    save_file(train(rank, world, mode=mode), str(Path(out_dir) / f"rank-{rank}.safetensors"))


if __name__ == "__main__":
    main(*sys.argv[1:])
