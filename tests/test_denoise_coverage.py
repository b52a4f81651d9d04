"""Groups left out where earlier groups already cover their reference (`coverage`)."""

import numpy as np
import torch

from libcem.denoiser import DenoiseConfig, denoise
from libcem.denoiser.correlated import NoiseCorrelation
from libcem.denoiser.coverage import covered_groups, pixel_coverage
from libcem.denoiser.passes import PatchGroups, covariance_pass


def _every_position_in_every_group() -> torch.Tensor:
    """An 8 x 8 grid of patch positions, references every 4 (a 2 x 2 grid, row-major), each
    group holding all 64 positions with its reference first."""
    refs = [0, 4, 32, 36]
    rest = [[p for p in range(64) if p != r] for r in refs]
    return torch.tensor([[r] + others for r, others in zip(refs, rest)])


def test_a_later_reference_is_kept_only_where_coverage_is_short():
    # patch 4, step 4, K 64: the threshold is fraction x 64 x 16 / 16 = 64 x fraction. One
    # group with every position covers an interior pixel 16 times (4 x 4 positions) and a
    # pixel of the first row or column 4 times. Round 1 keeps reference 0; round 2 (odd,
    # odd) is reference 3, all of whose pixels are interior: 16, kept below a threshold of 16;
    # references 1 and 2 (rounds 3 and 4) touch the border: 4 per group kept so far.
    pos = _every_position_in_every_group()
    keep = covered_groups(pos, 8, 8, step=4, patch=4, fraction=0.25)  # threshold 16
    assert keep.tolist() == [True, True, True, False]  # 16 < 16 no; 4 < 16; 8 < 16
    keep = covered_groups(pos, 8, 8, step=4, patch=4, fraction=0.05)  # threshold 3.2
    assert keep.tolist() == [True, False, False, False]
    keep = covered_groups(pos, 8, 8, step=4, patch=4, fraction=0.3)  # threshold 19.2
    assert keep.tolist() == [True, True, True, True]  # 16; then 4 x 2 = 8; then 4 x 3 = 12
    assert covered_groups(pos, 8, 8, step=4, patch=4, fraction=0.0).all()


def test_every_pixel_the_full_grid_covers_stays_covered():
    g = torch.Generator().manual_seed(0)
    pilot = torch.rand(1, 40, 40, generator=g) * 40  # weak texture: groups spread out
    cfg = DenoiseConfig(patch=4, step_wiener=2, group_size_wiener=16, search_radius=6)
    guide = PatchGroups(pilot, cfg.patch, ())
    pos = guide.match(cfg.step_wiener, cfg.search_radius, cfg.group_size_wiener)
    keep = covered_groups(pos, guide.height, guide.width, cfg.step_wiener, cfg.patch, 0.5)
    assert 0.25 <= keep.float().mean() < 1.0  # the first round, and fewer than all

    def covered(groups: torch.Tensor) -> torch.Tensor:
        starts = torch.zeros(guide.height * guide.width)
        starts[groups.reshape(-1)] = 1.0
        return pixel_coverage(starts, guide.height, guide.width, cfg.patch) > 0

    assert torch.equal(covered(pos[keep]), covered(pos))


def test_the_covariance_pass_leaves_out_covered_groups():
    g = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0, 200, 48)
    pilot = ramp[:, None].expand(48, 48)[None].contiguous()  # brightness growing down the rows
    noisy = PatchGroups(pilot + 20 * torch.randn(1, 48, 48, generator=g), 7, ())
    cfg = DenoiseConfig()
    _, kept = covariance_pass(noisy, pilot, 400.0, cfg)
    _, every = covariance_pass(noisy, pilot, 400.0, cfg.override(skip_covered=0.0))
    assert every.shape[0] == 11 * 11 and 0.25 * 121 <= kept.shape[0] < every.shape[0]
    fast = DenoiseConfig.for_speed("fast")
    # --fast keeps every group on gray images (its 2x over BM3D at sigma 50), leaves colour
    # images' covered groups out as the default does (the large photos' time)
    assert fast.skip_covered == 0.0 and fast.skip_covered_color == cfg.skip_covered_color == 0.2
    # gray images under correlated noise keep every group (`skip_covered_correlated_gray`)
    white = torch.zeros(7, 7, dtype=torch.float64)
    white[3, 3] = 400.0
    correlated = PatchGroups(noisy.image, 7, (), NoiseCorrelation(white))
    _, gray_correlated = covariance_pass(correlated, pilot, 400.0, cfg)
    assert gray_correlated.shape[0] == 121
    assert (cfg.skip_fraction(1, True), cfg.skip_fraction(3, True), cfg.skip_fraction(1, False),
            cfg.skip_fraction(3, False)) == (0.0, 0.2, 0.25, 0.2)


def test_skipping_covered_groups_costs_little_on_a_smooth_image():
    from skimage import data

    clean = data.camera()[200:296, 200:296].astype(np.float64)
    noisy = clean + 25 * np.random.default_rng(0).standard_normal(clean.shape)

    def psnr(cfg: DenoiseConfig) -> float:
        out = np.clip(np.round(denoise(noisy / 255, 25 / 255, config=cfg) * 255), 0, 255)
        return 10 * np.log10(255**2 / np.mean((out - clean) ** 2))

    assert abs(psnr(DenoiseConfig()) - psnr(DenoiseConfig(skip_covered=0.0))) < 0.05
