"""The factor generator: every adapted layer's OP-LoRA MLP, stacked per group of same-shaped layers.

OP-LoRA (arXiv 2412.10362) generates each layer's LoRA factors from a learned embedding::

    h_l = ReLU(W1_l z_l + b1_l)          # z_l: (e,)   W1_l: (h, e)   b1_l: (h,)
    A_l = reshape(WA_l h_l + bA_l)       # WA_l: (r·d_in, h)    -> A_l: lora_A weight shape, e.g. (r, d_in)
    B_l = reshape(WB_l h_l + bB_l)       # WB_l: (d_out·r, h)   -> B_l: lora_B weight shape, e.g. (d_out, r)
    m_l = reshape(WM_l h_l + bM_l)       # DoRA only, WM_l: (d_out, h) -> m_l: PEFT's magnitude shape, (d_out,)

Nothing is shared between layers. Layers whose (A shape, B shape, dtype) agree form a group; a group's
parameters are stacked along a leading axis of size L, so a group costs three batched matrix-vector
products ("batched") instead of 3·L small ones ("loop", kept as the reference). Groups are split into
chunks of at most ``chunk_bytes`` per stacked weight: on the CPU, allocations above glibc's mmap
threshold are page-faulted afresh every step, which cost more than the products themselves.

Initialisation follows the first author's code: z ~ N(0, init_std²); W1, b1 and WA at PyTorch's default
``nn.Linear`` init (U(-1/√fan_in, 1/√fan_in)); bA = 0; WB = bB = 0, so B = 0 and ΔW = 0 at step 0.
The magnitude head (DoRA) starts at WM = 0 and bM = the magnitude PEFT initialised (the base weight's
column norms), so m_l, too, is PEFT's own at step 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import OPLoRAConfig, resolve_formulation

LayerShapes = tuple[torch.Size, ...]  # (lora_A weight shape, lora_B weight shape[, DoRA magnitude shape])
CPU_CHUNK_BYTES = 16 * 2**20


def default_chunk_bytes(device: torch.device | str | None) -> int | None:
    """Most bytes per stacked head weight in one group chunk: 16 MiB on the CPU, no limit on CUDA.

    On the CPU, tensors above glibc's largest mmap threshold (32 MiB) are fresh mappings that page-fault
    on every step's gradient allocation: SDXL-shaped set, forward + backward, batched: 174 ms in 16 MiB
    chunks (27 groups) vs 251 ms unchunked (4 groups) with 2 threads (287 vs 429 ms with 1); 32 MiB was
    as fast, 64 MiB and up as slow as unchunked, 4 MiB and below slower again. CUDA's caching allocator reuses blocks, and fewer, larger
    kernels are cheaper there (to be confirmed by ``scripts/gpu-check.sh``).
    """
    return None if torch.device(device or "cpu").type == "cuda" else CPU_CHUNK_BYTES


class _StackedAffine(torch.autograd.Function):
    """y = W x + b for a stack of L independent layers: W (L, m, k), x (L, k), b (L, m) -> y (L, m).

    Same values as ``baddbmm(b, W, x)``; the backward forms ∂W = g ⊗ x by broadcasting, a single memory-bound pass,
    where autograd's ``bmm`` backward runs a k = 1 batched GEMM that is several times slower on the CPU.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, W: Tensor, b: Tensor, x: Tensor) -> Tensor:
        ctx.save_for_backward(W, x)
        # As (L, 1, k) @ (L, k, m): a row vector times Wᵀ. The column form W @ x (L, m, 1) gives the same
        # sums but ran ~6x slower on the CPU (2.0 vs 0.3 ms for W (8, 4096, 32), 1 thread, torch 2.13).
        return torch.baddbmm(b.unsqueeze(1), x.unsqueeze(1), W.transpose(1, 2)).squeeze(1)  # (L, m)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, g: Tensor) -> tuple[Tensor | None, ...]:
        W, x = ctx.saved_tensors  # type: ignore[attr-defined]
        need_W, need_b, need_x = ctx.needs_input_grad  # type: ignore[attr-defined]
        gW = g.unsqueeze(2) * x.unsqueeze(1) if need_W else None  # (L, m, k)
        gx = torch.bmm(g.unsqueeze(1), W).squeeze(1) if need_x else None  # (L, k)
        return gW, (g if need_b else None), gx


def _uniform_(t: Tensor, fan_in: int) -> Tensor:
    """PyTorch's default ``nn.Linear`` init (kaiming_uniform with a = √5), applied per stacked layer."""
    bound = 1.0 / math.sqrt(fan_in)
    return nn.init.uniform_(t, -bound, bound)


class FactorGroup(nn.Module):
    """The MLPs of L layers sharing one (A shape, B shape[, magnitude shape], dtype), stacked along dim 0.

    Parameters (float32): ``z`` (L, e), ``W1`` (L, h, e), ``b1`` (L, h), and one head per output shape:
    ``WA`` (L, n_A, h), ``bA`` (L, n_A), ``WB`` (L, n_B, h), ``bB`` (L, n_B) and, with DoRA magnitudes,
    ``WM`` (L, n_M, h), ``bM`` (L, n_M), with n_X = numel(X shape).
    """

    def __init__(
        self,
        layers: Sequence[int],
        shapes: Sequence[torch.Size],
        dtype: torch.dtype,
        config: OPLoRAConfig,
        device: torch.device | None = None,
        magnitudes: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.layers = tuple(layers)  # global layer indices, in the order stacked here
        self.shapes, self.dtype = tuple(torch.Size(s) for s in shapes), dtype
        L, e, h = len(self.layers), config.embedding_dim, config.hidden_dim
        n_a, n_b = self.shapes[0].numel(), self.shapes[1].numel()
        kw = {"device": device, "dtype": torch.float32}
        self.z = nn.Parameter(torch.empty(L, e, **kw).normal_(0.0, config.init_std))
        self.W1 = nn.Parameter(_uniform_(torch.empty(L, h, e, **kw), fan_in=e))
        self.b1 = nn.Parameter(_uniform_(torch.empty(L, h, **kw), fan_in=e))
        self.WA = nn.Parameter(_uniform_(torch.empty(L, n_a, h, **kw), fan_in=h))
        self.bA = nn.Parameter(torch.zeros(L, n_a, **kw))
        self.WB = nn.Parameter(torch.zeros(L, n_b, h, **kw))
        self.bB = nn.Parameter(torch.zeros(L, n_b, **kw))
        self.heads = ["A", "B"]
        if len(self.shapes) == 3:
            if magnitudes is None or magnitudes.shape != (L, self.shapes[2].numel()):
                raise ValueError(
                    f"FactorGroup: expected initial magnitudes of shape {(L, self.shapes[2].numel())}"
                )
            self.WM = nn.Parameter(torch.zeros(L, self.shapes[2].numel(), h, **kw))
            self.bM = nn.Parameter(magnitudes.detach().to(**kw).clone())
            self.heads.append("M")

    def extra_repr(self) -> str:
        shapes = ", ".join(f"{k}={tuple(s)}" for k, s in zip(self.heads, self.shapes, strict=True))
        return f"L={len(self.layers)}, {shapes}, dtype={self.dtype}"

    def _params(self) -> tuple[list[Tensor], list[tuple[Tensor, Tensor]]]:
        # Always compute in float32, whatever the module was cast to.
        trunk = [p.float() for p in (self.z, self.W1, self.b1)]
        heads = [(getattr(self, f"W{k}").float(), getattr(self, f"b{k}").float()) for k in self.heads]
        return trunk, heads

    def batched(self, cast: bool = True) -> tuple[Tensor, ...]:
        """A (L, *A shape), B (L, *B shape)[, M (L, *magnitude shape)] in the group's dtype (float32 with
        cast=False), from one stacked product per layer of the MLP."""
        (z, W1, b1), heads = self._params()
        h = F.relu(_StackedAffine.apply(W1, b1, z))  # (L, h)
        L, dtype = len(self.layers), self.dtype if cast else torch.float32
        return tuple(
            _StackedAffine.apply(W, b, h).to(dtype).view(L, *shape)  # (L, n_X) -> (L, *X shape)
            for (W, b), shape in zip(heads, self.shapes, strict=True)
        )

    def loop(self, cast: bool = True) -> list[tuple[Tensor, ...]]:
        """The reference: one small MLP call per layer; [(A_l, B_l[, m_l])] in the group's dtype (or float32)."""
        trunk, pairs = self._params()
        # unbind once per tensor: its backward stacks the per-layer gradients in one pass, where indexing
        # each layer (W[i]) gives every layer's gradient a full-size zero tensor (5x slower, bench/generator.py)
        z, W1, b1 = (t.unbind(0) for t in trunk)
        heads = [(W.unbind(0), b.unbind(0)) for W, b in pairs]
        dtype = self.dtype if cast else torch.float32
        out = []
        for i in range(len(self.layers)):
            h = F.relu(F.linear(z[i], W1[i], b1[i]))  # (h,)
            out.append(
                tuple(
                    F.linear(h, W[i], b[i]).to(dtype).view(shape)
                    for (W, b), shape in zip(heads, self.shapes, strict=True)
                )
            )
        return out


def _check_layer(i: int, shapes: LayerShapes, magnitude: Tensor | None) -> None:
    if len(shapes) not in (2, 3) or len(shapes[0]) < 2 or len(shapes[1]) < 2 or shapes[0][0] != shapes[1][1]:
        raise ValueError(
            f"FactorGenerator: layer {i} has shapes {[tuple(s) for s in shapes]}; expected A (r, d_in, ...) and "
            "B (d_out, r, ...) with the same r, and optionally a DoRA magnitude shape"
        )
    if len(shapes) == 3:
        d_out = shapes[1][0]
        if shapes[2].numel() != d_out or magnitude is None or magnitude.numel() != d_out:
            raise ValueError(
                f"FactorGenerator: layer {i}: the DoRA magnitude (shape {tuple(shapes[2])}, initial value "
                f"{None if magnitude is None else tuple(magnitude.shape)}) must have d_out = {d_out} entries"
            )
    elif magnitude is not None:
        raise ValueError(f"FactorGenerator: layer {i} has an initial magnitude but no magnitude shape")


class FactorGenerator(nn.Module):
    """Generates every adapted layer's LoRA factors (A_l, B_l) from its own MLP; see the module docstring.

    Args:
        shapes: per layer, ``(lora_A weight shape, lora_B weight shape)``; Linear: ((r, d_in), (d_out, r)),
            Conv2d: ((r, d_in, kh, kw), (d_out, r, 1, 1)); a DoRA layer whose magnitude is generated adds
            PEFT's magnitude shape: (d_out,) for Linear, (1, d_out, 1, 1) for Conv2d.
        config: embedding size e, hidden size h, init std of z, default formulation.
        dtypes: per layer, the dtype A_l and B_l are cast to (the LoRA weights'); default float32.
        device: where the parameters live.
        chunk_bytes: most bytes of one stacked weight (WA or WB) per group chunk; ``None``: no limit;
            ``"auto"``: :func:`default_chunk_bytes` of ``device``.
        magnitudes: per layer, the initial magnitude (the bias of its third head) for layers with a
            magnitude shape, ``None`` for the others.
    """

    def __init__(
        self,
        shapes: Sequence[Sequence[Sequence[int]]],
        config: OPLoRAConfig | None = None,
        dtypes: Sequence[torch.dtype] | None = None,
        device: torch.device | str | None = None,
        chunk_bytes: int | None | str = "auto",
        magnitudes: Sequence[Tensor | None] | None = None,
    ) -> None:
        super().__init__()
        self.config = config if config is not None else OPLoRAConfig()
        self.shapes: tuple[LayerShapes, ...] = tuple(tuple(torch.Size(s) for s in layer) for layer in shapes)
        if not self.shapes:
            raise ValueError("FactorGenerator: shapes is empty; expected at least one layer")
        n = len(self.shapes)
        dtypes = [torch.float32] * n if dtypes is None else list(dtypes)
        magnitudes = [None] * n if magnitudes is None else list(magnitudes)
        if len(dtypes) != n or len(magnitudes) != n:
            raise ValueError(
                f"FactorGenerator: {len(dtypes)} dtypes, {len(magnitudes)} magnitudes for {n} layers"
            )
        for i, (layer, m) in enumerate(zip(self.shapes, magnitudes, strict=True)):
            _check_layer(i, layer, m)
        by_key: dict[tuple[LayerShapes, torch.dtype], list[int]] = {}
        for i, (shape, dtype) in enumerate(zip(self.shapes, dtypes, strict=True)):
            by_key.setdefault((shape, dtype), []).append(i)
        if chunk_bytes == "auto":
            chunk_bytes = default_chunk_bytes(device)
        h = self.config.hidden_dim
        groups = []
        for (layer_shapes, dtype), layers in by_key.items():
            per_layer = max(s.numel() for s in layer_shapes) * h * 4
            size = len(layers) if chunk_bytes is None else max(1, int(chunk_bytes) // per_layer)
            for s in range(0, len(layers), size):
                chunk = layers[s : s + size]
                init = None
                if len(layer_shapes) == 3:
                    init = torch.stack([magnitudes[i].detach().float().reshape(-1) for i in chunk])  # type: ignore[union-attr]
                groups.append(FactorGroup(chunk, layer_shapes, dtype, self.config, device, init))
        self.groups = nn.ModuleList(groups)

    @property
    def num_layers(self) -> int:
        return len(self.shapes)

    def extra_repr(self) -> str:
        return f"layers={self.num_layers}, e={self.config.embedding_dim}, h={self.config.hidden_dim}"

    def forward(self, formulation: str | None = None, cast: bool = True) -> list[tuple[Tensor, ...]]:
        """Returns ``[(A_l, B_l)]`` (``(A_l, B_l, m_l)`` for a layer with a generated DoRA magnitude) for
        every layer l, in the order of ``shapes``, in each layer's dtype (``cast=False``: in float32, the
        generator's compute dtype).

        ``formulation``: "batched", "loop" or "auto" (default: the config's); both give the same values
        and gradients. In "batched" each A_l is a view of its group's stacked output, taken with one
        ``unbind`` (whose backward is one ``stack``), so per-layer access costs no copy.
        """
        device = next(iter(self.parameters())).device
        how = resolve_formulation(formulation or self.config.formulation, device)
        out: list[tuple[Tensor, ...] | None] = [None] * self.num_layers
        with torch.autocast(device.type, enabled=False):  # float32 even inside a mixed-precision region
            for group in self.groups:
                if how == "batched":
                    pairs = zip(*(t.unbind(0) for t in group.batched(cast)), strict=True)
                else:
                    pairs = group.loop(cast)
                for layer, pair in zip(group.layers, pairs, strict=True):
                    out[layer] = pair
        return out  # type: ignore[return-value]
