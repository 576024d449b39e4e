"""Effective rank (Roy & Vetterli 2007) of a matrix, e.g. a LoRA update ΔW = scaling · B @ A.

    p_i            = σ_i / Σ_j σ_j                  σ: singular values of W
    effective_rank = exp(-Σ_i p_i log p_i)           (terms with p_i = 0 count as 0)

It lies in [1, min(rows, cols)] for a nonzero matrix: 1 for rank one, n for an n x n identity (any matrix
whose nonzero singular values are all equal has effective rank equal to its rank). The zero matrix has no
distribution p; we return 0 for it, so that "ΔW = 0 at step 0" reads as rank 0 on a curve.
"""

from __future__ import annotations

import torch


def effective_rank_of_singular_values(sigma: torch.Tensor) -> float:
    """Effective rank from singular values `sigma` (any order, nonnegative)."""
    s = sigma.detach().double().abs()
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s / total
    entropy = -(p * torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))).sum()
    return float(torch.exp(entropy))


def effective_rank(w: torch.Tensor) -> float:
    """Effective rank of the matrix `w` (d_out, d_in)."""
    if w.ndim != 2:
        raise ValueError(f"effective_rank: expected a matrix, got a tensor of shape {tuple(w.shape)}")
    return effective_rank_of_singular_values(torch.linalg.svdvals(w.detach().double()))
