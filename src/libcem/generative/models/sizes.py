"""Named model sizes: one registry per network. Presets refer to them, and so can a user:
`--set model.size=medium` (or `prior.model.size=large` in a two-stage run). A size stands for the
settings below; a setting given beside it wins (`--set model.size=large --set model.depth=6`).
Adding a size is one entry here (and tests/test_config.py checks that every entry builds)."""

from __future__ import annotations

TOKENIZER_SIZES: dict[str, dict] = {
    "tiny": {"width": 8, "channel_mult": [1, 1], "res_blocks": 1, "latent_dim": 4, "codebook_size": 16,
             "codebook_groups": 1},
    "small": {"width": 32, "channel_mult": [1, 2], "res_blocks": 1, "latent_dim": 16, "codebook_size": 128,
              "codebook_groups": 8},
    "medium": {"width": 64, "channel_mult": [1, 2], "res_blocks": 1, "latent_dim": 16, "codebook_size": 128,
               "codebook_groups": 8},
    "large": {"width": 96, "channel_mult": [1, 2], "res_blocks": 2, "latent_dim": 32, "codebook_size": 128,
              "codebook_groups": 8},
}

PRIOR_SIZES: dict[str, dict] = {
    "tiny": {"width": 32, "depth": 1, "heads": 2},
    "small": {"width": 128, "depth": 4, "heads": 4},
    "medium": {"width": 256, "depth": 6, "heads": 8},
    "large": {"width": 384, "depth": 8, "heads": 8},
}
