"""Embedded offline data: scikit-learn's bundled digits (1,797 8x8 images), upsampled for ViT recipes."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Array3D, ClassLabel, Dataset, DatasetDict, Features


def digits(image_size: int = 16, test_fraction: float = 0.2, seed: int = 0, max_train_samples: int | None = None) -> DatasetDict:
    """Train/test splits of the digits images as `pixel_values` (1 x image_size x image_size, standardized)
    and `labels`, stratified by class and reproducible from `seed`."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if image_size < 8:
        raise ValueError(f"image_size must be at least 8 (the digits are 8x8), got {image_size}.")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}.")
    raw = load_digits()
    images = torch.tensor(raw.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = (images - 0.5) / 0.5
    idx_train, idx_test = train_test_split(
        np.arange(len(raw.target)), test_size=test_fraction, random_state=seed, stratify=raw.target
    )
    if max_train_samples is not None:
        idx_train = idx_train[:max_train_samples]
    features = Features(
        {
            "pixel_values": Array3D(shape=(1, image_size, image_size), dtype="float32"),
            "labels": ClassLabel(names=[str(d) for d in range(10)]),
        }
    )

    def split(indices):
        ds = Dataset.from_dict(
            {"pixel_values": images[indices].numpy(), "labels": raw.target[indices].tolist()}, features=features
        )
        return ds.with_format("torch")

    return DatasetDict(train=split(idx_train), test=split(idx_test))


def accuracy(eval_pred) -> dict[str, float]:
    """`compute_metrics` for classification Trainers."""
    logits, labels = eval_pred
    logits = logits[0] if isinstance(logits, tuple) else logits
    return {"accuracy": float((np.asarray(logits).argmax(-1) == np.asarray(labels)).mean())}
