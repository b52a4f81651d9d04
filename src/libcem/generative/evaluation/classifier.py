"""A small CNN classifier of one label of a data source, trained once on its real training split and cached.

Its accuracy on generated images measures prompt adherence; its penultimate features give the
feature FID. Cached as safetensors + JSON under $LIBCEM_CACHE (default ~/.cache/libcem)/classifiers.
"""

from __future__ import annotations

import hashlib
import json

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from libcem.config import to_dict
from libcem.errors import LibcemError
from libcem.files import atomic_write_json, load_weights, read_json, save_tensors
from libcem.generative.data import DataConfig, ImageSet
from libcem.generative.data.base import batch_indices

CLASSIFIER_VERSION = 1  # bump when the architecture or the training recipe changes
FEATURES = 64


class Classifier(nn.Module):
    """(B, C, H, W) in [0, 1] -> logits (B, K); `features` gives the (B, 64) penultimate activations."""

    def __init__(self, channels: int, classes: int) -> None:
        super().__init__()
        self.channels, self.classes = channels, classes

        def conv(cin: int, cout: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU()]

        self.body = nn.Sequential(*conv(channels, 32, 2), *conv(32, 64, 1), *conv(64, 64, 2),
                                  *conv(64, 128, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(128, FEATURES), nn.ReLU())
        self.head = nn.Linear(FEATURES, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x * 2 - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    @torch.no_grad()
    def apply_batched(self, x: torch.Tensor, batch: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (N, C, H, W) -> (predicted classes (N,), features (N, 64)), in eval mode on the CPU."""
        self.eval()
        feats = torch.cat([self.features(x[i : i + batch]) for i in range(0, len(x), batch)])
        return self.head(feats).argmax(1), feats


def train_classifier(data: ImageSet, key: str, steps: int = 500, batch: int = 128, seed: int = 0,
                     progress: bool = True) -> Classifier:
    """Adam on cross-entropy for `steps` steps over the real images of `data` labelled by `key`."""
    torch.manual_seed(seed)
    model = Classifier(data.channels, len(data.label_names[key]))
    labels = torch.from_numpy(data.labels[key]).long()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    model.train()
    for step in tqdm(range(steps), desc=f"classifier ({key})", disable=not progress, leave=False):
        idx = batch_indices(step, batch, len(data), seed)
        loss = F.cross_entropy(model(data.floats(idx)), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


def classifier_key(data_cfg: DataConfig, key: str, size: int, channels: int, steps: int) -> str:
    spec = json.dumps({"data": to_dict(data_cfg), "key": key, "size": size, "channels": channels, "steps": steps,
                       "version": CLASSIFIER_VERSION}, sort_keys=True)
    name = data_cfg.source.replace("/", "_").replace(":", "_")[-40:]
    return f"{name}-{key}-{hashlib.sha256(spec.encode()).hexdigest()[:12]}"


def load_or_train_classifier(data_cfg: DataConfig, train: ImageSet, test: ImageSet, key: str,
                             steps: int = 500, progress: bool = True) -> tuple[Classifier, float]:
    """The cached classifier of `key` for this data config (trained on first use) and its held-out accuracy."""
    from libcem.generative.data.downloads import cache_dir

    root = cache_dir(data_cfg.cache_dir) / "classifiers"
    root.mkdir(parents=True, exist_ok=True)
    stem = root / classifier_key(data_cfg, key, train.size, train.channels, steps)
    weights, record = stem.with_suffix(".safetensors"), stem.with_suffix(".json")
    model = Classifier(train.channels, len(train.label_names[key]))
    if weights.is_file() and record.is_file():
        load_weights(weights, model)
        accuracy = read_json(record, "classifier record")
        accuracy = accuracy.get("test_accuracy") if isinstance(accuracy, dict) else None
        if not isinstance(accuracy, float):
            raise LibcemError(f"{record} has no test_accuracy; delete it and {weights.name} to retrain the classifier")
        return model.eval(), accuracy
    model = train_classifier(train, key, steps, progress=progress)
    pred, _ = model.apply_batched(test.floats())
    acc = float((pred == torch.from_numpy(test.labels[key])).float().mean())
    save_tensors(weights, model.state_dict())
    atomic_write_json(record, {"key": key, "data": to_dict(data_cfg), "test_accuracy": acc})
    return model, acc
