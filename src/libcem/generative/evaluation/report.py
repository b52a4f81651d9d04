"""Prompt adherence, feature FID and Inception FID of a prior, with the real held-out split as the reference.

Protocol: one image is generated per held-out image, from that image's caption (so every class
appears as often as in the held-out split); or, balanced, K images per distinct held-out caption.
For each label (digits: digit; fractals: family and color) a small classifier trained on the real
training split gives
- adherence: its accuracy on the generated images, the target being the caption's class;
- feature FID: the Frechet distance between generated and held-out images in its 64 penultimate
  features.
Reference: the same classifier's accuracy on the real held-out images, and the feature FID
between an equally large seeded random subset of the real training images and the held-out split.
Inception FID (on request; `inception.py` says which network, resize and scaling): generated vs
held-out, beside the same reference subset vs held-out; per class (distinct caption) the generated
images of it vs its held-out images, beside as many of its training images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from libcem.errors import LibcemError
from libcem.generative.data import DataConfig, ImageSet, Splits
from libcem.generative.data.base import evenly_spaced
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
    """Indices of the held-out images to generate a counterpart for (captions the encoder accepts;
    not an empty one, which no prompt can be)."""
    idx = np.array([i for i in range(len(test)) if test.captions[i].strip()], dtype=np.int64)
    if len(idx) == 0:
        raise LibcemError(f"none of the {len(test)} held-out images has a caption to prompt the prior with")
    vocabulary = pipe.encoder.vocabulary  # a closed-vocabulary encoder (label) knows only its training captions
    if vocabulary is not None:
        known = set(vocabulary)
        idx = np.array([i for i in idx if test.captions[i] in known], dtype=np.int64)
        if len(idx) == 0:
            raise LibcemError("no held-out caption is one of the prior's training captions (label text encoder)")
    return idx[evenly_spaced(len(idx), limit).numpy()] if limit else idx  # splits may be sorted by class


def generation_plan(pipe, test: ImageSet, limit: int | None, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """(held-out images compared against, the held-out image whose caption and labels each generated
    image takes): one per held-out image, or `per_class` for each distinct caption (class captions)."""
    idx = held_out_prompts(pipe, test, limit)
    if not per_class:
        return idx, idx
    first: dict[str, int] = {}
    for i in idx:
        first.setdefault(test.captions[i], int(i))
    return idx, np.repeat(np.array(list(first.values()), dtype=np.int64), per_class)


def draw(rng: np.random.Generator, pool: np.ndarray, n: int) -> np.ndarray:
    """n sorted indices drawn from `pool` without replacement (with it when the pool is smaller)."""
    return np.sort(rng.choice(pool, n, replace=n > len(pool)))


def inception_report(fake: torch.Tensor, real: torch.Tensor, ref_idx: np.ndarray, fake_captions: list[str],
                     real_captions: list[str], train: ImageSet, per_class: bool, seed: int, device,
                     cache: Path | None = None, resize: str = "bilinear") -> dict:
    """Inception FID of generated vs held-out images, beside real training images vs held-out; per class
    (distinct caption) too when asked, each class's reference as many training images of it as generated.
    The real images' features are kept in `cache` (a folder; None: not kept); `resize` as `inception_input`."""
    from libcem.generative.evaluation.inception import cached_features, inception_features

    feats = lambda x: cached_features(x, cache, device=device, resize=resize)  # noqa: E731
    f_fake, f_real = inception_features(fake, device=device, resize=resize), feats(real)
    out = {"fid": frechet_distance(f_fake, f_real), "real_fid": frechet_distance(feats(train.floats(ref_idx)), f_real),
           "images": len(fake), "per_class": {}}
    if not per_class:
        return out
    rng = np.random.default_rng(seed + 1)
    train_captions = np.array(train.captions, dtype=object)
    fake_c, real_c = np.array(fake_captions, dtype=object), np.array(real_captions, dtype=object)
    for c in dict.fromkeys(fake_captions):
        n_fake, n_real = int((fake_c == c).sum()), int((real_c == c).sum())
        pool = np.flatnonzero(train_captions == c)
        if min(n_fake, n_real, len(pool)) < 2:
            continue  # a Frechet distance needs two images on each side
        ref = feats(train.floats(draw(rng, pool, n_fake)))
        out["per_class"][c] = {"fid": frechet_distance(f_fake[fake_c == c], f_real[real_c == c]),
                               "real_fid": frechet_distance(ref, f_real[real_c == c]), "images": n_fake}
    return out


def reconstruction_fid(inputs: torch.Tensor, outputs: torch.Tensor, device, resize: str = "bilinear") -> float:
    """rFID: Inception FID of reconstructions (N, C, H, W) vs their inputs; the inputs' features are kept
    in the libcem cache, so a second tokenizer is compared on the same images at half the cost."""
    from libcem.generative.data.downloads import cache_dir
    from libcem.generative.evaluation.inception import cached_features, inception_features

    if len(inputs) < 2:
        raise LibcemError("rFID needs at least 2 images (a Frechet distance needs two on each side)")
    real = cached_features(inputs, cache_dir() / "inception", device=device, resize=resize)
    return frechet_distance(inception_features(outputs, device=device, resize=resize), real)


def evaluate_prior(pipe, data_cfg: DataConfig, splits: Splits, labels: list[str], steps: int | None = None,
                   guidance: float | None = None, seed: int = 0, sampler: str | None = None,
                   limit: int | None = None, batch_size: int = 50, classifier_steps: int = 500,
                   progress: bool = True, per_class: int = 0, fid: bool = False, fid_per_class: bool = False,
                   fid_resize: str = "bilinear") -> dict:
    """Adherence and feature FID of the prior's samples vs the real held-out split (see the module
    docstring); with `fid`, Inception FID too (per class with `fid_per_class`)."""
    test = splits.test
    idx, gen_idx = generation_plan(pipe, test, limit, per_class)
    prompts = [test.captions[i] for i in gen_idx]
    fake = pipe(prompts, n=1, steps=steps, guidance=guidance, seed=seed, sampler=sampler, batch_size=batch_size,
                progress=progress)
    real = test.floats(idx)
    rng = np.random.default_rng(seed)
    ref_idx = draw(rng, np.arange(len(splits.train)), len(gen_idx))
    ref = splits.train.floats(ref_idx)
    rows = {}
    for key in labels:
        clf, _ = load_or_train_classifier(data_cfg, splits.train, test, key, classifier_steps, progress)
        pred_fake, f_fake = clf.apply_batched(fake)
        pred_real, f_real = clf.apply_batched(real)
        _, f_ref = clf.apply_batched(ref)
        rows[key] = {
            "adherence": float((pred_fake == torch.from_numpy(test.labels[key][gen_idx])).float().mean()),
            "real_accuracy": float((pred_real == torch.from_numpy(test.labels[key][idx])).float().mean()),
            "feature_fid": frechet_distance(f_fake, f_real),
            "real_feature_fid": frechet_distance(f_ref, f_real),
        }
    inception = None
    if fid or fid_per_class:
        from libcem.generative.data.downloads import cache_dir

        inception = inception_report(fake, real, ref_idx, prompts, [test.captions[i] for i in idx], splits.train,
                                     fid_per_class, seed, pipe.device, cache_dir(data_cfg.cache_dir) / "inception",
                                     fid_resize)
    return {"images": len(gen_idx), "per_class": per_class, "labels": rows, "inception": inception, "samples": fake}


def format_report(result: dict) -> str:
    how = (f"{result['per_class']} per distinct held-out caption" if result.get("per_class")
           else "one per held-out image, from its caption")
    lines = [f"{result['images']} generated images, {how}"]
    if result["labels"]:
        lines.append(f"{'label':<10} {'adherence':>10} {'real':>8} {'feature FID':>12} {'real FID':>9} {'FID ratio':>10}")
        for key, r in result["labels"].items():
            ratio = r["feature_fid"] / max(r["real_feature_fid"], 1e-12)
            lines.append(f"{key:<10} {r['adherence']:>10.1%} {r['real_accuracy']:>8.1%} {r['feature_fid']:>12.3f} "
                         f"{r['real_feature_fid']:>9.3f} {ratio:>9.2f}x")
        lines.append("real = the same numbers for real images: classifier accuracy on the held-out split, and the "
                     "feature FID of real training images vs the held-out split")
    lines += inception_lines(result["inception"])
    return "\n".join(lines)


def inception_lines(inc: dict | None) -> list[str]:
    if inc is None:
        return ["Inception FID: not computed (pass --fid; it needs the fid extra: pip install 'libcem[fid]')"]
    lines = [f"Inception FID (2048 pool features, {inc['images']} images): {inc['fid']:.2f}   "
             f"real training images vs held-out: {inc['real_fid']:.2f}   ratio {inc['fid'] / max(inc['real_fid'], 1e-12):.2f}x"]
    if inc["per_class"]:
        lines.append(f"{'class (caption)':<40} {'images':>6} {'FID':>8} {'real FID':>9}")
        lines += [f"{c[:40]:<40} {r['images']:>6} {r['fid']:>8.2f} {r['real_fid']:>9.2f}" for c, r in inc["per_class"].items()]
    return lines
