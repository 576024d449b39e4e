"""CMMD against a direct, loop-by-loop computation of the formula."""

from __future__ import annotations

import math

import pytest
import torch
from oplora.metrics.cmmd import mmd2
from tiny_sd import build_tiny_sd


@pytest.fixture(scope="session")
def tiny_sd_assets():
    return build_tiny_sd()


def _direct(x: torch.Tensor, y: torch.Tensor, sigma: float = 10.0) -> float:
    def k(a, b):
        return math.exp(-float(((a - b) ** 2).sum()) / (2 * sigma**2))

    n, m = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n)) / n**2
    kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m)) / m**2
    kxy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return 1000 * (kxx + kyy - 2 * kxy)


def test_mmd2_matches_direct_formula():
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(7, 16, generator=g, dtype=torch.float64), dim=-1)
    y = torch.nn.functional.normalize(torch.randn(5, 16, generator=g, dtype=torch.float64) + 0.5, dim=-1)
    assert mmd2(x, y) == pytest.approx(_direct(x, y), rel=1e-9)
    assert mmd2(x, x) == pytest.approx(0.0, abs=1e-9)
    assert mmd2(x, y) > 0


def test_mmd2_bounded_for_unit_vectors():
    # unit vectors: ||a-b||² <= 4, so CMMD <= 2000 (1 - exp(-4/200)) ~ 39.6
    x = torch.tensor([[1.0, 0.0]])
    y = torch.tensor([[-1.0, 0.0]])
    assert mmd2(x, y) == pytest.approx(2000 * (1 - math.exp(-4 / 200)), rel=1e-9)


def test_cmmd_with_tiny_clip(tiny_sd_assets):
    from oplora.metrics.cmmd import ClipEmbedder, cmmd, load_images

    emb = ClipEmbedder(str(tiny_sd_assets / "clip"))
    ref = load_images(tiny_sd_assets / "data" / "reference")
    train = load_images(tiny_sd_assets / "data" / "train")
    e = emb(ref)
    torch.testing.assert_close(e.norm(dim=-1), torch.ones(len(ref)))
    out = cmmd(ref, train, emb)
    assert out["num_reference"] == len(ref) and out["num_generated"] == len(train)
    assert out["cmmd"] == pytest.approx(mmd2(e, emb(train)), rel=1e-6)
    assert cmmd(e, ref, emb)["cmmd"] == pytest.approx(0.0, abs=1e-4)
