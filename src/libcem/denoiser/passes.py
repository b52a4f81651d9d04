"""The two passes of the denoiser on one image (or tile) held as a float tensor (C, H, W).

Pass 1, graph diffusion: block matching on the noisy luminance gives each reference patch a
group of K neighbours; the graph attention (affinity) heads weight the group's edges; EM fits
the Gaussian graph-diffusion group model (see `em`); each group's posterior mean -- the
implicit graph diffusion (I + tau L)^-1 with per-group scales, applied per DCT coefficient --
is aggregated back.
Pass 2, on groups matched again on the pass-1 estimate (as BM3D's second step, Dabov 2007):
either the NL-Bayes estimate with each group's full patch covariance taken from the estimate
(`covariance`, Lebrun, Buades & Morel 2013) and refined by EM on the noisy patches, or an
empirical Wiener filter in the estimate's graph Fourier x DCT basis with the pilot's
coefficients as signal variances (graph Wiener).
Later second passes (`later_pass2`: the covariance pass) take the previous estimate as pilot
and, with `feedback`, denoise the estimate plus part of its residual (iterative
regularisation). `DenoiseConfig.at_sigma` picks patch size, passes and their number by noise
level (since session 12, covariance passes only at every level by default).
With `combination_passes` (the "best" speed, `--best`), group-axis Wiener passes follow
(`combination`, after LIChI): each patch becomes a linear combination of its group's patches,
the weights from the previous estimate, iterated on partly denoised versions of the image.
Spatially correlated noise (`correlated`) enters through `PatchGroups`: scaled DCT coefficients
and whitened pixel patches, so that every pass sees white noise of one variance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from libcem.denoiser import combination, covariance, em
from libcem.denoiser.attention import (
    attention_weights,
    chain_distances,
    feature_maps,
    head_distances,
    texture_graph,
)
from libcem.denoiser.correlated import NoiseCorrelation
from libcem.denoiser.coverage import covered_groups
from libcem.denoiser.graph import spectrum
from libcem.denoiser.noise import estimate_sigma
from libcem.denoiser.parallel import chunk_threads, map_ordered
from libcem.denoiser.patches import (
    PatchAccumulator,
    all_patches,
    block_match,
    dct_1d,
    dct_matrix,
    from_opponent,
    pad_to_grid,
    to_opponent,
)
from libcem.denoiser.settings import DenoiseConfig

# a noise std below this (0..255 scale; a third of 8-bit rounding's 0.29) is no noise: the image
# is returned as it is, with nothing to remove (a clean colour JPEG's estimate was 0.0015;
# `covariance.SHRINK_FLOOR` keeps the passes' factorisations sound at any sigma)
NO_NOISE_SIGMA = 0.1


@dataclass
class DenoiseInfo:
    """What the denoiser fitted: noise std, EM parameters and objective trace; for
    Poisson-Gaussian noise also (a, b) of the variance a x + b and a per-pixel noise std map
    (C, H, W) (its sigma is then the noise std at the image's mean level)."""

    sigma: float
    params: em.GroupModelParams | None  # None when the image needed no denoising (sigma 0)
    trace: em.EMTrace
    heads: tuple[str, ...]
    noise_params: tuple[float, float] | None = None
    noise_map: torch.Tensor | None = None
    noise_correlation: NoiseCorrelation | None = None  # correlated noise: its autocovariance
    # the model the image was denoised under: gaussian, poisson-gaussian, correlated or camera
    # (what noise="auto" chose)
    noise_model: str | None = None
    # white noise clipped at the ends of the range (`clipping`): the std the passes assumed
    clipped_sigma: float | None = None
    # whether noise clipped at the ends of the range was modelled and its bias taken out
    # (white or Poisson-Gaussian noise on an 8-bit image)
    clipping_modelled: bool = False
    # full white in the image's units: its dtype's, or for 9-15-bit data in a 16-bit image
    # the smallest 2^k - 1 that holds it (`api.denoise` works on that range)
    white: float | None = None

    def to_image_units(self, scale: float) -> None:
        """From the 0..255 working scale (x_work = scale * x) to the image's units, in place."""
        self.sigma = self.sigma / scale
        if self.clipped_sigma is not None:
            self.clipped_sigma = self.clipped_sigma / scale
        if self.noise_params is not None:
            self.noise_params = (self.noise_params[0] / scale, self.noise_params[1] / scale**2)
        if self.noise_map is not None:
            self.noise_map = self.noise_map / scale
        if self.noise_correlation is not None:
            self.noise_correlation = self.noise_correlation.scaled(1 / scale**2)


class PatchGroups:
    """Patches of one image, in DCT coordinates (pass 1, graph Wiener) or in pixels (matching,
    covariance pass), each computed on first use, plus head features, gathered per group."""

    def __init__(self, img: torch.Tensor, patch: int, heads: tuple[str, ...],
                 noise: NoiseCorrelation | None = None) -> None:
        self.image, self.patch, self.affinity_heads, self.channels = img, patch, heads, img.shape[0]
        self.shape = tuple(img.shape)
        self.height, self.width = img.shape[1] - patch + 1, img.shape[2] - patch + 1
        self.dct = dct_matrix(patch, img.device)  # (p*p, p*p)
        # correlated noise (`correlated`): DCT coefficients scaled and pixel patches whitened
        # so that their noise is white with variance r0; None: white noise, nothing changes
        self.noise = noise
        self._scale, self._whiten = None, None
        if noise is not None:
            scale, w, w_inv = noise.tables(self.dct)  # one row / matrix per channel, or shared
            self._scale = scale.expand(self.channels, -1).reshape(-1)
            self._whiten = (w, w_inv)  # (C', p * p, p * p), C' = 1 when shared
        self._coef: torch.Tensor | None = None
        self._lum: torch.Tensor | None = None  # (p * p, positions) luminance patches, for matching
        self._pixels: torch.Tensor | None = None
        self.maps = feature_maps(img, patch, heads)

    @property
    def coef(self) -> torch.Tensor:
        """(positions, C, p*p) the DCT coefficients of every patch, computed on first use."""
        if self._coef is None:
            # each channel's patches times the DCT, a band of rows at a time, into the table: the
            # same numbers as the DCT as a convolution, in 0.6x its time, without its transposed copy
            p, wn = self.patch, self.width
            coef = torch.empty(self.height * wn, self.channels, p * p, device=self.image.device)
            rows = max(1, COEF_BAND_ROWS // wn)
            for r0 in range(0, self.height, rows):
                r1 = min(r0 + rows, self.height)
                band = self.image[:, r0:r1 + p - 1].unfold(1, p, 1).unfold(2, p, 1)
                for ch in range(self.channels):
                    coef[r0 * wn:r1 * wn, ch] = band[ch].reshape(-1, p * p) @ self.dct.T
            self._coef = coef
        return self._coef

    @property
    def pixels(self) -> torch.Tensor:
        """(C, positions, p*p) every patch in pixels, channel by channel, computed on first use.
        The covariance pass works on these: an orthonormal basis does not change its estimate,
        and pixels spare the DCT there and back; channels first, a gather of groups is already
        laid out as the pass's per-channel batch."""
        if self._pixels is None:
            self._pixels = all_patches(self.image, self.patch)
            if self._whiten is not None:  # each patch whitened once, not in every group it joins
                _whiten_in_place(self._pixels, self._whiten[0])
        return self._pixels

    def forget_pass1_tables(self) -> None:
        """Free the DCT coefficients and luminance matching table (recomputed if used again):
        after pass 1, the covariance passes read the noisy image's pixels only. With this and
        the noisy tables freed at the first feedback pass, the peak memory of a colour image
        at sigma 50 with 4096-group batches fell from 5,330 to 3,300 bytes per pixel
        (docs/denoise-log.md, session 16)."""
        self._coef = self._lum = None

    def match(self, step: int, radius: int, k: int) -> torch.Tensor:
        """Block matching on the luminance patches: positions (N, K) of each reference's group."""
        k = min(k, min(self.height, radius + 1) * min(self.width, radius + 1))
        if self._lum is None:  # one column per patch, as F.unfold lays them out
            self._lum = F.unfold(self.image[None, :1], self.patch)[0]
        return block_match(self._lum.reshape(-1, self.height, self.width), step, radius, k)

    def coefficients(self, positions: torch.Tensor) -> torch.Tensor:
        """(G, K) positions -> (G, K, F) DCT coefficients, F = C * p * p (under correlated
        noise each scaled to noise variance r0)."""
        coef = _gather(self.coef, 0, positions).flatten(2)
        return coef if self._scale is None else coef * self._scale

    def patches(self, positions: torch.Tensor) -> torch.Tensor:
        """(G, K) positions -> (C * G, K, p * p) pixel patches, channel by channel (under
        correlated noise whitened: `unwhiten` maps estimates back)."""
        return _gather(self.pixels, 1, positions).flatten(0, 1)  # (C, G, K, p * p) flattened

    def unwhiten(self, patches: torch.Tensor) -> torch.Tensor:
        """Pixel-patch estimates (C * G, K, p * p) made on `patches` back to pixels."""
        if self._whiten is None:
            return patches
        return _per_channel(patches.unflatten(0, (self.channels, -1)), self._whiten[1]).flatten(0, 1)

    def accumulator(self, cfg: DenoiseConfig) -> PatchAccumulator:
        """An empty aggregate of patch estimates for this image, with the aggregation window
        `cfg` sets for its channel count."""
        return PatchAccumulator(self.shape, cfg.patch, self.image.device,
                                cfg.aggregation_window(self.channels))

    def distances(self, positions: torch.Tensor) -> torch.Tensor:
        """(G, K) positions -> (H, G, K, K) head distances (texture on the DCT-domain patch)."""
        lum = _gather(self.coef[:, 0], 0, positions)  # orthonormal DCT keeps distances
        return head_distances(self.affinity_heads, positions, lum[..., 1:], self.maps, self.width)

    def to_patches(self, coef: torch.Tensor) -> torch.Tensor:
        """(G, K, F) DCT coefficients (as `coefficients` gives them) -> (G, K, C, p*p) pixel
        patches."""
        if self._scale is not None:
            coef = coef / self._scale
        return coef.reshape(*coef.shape[:2], self.channels, -1) @ self.dct


def _per_channel(patches: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Patches (C, ..., d) times each channel's matrix (C or 1, d, d), as one product per
    channel over all its patches: broadcasting the matrices over the groups instead made a
    small product per group."""
    return (patches.reshape(patches.shape[0], -1, patches.shape[-1]) @ matrix).reshape(patches.shape)


COEF_BAND_ROWS = 1 << 15  # patches per band of the DCT table (`PatchGroups.coef`)
WHITEN_ROWS = 1 << 14  # patches whitened per step (9.6 MB of colour rows): the table is never held twice


def _whiten_in_place(table: torch.Tensor, matrix: torch.Tensor) -> None:
    """table (C, positions, d) <- table @ matrix (C or 1, d, d), in steps of WHITEN_ROWS rows.
    A patch sits in about K / stride^2 = 4 groups, so whitening the table once does a quarter
    of the work of whitening every gathered group."""
    for start in range(0, table.shape[1], WHITEN_ROWS):
        rows = table[:, start:start + WHITEN_ROWS]
        rows.copy_(_per_channel(rows, matrix))


def _gather(table: torch.Tensor, dim: int, positions: torch.Tensor) -> torch.Tensor:
    """The rows `positions` (G, K) of `table` along `dim`, which becomes two dims (G, K).
    `index_select` on the flat positions: 4-5x faster on a CPU than indexing with the (G, K)
    tensor, with which the gathers took 13% of a 256x256 colour image's time."""
    picked = table.index_select(dim, positions.reshape(-1))
    return picked.unflatten(dim, positions.shape)


def _graph(groups: PatchGroups, positions: torch.Tensor, heads: tuple[torch.Tensor, torch.Tensor]):
    """Graph Fourier basis of each group: eigenvalues (G, K), eigenvectors (G, K, K). heads:
    the bandwidths' logs and mixing logits, already on the groups' device (`_heads_on`)."""
    return spectrum(attention_weights(groups.distances(positions), *heads))


def _group_dct(k: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """At tau = 0 the group model does not depend on the graph: every orthonormal basis whose
    mode 0 is the group mean gives the same posterior (the scales and gains are sums over the
    proper modes). So pass 1 without graph diffusion (correlated noise, the ablation) takes
    the DCT along the group, shared by all groups, for the eigenbasis: no affinity weights and
    no `eigh` per group. Returns eigenvalues (1, K), all 0, and eigenvectors (1, K, K)."""
    basis = dct_1d(k).T.to(device=device, dtype=torch.float32)  # columns: the basis vectors
    return torch.zeros(1, k, device=device), basis[None]


def _heads_on(params: em.GroupModelParams, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The head parameters (kept on the host by EM) as float32 on `device`, copied once per
    pass, not in every chunk: on a GPU each copy from the host waits for the device."""
    return params.log_beta.to(device, torch.float32), params.logit_pi.to(device, torch.float32)


def fit_group_model(groups: PatchGroups, positions: torch.Tensor, sigma: float, cfg: DenoiseConfig,
              generator: torch.Generator) -> tuple[em.GroupModelParams, em.EMTrace]:
    """EM on `cfg.em_groups` groups drawn with `generator` (float64 for a clean objective), on
    the host: the sample is small, and EM's stopping test, tau's bisection and the heads'
    line search read numbers every iteration, each a wait for a GPU, so the sample is copied
    off the device once and the EM loop runs without a host-device synchronisation."""
    pick = torch.randperm(positions.shape[0], generator=generator)[:cfg.em_groups]
    sub = positions[pick.to(positions.device)]
    z, dists = groups.coefficients(sub).double().cpu(), groups.distances(sub).double().cpu()
    free = em.free_mask(z.shape[1], z.shape[2], groups.channels, z.device)
    start = em.initial_params(dists, sigma**2)
    if cfg.graph == "chain":  # weights exactly 1 (neighbours) and 0 (others)
        start = replace(start, log_beta=torch.zeros_like(start.log_beta))
    if not cfg.graph_diffusion:
        start = replace(start, tau=0.0)
    if not cfg.em_fit:
        return start, em.EMTrace()
    return em.fit(z, dists, start, free, cfg.em_sigma, cfg.em_max_iter, cfg.em_tol,
                  fit_tau=cfg.graph_diffusion)


def graph_diffusion_pass(groups: PatchGroups, positions: torch.Tensor, params: em.GroupModelParams,
                   cfg: DenoiseConfig) -> torch.Tensor:
    """Pass 1: each group's posterior mean under the fitted group model, aggregated: (C, H, W)."""
    acc = groups.accumulator(cfg)
    _ = groups.coef  # the table the chunks share, built once before the chunk threads
    free = em.free_mask(positions.shape[1], groups.channels * groups.patch**2, groups.channels,
                        positions.device)
    heads = _heads_on(params, positions.device)
    fixed = _group_dct(positions.shape[1], positions.device) if params.tau == 0 else None

    def chunk(pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        lam, vec = fixed if fixed is not None else _graph(groups, pos, heads)
        c = vec.transpose(1, 2) @ groups.coefficients(pos)  # (G, K, F) graph Fourier x DCT
        scale = em.initial_scale(c, lam, params.tau, params.sigma2, free)
        for _ in range(cfg.scale_iter):  # EM on the per-group scales, global params fixed
            m, var = em.posterior(c, em.model_variance(lam, scale, params.tau), params.sigma2, free)
            scale = em.update_scale(m * m + var, lam, params.tau, free)
        m, var = em.posterior(c, em.model_variance(lam, scale, params.tau), params.sigma2, free)
        weight = params.sigma2 / var.sum((1, 2)).clamp_min(1e-12)  # inverse residual variance
        return groups.to_patches(vec @ m), pos, weight

    return _aggregate(chunk, positions, cfg, acc)


def _aggregate(fn, positions: torch.Tensor, cfg: DenoiseConfig,
               acc: PatchAccumulator) -> torch.Tensor:
    """fn on each chunk of the groups `positions` -- (estimates, positions, weights) -- on
    `cfg.threads` threads (`parallel`), added to `acc` in chunk order, so the aggregate image
    returned does not depend on the thread count."""
    chunks = positions.split(cfg.chunk_for(positions.device))
    for est, pos, weight in map_ordered(fn, chunks, chunk_threads(cfg.threads, positions.device)):
        acc.add(est, pos, weight)
    return acc.image()


def wiener_pass(noisy: PatchGroups, pilot: torch.Tensor, sigma2: float, cfg: DenoiseConfig,
                params: em.GroupModelParams, positions: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pass 2: empirical Wiener filter in the pilot graph's Fourier x DCT basis (Dabov 2007).

    Groups are matched on the pilot unless `positions` (G, K) gives them. Returns the
    estimate (C, H, W) and the groups."""
    guide = PatchGroups(pilot, cfg.patch, noisy.affinity_heads, noisy.noise)
    if positions is None:
        positions = guide.match(cfg.step_wiener, cfg.radius(noisy.channels), cfg.group_size_wiener)
    acc = noisy.accumulator(cfg)
    if cfg.refit_bandwidths and cfg.graph != "chain":  # bandwidths of the pilot's features
        sample = positions[:: max(positions.shape[0] // 256, 1)]
        log_beta = em.initial_params(guide.distances(sample).double(), sigma2).log_beta
        params = replace(params, log_beta=log_beta)
    _ = noisy.coef, guide.coef  # the tables the chunks share, built before the chunk threads
    heads = _heads_on(params, positions.device)

    def chunk(pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        _, vec = _graph(guide, pos, heads)
        c = vec.transpose(1, 2) @ noisy.coefficients(pos)
        q = vec.transpose(1, 2) @ guide.coefficients(pos)
        gain = q * q / (q * q + sigma2)
        weight = 1.0 / (gain * gain).sum((1, 2)).clamp_min(1e-12)
        return noisy.to_patches(vec @ (gain * c)), pos, weight

    return _aggregate(chunk, positions, cfg, acc), positions


def group_graph(pilot: torch.Tensor, cfg: DenoiseConfig) -> torch.Tensor:
    """Edge weights (G, K, K) over each covariance-pass group's members, from the pilot's
    luminance patches (G, K, d): the texture head (`attention.texture_graph`), or with
    `cfg.graph` = "chain" a fixed chain in matching order (the ablation)."""
    if cfg.graph == "chain":
        return (chain_distances(*pilot.shape[:2], pilot.device) == 0).to(pilot.dtype)
    return texture_graph(pilot)


def covariance_pass(noisy: PatchGroups, pilot: torch.Tensor, sigma2: float, cfg: DenoiseConfig,
                    positions: torch.Tensor | None = None, later: bool = False,
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pass 2: posterior mean under each group's patch covariance, the pilot's refined by EM
    (`cfg.cov_em_iter`: the first second pass's iterations, or a `later` pass's). In the
    first pass the mean patches of flat groups are denoised too (`cfg.flat_threshold`), the
    members of each group are diffused along the pilot's graph over them (`group_graph`,
    `cfg.graph_tau`), and on a colour image the chroma channels' pilot covariances are
    shrunk by `cfg.chroma_to_diagonal` toward their DCT diagonal and, under white noise,
    refit by EM at most `cfg.cov_em_iter_chroma` times; in the `later` passes they are
    shrunk by `cfg.chroma_to_diagonal_later`, and all the way in the groups whose pilot's
    chroma varies by less than `cfg.chroma_diagonal_below` x sigma^2.

    Groups are matched on the pilot unless `positions` (G, K) gives them; then those whose
    reference earlier groups already cover are left out (`cfg.skip_fraction`). Returns the
    estimate (C, H, W) and the groups."""
    guide = PatchGroups(pilot, cfg.patch, (), noisy.noise)
    if positions is None:
        positions = guide.match(cfg.step_wiener, cfg.radius(noisy.channels), cfg.group_size_wiener)
        skip = cfg.skip_fraction(noisy.channels, noisy.noise is not None)
        positions = positions[covered_groups(positions, guide.height, guide.width,
                                             cfg.step_wiener, cfg.patch, skip)]
    acc = noisy.accumulator(cfg)
    c = noisy.channels
    em_iter = cfg.cov_em_iter(c, later)
    # the chroma's own limit under white noise; under correlated noise it takes the luminance's
    chroma_em_iter = cfg.cov_em_iter(c, later, chroma=noisy.noise is None)
    flat = 0.0 if later else cfg.flat_threshold
    # graph diffusion along the group axis (`covariance`), first pass only; on under correlated
    # noise too, where pass 1's is off: the pilot's graph no longer sees the noise there
    tau = 0.0 if later else cfg.graph_tau(c)
    chroma_diag = cfg.chroma_to_diagonal_later if later else cfg.chroma_to_diagonal
    weak_chroma = cfg.chroma_diagonal_below if later else 0.0
    _ = noisy.pixels, guide.pixels  # the tables the chunks share, built before the threads

    def chunk(pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z, pil = noisy.patches(pos), guide.patches(pos)  # (C * G, K, p * p), channel by channel
        g = pos.shape[0]
        graph = group_graph(pil[:g], cfg) if tau > 0 else None
        if c > 1 and (chroma_diag > 0 or chroma_em_iter != em_iter or weak_chroma > 0):
            lum = covariance.posterior_mean(z[:g], pil[:g], sigma2, em_iter, cfg.cov_prior,
                                            flat=flat, graph=graph, tau=tau)
            chroma = covariance.posterior_mean(z[g:], pil[g:], sigma2, chroma_em_iter,
                                               cfg.cov_prior, chroma_diag, flat=flat,
                                               graph=graph, tau=tau, diagonal_below=weak_chroma)
            est, kept = torch.cat([lum[0], chroma[0]]), torch.cat([lum[1], chroma[1]])
        else:
            est, kept = covariance.posterior_mean(z, pil, sigma2, em_iter, cfg.cov_prior,
                                                  flat=flat, graph=graph, tau=tau)
        est = noisy.unwhiten(est)
        weight = 1.0 / (kept.reshape(c, -1).sum(0) + 1.0)
        return est.reshape(c, *pos.shape, -1).permute(1, 2, 0, 3), pos, weight

    return _aggregate(chunk, positions, cfg, acc), positions


def combination_pass(source: PatchGroups, noisy: PatchGroups, pilot: torch.Tensor, sigma: float,
                     tau: float, cfg: DenoiseConfig, positions: torch.Tensor | None = None,
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One group-axis Wiener pass (`combination`): each group of `source` -- the noisy image or
    a partly denoised version of it, whose noise std left is measured against `noisy` -- is
    replaced by linear combinations of its patches, theta from the `pilot` image's patches.

    Groups are matched on the source unless `positions` (G, K) gives them. Returns the estimate
    (C, H, W), the next source -- the estimate with part of this source mixed back, so that a
    fraction `tau` of the noise std is left in it -- and the groups."""
    if positions is None:
        positions = source.match(cfg.combination_step, cfg.combination_radius,
                                 cfg.combination_group_size)
    guide, c = PatchGroups(pilot, source.patch, ()), source.channels
    # the estimate and the next source, stacked as 2C channels: one aggregate, the same weights
    acc = PatchAccumulator((2 * c, *source.shape[1:]), source.patch, pilot.device)
    floor = max(tau, cfg.combination_noise_floor)
    _ = source.pixels, noisy.pixels, guide.pixels  # the tables the chunks share

    def members(groups: PatchGroups, pos: torch.Tensor) -> torch.Tensor:  # (G, K, C * p * p)
        return groups.patches(pos).reshape(c, *pos.shape, -1).permute(1, 2, 0, 3).flatten(2)

    def chunk(pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = members(source, pos)
        left = combination.noise_left(members(noisy, pos), z, sigma, floor)  # (G,)
        theta = combination.group_filter(members(guide, pos), (sigma * left) ** 2)
        est = theta @ z
        following = est + (tau / left)[:, None, None] * (z - est)  # noise std tau * sigma
        both = torch.cat([est.unflatten(2, (c, -1)), following.unflatten(2, (c, -1))], 2)
        return both, pos, combination.member_weights(theta)

    both = _aggregate(chunk, positions, cfg, acc)
    return both[:c], both[c:], positions


def combination_passes(noisy: torch.Tensor, est: torch.Tensor, sigma: float,
                       cfg: DenoiseConfig) -> torch.Tensor:
    """`cfg.combination_passes` (M) group-axis Wiener passes after the others, as LIChI iterates
    them: pass m filters the source z_m (z_0 the noisy image) with the previous estimate as
    pilot, and hands on z_(m+1) with a fraction tau_m = combination_tau (1 - (m + 1) / M) of
    the noise std left; groups are matched again on the source every `combination_rematch`
    passes. The last pass leaves no noise, so its source is its estimate. (C, H, W) in and out,
    in the luminance/chroma basis: on colour images only the luminance gets the passes and the
    chroma keeps `est` (on the skimage colour crops at sigma 25, +0.14 dB over `est` in 3.5x
    the time; all three channels in one filter, as LIChI, lost 0.18 dB; each channel on its
    own gained 0.17 dB in 8.5x the time)."""
    if noisy.shape[0] > 1:  # colour: the luminance only (see the docstring)
        return torch.cat([combination_passes(noisy[:1], est[:1], sigma, cfg), est[1:]])
    h, w = noisy.shape[1:]
    noisy = pad_to_grid(noisy, cfg.combination_patch, cfg.combination_step)
    est = pad_to_grid(est, cfg.combination_patch, cfg.combination_step)
    noisy_groups = PatchGroups(noisy, cfg.combination_patch, ())
    source, positions, passes = noisy_groups, None, cfg.combination_passes
    for m in range(passes):
        tau = cfg.combination_tau * (1 - (m + 1) / passes)
        if m % cfg.combination_rematch == 0:
            positions = None
        est, following, positions = combination_pass(source, noisy_groups, est, sigma, tau, cfg,
                                                      positions)
        source = PatchGroups(following, cfg.combination_patch, ())
    return source.image[:, :h, :w]


def feedback(noisy: torch.Tensor, est: torch.Tensor, sigma2: float, cfg: DenoiseConfig,
             size: tuple[int, int], heads: tuple[str, ...], noise: NoiseCorrelation | None = None,
             ) -> tuple[PatchGroups, float]:
    """Iterative regularisation (Osher et al. 2005; as WNNM, Gu et al. 2014): the next pass
    denoises est + feedback (noisy - est), which returns some of the detail the estimate
    removed, at the noise level left in it, gamma sqrt(sigma^2 - mean (noisy - est)^2)."""
    h, w = size
    resid = float(((noisy - est)[:, :h, :w] ** 2).mean())
    left = cfg.feedback_gamma**2 * max(sigma2 - resid, 0.01 * sigma2)
    return PatchGroups(est + cfg.feedback * (noisy - est), cfg.patch, heads, noise), left


def denoise_tensor(img: torch.Tensor, sigma: float | None, cfg: DenoiseConfig,
                   params: em.GroupModelParams | None = None,
                   generator: torch.Generator | None = None,
                   noise: NoiseCorrelation | None = None) -> tuple[torch.Tensor, DenoiseInfo]:
    """Denoise (C, H, W) float32, C in {1, 3}, sigma in image units (None: estimate it).

    params: EM parameters fitted elsewhere (e.g. on another tile of the same image); when
    given, sigma and EM are skipped. noise: the autocovariance of spatially correlated noise
    (`correlated`; sigma is then its std), None for white noise. Returns the estimate
    (C, H, W) and what was fitted.
    """
    return _run(img, sigma, cfg, params, generator, fit_only=False, noise=noise)


def fit_tensor(img: torch.Tensor, sigma: float | None, cfg: DenoiseConfig,
               noise: NoiseCorrelation | None = None) -> DenoiseInfo:
    """What `denoise_tensor` fits on img (C, H, W) -- noise std and EM parameters -- without
    running the passes (the same numbers: same generator, same groups). For tiled images."""
    return _run(img, sigma, cfg, None, None, fit_only=True, noise=noise)[1]


def _run(img, sigma, cfg, params, generator, fit_only: bool, noise=None):
    generator = generator or torch.Generator().manual_seed(cfg.seed)
    _, h, w = img.shape
    heads = cfg.heads_for(img.shape[0])
    opp = to_opponent(img)
    if params is None and sigma is None:
        sigma = noise.variance**0.5 if noise is not None else estimate_sigma(opp, generator=generator)
    if params is None and sigma < NO_NOISE_SIGMA:  # nothing to remove
        return img.clone(), DenoiseInfo(max(sigma, 0.0), None, em.EMTrace(), heads)
    cfg = cfg.at_sigma(sigma if params is None else params.sigma2**0.5, min(h, w))
    opp = pad_to_grid(opp, cfg.patch, math.lcm(cfg.step, cfg.step_wiener))
    groups = PatchGroups(opp, cfg.patch, heads, noise)
    positions = groups.match(cfg.step, cfg.radius(img.shape[0]), cfg.pass1_group_size(img.shape[0]))
    trace = em.EMTrace()
    if params is None:
        params, trace = fit_group_model(groups, positions, sigma, cfg, generator)
    if fit_only:
        return None, DenoiseInfo(params.sigma2**0.5, params, trace, heads)
    est = graph_diffusion_pass(groups, positions, params, cfg)
    groups.forget_pass1_tables()
    repeats = cfg.pass2_repeats_color if img.shape[0] > 1 else cfg.pass2_repeats_gray
    passes = repeats if cfg.second_pass else 0
    source, sigma2, matched = groups, params.sigma2, None
    del groups  # held by `source` only, so a feedback pass's new source frees its tables
    for i in range(passes):  # each pass uses the previous estimate as its pilot
        reuse = None
        if i > 0 and cfg.feedback > 0:
            # the feedback pass keeps the previous pass's groups: matching again on its output
            # changed the PSNR by at most 0.002 dB on the Train400 split, at 6-11% of the time
            source, sigma2 = feedback(opp, est, params.sigma2, cfg, (h, w), heads, noise)
            reuse = matched
        kind = cfg.pass2 if i == 0 else cfg.later_pass2
        if kind == "covariance":
            est, matched = covariance_pass(source, est, sigma2, cfg, reuse, later=i > 0)
        else:
            est, matched = wiener_pass(source, est, sigma2, cfg, params, reuse)
    # the group-axis passes assume white noise (with correlated noise they lost 2.2 dB on the
    # cameraman at std 25: matching on a source whose noise looks like texture), so skip them
    if cfg.combination_passes > 0 and min(h, w) >= cfg.combination_patch and noise is None:
        est = combination_passes(opp[:, :h, :w], est[:, :h, :w], params.sigma2**0.5, cfg)
    out = from_opponent(est[:, :h, :w])
    return out, DenoiseInfo(params.sigma2**0.5, params, trace, heads)
