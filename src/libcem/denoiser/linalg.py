"""Batched linear algebra for the passes' small symmetric positive definite systems."""

from __future__ import annotations

import torch

SPD_BLOCK = 25  # `spd_inverse` factorises blocks up to this size with LAPACK
SPD_BLOCK_COND = 1000.0  # ... and inverts by blocks the matrices whose condition is at most this
BLOCK_DEVICES = ("cpu",)  # where the blocks pay; choosing them reads numbers back from the device


def spd_inverse(m: torch.Tensor, ridge: torch.Tensor | float) -> torch.Tensor:
    """The inverse of a batch (G, d, d) of symmetric positive definite matrices M = P + ridge I,
    P positive semi-definite, ridge > 0 a float or one per matrix (G,).

    On the CPU, the matrices whose condition number is at most SPD_BLOCK_COND (bounded by
    tr M / ridge) are inverted by blocks, through the Schur complement: M = [[A, B], [B^T, D]],
    S = D - B^T A^-1 B, both inverted the same way, down to blocks of SPD_BLOCK, which go to
    LAPACK's Cholesky. The work is then batched matrix products instead of LAPACK's
    unblocked per-matrix loops: 1.4-1.7x faster than a Cholesky inverse at d = 49 and 2.1x
    at d = 81 (batches of 128, one thread). Through an explicit A^-1 the rounding error
    grows with the square of the condition number instead of with it: below 1,000,
    |X M - I| stayed under 7e-4 on 40,000 matrices of real covariance passes (Cholesky: 4e-5).
    The whole batch is inverted by blocks and the others are inverted again through Cholesky;
    a batch that is mostly ill-conditioned, and every batch on a GPU, goes through Cholesky
    alone. Raises torch.linalg.LinAlgError when a matrix is not positive definite.
    """
    d = m.shape[-1]
    if d <= SPD_BLOCK or m.device.type not in BLOCK_DEVICES:
        return _cholesky_inverse(m)
    bound = m.diagonal(dim1=1, dim2=2).sum(1) / ridge  # >= the condition number
    easy = bound <= SPD_BLOCK_COND
    if 2 * int(easy.sum()) < easy.numel():  # mostly ill-conditioned (sigma below 5 or so)
        return _cholesky_inverse(m)
    failed = torch.zeros(m.shape[0], dtype=torch.bool, device=m.device)
    out = _block_inverse(m, failed)
    if bool((failed & easy).any()):  # as torch.linalg.cholesky says it
        raise torch.linalg.LinAlgError("spd_inverse: a matrix is not positive definite")
    hard = ~easy
    if bool(hard.any()):  # the ill-conditioned ones again, through Cholesky: 2-9% at sigma 10-50
        out[hard] = _cholesky_inverse(m[hard])
    return out


def _cholesky_inverse(m: torch.Tensor) -> torch.Tensor:
    return torch.cholesky_inverse(torch.linalg.cholesky(m))


def _block_inverse(m: torch.Tensor, failed: torch.Tensor) -> torch.Tensor:
    """Block inversion of every matrix of m (G, d, d); `failed` (G,) marks those whose blocks
    were not positive definite (their inverse is then meaningless)."""
    d = m.shape[-1]
    if d <= SPD_BLOCK:
        chol, info = torch.linalg.cholesky_ex(m)
        bad = info != 0
        failed |= bad
        # a failed factor can hold an exact zero on its diagonal, which cholesky_inverse refuses
        # (it raised for a whole batch): the identity stands in, and `failed` discards the result
        eye = torch.eye(d, dtype=m.dtype, device=m.device)
        return torch.cholesky_inverse(torch.where(bad[:, None, None], eye, chol))
    h = d // 2
    a, b, dd = m[:, :h, :h], m[:, :h, h:], m[:, h:, h:]
    a_inv = _block_inverse(a, failed)
    a_inv_b = a_inv @ b
    s_inv = _block_inverse(torch.baddbmm(dd, b.transpose(1, 2), a_inv_b, alpha=-1), failed)
    upper = -(a_inv_b @ s_inv)  # (G, h, d - h)
    left = torch.baddbmm(a_inv, upper, a_inv_b.transpose(1, 2), alpha=-1)
    return torch.cat([torch.cat([left, upper], 2), torch.cat([upper.transpose(1, 2), s_inv], 2)], 1)
