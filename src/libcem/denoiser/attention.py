"""Four graph attention (affinity) heads that weight the edges of a patch group, each in its own feature space.

- texture: high-frequency content (the AC DCT coefficients of the luminance patch);
- structure: gradients of the lightly smoothed luminance, sampled every other pixel;
- color: low-frequency chroma (patch means of the two chroma channels);
- spatial: the patch position.

Head h gives a squared distance d_h(j, k) per pair of group members (mean over its features);
the edge weight is the head mixture  w_jk = sum_h pi_h exp(-d_h(j, k) / beta_h), with a
bandwidth beta_h per head and mixing weights pi_h (softmax of logits), both fitted by EM.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def feature_maps(img: torch.Tensor, patch: int, heads: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Per-position head features for heads that need a map, each (Hn * Wn, d_h).

    img: (C, H, W) in luminance/chroma coordinates. `texture` is taken from the patches
    themselves and `spatial` from the positions, so they need no map.
    """
    _, h, w = img.shape
    hn, wn = h - patch + 1, w - patch + 1
    maps = {}
    if "structure" in heads:
        lum = F.avg_pool2d(F.pad(img[None, :1], (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        gy = F.pad(lum[..., 2:, :] - lum[..., :-2, :], (0, 0, 1, 1), mode="replicate") / 2
        gx = F.pad(lum[..., :, 2:] - lum[..., :, :-2], (1, 1, 0, 0), mode="replicate") / 2
        k = (patch + 1) // 2
        cols = F.unfold(torch.cat([gy, gx], 1), k, dilation=2)[0]  # (2 k k, positions)
        cols = cols.reshape(-1, h - 2 * k + 2, w - 2 * k + 2)[:, :hn, :wn]
        maps["structure"] = cols.reshape(cols.shape[0], -1).T
    if "color" in heads and img.shape[0] > 1:
        chroma = F.avg_pool2d(img[None, 1:], patch, stride=1)[0]  # (2, Hn, Wn)
        maps["color"] = chroma.reshape(chroma.shape[0], -1).T
    return maps


def _pairwise(feats: torch.Tensor) -> torch.Tensor:
    """(G, K, d) -> (G, K, K) mean squared distance over the d features."""
    sq = (feats * feats).sum(-1)
    d = sq[:, :, None] + sq[:, None, :] - 2 * feats @ feats.transpose(1, 2)
    return d.clamp_min(0) / feats.shape[-1]


def texture_graph(patches: torch.Tensor) -> torch.Tensor:
    """The texture head's edge weights (G, K, K), zero self-loops, over each group of K pixel
    patches (G, K, d), with each group's own bandwidth: the mean distance between its members.

    The patches' AC part has the distances of their AC DCT coefficients (the DCT is
    orthonormal), so no transform is needed. A per-group bandwidth makes the graph say which
    members are alike relative to the group, on the features it is applied to: a bandwidth
    shared by a chunk of groups (their median or mean distance), which makes flat groups
    complete graphs and textured ones nearly empty, gave 0.001-0.006 dB less on a Train400
    split, half or twice the mean 0.000-0.004 dB less (session 31). A group of equal patches
    is a complete graph."""
    ac = patches - patches.mean(-1, keepdim=True)
    sq = ac.square().sum(-1)  # (G, K); the distances as `_pairwise`, fused and in place (hot path)
    dist = torch.baddbmm(sq[:, :, None] + sq[:, None, :], ac, ac.transpose(1, 2), alpha=-2.0)
    k = dist.shape[-1]
    beta = dist.clamp_min_(0.0).sum((1, 2)) / (k * (k - 1))
    w = dist.div_(-beta.clamp_min(torch.finfo(dist.dtype).tiny)[:, None, None]).exp_()
    w.diagonal(dim1=1, dim2=2).zero_()
    return w


def head_distances(heads: tuple[str, ...], positions: torch.Tensor, texture: torch.Tensor,
                   maps: dict[str, torch.Tensor], width: int) -> torch.Tensor:
    """Squared distances between group members, one (G, K, K) slice per head: (H, G, K, K).

    positions: (G, K) flat positions; texture: (G, K, p*p - 1) the luminance patches' AC
    (non-DC) DCT coefficients; width: Wn, positions per row (for the spatial coordinates).
    """
    out = []
    for head in heads:  # at most four affinity heads
        if head == "chain":
            out.append(chain_distances(*positions.shape, texture.device).to(texture.dtype))
            continue
        if head == "texture":
            feats = texture
        elif head == "spatial":
            feats = torch.stack([positions // width, positions % width], -1).to(texture.dtype)
        else:
            feats = maps[head][positions]
        out.append(_pairwise(feats))
    return torch.stack(out)


def chain_distances(groups: int, k: int, device: torch.device | None = None) -> torch.Tensor:
    """(G, K, K) distances of a fixed chain over the members in matching order: 0 between
    neighbours, 1e6 otherwise (weights 1 and 0 at bandwidth 1). The Laplacian of a chain has the
    DCT-II as its eigenbasis, so this replaces attention by a DCT along the group (an ablation).
    """
    idx = torch.arange(k, device=device)  # made on the device: no copy from the host
    far = ((idx[:, None] - idx[None, :]).abs() != 1).double() * 1e6
    return far.expand(groups, k, k)


def attention_weights(dists: torch.Tensor, log_beta: torch.Tensor,
                      logit_pi: torch.Tensor) -> torch.Tensor:
    """Head-mixed edge weights (G, K, K) from distances (H, G, K, K); zero self-loops."""
    pi = torch.softmax(logit_pi, 0).to(dists.dtype)
    beta = log_beta.exp().to(dists.dtype)
    w = torch.einsum("h,hgjk->gjk", pi, torch.exp(-dists / beta[:, None, None, None]))
    return w * (1 - torch.eye(w.shape[-1], dtype=w.dtype, device=w.device))
