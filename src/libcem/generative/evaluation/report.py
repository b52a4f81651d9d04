"""Prompt adherence and feature FID of a prior, with the real held-out split as the reference.

Protocol: one image is generated per held-out image, from that image's caption (so every class
appears as often as in the held-out split). For each label (digits: digit; fractals: family and
color) a small classifier trained on the real training split gives
- adherence: its accuracy on the generated images, the target being the caption's class;
- feature FID: the Frechet distance between generated and held-out images in its 64 penultimate
  features.
Reference: the same classifier's accuracy on the real held-out images, and the feature FID
between an equally large seeded random subset of the real training images and the held-out split.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import torch

from libcem.errors import LibcemError
from libcem.generative.data import DataConfig, ImageSet, Splits
from libcem.generative.evaluation.classifier import load_or_train_classifier
from libcem.generative.evaluation.fid import frechet_distance

DEFAULT_LABELS = {"digits": ("digit",), "mnist": ("digit",), "fractals": ("family", "color")}


def eval_labels(source: str, data: ImageSet, requested: list[str] | None = None) -> list[str]:
    """The labels to evaluate: `requested`, else the source's defaults, else all its labels."""
    keys = list(requested or DEFAULT_LABELS.get(source, tuple(data.label_names)))
    if not keys:
        raise LibcemError(f"data source '{source}' has no labels, so prompt adherence cannot be measured")
    for k in keys:
        if k not in data.label_names:
            raise LibcemError(f"data source '{source}' has no label '{k}'; it has: {', '.join(data.label_names) or 'none'}")
    return keys


def held_out_prompts(pipe, test: ImageSet, limit: int | None) -> np.ndarray:
    """Indices of the held-out images to generate a counterpart for (captions the encoder accepts)."""
    idx = np.arange(len(test))
    vocabulary = pipe.encoder.vocabulary  # a closed-vocabulary encoder (label) knows only its training captions
    if vocabulary is not None:
        known = set(vocabulary)
        idx = np.array([i for i in idx if test.captions[i] in known], dtype=np.int64)
        if len(idx) == 0:
            raise LibcemError("no held-out caption is one of the prior's training captions (label text encoder)")
    return idx[:limit] if limit else idx


def inception_fid_note() -> str:
    """Inception FID needs torchmetrics or torch-fidelity and their weights (downloaded online)."""
    if importlib.util.find_spec("torchmetrics") is None and importlib.util.find_spec("torch_fidelity") is None:
        return ("Inception FID: skipped (neither torchmetrics nor torch-fidelity is installed; "
                "pip install 'torchmetrics[image]' and run online once to fetch the Inception weights)")
    return ""


def inception_fid(real: torch.Tensor, fake: torch.Tensor) -> tuple[float | None, str]:
    """FID in Inception-v3 features via torchmetrics, or (None, why it was skipped)."""
    note = inception_fid_note()
    if note:
        return None, note
    if importlib.util.find_spec("torchmetrics") is None:
        return None, "Inception FID: skipped (only torch-fidelity is installed; libcem uses torchmetrics for it)"
    from torchmetrics.image.fid import FrechetInceptionDistance

    try:
        fid = FrechetInceptionDistance(feature=2048, normalize=True)
    except (OSError, RuntimeError, ImportError, ModuleNotFoundError) as err:
        return None, f"Inception FID: skipped (the Inception weights are not available offline: {str(err).splitlines()[0]})"
    rgb = lambda x: x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x  # noqa: E731
    fid.update(rgb(real), real=True)
    fid.update(rgb(fake), real=False)
    return float(fid.compute()), "Inception FID (torchmetrics, 2048 features)"


def evaluate_prior(pipe, data_cfg: DataConfig, splits: Splits, labels: list[str], steps: int | None = None,
                   guidance: float | None = None, seed: int = 0, sampler: str | None = None,
                   limit: int | None = None, batch_size: int = 50, classifier_steps: int = 500,
                   progress: bool = True) -> dict:
    """Adherence and feature FID of the prior's samples vs the real held-out split (see the module docstring)."""
    test = splits.test
    idx = held_out_prompts(pipe, test, limit)
    prompts = [test.captions[i] for i in idx]
    fake = pipe(prompts, n=1, steps=steps, guidance=guidance, seed=seed, sampler=sampler, batch_size=batch_size,
                progress=progress)
    real = test.floats(idx)
    rng = np.random.default_rng(seed)
    ref = splits.train.floats(np.sort(rng.choice(len(splits.train), len(idx), replace=False)))
    rows = {}
    for key in labels:
        clf, _ = load_or_train_classifier(data_cfg, splits.train, test, key, classifier_steps, progress)
        target = torch.from_numpy(test.labels[key][idx])
        pred_fake, f_fake = clf.apply_batched(fake)
        pred_real, f_real = clf.apply_batched(real)
        _, f_ref = clf.apply_batched(ref)
        rows[key] = {
            "adherence": float((pred_fake == target).float().mean()),
            "real_accuracy": float((pred_real == target).float().mean()),
            "feature_fid": frechet_distance(f_fake, f_real),
            "real_feature_fid": frechet_distance(f_ref, f_real),
        }
    value, note = inception_fid(real, fake)
    return {"images": len(idx), "labels": rows, "inception_fid": value, "inception_note": note, "samples": fake}


def format_report(result: dict) -> str:
    lines = [f"{result['images']} generated images, one per held-out image, from its caption",
             f"{'label':<10} {'adherence':>10} {'real':>8} {'feature FID':>12} {'real FID':>9} {'FID ratio':>10}"]
    for key, r in result["labels"].items():
        ratio = r["feature_fid"] / max(r["real_feature_fid"], 1e-12)
        lines.append(f"{key:<10} {r['adherence']:>10.1%} {r['real_accuracy']:>8.1%} {r['feature_fid']:>12.3f} "
                     f"{r['real_feature_fid']:>9.3f} {ratio:>9.2f}x")
    lines.append("real = the same numbers for real images: classifier accuracy on the held-out split, and the "
                 "feature FID of real training images vs the held-out split")
    lines.append(result["inception_note"] if result["inception_fid"] is None
                 else f"{result['inception_note']}: {result['inception_fid']:.2f}")
    return "\n".join(lines)
