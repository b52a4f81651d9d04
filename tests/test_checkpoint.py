import json
import pickle

import pytest
import tomli_w
import torch

from libcem.config import build_config, to_dict
from libcem.errors import LibcemError
from libcem.generative.models.tokenizer import Tokenizer, TokenizerConfig
from libcem.generative.runs import StageRun
from libcem.generative.training.stages import stage_config
from libcem.generative.training.tokenizer import TokenizerRunConfig

CFG = TokenizerConfig(width=8, channel_mult=(1,), latent_dim=4, codebook_size=8, codebook_groups=1)


def test_from_pretrained_round_trip(tmp_path):
    torch.manual_seed(0)
    model = Tokenizer(CFG, in_channels=3, image_size=16).eval()
    model.quantizer.codebook.normal_()
    model.save_pretrained(tmp_path / "m")
    again = Tokenizer.from_pretrained(tmp_path / "m")
    assert again.cfg == CFG and again.in_channels == 3 and again.image_size == 16
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(model(x).reconstruction, again(x).reconstruction)
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k


def test_pickle_payload_is_refused(tmp_path):
    model = Tokenizer(CFG, 3, 16)
    model.save_pretrained(tmp_path / "m")
    # replace the weights by a pickle that would run code when unpickled
    (tmp_path / "m" / "model.safetensors").write_bytes(pickle.dumps({"x": print}))
    with pytest.raises(LibcemError, match="not a valid safetensors file"):
        Tokenizer.from_pretrained(tmp_path / "m")


def test_pickled_weights_alone_are_never_loaded(tmp_path):
    model = Tokenizer(CFG, 3, 16)
    model.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").unlink()
    torch.save(model.state_dict(), tmp_path / "m" / "pytorch_model.bin")
    with pytest.raises(LibcemError, match="pickled weights are never loaded"):
        Tokenizer.from_pretrained(tmp_path / "m")


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(LibcemError, match="does not exist"):
        Tokenizer.from_pretrained(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LibcemError, match="neither a model folder"):
        Tokenizer.from_pretrained(tmp_path / "empty")


def test_product_quantized_tokenizer_round_trip_and_latent_api(tmp_path):
    cfg = TokenizerConfig(width=8, channel_mult=(1,), latent_dim=4, codebook_size=8, codebook_groups=2)
    torch.manual_seed(0)
    model = Tokenizer(cfg, in_channels=3, image_size=16).train()
    x = torch.rand(4, 3, 16, 16)
    model(x)  # one EM step: k-means initialises both codebooks
    model.eval().save_pretrained(tmp_path / "m")
    again = Tokenizer.from_pretrained(tmp_path / "m")
    assert again.cfg == cfg and torch.equal(model(x).reconstruction, again(x).reconstruction)
    codes = again.encode(x)
    assert codes.shape == (4, 8, 8) and int(codes.max()) < 8 * 8
    z = again.to_latents(x)  # each latent's two halves are codes of the two codebooks
    assert torch.equal(again.nearest_codes(z), codes)
    assert torch.equal(again.from_latents(z), again.decode(codes))
    assert sorted(k for k in again.state_dict() if k.endswith("codebook")) == \
        ["quantizer.books.0.codebook", "quantizer.books.1.codebook"]
    assert "quantizer.codebook" in Tokenizer(CFG, 3, 16).state_dict()  # one group: the layout saved models have


def test_codebook_groups_must_divide_the_latent_dim():
    with pytest.raises(LibcemError, match="model.codebook_groups"):
        TokenizerConfig(latent_dim=16, codebook_groups=3)
    with pytest.raises(LibcemError, match="512 codes \\*\\* 8 groups is too many"):
        TokenizerConfig(latent_dim=16, codebook_size=512, codebook_groups=8)


def test_the_default_tokenizer_has_eight_codebooks_of_128():
    cfg = TokenizerConfig()
    assert (cfg.latent_dim, cfg.codebook_groups, cfg.codebook_size) == (16, 8, 128)
    books = [k for k in Tokenizer(cfg, 3, 32).state_dict() if k.endswith("codebook")]
    assert len(books) == 8


def test_a_model_saved_before_product_quantization_loads_with_one_codebook(tmp_path):
    """Models saved by libcem before the default became 8 codebooks have no 'codebook_groups' key."""
    torch.manual_seed(0)
    model = Tokenizer(CFG, in_channels=3, image_size=16).eval()
    model.save_pretrained(tmp_path / "m")
    record = json.loads((tmp_path / "m" / "config.json").read_text())
    del record["config"]["codebook_groups"]
    (tmp_path / "m" / "config.json").write_text(json.dumps(record))
    again = Tokenizer.from_pretrained(tmp_path / "m")
    assert again.cfg.codebook_groups == 1 and again.cfg == CFG
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(model(x).reconstruction, again(x).reconstruction)


def test_a_run_saved_before_product_quantization_resumes_with_one_codebook(tmp_path):
    run = StageRun(tmp_path / "tok")
    run.path.mkdir()
    saved = to_dict(build_config(TokenizerRunConfig, {"model": {"size": "small", "codebook_size": 512,
                                                                "codebook_groups": 1}}))
    del saved["model"]["codebook_groups"]  # what a run of an earlier libcem wrote
    run.config.write_text(tomli_w.dumps(saved))
    cfg = stage_config("tokenizer", run, resume=True)
    assert (cfg.model.codebook_groups, cfg.model.codebook_size) == (1, 512)
    # a new run (or a user's partial config) takes today's default
    assert build_config(TokenizerRunConfig, {"model": {"size": "small"}}).model.codebook_groups == 8
