"""Issue 14: hostile and careless use. Nothing lost, nothing read or written outside where the user
pointed, one line on stderr and a non-zero exit code, never a traceback. One test per case."""

import json
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from conftest import TINY_CLI
from PIL import Image

from libcem.cli import main
from libcem.config import to_dict
from libcem.errors import LibcemError
from libcem.files import load_tensors, save_model, save_tensors
from libcem.generative.data import DataConfig, load_data
from libcem.generative.diffusion import DiffusionConfig
from libcem.generative.models.prior import PriorConfig, PriorTransformer
from libcem.generative.models.quantizer import kmeans
from libcem.generative.models.tokenizer import Tokenizer, TokenizerConfig
from libcem.generative.runs import StageRun, locked_run
from libcem.generative.training.trainer import Trainer

TOK_CFG = TokenizerConfig(width=8, channel_mult=(1,), latent_dim=4, codebook_size=8, codebook_groups=1)
SRC = str(Path(__file__).resolve().parents[1] / "src")


def one_line_error(capsys, rc, expected_rc=2) -> str:
    err = capsys.readouterr().err
    assert rc == expected_rc, err
    assert err.startswith("libcem: error:") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def tiny_tokenizer(path: Path) -> Tokenizer:
    torch.manual_seed(0)
    tok = Tokenizer(TOK_CFG, 3, 16).eval()
    tok.quantizer.codebook.normal_()
    tok.save_pretrained(path)
    return tok


def tiny_prior_folder(root: Path, vocabulary: list[str], **extra) -> Path:
    """A prior model folder (untrained weights) with its tokenizer/ copy: what `libcem sample` loads."""
    tiny_tokenizer(root / "tokenizer")
    torch.manual_seed(0)
    prior = PriorTransformer(PriorConfig(width=32, depth=1, heads=2), latent_dim=4, latent_size=8,
                             text_dim=len(vocabulary))
    record = {"text_encoder": "label", "vocabulary": list(vocabulary), "prompts": list(vocabulary),
              "diffusion": to_dict(DiffusionConfig()), "data": "fractals", **extra}
    save_model(root, prior, record)
    return root


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- 1. --out that is not a libcem run ------------------------------------------------------------

@pytest.mark.parametrize("stage", [["tokenizer", *TINY_CLI], ["--quiet"]])
def test_out_folder_that_is_not_a_run_is_refused_untouched(tmp_path, capsys, stage):
    out = tmp_path / "mine"
    (out / "samples").mkdir(parents=True)
    (out / "config.toml").write_text("my = 'own'\n")
    (out / "loss.png").write_bytes(b"my plot")
    (out / "samples" / "step_00000004.png").write_bytes(b"my picture")
    before = snapshot(out)
    err = one_line_error(capsys, main(["train", "--out", str(out), "--steps", "4", *stage]))
    assert "not a libcem run folder" in err
    assert snapshot(out) == before


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "f").write_text("keep me")
    err = one_line_error(capsys, main(["train", "tokenizer", "--out", str(tmp_path / "f"), *TINY_CLI]))
    assert "is a file" in err and (tmp_path / "f").read_text() == "keep me"


# --- 3. two processes, one run folder: the lock --------------------------------------------------

def test_a_second_process_is_refused_and_a_killed_one_leaves_no_stuck_lock(tmp_path, capsys):
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", ("import sys, time; from libcem.generative.runs import locked_run\n"
                                "with locked_run(sys.argv[1]):\n    print('locked', flush=True); time.sleep(600)"),
         str(run)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": SRC})
    try:
        assert holder.stdout.readline().strip() == "locked"
        err = one_line_error(capsys, main(["train", "tokenizer", "--out", str(run), "--steps", "2", *TINY_CLI]))
        assert f"{run} is in use by another libcem process" in err
        assert not (run / "config.toml").exists() and not (run / "checkpoints").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with locked_run(run) as path:  # the kernel released the killed process's lock
        assert path == run


# --- 4. a kill during checkpoint rotation --------------------------------------------------------

def fit(cfg, run, resume=False, stop_at=None):
    from libcem.generative.training.tokenizer import TokenizerTask

    return Trainer(run, cfg, TokenizerTask(cfg, load_data(cfg.data)), progress=False).fit(resume=resume, stop_at=stop_at)


def test_kill_during_rotation_never_leaves_a_half_deleted_checkpoint(tiny_cfg, tmp_path, monkeypatch):
    from libcem import files

    real_rmtree = files.shutil.rmtree

    def killed_mid_delete(path, *args, **kwargs):
        path = Path(path)
        if path.name.startswith(".trash-step_") and path.exists():
            (path / "training" / "raw.safetensors").unlink()  # the first file gone, then the process dies
            raise KeyboardInterrupt
        return real_rmtree(path, *args, **kwargs)

    cfg = tiny_cfg("train.keep_checkpoints=1")
    monkeypatch.setattr(files.shutil, "rmtree", killed_mid_delete)
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, tmp_path)  # rotation at step 4 deletes step 2
    monkeypatch.setattr(files.shutil, "rmtree", real_rmtree)
    assert [p.name for p in StageRun(tmp_path).checkpoints()] == ["step_00000004"]
    assert [p.name for p in StageRun(tmp_path).partial_checkpoints()] == [".trash-step_00000002"]
    # a step folder of an older libcem, half deleted (no training/raw.safetensors), is no checkpoint either
    legacy = tmp_path / "checkpoints" / "step_00000005"
    (legacy / "training").mkdir(parents=True)
    (legacy / "training" / "state.json").write_text('{"step": 5}')
    assert StageRun(tmp_path).latest_checkpoint().name == "step_00000004"
    assert fit(cfg, tmp_path, resume=True).step == 6
    assert not StageRun(tmp_path).partial_checkpoints()


# --- 5. metrics rows that span a resume ----------------------------------------------------------

def test_metrics_row_spanning_a_resume_averages_the_same_steps(tiny_cfg, tmp_path, monkeypatch):
    cfg = tiny_cfg("train.log_every=4", "train.checkpoint_every=2", "train.steps=8")
    fit(cfg, tmp_path / "whole")
    real_step = Trainer.train_step

    def dies_at_step_3(self, step):
        if step == 2:  # after checkpoint 2, before the row of step 4
            raise KeyboardInterrupt
        return real_step(self, step)

    monkeypatch.setattr(Trainer, "train_step", dies_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, tmp_path / "killed")
    monkeypatch.setattr(Trainer, "train_step", real_step)
    fit(cfg, tmp_path / "killed", resume=True)

    def rows(run):
        return [{k: v for k, v in json.loads(line).items() if k != "images_per_s"}
                for line in (run / "metrics.jsonl").read_text().splitlines()]

    assert [r["step"] for r in rows(tmp_path / "killed")] == [4, 8]
    assert rows(tmp_path / "killed") == rows(tmp_path / "whole")


# --- 6. sizes that would exhaust memory; shapes that do not match --------------------------------

def rewrite_record(folder: Path, change) -> None:
    record = json.loads((folder / "config.json").read_text())
    change(record)
    (folder / "config.json").write_text(json.dumps(record))


@pytest.mark.parametrize("change, message", [
    (lambda r: r["config"].update(width=4096, depth=64, heads=4), "numbers of weights"),
    (lambda r: r["metadata"].update(latent_size=200000), "metadata.latent_size"),
    (lambda r: r["metadata"].update(latent_size=256), "numbers per image"),
    (lambda r: r["metadata"].update(latent_dim=10_000_000), "metadata.latent_dim"),
    (lambda r: r["config"].update(width=64), "tensor 'null'"),
])
def test_prior_folder_asking_for_too_much_is_refused_before_allocating(tmp_path, real_builds, change, message):
    folder = tiny_prior_folder(tmp_path / "p", ["a cat", "a dog"])
    rewrite_record(folder, change)
    real_builds.clear()
    with pytest.raises(LibcemError, match=message):
        PriorTransformer.from_pretrained(folder)
    assert real_builds == []


@pytest.mark.parametrize("change, message", [
    (lambda r: r["config"].update(width=1024, channel_mult=[1, 64]), "numbers of weights"),
    (lambda r: r["metadata"].update(in_channels=10_000_000), "metadata.in_channels"),
    (lambda r: r["metadata"].update(image_size=10**9), "metadata.image_size"),
    (lambda r: r["config"].update(channel_mult=[1, 2]), "does not match|tensor"),
])
def test_tokenizer_folder_asking_for_too_much_is_refused_before_allocating(tmp_path, real_builds, change, message):
    tiny_tokenizer(tmp_path / "t")
    rewrite_record(tmp_path / "t", change)
    real_builds.clear()
    with pytest.raises(LibcemError, match=message):
        Tokenizer.from_pretrained(tmp_path / "t")
    assert real_builds == []


# --- 7. a model folder never chooses where libcem writes -----------------------------------------

def test_eval_ignores_a_cache_dir_in_the_model_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LIBCEM_CACHE", str(tmp_path / "cache"))
    data = {"source": "fractals", "image_size": 16, "train_size": 48, "test_size": 8}
    splits = load_data(DataConfig(**data))
    vocabulary = sorted(set(splits.train.captions) | set(splits.test.captions))
    folder = tiny_prior_folder(tmp_path / "p", vocabulary,
                               data_config={**data, "cache_dir": str(tmp_path / "chosen")})
    assert main(["eval", "--model", str(folder), "--limit", "2", "--steps", "1", "--classifier-steps", "1",
                 "--labels", "family", "--device", "cpu", "--quiet"]) == 0
    assert not (tmp_path / "chosen").exists()
    assert len(list((tmp_path / "cache" / "classifiers").glob("*.safetensors"))) == 1


# --- 8. NaN weights ------------------------------------------------------------------------------

def test_nan_weights_are_refused(tmp_path):
    tiny_tokenizer(tmp_path / "t")
    state = load_tensors(tmp_path / "t" / "model.safetensors")
    state["quantizer.codebook"][0, 0] = float("nan")
    save_tensors(tmp_path / "t" / "model.safetensors", state)
    with pytest.raises(LibcemError, match="'quantizer.codebook' holds NaN"):
        Tokenizer.from_pretrained(tmp_path / "t")


# --- 9, 10. data folders: reads stay inside, hostile entries are skipped -------------------------

def png(path: Path, size: int = 16, value: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), (value, value, value)).save(path)
    return path


@pytest.fixture
def no_hang():
    """Turn a read that blocks (a FIFO) into a failure instead of a hung test."""
    def hung(*_):
        raise TimeoutError("blocked reading the data folder")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def test_metadata_entries_outside_the_folder_are_skipped_and_counted(tmp_path, no_hang):
    root = tmp_path / "data"
    png(tmp_path / "outside" / "x.png", value=7)
    for i in range(2):
        png(root / f"in{i}.png", value=200)
    (root / "escape.png").symlink_to(tmp_path / "outside" / "x.png")
    os.mkfifo(root / "pipe.png")
    lines = [{"file_name": "in0.png", "text": "inside"}, {"file_name": "in1.png", "text": "inside"},
             {"file_name": "../outside/x.png", "text": "out"},
             {"file_name": str(tmp_path / "outside" / "x.png"), "text": "out"},
             {"file_name": "escape.png", "text": "out"}, {"file_name": "pipe.png", "text": "fifo"}]
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    with pytest.warns(UserWarning, match="skipped 1 file.* and 3 entries outside the folder"):
        splits = load_data(DataConfig(source=f"folder:{root}", test_size=1))
    images = torch.cat([splits.train.images, splits.test.images])
    assert len(images) == 2 and bool((images == 200).all())
    assert set(splits.train.captions + splits.test.captions) == {"inside"}


def test_fifo_and_decompression_bomb_in_class_folders_are_skipped(tmp_path, monkeypatch, no_hang):
    root = tmp_path / "data"
    png(root / "cats" / "a.png")
    png(root / "cats" / "b.png")
    png(root / "cats" / "bomb.png", size=64)  # 4096 pixels: more than twice the limit below
    png(root / "cats" / "big.png", size=40)  # 1600 pixels: over the limit (PIL only warns)
    os.mkfifo(root / "cats" / "pipe.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.warns(UserWarning, match="skipped 3 file"):
        splits = load_data(DataConfig(source=f"folder:{root}", test_size=1, image_size=16))
    assert len(splits.train) + len(splits.test) == 2


@pytest.mark.parametrize("line, message", [
    (b'{"file_name": "a.png", "text": "caf\xe9"}', "2: the line is not UTF-8"),
    (b'{"file_name": "a.png", "text": null}', "2: each line must be a JSON object with a string"),
    (b'{"file_name": "a.png", "text": ["a", "b"]}', "2: each line must be a JSON object with a string"),
    (b'{"file_name": 3, "text": "x"}', "2: each line must be a JSON object with a string"),
    (b'["a.png", "x"]', "2: each line must be a JSON object with a string"),
])
def test_bad_metadata_lines_are_one_clear_error(tmp_path, line, message):
    png(tmp_path / "a.png")
    (tmp_path / "metadata.jsonl").write_bytes(b'{"file_name": "a.png", "text": "ok"}\n' + line + b"\n")
    with pytest.raises(LibcemError, match=f"metadata.jsonl:{message}"):
        load_data(DataConfig(source=f"folder:{tmp_path}"))


# --- 11. a small data set -------------------------------------------------------------------------

def test_sixteen_images_keep_fifteen_for_training_and_train(tmp_path, capsys):
    for i in range(16):
        png(tmp_path / "data" / "dots" / f"{i}.png", value=120)  # identical images: k-means' worst case
    with pytest.warns(UserWarning, match="16 images: holding out 1 for evaluation instead of data.test_size=500"):
        splits = load_data(DataConfig(source=f"folder:{tmp_path / 'data'}"))
    assert (len(splits.train), len(splits.test)) == (15, 1)
    assert main(["train", "tokenizer", "--data", f"folder:{tmp_path / 'data'}", "--out", str(tmp_path / "run"),
                 "--steps", "2", "--quiet", "--set", "data.image_size=16", "--set", "train.batch_size=8"]) == 0
    assert "held-out PSNR" in capsys.readouterr().out


def test_kmeans_of_identical_points_does_not_crash():
    x = torch.ones(10, 4)
    assert torch.equal(kmeans(x, 3, 2, torch.Generator().manual_seed(0)), torch.ones(3, 4))


# --- 12. a class folder whose name is not UTF-8 --------------------------------------------------

def test_non_utf8_class_folder_name_becomes_valid_text(tmp_path):
    root = tmp_path / "data"
    folder = os.path.join(os.fsencode(root), b"caf\xe9")
    os.makedirs(folder)
    png(Path(os.fsdecode(folder)) / "a.png")
    png(Path(os.fsdecode(folder)) / "b.png")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        splits = load_data(DataConfig(source=f"folder:{root}", test_size=1))
    assert splits.train.captions == ["caf\ufffd"]
    from libcem.generative.text.encoders import minilm_available

    if minilm_available():
        from libcem.generative.text import build_encoder

        tokens, _ = build_encoder("minilm").encode(splits.train.captions)
        assert tokens.shape[0] == 1


# --- 16. tracebacks where a sentence belongs ----------------------------------------------------

@pytest.mark.parametrize("text", ['[1, 2]', '{"kind": "tokenizer", "config": {"width": "wide"}}',
                                  '{"config": {}}', '{"kind": "tokenizer", "config": [1]}', '{"kind": "tok',
                                  '{"kind": "tokenizer", "metadata": {"shoe_size": 3}}', '{"kind": "\xff"}'])
def test_malformed_config_json_is_one_line(tmp_path, capsys, text):
    tiny_tokenizer(tmp_path / "t")
    (tmp_path / "t" / "config.json").write_text(text, encoding="latin-1")
    one_line_error(capsys, main(["reconstruct", "--model", str(tmp_path / "t"), "fractals",
                                 "--output", str(tmp_path / "out")]))
    assert not (tmp_path / "out").exists()


def trained(tmp_path, *extra) -> Path:
    run = tmp_path / "run"
    assert main(["train", "tokenizer", "--out", str(run), "--steps", "2", *TINY_CLI, *extra]) == 0
    return run


@pytest.mark.parametrize("state, message", [("{oops", "not a valid JSON"), ('{"step": 7}', "not this checkpoint's"),
                                            ('{"step": 2, "window": {"n": "x"}}', "not this checkpoint's")])
def test_bad_training_state_is_one_line(tmp_path, capsys, state, message):
    run = trained(tmp_path)
    (run / "checkpoints" / "step_00000002" / "training" / "state.json").write_text(state)
    err = one_line_error(capsys, main(["train", "tokenizer", "--out", str(run), "--steps", "4", "--resume", *TINY_CLI]))
    assert message in err


def test_missing_training_state_means_no_checkpoint(tmp_path):
    run = trained(tmp_path)
    (run / "checkpoints" / "step_00000002" / "training" / "state.json").unlink()
    assert StageRun(run).checkpoints() == []


@pytest.mark.parametrize("change, message", [(["--set", "model.width=16"], "cannot change model.width"),
                                             (["--data", "digits"], "cannot change data.source")])
def test_resume_with_another_model_or_data_is_one_line(tmp_path, capsys, change, message):
    run = trained(tmp_path)
    capsys.readouterr()
    err = one_line_error(capsys, main(["train", "tokenizer", "--out", str(run), "--steps", "4", "--resume",
                                       *TINY_CLI, *change]))
    assert message in err


def test_weights_of_another_size_on_resume_are_one_line(tmp_path, capsys):
    run = trained(tmp_path)
    raw = run / "checkpoints" / "step_00000002" / "training" / "raw.safetensors"
    state = load_tensors(raw)
    state["quantizer.codebook"] = torch.zeros(3, 3)
    save_tensors(raw, state)
    err = one_line_error(capsys, main(["train", "tokenizer", "--out", str(run), "--steps", "4", "--resume", *TINY_CLI]))
    assert "'quantizer.codebook' is F32 [3, 3]" in err


def test_full_disk_during_a_checkpoint_is_one_line_and_leaves_no_partial(tmp_path, capsys, monkeypatch):
    from libcem.generative.training import checkpoints

    run = trained(tmp_path)
    before = snapshot(run / "checkpoints")

    def full(*_args, **_kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoints, "save_tensors", full)
    err = one_line_error(capsys, main(["train", "tokenizer", "--out", str(run), "--steps", "4", "--resume", *TINY_CLI]))
    assert "No space left on device" in err and "step_00000004" in err
    assert snapshot(run / "checkpoints") == before


def test_other_os_errors_are_one_line(tmp_path, capsys, monkeypatch):
    from libcem.generative.training.metrics_log import MetricsLog

    def full(*_args, **_kw):
        raise OSError(28, "No space left on device", str(tmp_path / "metrics.jsonl"))

    monkeypatch.setattr(MetricsLog, "append", full)
    err = one_line_error(capsys, main(["train", "tokenizer", "--out", str(tmp_path / "r"), "--steps", "2", *TINY_CLI]),
                         expected_rc=1)
    assert "metrics.jsonl: No space left on device" in err


def test_non_json_metrics_is_one_line_and_a_torn_last_line_is_dropped(tmp_path, capsys):
    run = trained(tmp_path)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "lo')  # a kill in the middle of a write
    assert main(["train", "tokenizer", "--out", str(run), "--steps", "4", "--resume", *TINY_CLI]) == 0
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [2, 4]
    (run / "metrics.jsonl").write_text("not json\n")
    err = one_line_error(capsys, main(["train", "tokenizer", "--out", str(run), "--steps", "6", "--resume", *TINY_CLI]))
    assert "metrics.jsonl:1 is not a metrics row" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 runs where there is a GPU")
def test_fp16_without_a_gpu_is_one_line(tmp_path, capsys):
    err = one_line_error(capsys, main(["train", "tokenizer", "--out", str(tmp_path / "r"), "--precision", "fp16",
                                       *TINY_CLI]))
    assert "fp16' needs a GPU" in err


def test_a_typo_in_a_prior_key_is_reported_before_the_tokenizer_trains(tmp_path, capsys):
    err = one_line_error(capsys, main(["train", "--out", str(tmp_path / "r"), "--steps", "2", "--quiet",
                                       "--set", "prior.model.widht=32"]))
    assert "unknown config key 'model.widht'" in err
    assert not (tmp_path / "r" / "tokenizer" / "checkpoints").exists()


@pytest.fixture(scope="module")
def prior_folder(tmp_path_factory):
    return tiny_prior_folder(tmp_path_factory.mktemp("prior") / "p", ["a cat", "a dog"])


@pytest.mark.parametrize("args, message", [
    (["--device", "bogus"], "unknown device 'bogus'"),
    (["--seed", "-1"], "--seed must be >= 0"),
    (["--upscale", "100000"], "too large to write"),
    (["-n", "100000000"], "too large to write"),
    (["--steps", "5000"], "steps must be 1..1000"),
    (["--guidance", "nan"], "guidance must be a finite number"),
    (["--guidance-interval", "0.9", "0.1"], "diffusion.guidance_interval"),
    (["--guidance-interval", "0", "nan"], "diffusion.guidance_interval"),
    (["--output", "x.notanimage"], "unknown image file type"),
] + ([] if torch.cuda.is_available() else [(["--device", "cuda"], "device 'cuda' is not available here")]))
def test_bad_sample_arguments_are_one_line(prior_folder, tmp_path, capsys, args, message):
    out = ["--output", str(tmp_path / "grid.png")] if "--output" not in args else []
    err = one_line_error(capsys, main(["sample", "--model", str(prior_folder), "a cat", "--steps", "1", *out, *args]))
    assert message in err
    assert not (tmp_path / "grid.png").exists()


def test_guidance_interval_outside_every_step_is_the_conditional_model(prior_folder):
    from libcem.generative.pipeline import Pipeline

    pipe = Pipeline.from_pretrained(prior_folder, "cpu")
    pipe.snap_to_codes = False  # the tiny codebook would hide small differences
    torch.manual_seed(0)
    with torch.no_grad():  # random weights: the untrained (adaLN-Zero) prior ignores its text
        for w in pipe.prior.parameters():
            w.normal_(0, 0.2)
    plain = pipe("a cat", n=2, steps=3, guidance=1.0, seed=4)
    # 3 steps visit noise levels 1.0, 0.667 and 0.333 (DPM-Solver++ trailing timesteps 999, 666, 333)
    assert torch.equal(pipe("a cat", n=2, steps=3, guidance=5.0, seed=4, guidance_interval=(0.0, 0.2)), plain)
    guided_everywhere = pipe("a cat", n=2, steps=3, guidance=5.0, seed=4)
    assert not torch.equal(guided_everywhere, plain)
    assert torch.equal(pipe("a cat", n=2, steps=3, guidance=5.0, seed=4, guidance_interval=(0.0, 1.0)),
                       guided_everywhere)
    assert not torch.equal(pipe("a cat", n=2, steps=3, guidance=5.0, seed=4, guidance_interval=(0.5, 1.0)),
                           guided_everywhere)
    with pytest.raises(LibcemError, match="guidance_interval must be two numbers"):
        pipe("a cat", n=1, steps=1, guidance_interval=(0.5,))


def test_many_samples_are_made_batch_by_batch(prior_folder):
    from libcem.generative.pipeline import Pipeline

    batches = Pipeline.from_pretrained(prior_folder, "cpu").generate("a cat", n=100_000_000, steps=1, batch_size=2)
    assert next(batches).shape == (2, 3, 16, 16)
    batches.close()


def test_a_long_unknown_prompt_is_not_echoed(prior_folder, capsys):
    err = one_line_error(capsys, main(["sample", "--model", str(prior_folder), "x" * 40_000, "--steps", "1",
                                       "--device", "cpu"]))
    assert len(err) < 500 and "xxx..." in err


def test_a_prior_saved_before_flow_became_the_default_loads_as_ddpm(tmp_path):
    """An export of an earlier libcem has no 'objective' in its diffusion settings: it was a ddpm prior
    sampled with guidance 3; a missing key must not turn it into today's default flow."""
    from libcem.generative.pipeline import Pipeline

    folder = tiny_prior_folder(tmp_path / "old", ["a cat", "a dog"])
    record = json.loads((folder / "config.json").read_text())
    for key in ("objective", "guidance"):
        del record["diffusion"][key]
    (folder / "config.json").write_text(json.dumps(record))
    pipe = Pipeline.from_pretrained(folder, "cpu")
    assert (pipe.diffusion.objective, pipe.diffusion.guidance) == ("ddpm", 3.0)
    assert pipe("a cat", n=1, steps=2).shape == (1, 3, 16, 16)
