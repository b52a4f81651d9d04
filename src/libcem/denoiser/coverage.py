"""Groups left out where earlier groups already cover their reference patch (NL-Bayes's speed-up, in rounds).

NL-Bayes (Lebrun, Buades & Morel, IPOL 2013) does not take as a reference a patch that an
earlier group already denoised as one of its members: in smooth areas a group's K members
spread over its search window, so most references there add estimates to pixels that
already have many, while a patch of rare structure is in few groups and keeps its own. That
rule is sequential, one group after another. Here it runs in four rounds over the stride
grid's parity classes -- (even, even), that is every other reference across and down, then
(odd, odd), (even, odd), (odd, even) -- each round batched: the first round is kept whole,
and a reference of a later round is kept only if some pixel of its patch is still covered by
fewer than `fraction` x K p^2 / step^2 member patches of the groups kept so far (K p^2 /
step^2 is the mean coverage of the full grid's groups). Every pixel a full grid covers stays
covered: a pixel no kept group reaches keeps the references whose patch holds it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# the grid's parity classes in the order their references are taken: the first covers the
# image at twice the stride, the second fills its gaps diagonally
ROUNDS = ((0, 0), (1, 1), (0, 1), (1, 0))


def pixel_coverage(starts: torch.Tensor, height: int, width: int, patch: int) -> torch.Tensor:
    """(1, 1, H, W) how many patches cover each pixel, from `starts` (Hn * Wn,), the number of
    patches at each position of a `height` x `width` grid of patch positions. The box is
    spread along the rows, then along the columns: exact counts (whole numbers in float32)."""
    row = torch.ones(1, 1, 1, patch, dtype=starts.dtype, device=starts.device)
    spread = F.conv_transpose2d(starts.view(1, 1, height, width), row)
    return F.conv_transpose2d(spread, row.transpose(2, 3))


def covered_groups(positions: torch.Tensor, height: int, width: int, step: int, patch: int,
                   fraction: float) -> torch.Tensor:
    """The rows of `positions` (N, K) to keep, a (N,) mask: the groups of the references on the
    stride-`step` grid (row-major, as `patches.block_match` gives them) over a Hn x Wn =
    `height` x `width` grid of patch positions, members as flat positions. fraction 0 keeps
    all; the larger it is, the more groups are kept."""
    n, k = positions.shape
    if fraction <= 0:
        return torch.ones(n, dtype=torch.bool, device=positions.device)
    threshold = fraction * k * patch * patch / step**2
    columns = (width - 1) // step + 1
    index = torch.arange(n, device=positions.device)
    row, col = index // columns % 2, index % columns % 2
    members = positions.reshape(-1)
    starts = torch.zeros(height * width, dtype=torch.float32, device=positions.device)
    keep = torch.zeros(n, dtype=torch.bool, device=positions.device)
    for r, (pr, pc) in enumerate(ROUNDS):
        taken = (row == pr) & (col == pc)
        if r > 0:
            # pixels covered by the member patches kept so far, then each patch's least covered
            pixels = pixel_coverage(starts, height, width, patch)
            least = -F.max_pool2d(F.max_pool2d(-pixels, (1, patch), stride=1), (patch, 1),
                                  stride=1).reshape(-1)  # (Hn * Wn,), separably
            taken &= least[positions[:, 0]] < threshold
        keep |= taken
        # a mask as weights instead of boolean indexing: no read back from a GPU per round
        starts.index_add_(0, members, taken[:, None].expand(n, k).reshape(-1).float())
    return keep
