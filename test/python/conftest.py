"""Shared tiny-model fixtures: every model is built from a config, offline, in well under a second.

Fixtures (all factories take ``seed`` so two calls build identical weights):
- ``device``: "cpu", and "cuda" when available (skipped with a reason otherwise).
- ``make_tiny_net``: a TinyNet (2 Conv2d + 4 Linear layers, five LoRA shape groups at r = 4).
- ``make_tiny_peft``: a TinyNet under ``get_peft_model`` with LoRA on every layer.
- ``make_tiny_llama``: a 2-layer LlamaForCausalLM (hidden 32, vocab 100).
- ``make_tiny_unet``: a tiny UNet2DConditionModel (block_out_channels (32, 64), cross-attention dim 32).
- ``unet_lora_config``: LoRA on the UNet's attention projections and resnet convolutions.
- ``tiny_input``, ``llama_input_ids``, ``unet_inputs``: matching inputs.
- ``train_steps``: a few AdamW steps on an OPLoRAModel's generator.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))  # tiny_models.py: shared builders

TINY_NET_TARGETS = ["conv1", "conv2", "q", "k", "v", "o"]


@pytest.fixture(
    params=[
        "cpu",
        pytest.param(
            "cuda",
            marks=pytest.mark.skipif(
                not torch.cuda.is_available(), reason="CUDA is not available on this machine"
            ),
        ),
    ]
)
def device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.param)


class TinyNet(nn.Module):
    """x (N, 3, 6, 6) -> conv1 -> conv2 -> mean over space (N, 8) -> [q·k, v] (N, 28) -> o -> (N, 5).

    With ``checkpoint=True`` both halves run under non-reentrant ``torch.utils.checkpoint``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.q, self.k, self.v = nn.Linear(8, 16), nn.Linear(8, 16), nn.Linear(8, 12)
        self.o = nn.Linear(28, 5)
        self.checkpoint = False

    def _convs(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(F.relu(self.conv1(x)))).mean((2, 3))  # (N, 8)

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        return self.o(torch.cat([self.q(h) * self.k(h), self.v(h)], dim=-1))  # (N, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.checkpoint:
            from torch.utils.checkpoint import checkpoint

            h = checkpoint(self._convs, x, use_reentrant=False)
            return checkpoint(self._head, h, use_reentrant=False)
        return self._head(self._convs(x))


@pytest.fixture
def make_tiny_net() -> Callable[..., TinyNet]:
    def make(seed: int = 0) -> TinyNet:
        torch.manual_seed(seed)
        return TinyNet()

    return make


@pytest.fixture
def tiny_input() -> torch.Tensor:
    return torch.randn(4, 3, 6, 6, generator=torch.Generator().manual_seed(123))


@pytest.fixture
def make_tiny_peft(make_tiny_net: Callable[..., TinyNet]) -> Callable[..., nn.Module]:
    def make(seed: int = 0, r: int = 4, lora_alpha: int = 8, **kwargs: object) -> nn.Module:
        config = LoraConfig(r=r, lora_alpha=lora_alpha, target_modules=TINY_NET_TARGETS, **kwargs)
        return get_peft_model(make_tiny_net(seed), config)

    return make


@pytest.fixture
def make_tiny_llama() -> Callable[..., nn.Module]:
    from tiny_models import llama_config
    from transformers import LlamaForCausalLM

    def make(seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        return LlamaForCausalLM(llama_config()).eval()

    return make


@pytest.fixture
def llama_input_ids() -> torch.Tensor:
    return torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(7))


@pytest.fixture
def make_tiny_unet() -> Callable[..., nn.Module]:
    from tiny_models import CROSS_ATTN_FIRST, unet

    def make(seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        return unet(blocks=CROSS_ATTN_FIRST).eval()

    return make


@pytest.fixture
def unet_lora_config() -> LoraConfig:
    return LoraConfig(
        r=4,
        lora_alpha=8,
        init_lora_weights="gaussian",
        target_modules=["to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2"],
    )


@pytest.fixture
def unet_inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return {
        "sample": torch.randn(2, 4, 16, 16, generator=g),
        "timestep": torch.tensor([10, 500]),
        "encoder_hidden_states": torch.randn(2, 7, 32, generator=g),
    }


@pytest.fixture
def train_steps() -> Callable[..., None]:
    """``train_steps(op, loss_fn, steps=3, lr=1e-2)``: a few AdamW steps on ``op.trainable_parameters()``."""

    def train(
        op: nn.Module, loss_fn: Callable[[nn.Module], torch.Tensor], steps: int = 3, lr: float = 1e-2
    ) -> None:
        op.train()
        opt = torch.optim.AdamW(op.trainable_parameters(), lr=lr)
        for _ in range(steps):
            loss_fn(op).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        op.eval()

    return train
