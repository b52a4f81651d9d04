"""A model to share: `libcem export` / Pipeline.save_pretrained, loading an export, PIL output, and the
Hugging Face Hub round trip (`libcem push`, `hf:USER/NAME`) against a stand-in for the Hub's HTTP layer."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from libcem.cli import main
from libcem.generative.pipeline import Pipeline
from libcem.generative.runs import ExportFolder


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "fr"
    assert main(["train", "--preset", "tiny", "--out", str(out), "--quiet"]) == 0
    return out


def images(path, output_type="pt"):
    pipe = Pipeline.from_pretrained(path, "cpu")
    return pipe([pipe.prompts[0], pipe.prompts[1]], n=2, steps=3, seed=1, output_type=output_type)


def test_export_is_small_self_contained_and_samples_the_same(run, tmp_path, capsys):
    out = tmp_path / "export"
    assert main(["export", str(run), str(out)]) == 0
    assert f"exported {run} to {out}" in capsys.readouterr().out
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == ["README.md", "model_index.json", "prior/config.json", "prior/model.safetensors",
                     "samples.png", "tokenizer/config.json", "tokenizer/model.safetensors"]
    assert torch.equal(images(out), images(run))  # the EMA weights of the latest checkpoints
    card = ExportFolder(out).card.read_text()
    assert "library_name: libcem" in card and "Trained on `fractals`" in card
    assert "| tokenizer | fractals | 4 of 4 (batch 8, fp32) |" in card and "| prior | fractals | 4 of 4" in card
    assert "loss " in card and "psnr " in card and "![samples](samples.png)" in card
    Image.open(out / "samples.png").verify()

    again = Pipeline.from_pretrained(out, "cpu").save_pretrained(tmp_path / "again")  # an export of an export
    assert torch.equal(images(again.path), images(out))
    assert (again.samples.read_bytes() == (out / "samples.png").read_bytes())


def test_reconstruct_takes_a_two_stage_run_or_an_export_and_skips_unreadable_files(run, tmp_path, capsys):
    """`libcem reconstruct --model` of a two-stage run or an export uses their tokenizer, and a
    folder's file that is not a readable image is skipped with a note, not the whole run."""
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (20, 12), (200, 30, 30)).save(photos / "red.png")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff not a JPEG")
    assert main(["export", str(run), str(tmp_path / "export")]) == 0
    for i, model in enumerate((run, tmp_path / "export")):
        capsys.readouterr()
        assert main(["reconstruct", "--model", str(model), str(photos), "-o", str(tmp_path / f"rec{i}")]) == 0
        captured = capsys.readouterr()
        assert "1 images: mean PSNR" in captured.out
        assert "skipped 1 file(s) that are not readable images: broken.jpg" in captured.err
        assert Image.open(tmp_path / f"rec{i}" / "red.png").size == (40, 12)
    (photos / "red.png").unlink()
    assert main(["reconstruct", "--model", str(run), str(photos), "-o", str(tmp_path / "rec2")]) == 2
    assert "no readable images in folder" in capsys.readouterr().err


def test_pil_and_numpy_outputs_hold_the_same_pixels(run):
    tensor = images(run)
    pil = images(run, "pil")
    array = images(run, "np")
    assert len(pil) == 4 and all(isinstance(im, Image.Image) and im.size == (16, 16) and im.mode == "RGB" for im in pil)
    assert array.shape == (4, 16, 16, 3) and array.dtype == np.uint8
    assert np.array_equal(np.stack([np.asarray(im) for im in pil]), array)
    assert np.array_equal(array, (tensor.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy())
    with pytest.raises(Exception, match="output_type 'latent': use one of pt, pil, np"):
        images(run, "latent")


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """huggingface_hub's public calls, answered from a folder instead of huggingface.co."""
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    store, calls = tmp_path / "hub", []

    def create_repo(self, repo_id, private=False, exist_ok=False, **kw):
        calls.append(("create_repo", repo_id, private, self.token))
        (store / repo_id).mkdir(parents=True, exist_ok=exist_ok)
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, folder_path, repo_id, commit_message=None, **kw):
        calls.append(("upload_folder", repo_id, commit_message))
        shutil.copytree(folder_path, store / repo_id, dirs_exist_ok=True)

    def snapshot_download(repo_id, revision=None, **kw):
        calls.append(("snapshot_download", repo_id, revision))
        if not (store / repo_id).is_dir():
            raise LocalEntryNotFoundError("Cannot find the requested files in the disk cache and outgoing traffic "
                                          "has been disabled.\nsecond line")
        return str(store / repo_id)

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return store, calls


def test_push_a_run_then_sample_it_from_the_hub(run, tmp_path, fake_hub, capsys):
    store, calls = fake_hub
    assert main(["push", str(run), "me/tiny-fractals", "--private", "--token", "hf_x"]) == 0
    assert "pushed" in capsys.readouterr().out
    assert calls[:2] == [("create_repo", "me/tiny-fractals", True, "hf_x"),
                         ("upload_folder", "me/tiny-fractals", "libcem 0.1.0 export")]
    assert ExportFolder(store / "me/tiny-fractals").exists()
    assert "# tiny-fractals" in (store / "me/tiny-fractals/README.md").read_text()
    assert torch.equal(images("hf:me/tiny-fractals"), images(run))
    assert calls[-1] == ("snapshot_download", "me/tiny-fractals", None)
    grid = tmp_path / "grid.png"
    prompt = Pipeline.from_pretrained(run, "cpu").prompts[0]
    assert main(["sample", "--model", "hf:me/tiny-fractals@main", prompt, "-n", "2", "--steps", "2",
                 "--output", str(grid)]) == 0
    assert grid.is_file() and calls[-1] == ("snapshot_download", "me/tiny-fractals", "main")
    capsys.readouterr()
    assert main(["sample", "--model", "hf:me/nothing", "x", "-n", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("libcem: error: could not download me/nothing from the Hugging Face Hub (offline, or no "
                          "such model?): Cannot find the requested files") and err.count("\n") == 1


def test_offline_hub_download_is_one_line_through_huggingface_hub(tmp_path):
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "libcem", "sample", "--model", "hf:me/tiny", "x"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("libcem: error: could not download me/tiny from the Hugging Face Hub")


def test_the_card_states_a_limited_guidance_interval():
    from libcem.generative.model_card import card_text

    limited = {"diffusion": {"sampler": "euler", "steps": 20, "guidance": 5.0, "guidance_interval": [0.0, 0.75]}}
    assert "guidance 5.0 at noise levels 0-0.75 (0 = data, 1 = pure noise)." in card_text("m", limited, {})
    everywhere = {"diffusion": {"sampler": "euler", "steps": 20, "guidance": 3.0, "guidance_interval": [0.0, 1.0]}}
    assert "guidance 3.0." in card_text("m", everywhere, {})
