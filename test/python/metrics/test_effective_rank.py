import math

import pytest
import torch
from oplora.metrics.effective_rank import effective_rank, effective_rank_of_singular_values


def test_rank_one_is_one():
    u, v = torch.randn(7, 1), torch.randn(1, 5)
    assert effective_rank(u @ v) == pytest.approx(1.0, abs=1e-6)


def test_identity_n_is_n():
    for n in (1, 3, 16):
        assert effective_rank(torch.eye(n)) == pytest.approx(n, rel=1e-9)


def test_equal_singular_values_give_the_rank():
    q, _ = torch.linalg.qr(torch.randn(10, 10, dtype=torch.float64))
    w = 3.0 * q[:, :4] @ q[:, 4:8].T  # rank 4, all singular values 3
    assert effective_rank(w) == pytest.approx(4.0, rel=1e-9)


def test_matches_a_direct_computation():
    w = torch.randn(6, 9, generator=torch.Generator().manual_seed(0))
    s = [float(x) for x in torch.linalg.svdvals(w.double())]
    p = [x / sum(s) for x in s]
    expected = math.exp(-sum(pi * math.log(pi) for pi in p))
    assert effective_rank(w) == pytest.approx(expected, rel=1e-9)
    assert effective_rank_of_singular_values(torch.tensor(s)) == pytest.approx(expected, rel=1e-6)


def test_zero_matrix_is_zero_and_zeros_among_sigma_are_ignored():
    assert effective_rank(torch.zeros(4, 3)) == 0.0
    assert effective_rank_of_singular_values(torch.tensor([2.0, 2.0, 0.0])) == pytest.approx(2.0)


def test_rejects_non_matrices():
    with pytest.raises(ValueError, match="shape"):
        effective_rank(torch.zeros(2, 2, 2))
