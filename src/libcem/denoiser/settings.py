"""Settings of the patch-graph denoiser: one frozen dataclass, the only home of its constants."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from libcem.config import check
from libcem.errors import LibcemError

AFFINITY_HEADS = ("texture", "structure", "color", "spatial")  # every affinity head, in order
GRAY_AFFINITY_HEADS = ("texture", "structure", "spatial")  # chroma means nothing on gray
SPEEDS = {  # name -> changes to the shipped settings (DenoiseConfig.for_speed)
    "default": {},
    "fast": {"step": 6, "step_wiener": 6, "pass2_repeats_color": 2, "pass2_repeats_color_high": 2,
             "cov_em_iter_color": 0, "cov_em_iter_high_gray": 0, "cov_graph_tau": 0.0,
             "skip_covered": 0.0, "group_size": 32},
    "best": {"combination_passes": 9, "combination_passes_high": 11},
}


@dataclass(frozen=True)
class DenoiseConfig:
    """Denoiser settings. Sizes in pixels; `sigma` values on the 0..255 scale.

    patch: side of the square patches (graph nodes).
    step, step_wiener: stride of the reference patches (a group is built around each) in
        the first and the second pass.
    search_radius, search_radius_color: half-side of the search window for the K nearest
        patches on gray and on colour images. Colour 20 since session 23 (16 before, as gray):
        on 12 corner crops of six skimage colour photos +0.036 / +0.048 / +0.051 dB at sigma
        15 / 25 / 35 (better on 11 of 12) in the same time; on gray Train400 images it gave
        +0.003 / -0.013 dB at 15 / 25, so gray keeps 16. Above `high_sigma` both take
        `search_radius_high`.
    group_size, group_size_gray: K of the first pass (graph diffusion) on colour and on gray
        images; group_size_wiener: K of the second passes. Gray images take 16 since session
        10 (on a Train400 split +0.01 / +0.02 / +0.00 dB at sigma 15 / 25 / 50 against 32, on
        a second draw -0.005 / +0.005 at 15 / 25, and 10-16% faster: the first pass is only
        the pilot of the EM-refined second passes). Colour images take 16 too since session
        35 (32 before: in session 10 16 lost 0.03 / 0.03 / 0.13 dB on the skimage colour
        crops, before the repeated, EM-refined colour passes). Against 32 in session 35:
        +0.007 / +0.007 / +0.024 dB at sigma 15 / 25 / 50 on those crops (better on 3 / 1 / 4
        of 5: it gains on smooth images and loses up to 0.025 on textured ones below sigma
        50), +0.066 / +0.090 / +0.090 on 12 corner crops of six skimage photos (better on 9
        / 9 / 11), +0.021 / +0.014 / +0.002 under camera noise through the Bayer path, in
        0.87-0.96x the time; McMaster -0.006 dB at sigma 25 (better on 6 of 18) and +0.010
        at 50.
    affinity_heads: the graph attention heads that weight a group's edges (see `attention`);
        grayscale images drop `color` automatically. Default: texture only (the structure,
        color and spatial heads changed the PSNR by 0.00 dB on a Train400 split and on Set12
        while costing time; `AFFINITY_HEADS` has all four).
    em_max_iter, em_tol: EM stops after em_max_iter iterations or once an iteration raises
        the objective (mean log-likelihood per coefficient, nats) by less than em_tol.
    em_sigma: also update sigma in EM. Off by default: the per-group scales absorb part of the
        noise and the EM noise level comes out about 8% low (measured on Set12 at sigma 25),
        while the weak-texture PCA estimate (`noise`) is within 2% for sigma >= 10.
    em_groups: groups drawn (seeded) to fit the global EM parameters.
    scale_iter: EM iterations of the per-group scales when the global parameters are fixed.
    second_pass: run a second pass on groups matched on the first estimate (as BM3D does).
    pass2: the second pass's group model: "covariance" (a full patch covariance per group
        taken from the first estimate, NL-Bayes step 2) or "graph_wiener" (an empirical Wiener
        filter in the graph Fourier x DCT basis, BM3D step 2 on an affinity graph).
    em_fit: fit the global group-model parameters (tau, bandwidths, mixing weights) by EM;
        off by default: it changed the PSNR by 0.00 dB on a Train400 split and on Set12 and
        cost 14-32% of the time. The per-group scales are always fitted by EM (scale_iter).
    graph: "attention" (affinity heads weight the edges) or "chain" (a fixed chain over the
        members in matching order, i.e. a DCT along the group).
    graph_diffusion: the first pass's tau fitted by EM (False: tau = 0, no smoothing along
        its graph; the covariance pass's group-axis step has its own `cov_graph_tau`).
    refit_bandwidths: in a graph_wiener pass, set each head's bandwidth to the median head
        distance of the features it is applied to (the first estimate's), not the noisy ones.
        Off: on the Train400 split it lost 0.02-0.04 dB against the noisy-feature bandwidths.
    pass2_repeats_gray, pass2_repeats_color: second passes on gray and colour images, each
        with the previous estimate as its pilot (two on gray images since session 8: +0.04 dB
        at sigma 15 and 25 with the feedback, on a Train400 split). Three on colour images
        since session 23 (as above `high_sigma`): on the 12 colour crops +0.036 / +0.056 /
        +0.069 dB at sigma 15 / 25 / 35 (better on all 12) for 1.23x the time, and with the
        wider search window +0.070 / +0.102 / +0.118 dB for 1.25x.
    later_pass2: the group model of the second passes after the first ("covariance" or
        "graph_wiener"). Since session 10 it is "covariance" at every sigma: above
        `high_sigma`, a graph Wiener pass followed by a covariance pass with feedback gained
        0.05 dB on a Train400 split and 0.12 dB on the skimage colour crops at sigma 50 over
        graph Wiener passes alone.
    feedback, feedback_gamma: iterative regularisation in the later second passes: they
        denoise est + feedback (noisy - est) at noise std feedback_gamma sqrt(sigma^2 -
        mean (noisy - est)^2) (as WNNM), on the previous pass's groups. 0.1 and 0.6 were
        chosen on a Train400 split.
    cov_em_iter_gray, cov_em_iter_color: EM iterations that refit each group's patch
        covariance in the covariance pass to the noisy patches, starting from the pilot's
        (0: the pilot's covariance, plain NL-Bayes). Chosen on a Train400 split (gray: 2) and
        on the skimage colour crops (colour: 1); see docs/denoise.md. On colour images they
        refit the luminance's covariances; the chroma channels' take at most
        cov_em_iter_chroma iterations.
    cov_em_iter_chroma: EM iterations of the chroma channels' covariances in the first
        covariance pass on colour images under white noise, at most (0: the pilot's
        covariance). 0 since session 34 (1 before, as the luminance): on the skimage colour
        crops +0.007 / +0.021 / +0.030 / 0.000 dB at sigma 15 / 25 / 35 / 50 (better on 4 / 5
        / 5 / 0 of 5; above `high_sigma` no channel takes EM) in 0.89-0.96x the time, on 12
        corner crops of six skimage colour photos +0.012 / +0.021 / +0.031 dB at sigma 15 /
        25 / 35 (better on 6 / 8 / 11). The pilot's chroma is smooth and the noisy patches' chroma carries
        little signal: refitting to them put noise back. (The group-axis step left out on the
        chroma too lost 0.010 / 0.006 / 0.002 dB: it stays.) Under correlated and camera
        noise the chroma keeps the luminance's EM: on the colour crops through the Bayer path,
        where the demosaiced chroma is noisy, none lost 0.005 / 0.028 / 0.030 dB.
    cov_em_iter_later: EM iterations of the covariance in the later second passes (those with
        the feedback, on the previous pass's groups). 0 since session 12: on a Train400 split
        the same PSNR as two iterations (+0.001 / -0.000 dB at sigma 15 / 25) in 19-23% less
        time, and on the skimage colour crops +0.000 / +0.004 dB against one iteration in 21%
        less time; the first covariance pass keeps its EM (one iteration instead of two there
        lost 0.013 / 0.017 dB).
    cov_em_iter_high_gray, cov_em_iter_high_color: the first covariance pass's EM iterations
        above `high_sigma` (the later passes keep `cov_em_iter_later`). Gray 1 since session 23
        (0 in sessions 12-22): at sigma 50 +0.028 dB on the Train400 split (better on 20 of 24)
        and +0.036 on a second draw (15 of 16) for 1.27-1.29x the time; one iteration in every
        pass gained +0.031 for 1.81x. Colour 0: on the colour crops one iteration in the first
        pass gained nothing (-0.00 dB) for 1.36x the time, one in every pass lost 0.05-0.06 dB. `--fast`
        keeps 0 on gray too (it is the setting that is 2x faster than BM3D at sigma 50).
    chroma_to_diagonal, chroma_to_diagonal_high: how far the first covariance pass shrinks
        the pilot's covariance of each group in the two chroma channels toward its diagonal in
        the patch DCT (`covariance.toward_dct_diagonal`; 0: not at all), at and below
        `high_sigma` and above it. Above it a group has K = 81 patches of d = 81 pixels, so
        the pilot's sample covariance has rank 80 at most, and the chroma channels carry
        little signal: 0.5 there since session 29. In the first pass only, on the skimage
        colour crops +0.024 / +0.032 dB at sigma 40 / 50 and on six other skimage crops
        +0.012 / +0.018 (better on all 22 cases) for 1.04x the time; in every pass +0.034 /
        +0.048 and +0.026 / +0.039 (21 of 22) for 1.16x; 0.75 about as much on average but on
        fewer images, the diagonal itself less. Shrinking the luminance too lost 0.015-0.04
        dB on the Train400 split at sigma 50, and at sigma 15 / 25 (K = 64, d = 49)
        half-way shrinking of the chroma gave -0.03 / +0.01 dB on the colour crops: 0 there.
    chroma_to_diagonal_later, chroma_to_diagonal_later_high: the same for the later second
        passes (those with the feedback), at and below `high_sigma` and above it. Above it
        1 since session 36 (0 before): the chroma covariance of each group is then its
        pilot's variance per DCT coefficient alone, a Wiener gain per coefficient with no
        matrix to invert (`covariance._dct_diagonal_mean`). Against 0, on the skimage colour
        crops +0.027 / +0.048 dB at sigma 40 / 50 (better on 4 / 5 of 5) and on 12 corner
        crops of six skimage colour photos +0.072 / +0.101 (7 / 10 of 12), in 0.96-0.98x the
        time (the photo's 707x639 tile at sigma 50: 0.93x); 1 in the first pass too
        (`chroma_to_diagonal_high`) gained less (+0.010 / +0.039 and +0.048 / +0.081) for
        0.81-0.88x. At and below `high_sigma` 0: 1 there gave -0.029 / +0.009 dB at sigma
        15 / 25 on the colour crops and +0.002 / +0.044 on the corner crops, better on 4 / 5
        of 12 (it gains on smooth, dark images and loses up to 0.12 dB on the others); the
        diagonal only for groups whose pilot's chroma varies by less than 0.25 sigma^2 (in
        every pass) gave +0.002 / +0.023 and +0.013 / +0.031, better on 5 / 7 of 12; in the
        later passes only, that rule is `chroma_diagonal_below`.
    chroma_diagonal_below: in the later second passes, the groups whose pilot's chroma
        varies by less than this x sigma^2 per pixel (over the group's members) take their
        chroma covariances at their DCT diagonal (`chroma_to_diagonal_later` = 1 for them
        alone; 0: none). 0.5 since session 36: where the chroma is nearly flat, the pilot's
        full covariance holds little but its own leftover noise. At sigma 15 / 25 on the
        skimage colour crops +0.013 / +0.028 dB (better on 4 / 5 of 5), on 12 corner crops of
        six skimage colour photos +0.038 / +0.065 (9 / 10 of 12; retina +0.20-0.30, hubble's
        deep field -0.01); 0.25 gave +0.009 / +0.019 and +0.026 / +0.042 (9 / 12 of 12), 1
        +0.015 / +0.032 and +0.040 / +0.069 (7 / 9 of 12). In the first pass too (0.25) it
        lost up to 0.11 dB on hubble's deep field. At sigma 35 +0.044 / +0.087 dB on the two
        sets, with `--fast` +0.014 / +0.026 on the colour crops, under camera noise through
        the Bayer path +0.009 / +0.001 / +0.007; McMaster at sigma 25 +0.014 (16 of 18).
    flat_threshold: in the first covariance pass, the groups whose pilot varies by less than
        flat_threshold x sigma^2 (over all their pixels) have their mean patch denoised too
        (`covariance.flat_group_means`; 0: never), which takes out the faint blotches that
        the noise of the group means leaves in smooth areas. 0.01 since session 30 (see
        docs/denoise-log.md).
    cov_graph_tau: graph diffusion along the group axis in the first covariance pass on gray
        images (colour ones: `cov_graph_tau_color`, `graph_tau`): the strength tau of the
        group-axis precision (I + tau L) / a of the matrix-normal group model (`covariance`;
        L the texture head's graph on the pilot; 0: off, the patches of a group independent
        given its covariance). 1 since session 31, as the first pass's tau;
        0.15 and 0.6 gave the same PSNR within 0.001 dB, since a takes the scale out of L. On
        two Train400 draws +0.011-0.018 dB, on the skimage colour crops +0.03-0.04, for about
        1.15x the time; off with `--fast` on gray images (SPEEDS: it keeps `--fast` 2x
        faster than BM3D at sigma 50). On under correlated and camera noise too, where pass
        1's `graph_diffusion` is off (session 32).
    cov_graph_tau_color: `cov_graph_tau` for colour images. 1, as gray ones; on with `--fast`
        too since session 37 (off before): there on the skimage colour crops +0.052 / +0.053
        / +0.040 dB at sigma 15 / 25 / 50 (better on 5 of 5 each), on 12 corner crops of six
        skimage colour photos +0.045 / +0.052 / +0.031 (12 / 12 / 9 of 12), through the Bayer
        path with `camera` +0.040 / +0.048 / +0.048, McMaster at sigma 25 +0.04 (better on
        18 of 18), in 1.12-1.15x the time (the photo's tile 1.07x).
    skip_covered: the first covariance pass (and so the later ones, which keep its groups)
        leaves out the groups of references whose patch is already covered everywhere by at
        least skip_covered x K p^2 / step^2 member patches of the groups kept before them, in
        four rounds over the stride grid (`coverage`; 0: every group, as before session 33).
        0.25 since session 33: in 0.81x the time on the Train400 split (-0.002 / -0.000 /
        +0.003 dB at sigma 15 / 25 / 50) and 0.75x on the skimage colour crops (-0.007 /
        -0.004 / +0.003 dB); 0.2 gave 0.75x / 0.69x for -0.005 to -0.010 dB at 15 / 25, 0.3
        0.85x / 0.78x for -0.004 to +0.002. At sigma 25 on the colour crops / eight Train400
        images it lost 0.004 / 0.007 dB in 0.74x / 0.79x the time where stride 5 lost 0.019
        / 0.023 in 0.76x / 0.82x (more skipped, 0.1 x K p^2 / step^2, did no better than
        stride 6). `--fast` keeps every group on gray images: with it 0.9x the time for
        0.003-0.012 dB less.
        Under camera noise on the colour crops through the Bayer path: +0.001 / +0.002 /
        +0.003 dB (three noise levels) in 0.84x the time.
    skip_covered_color: `skip_covered` for colour images. 0.2 since session 34 (0.25 in
        session 33): on the skimage colour crops -0.005 / -0.004 / -0.004 / -0.002 dB at sigma
        15 / 25 / 35 / 50 in 0.92-0.94x the time, and through the Bayer path with `camera`
        -0.001 dB or less. Chosen for the time of large colour photos, which the chroma
        channels' EM left out in the same session (`cov_em_iter_chroma`, +0.007-0.030 dB on
        the same crops) paid for: the 12-megapixel photo in under 3 minutes. `--fast` too
        since session 37 (it kept every group before): there 0.84x the time on the colour
        crops for -0.018 / -0.017 / -0.012 dB at sigma 15 / 25 / 50, on 12 corner crops of
        six skimage colour photos -0.000 / +0.003 / -0.008 dB, through the Bayer path with
        `camera` -0.015 to -0.017 dB in 0.89x; the photo's tile in 0.86x.
    skip_covered_correlated_gray: `skip_covered` for gray images under correlated noise
        (`correlated`, `camera`). 0: on ten Train400 images with binomial-smoothed noise of
        std 15 / 25, 0.25 lost 0.007 / 0.019 dB for 0.87x the time, 0.5 0.002 / 0.008 dB for
        0.99x (session 33).
    cov_prior: weight of the pilot's covariance as an inverse-Wishart prior in that EM, as a
        multiple of the group's K patches (0: maximum likelihood, made safe by stopping early).
    sigma_schedule: above `high_sigma` (0..255 scale) use `patch_high` and `pass2_high`
        (chosen on a Train400 split: at sigma 50, 9x9 patches and the graph Wiener pass gained
        0.17 dB over 7x7 and the covariance pass, with one second pass; at 15 and 25 the latter
        were best; since session 12, with three second passes, the first is the covariance pass
        at every sigma too: +0.03 / +0.05 dB on two Train400 draws at sigma 50, +0.06 on the
        colour crops, in 0.9x the time), and
        `search_radius_high`, `feedback_high`, `feedback_gamma_high`, `pass2_repeats_gray_high`,
        `pass2_repeats_color_high`, `cov_em_iter_high_gray`, `cov_em_iter_high_color` (chosen
        at sigma 50 on the same split and the skimage colour crops: a 41x41 search window
        gained 0.05 dB on gray and 0.09 on colour; a later covariance pass with feedback 0.1 at
        gamma 0.7 and no covariance EM (one or two EM iterations gave the same PSNR, 15-25%
        slower) gained 0.05 dB on gray
        and 0.12 on colour; since session 12 there are two such later passes, three second
        passes in all: on gray images +0.034 dB on the Train400 split, better on 20 of 24
        images, for 1.31x the time (four gave +0.047 for 1.65x; at sigma 15 and 25 a third
        pass gave +0.003 and +0.021 dB, better on only 11 and 13 of the 24, for 1.2x, so two
        stay there); on colour +0.13 dB on the skimage colour crops at sigma 50, better on all
        five, for 1.42x the time), and `group_size_wiener_high` (session 14: K = 81, the
        smallest K at which the covariance pass on 9x9 patches (d = 81) takes the d x d
        Cholesky form instead of the K x K system: at sigma 50 on three Train400 draws
        +0.017 / -0.010 / -0.010 dB against K = 64, on the colour crops +0.043 (better on all
        five), in 0.85-0.88x the time; K = 96 gave +0.016 / -0.024 on two draws).
    combination_passes, combination_passes_high: group-axis Wiener passes (`combination`,
        after LIChI) run after the others, at and below / above `high_sigma`; 0 (the
        default): none. The "best" speed (`--best`) runs 9 and 11, LIChI's numbers: on a
        Train400 split +0.17 / +0.21 / +0.16 dB at sigma 15 / 25 / 50 over the default, better
        on 23 / 23 / 17 of 24 images, in 7.4x / 7.4x / 4.6x the time (5.3x at 25 since
        session 16's faster filter; 12 passes at 25 and 14 at 50 did worse); on the skimage
        colour crops, where they run on the luminance only, +0.12 / +0.14 / +0.19 dB in
        2.5-3.5x the time.
    combination_patch, combination_step, combination_group_size, combination_radius: their
        patch side, reference stride, K and search window half-side (LIChI's 6, 3, 64 and 32;
        on the Train400 split K = 48 lost 0.02-0.06 dB, K = 96 0.05 dB at sigma 25 but gained
        0.03 at 50 for 1.85x the time; a 33x33 window lost 0.02 dB at 15 for 0.92x the time;
        stride 4 lost 0.03 dB at 25 for 0.66x the time).
    combination_rematch: the groups are matched again on the pass's source every this many
        passes (and kept in between).
    combination_tau: the fraction of the noise std handed on by the first of those passes,
        falling linearly to 0 at the last: 0.6 (LIChI: 0.75, which gave 0.006 dB less at sigma
        25 and 0.008 at 50 on the Train400 split; 0.9 and 0.45 less still).
    combination_noise_floor: the smallest noise fraction a pass assumes, which keeps its K x K
        systems well conditioned in float32.
    aggregation_window_gray, aggregation_window_color: shape (beta) of the Kaiser window that
        weights each patch's pixels when the estimates are aggregated (as BM3D); 0 weights them
        alike. On a Train400 split beta 1 gained 0.006-0.012 dB at sigma 15 and 25 (better on
        20-21 of 24 images; 0.000 at 50) and beta 2 lost 0.01 at 50; on the skimage colour
        crops beta 1 gave +0.000 / -0.005 / -0.017 dB at sigma 15 / 25 / 50, so colour keeps 0.
    noise_per_channel: with correlated or camera noise on a colour image, fit the noise's
        autocovariance in each luminance/chroma channel (True) or one for all three (False).
        A JPEG's chroma subsampling and a camera's processing leave different noise in luma
        and chroma: on skimage colour crops through a simulated camera and a JPEG at quality
        95 with 4:2:0 chroma, `camera` gained 2.5 dB (docs/denoise-noise.md, session 19).
    tile, overlap: images larger than tile x tile are processed in overlapping tiles (on a CPU).
    gpu_tile: the tile side on a GPU; 0 = the largest square whose passes fit in the GPU's free
        memory (`tiling.device_tile`): a photo that fits is denoised whole, its groups in
        batches of `gpu_chunk`, with no loop over tiles.
    workers: processes that denoise the tiles of a large image on the CPU side by side (one
        torch thread each); 0 = one per CPU core (at most 8, and at most as many as the free
        memory holds at about 2.7 GiB each for 768-pixel tiles), 1 = in this process (which
        then shares each tile's work among `threads` threads). No effect on an untiled image
        or a GPU.
    threads: Python threads that run a pass's chunks of groups side by side on the CPU, each
        with one torch thread (`parallel`; the output is the same for any count); 0 = as many
        as torch's thread count (one per core by default), 1 = none. Tile worker processes
        (`workers` > 1) run one each.
    chunk: reference patches processed at once (bounds memory; 128 keeps a batch in the CPU
        cache: 1.3x faster than 1024 on a 500x500 colour image, same output).
    gpu_chunk: the same on a GPU, where large batches keep it busy.
    seed: seed of the generator that draws the EM groups.
    """

    patch: int = 7
    step: int = 4
    step_wiener: int = 4
    search_radius: int = 16
    search_radius_color: int = 20
    group_size: int = 16
    group_size_gray: int = 16
    group_size_wiener: int = 64
    affinity_heads: tuple[str, ...] = ("texture",)
    em_max_iter: int = 15
    em_sigma: bool = False
    em_tol: float = 1e-4
    em_groups: int = 128
    scale_iter: int = 2
    second_pass: bool = True
    pass2: str = "covariance"
    em_fit: bool = False
    graph: str = "attention"
    graph_diffusion: bool = True
    refit_bandwidths: bool = False
    pass2_repeats_gray: int = 2
    pass2_repeats_color: int = 3
    later_pass2: str = "covariance"
    feedback: float = 0.1
    feedback_gamma: float = 0.6
    cov_em_iter_gray: int = 2
    cov_em_iter_color: int = 1
    cov_em_iter_chroma: int = 0
    cov_em_iter_later: int = 0
    cov_prior: float = 0.0
    chroma_to_diagonal: float = 0.0
    chroma_to_diagonal_later: float = 0.0
    sigma_schedule: bool = True
    high_sigma: float = 37.5
    patch_high: int = 9
    pass2_high: str = "covariance"
    search_radius_high: int = 20
    group_size_wiener_high: int = 81
    feedback_high: float = 0.1
    feedback_gamma_high: float = 0.7
    pass2_repeats_gray_high: int = 3
    pass2_repeats_color_high: int = 3
    cov_em_iter_high_gray: int = 1
    cov_em_iter_high_color: int = 0
    chroma_to_diagonal_high: float = 0.5
    chroma_to_diagonal_later_high: float = 1.0
    chroma_diagonal_below: float = 0.5
    flat_threshold: float = 0.01
    cov_graph_tau: float = 1.0
    cov_graph_tau_color: float = 1.0
    skip_covered: float = 0.25
    skip_covered_color: float = 0.2
    skip_covered_correlated_gray: float = 0.0
    combination_passes: int = 0
    combination_passes_high: int = 0
    combination_patch: int = 6
    combination_step: int = 3
    combination_group_size: int = 64
    combination_radius: int = 32
    combination_rematch: int = 3
    combination_tau: float = 0.6
    combination_noise_floor: float = 0.02
    aggregation_window_gray: float = 1.0
    aggregation_window_color: float = 0.0
    noise_per_channel: bool = True
    tile: int = 768
    overlap: int = 48
    gpu_tile: int = 0
    chunk: int = 128
    gpu_chunk: int = 4096
    seed: int = 0
    workers: int = 0
    threads: int = 0

    def __post_init__(self) -> None:
        limits = {
            "patch": (2 <= self.patch <= 32, "use 2..32"),
            "patch_high": (self.step <= self.patch_high <= 32, "use step..32"),
            "high_sigma": (self.high_sigma >= 0, "must be >= 0"),
            "step": (1 <= self.step <= self.patch, "use 1..patch"),
            "step_wiener": (1 <= self.step_wiener <= self.patch, "use 1..patch"),
            "search_radius": (1 <= self.search_radius <= 64, "use 1..64"),
            "search_radius_high": (1 <= self.search_radius_high <= 64, "use 1..64"),
            "search_radius_color": (1 <= self.search_radius_color <= 64 and max(
                self.group_size, self.group_size_wiener) <= (2 * self.search_radius_color + 1) ** 2,
                "use 1..64, with room for group_size and group_size_wiener"),
            "feedback_high": (0 <= self.feedback_high <= 1, "use 0..1"),
            "feedback_gamma_high": (0 < self.feedback_gamma_high <= 1, "use a number in (0, 1]"),
            "cov_em_iter_high_gray": (self.cov_em_iter_high_gray >= 0, "must be >= 0"),
            "cov_em_iter_high_color": (self.cov_em_iter_high_color >= 0, "must be >= 0"),
            "chroma_to_diagonal": (0 <= self.chroma_to_diagonal <= 1, "use 0..1"),
            "chroma_to_diagonal_high": (0 <= self.chroma_to_diagonal_high <= 1, "use 0..1"),
            "chroma_to_diagonal_later": (0 <= self.chroma_to_diagonal_later <= 1, "use 0..1"),
            "chroma_to_diagonal_later_high": (0 <= self.chroma_to_diagonal_later_high <= 1, "use 0..1"),
            "chroma_diagonal_below": (self.chroma_diagonal_below >= 0, "must be >= 0"),
            "flat_threshold": (self.flat_threshold >= 0, "must be >= 0"),
            "cov_graph_tau": (self.cov_graph_tau >= 0, "must be >= 0"),
            "cov_graph_tau_color": (self.cov_graph_tau_color >= 0, "must be >= 0"),
            "skip_covered": (self.skip_covered >= 0, "must be >= 0"),
            "skip_covered_color": (self.skip_covered_color >= 0, "must be >= 0"),
            "skip_covered_correlated_gray": (self.skip_covered_correlated_gray >= 0, "must be >= 0"),
            "pass2_repeats_gray_high": (self.pass2_repeats_gray_high >= 1, "must be >= 1"),
            "pass2_repeats_color_high": (self.pass2_repeats_color_high >= 1, "must be >= 1"),
            "group_size": (2 <= self.group_size <= (2 * self.search_radius + 1) ** 2, "use 2..(2 * search_radius + 1)^2"),
            "group_size_gray": (2 <= self.group_size_gray <= (2 * self.search_radius + 1) ** 2,
                                "use 2..(2 * search_radius + 1)^2"),
            "group_size_wiener": (2 <= self.group_size_wiener <= (2 * self.search_radius + 1) ** 2,
                                  "use 2..(2 * search_radius + 1)^2"),
            "group_size_wiener_high": (
                2 <= self.group_size_wiener_high <= (2 * self.search_radius_high + 1) ** 2,
                "use 2..(2 * search_radius_high + 1)^2"),
            "em_max_iter": (self.em_max_iter >= 1, "must be >= 1"),
            "em_tol": (self.em_tol >= 0, "must be >= 0"),
            "em_groups": (self.em_groups >= 16, "must be >= 16"),
            "scale_iter": (self.scale_iter >= 0, "must be >= 0"),
            "tile": (self.tile >= 4 * self.patch, "must be >= 4 * patch"),
            "overlap": (0 <= 2 * self.overlap < self.tile, "use 0 <= 2 * overlap < tile"),
            "chunk": (self.chunk >= 1, "must be >= 1"),
            "gpu_chunk": (self.gpu_chunk >= 1, "must be >= 1"),
            "gpu_tile": (self.gpu_tile == 0 or (self.gpu_tile >= 4 * self.patch
                                                and 2 * self.overlap < self.gpu_tile),
                         "use 0 (from the GPU's free memory) or a side >= 4 * patch and > 2 * overlap"),
            "workers": (0 <= self.workers <= 256, "use 0 (one per core) or 1..256"),
            "threads": (0 <= self.threads <= 256, "use 0 (torch's thread count) or 1..256"),
            "pass2_repeats_gray": (self.pass2_repeats_gray >= 1, "must be >= 1"),
            "pass2_repeats_color": (self.pass2_repeats_color >= 1, "must be >= 1"),
            "feedback": (0 <= self.feedback <= 1, "use 0..1"),
            "feedback_gamma": (0 < self.feedback_gamma <= 1, "use a number in (0, 1]"),
            "cov_em_iter_gray": (self.cov_em_iter_gray >= 0, "must be >= 0"),
            "cov_em_iter_color": (self.cov_em_iter_color >= 0, "must be >= 0"),
            "cov_em_iter_chroma": (self.cov_em_iter_chroma >= 0, "must be >= 0"),
            "cov_em_iter_later": (self.cov_em_iter_later >= 0, "must be >= 0"),
            "cov_prior": (self.cov_prior >= 0, "must be >= 0"),
            "combination_passes": (self.combination_passes >= 0, "must be >= 0"),
            "combination_passes_high": (self.combination_passes_high >= 0, "must be >= 0"),
            "combination_patch": (2 <= self.combination_patch <= 32, "use 2..32"),
            "combination_step": (1 <= self.combination_step <= self.combination_patch,
                                 "use 1..combination_patch"),
            "combination_radius": (1 <= self.combination_radius <= 64, "use 1..64"),
            "combination_group_size": (
                2 <= self.combination_group_size <= (2 * self.combination_radius + 1) ** 2,
                "use 2..(2 * combination_radius + 1)^2"),
            "combination_rematch": (self.combination_rematch >= 1, "must be >= 1"),
            "combination_tau": (0 <= self.combination_tau < 1, "use a number in [0, 1)"),
            "combination_noise_floor": (0 < self.combination_noise_floor <= 1, "use a number in (0, 1]"),
            "aggregation_window_gray": (0 <= self.aggregation_window_gray <= 20, "use 0..20"),
            "aggregation_window_color": (0 <= self.aggregation_window_color <= 20, "use 0..20"),
        }
        for name, (ok, fix) in limits.items():
            check(ok, f"denoiser.{name}", f"{getattr(self, name)!r}: {fix}")
        choices = {"pass2": ("covariance", "graph_wiener"), "graph": ("attention", "chain"),
                   "pass2_high": ("covariance", "graph_wiener"),
                   "later_pass2": ("covariance", "graph_wiener")}
        for name, allowed in choices.items():
            check(getattr(self, name) in allowed, f"denoiser.{name}", f"use one of {', '.join(allowed)}")
        check(bool(self.affinity_heads) and all(h in AFFINITY_HEADS for h in self.affinity_heads),
              "denoiser.affinity_heads", f"a non-empty subset of {', '.join(AFFINITY_HEADS)}, got {self.affinity_heads}")

    def at_sigma(self, sigma: float, size: int) -> DenoiseConfig:
        """The settings for noise std `sigma` (0..255 scale) on an image whose shorter side
        is `size`: above `high_sigma`, the high-noise patch, second pass, search window,
        feedback, number of second passes and covariance EM iterations (the fields ending in
        `_high`)."""
        if self.sigma_schedule and sigma > self.high_sigma and size >= self.patch_high:
            return replace(self, patch=self.patch_high, pass2=self.pass2_high,
                           search_radius=self.search_radius_high,
                           search_radius_color=self.search_radius_high, feedback=self.feedback_high,
                           group_size_wiener=self.group_size_wiener_high,
                           feedback_gamma=self.feedback_gamma_high,
                           pass2_repeats_gray=self.pass2_repeats_gray_high,
                           pass2_repeats_color=self.pass2_repeats_color_high,
                           cov_em_iter_gray=self.cov_em_iter_high_gray,
                           cov_em_iter_color=self.cov_em_iter_high_color,
                           chroma_to_diagonal=self.chroma_to_diagonal_high,
                           chroma_to_diagonal_later=self.chroma_to_diagonal_later_high,
                           combination_passes=self.combination_passes_high)
        return self

    @classmethod
    def for_speed(cls, speed: str) -> DenoiseConfig:
        """The shipped settings ("default"), the slower "best" ones (group-axis Wiener passes
        after the others, `combination_passes`; see docs/denoise.md) or the faster ones for
        large photos ("fast": stride 6 instead of 4 between reference patches; on colour
        images two second passes instead of three, without the covariance EM (session 24;
        one pass with EM before: the second pass gains 0.14-0.39 dB at sigma 15-50 on the 12
        colour crops, the EM 0.02 dB for 1.2x the time), with first-pass groups of 32 as
        before session 35 (16, the default's, lost 0.011 / 0.018 / 0.014 dB at sigma 15 / 25
        / 50 on the skimage colour crops there: with fewer, EM-less passes the pilot counts
        more) and, since session 37, the covered groups left out and the group-axis step
        taken as the default does (`skip_covered_color`, `cov_graph_tau_color`); on gray ones
        1.65x faster for 0.05-0.07 dB at sigma 15 to 50
        (Set12, session 12), every group kept; chosen on images outside Set12
        and McMaster, see docs/denoise.md)."""
        return cls().at_speed(speed)

    def at_speed(self, speed: str) -> DenoiseConfig:
        """These settings with the changes of the named speed ("default": none; see `for_speed`)."""
        check(speed in SPEEDS, "denoiser speed", f"use one of {', '.join(SPEEDS)}, got {speed!r}")
        return replace(self, **SPEEDS[speed])

    def chunk_for(self, device: torch.device) -> int:
        """Reference patches per batch on `device`."""
        return self.chunk if device.type == "cpu" else self.gpu_chunk

    def cov_em_iter(self, channels: int, later: bool, chroma: bool = False) -> int:
        """EM iterations of the covariance in a covariance pass on an image with `channels`
        channels (1 or 3): the first second pass's, or (`later`) a later pass's; `chroma`: of
        a colour image's two chroma channels (at most `cov_em_iter_chroma`)."""
        if later:
            iters = self.cov_em_iter_later
        else:
            iters = self.cov_em_iter_gray if channels == 1 else self.cov_em_iter_color
        return min(iters, self.cov_em_iter_chroma) if chroma and channels > 1 else iters

    def graph_tau(self, channels: int) -> float:
        """The first covariance pass's group-axis tau on an image with `channels` channels (1
        or 3): `cov_graph_tau` or `cov_graph_tau_color`."""
        return self.cov_graph_tau if channels == 1 else self.cov_graph_tau_color

    def skip_fraction(self, channels: int, correlated: bool) -> float:
        """How far the first covariance pass leaves out covered groups (`coverage`) on an image
        with `channels` channels (1 or 3), under correlated noise or not."""
        if channels > 1:
            return self.skip_covered_color
        return self.skip_covered_correlated_gray if correlated else self.skip_covered

    def aggregation_window(self, channels: int) -> float:
        """Kaiser window shape of the aggregation on an image with `channels` channels (1 or 3)."""
        return self.aggregation_window_gray if channels == 1 else self.aggregation_window_color

    def radius(self, channels: int) -> int:
        """Half-side of the search window on an image with `channels` channels (1 or 3)."""
        return self.search_radius if channels == 1 else self.search_radius_color

    def pass1_group_size(self, channels: int) -> int:
        """K of the first pass on an image with `channels` channels (1 or 3)."""
        return self.group_size_gray if channels == 1 else self.group_size

    def heads_for(self, channels: int) -> tuple[str, ...]:
        """The heads that make sense for an image with `channels` channels (1 or 3)."""
        if self.graph == "chain":
            return ("chain",)
        heads = self.affinity_heads
        if channels == 1:
            heads = tuple(h for h in heads if h in GRAY_AFFINITY_HEADS)
        return heads or ("texture",)

    def override(self, **changes) -> DenoiseConfig:
        """A copy with some fields changed (unknown names raise LibcemError)."""
        names = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise LibcemError(f"unknown denoiser setting(s): {', '.join(unknown)}")
        return replace(self, **changes)
