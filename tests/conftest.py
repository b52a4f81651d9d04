import pytest
import torch

from libcem.config import build_config
from libcem.generative.training.tokenizer import TokenizerRunConfig


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path_factory, monkeypatch):
    """Folder caches and downloads go to a temporary $LIBCEM_CACHE, never the user's (a test may set its own)."""
    monkeypatch.setenv("LIBCEM_CACHE", str(tmp_path_factory.getbasetemp() / "libcem-cache"))

TINY = {
    "data": {"source": "fractals", "image_size": 16, "train_size": 48, "test_size": 8},
    "model": {"width": 8, "channel_mult": [1, 1], "latent_dim": 4, "codebook_size": 16, "codebook_groups": 1,
              "restart_after": 3},
    "optim": {"warmup_steps": 2},
    "train": {"steps": 6, "batch_size": 8, "log_every": 2, "sample_every": 3, "checkpoint_every": 2,
              "keep_checkpoints": 10},
}


@pytest.fixture
def tiny_cfg():
    def make(*overrides: str) -> TokenizerRunConfig:
        return build_config(TokenizerRunConfig, TINY, list(overrides))

    return make


TINY_CLI = [
    "--data", "fractals",
    "--set", "data.image_size=16", "--set", "data.train_size=48", "--set", "data.test_size=8",
    "--set", "model.width=8", "--set", "model.channel_mult=[1, 1]", "--set", "model.latent_dim=4",
    "--set", "model.codebook_size=16", "--set", "model.codebook_groups=1", "--set", "train.batch_size=8", "--set", "train.log_every=2",
    "--set", "train.sample_every=4", "--set", "train.checkpoint_every=2", "--set", "optim.warmup_steps=2",
    "--quiet",
]


@pytest.fixture
def real_builds(monkeypatch):
    from libcem.generative.models.prior import PriorTransformer
    from libcem.generative.models.tokenizer import Tokenizer

    """The parameter counts of every model built on a real device (not `meta`) during the test."""
    built = []
    for cls in (Tokenizer, PriorTransformer):
        def wrapped(self, *args, _init=cls.__init__, **kwargs):
            _init(self, *args, **kwargs)
            params = list(self.state_dict().values())
            if params and params[0].device.type != "meta":
                built.append(sum(t.numel() for t in params))
        monkeypatch.setattr(cls, "__init__", wrapped)
    return built


@pytest.fixture
def torch_threads():
    """Torch's thread count restored after the test."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
