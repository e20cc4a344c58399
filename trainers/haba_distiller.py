"""HaBa's distillation: expert trajectories, the MTT trajectory-matching loop with `torch.func.functional_call`
(unrolled SGD on synthetic images with a learnable learning rate), the adversarial diversity game between the
hallucinators and an extractor, and the evaluation of a synthetic set by training a fresh network on it.

Written from the paper and a reading of the official code (Huage001/DatasetFactorization@60c9128: `distill_fac.py`,
`buffer.py`, `utils.py`, `contrastive_loss.py`); no code is copied. What differs from it (all documented in the README):

- the student's parameters are a flat vector fed to the network through `torch.func.functional_call` (the official
  code wraps the network in `ReparamModule`); the gradient, the update and the loss are the same;
- all draws (expert, start epoch, batches, hallucinators, DSA) come from one seeded `torch.Generator`;
- the official `epoch()` of its evaluation and expert training standardizes every batch by its own global mean and std;
  here the experts never do (the distillation loop does not either) and the evaluation does only with
  `evaluate_synthetic(standardize_batches=True)`;
- ZCA whitening is left out (the digits recipe does not need it); the extractor's three conv blocks are padded by 1
  for every channel count (the official pads one-channel 28x28 inputs by 3 to reach a 2048-wide flatten) and keep
  as many 2x2 pools as the image allows (at most 3);
- `DistilledImages` (per-image distillation, i.e. MTT) is the same loop without hallucinators: no diversity term and
  no extractor step.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from hf_methods.models.haba import HaBaDataset

from .haba_config import DSA_OPERATIONS, HaBaDistillerConfig


# --- networks: the experts' and the students' architecture -----------------------------------------------------------
@dataclass
class NetworkSpec:
    """The architecture of the experts, of the student of the inner loop and of the evaluation networks.

    kind "convnet": `depth` blocks of conv3x3 (`width`, padding 1) -> instance norm (GroupNorm with one group per
    channel, affine; `norm="none"` drops it) -> ReLU -> 2x2 average pool, then a linear classifier (the official
    ConvNet: width 128, depth 3, instance norm, average pooling). kind "mlp": `depth` hidden layers of `width` with
    ReLU.
    """

    kind: str = "convnet"
    num_channels: int = 3
    image_size: tuple[int, int] = (32, 32)
    num_classes: int = 10
    width: int = 128
    depth: int = 3
    norm: str = "instance"

    def __post_init__(self):
        self.image_size = tuple(int(v) for v in self.image_size)
        if self.kind not in ("convnet", "mlp"):
            raise ValueError(f"network kind must be 'convnet' or 'mlp', got {self.kind!r}.")
        if self.norm not in ("instance", "none"):
            raise ValueError(f"network norm must be 'instance' or 'none', got {self.norm!r}.")
        for name in ("num_channels", "num_classes", "width", "depth"):
            if getattr(self, name) < 1:
                raise ValueError(f"network {name} must be a positive integer, got {getattr(self, name)!r}.")
        if self.kind == "convnet" and min(self.image_size) < 2**self.depth:
            raise ValueError(
                f"a depth-{self.depth} ConvNet halves the image {self.depth} times: image_size {self.image_size} "
                f"needs to be at least {2**self.depth}; lower the depth."
            )

    def build(self) -> nn.Module:
        return ConvNet(self) if self.kind == "convnet" else MLP(self)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["image_size"] = list(self.image_size)
        return out


class ConvNet(nn.Module):
    """See `NetworkSpec` (kind "convnet")."""

    def __init__(self, spec: NetworkSpec):
        super().__init__()
        layers, channels, (h, w) = [], spec.num_channels, spec.image_size
        for _ in range(spec.depth):
            layers.append(nn.Conv2d(channels, spec.width, 3, padding=1))
            if spec.norm == "instance":
                layers.append(nn.GroupNorm(spec.width, spec.width))
            layers += [nn.ReLU(), nn.AvgPool2d(2)]
            channels, h, w = spec.width, h // 2, w // 2
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.classifier = nn.Linear(spec.width * h * w, spec.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class MLP(nn.Module):
    """See `NetworkSpec` (kind "mlp")."""

    def __init__(self, spec: NetworkSpec):
        super().__init__()
        size = spec.num_channels * spec.image_size[0] * spec.image_size[1]
        layers = [nn.Flatten()]
        for _ in range(spec.depth):
            layers += [nn.Linear(size, spec.width), nn.ReLU()]
            size = spec.width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(size, spec.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class FlatParameters:
    """A network's parameters as one flat vector (the layout of `named_parameters()`), and back as the dict
    `torch.func.functional_call` takes."""

    def __init__(self, network: nn.Module):
        self.names = [n for n, _ in network.named_parameters()]
        self.shapes = [p.shape for _, p in network.named_parameters()]
        self.sizes = [math.prod(s) for s in self.shapes]
        self.numel = sum(self.sizes)

    def flatten(self, tensors) -> torch.Tensor:
        """A flat vector from a network's parameters, or from a {name: tensor} dict in the same layout."""
        if isinstance(tensors, nn.Module):
            tensors = dict(tensors.named_parameters())
        return torch.cat([tensors[n].detach().reshape(-1) for n in self.names])

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        return {n: t.view(s) for n, t, s in zip(self.names, flat.split(self.sizes), self.shapes)}


# --- differentiable siamese augmentation (DSA) -----------------------------------------------------------------------
@dataclass
class DSAParams:
    """DSA's magnitudes (the official `ParamDiffAug`)."""

    flip_probability: float = 0.5
    scale: float = 1.2
    rotate_degrees: float = 15.0
    crop_pad: float = 0.125
    cutout: float = 0.5
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5


def _rand(n: int, generator, device, dtype=torch.float32) -> torch.Tensor:
    return torch.rand(n, generator=generator, dtype=dtype).to(device)


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=True)
    return F.grid_sample(x, grid, align_corners=True)


def _crop(x: torch.Tensor, generator, p: DSAParams) -> torch.Tensor:
    """Translate each image by an integer shift of up to `crop_pad` of its size, zero fill."""
    n, _, h, w = x.shape
    sh, sw = int(h * p.crop_pad + 0.5), int(w * p.crop_pad + 0.5)
    dy = torch.randint(-sh, sh + 1, (n,), generator=generator).to(x.device)
    dx = torch.randint(-sw, sw + 1, (n,), generator=generator).to(x.device)
    padded = F.pad(x, [sw, sw, sh, sh])
    rows = (torch.arange(h, device=x.device)[None, :] + sh + dy[:, None])[:, :, None]  # n x h x 1
    cols = (torch.arange(w, device=x.device)[None, :] + sw + dx[:, None])[:, None, :]  # n x 1 x w
    batch = torch.arange(n, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def _cutout(x: torch.Tensor, generator, p: DSAParams) -> torch.Tensor:
    """Zero a `cutout` x `cutout` (of the size) square at a random centre of each image."""
    n, _, h, w = x.shape
    ch, cw = int(h * p.cutout + 0.5), int(w * p.cutout + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (n,), generator=generator).to(x.device)
    cx = torch.randint(0, w + (1 - cw % 2), (n,), generator=generator).to(x.device)
    top, left = (cy - ch // 2)[:, None], (cx - cw // 2)[:, None]
    r, c = torch.arange(h, device=x.device)[None, :], torch.arange(w, device=x.device)[None, :]
    in_rows, in_cols = (r >= top) & (r < top + ch), (c >= left) & (c < left + cw)
    mask = ~(in_rows[:, :, None] & in_cols[:, None, :])
    return x * mask[:, None].to(x.dtype)


def _color(x: torch.Tensor, generator, p: DSAParams) -> torch.Tensor:
    n, dev = len(x), x.device
    x = x + (_rand(n, generator, dev, x.dtype) - 0.5).view(n, 1, 1, 1) * p.brightness
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_rand(n, generator, dev, x.dtype) * p.saturation).view(n, 1, 1, 1) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(n, generator, dev, x.dtype) + p.contrast).view(n, 1, 1, 1) + mean


def _flip(x: torch.Tensor, generator, p: DSAParams) -> torch.Tensor:
    flip = (_rand(len(x), generator, x.device) < p.flip_probability).view(-1, 1, 1, 1)
    return torch.where(flip, x.flip(3), x)


def _scale(x: torch.Tensor, generator, p: DSAParams) -> torch.Tensor:
    n = len(x)
    sx = _rand(n, generator, "cpu") * (p.scale - 1 / p.scale) + 1 / p.scale
    sy = _rand(n, generator, "cpu") * (p.scale - 1 / p.scale) + 1 / p.scale
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = sx, sy
    return _affine(x, theta.to(x.device))


def _rotate(x: torch.Tensor, generator, p: DSAParams) -> torch.Tensor:
    angle = (_rand(len(x), generator, "cpu") - 0.5) * 2 * p.rotate_degrees / 180 * math.pi
    cos, sin = angle.cos(), angle.sin()
    theta = torch.stack([torch.stack([cos, -sin, torch.zeros_like(cos)], 1),
                         torch.stack([sin, cos, torch.zeros_like(cos)], 1)], 1)  # fmt: skip
    return _affine(x, theta.to(x.device))


_DSA = {"color": _color, "crop": _crop, "cutout": _cutout, "flip": _flip, "scale": _scale, "rotate": _rotate}
assert set(_DSA) == set(DSA_OPERATIONS)


def dsa_augment(x: torch.Tensor, strategy: str, generator: torch.Generator, params: DSAParams | None = None):
    """One augmentation of `strategy` (e.g. "color_crop_cutout_flip_scale_rotate"), drawn at random, applied to the
    batch with per-image random magnitudes; differentiable in `x` (DSA's 'S' mode, as the official code). "none" or an
    empty strategy returns `x`."""
    if not strategy or strategy == "none":
        return x
    ops = strategy.split("_")
    op = ops[int(torch.randint(len(ops), (1,), generator=generator))]
    return _DSA[op](x, generator, params or DSAParams()).contiguous()


# --- expert trajectories ---------------------------------------------------------------------------------------------
@dataclass
class ExpertTrajectories:
    """Expert training runs on real data: `trajectories[e][t]` is expert e's flat parameter vector after t epochs
    (t = 0 is its initialization), in the layout of `FlatParameters(network.build())`. Saved as one safetensors file
    (`save` / `load`), the network and training settings in its metadata."""

    network: NetworkSpec
    trajectories: list[list[torch.Tensor]]
    settings: dict = field(default_factory=dict)

    @property
    def num_experts(self) -> int:
        return len(self.trajectories)

    @property
    def num_epochs(self) -> int:
        """Epochs of the shortest expert (its trajectory holds num_epochs + 1 snapshots)."""
        return min(len(t) for t in self.trajectories) - 1

    def save(self, path) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {f"expert{e}.epoch{t}": p.contiguous() for e, tr in enumerate(self.trajectories)
                   for t, p in enumerate(tr)}  # fmt: skip
        metadata = {"network": json.dumps(self.network.to_dict()), "settings": json.dumps(self.settings),
                    "num_experts": str(self.num_experts), "format": "hf-methods expert trajectories"}  # fmt: skip
        save_file(tensors, str(path), metadata=metadata)
        return path

    @classmethod
    def load(cls, path) -> ExpertTrajectories:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if "network" not in meta:
                raise ValueError(f"{path} is not an expert-trajectories file (no network in its metadata).")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        trajectories = []
        for e in range(int(meta["num_experts"])):
            epochs = sorted(int(k.split(".epoch")[1]) for k in tensors if k.startswith(f"expert{e}."))
            trajectories.append([tensors[f"expert{e}.epoch{t}"] for t in epochs])
        return cls(NetworkSpec(**json.loads(meta["network"])), trajectories, json.loads(meta["settings"]))


def train_expert_trajectories(
    images: torch.Tensor,
    labels: torch.Tensor,
    network: NetworkSpec,
    *,
    num_experts: int = 100,
    epochs: int = 50,
    lr: float = 0.01,
    batch_size: int = 256,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    dsa: bool = True,
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate",
    seed: int = 0,
    test_images: torch.Tensor | None = None,
    test_labels: torch.Tensor | None = None,
    disable_tqdm: bool = False,
) -> ExpertTrajectories:
    """Train `num_experts` networks from fresh initializations on the real `images` with plain SGD (the official
    `buffer.py` defaults: lr 0.01, no momentum or weight decay, batch 256, 50 epochs, DSA augmentation, 100 experts) and
    keep their parameters after every epoch. With a test split, `settings["test_accuracy"]` holds each expert's
    final accuracy."""
    from tqdm.auto import tqdm

    if num_experts < 1 or epochs < 1:
        raise ValueError(f"num_experts and epochs must be positive, got {num_experts} and {epochs}.")
    generator = torch.Generator().manual_seed(seed)
    trajectories, accuracies = [], []
    for _ in tqdm(range(num_experts), desc="expert trajectories", disable=disable_tqdm):
        torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=generator)))
        net = network.build()
        layout = FlatParameters(net)
        optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
        snapshots = [layout.flatten(net).clone()]
        for _ in range(epochs):
            order = torch.randperm(len(images), generator=generator)
            for batch in order.split(batch_size):
                x = images[batch]
                if dsa:
                    x = dsa_augment(x, dsa_strategy, generator)
                loss = F.cross_entropy(net(x), labels[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            snapshots.append(layout.flatten(net).clone())
        trajectories.append(snapshots)
        if test_images is not None:
            accuracies.append(network_accuracy(net, test_images, test_labels))
    settings = dict(num_experts=num_experts, epochs=epochs, lr=lr, batch_size=batch_size, momentum=momentum,
                    weight_decay=weight_decay, dsa=dsa, dsa_strategy=dsa_strategy, seed=seed)  # fmt: skip
    if accuracies:
        settings["test_accuracy"] = accuracies
    return ExpertTrajectories(network, trajectories, settings)


@torch.no_grad()
def network_accuracy(
    net: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256, standardize_batches=False
) -> float:
    """Accuracy of `net` on (images, labels) in batches of `batch_size` (256, the official test loader's), each
    standardized by its own mean and std when `standardize_batches`."""
    was_training = net.training
    net.eval()
    correct = 0
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size]
        x = standardize(x) if standardize_batches else x
        correct += int((net(x).argmax(-1) == labels[i : i + batch_size]).sum())
    net.train(was_training)
    return correct / len(images)


# --- synthetic sets --------------------------------------------------------------------------------------------------
class DistilledImages(nn.Module):
    """A plain distilled set (per-image distillation, MTT): `images_per_class` learnable images per class and the
    learnable synthetic learning rate, no hallucinators. `bases` (num_classes x ipc x C x H x W) are the images; the
    same `HaBaDistiller` loop learns them (no diversity term, no extractor)."""

    num_hallucinators = 0

    def __init__(self, num_classes: int, images_per_class: int, image_shape, initial_synthetic_lr: float = 0.01):
        super().__init__()
        if isinstance(images_per_class, bool) or not isinstance(images_per_class, int) or images_per_class < 1:
            raise ValueError(f"images_per_class (ipc) must be an integer >= 1, got {images_per_class!r}.")
        self.num_classes, self.images_per_class = num_classes, images_per_class
        self.bases = nn.Parameter(torch.randn(num_classes, images_per_class, *image_shape))
        self.synthetic_lr = nn.Parameter(torch.tensor(float(initial_synthetic_lr)))

    @property
    def learning_rate(self) -> float:
        return float(self.synthetic_lr.detach())

    def init_bases_from(self, images: torch.Tensor, labels, generator: torch.Generator | None = None):
        """`images_per_class` random real images per class (as `HaBaDataset.init_bases_from`)."""
        labels, chosen = torch.as_tensor(labels), []
        for c in range(self.num_classes):
            pool = torch.nonzero(labels == c).flatten()
            if len(pool) < self.images_per_class:
                raise ValueError(f"class {c} has {len(pool)} real images, fewer than ipc={self.images_per_class}.")
            chosen.append(pool[torch.randperm(len(pool), generator=generator)[: self.images_per_class]])
        chosen = torch.stack(chosen)
        with torch.no_grad():
            self.bases.copy_(images[chosen.flatten()].reshape(self.bases.shape))
        return chosen

    def stored_floats(self) -> dict[str, int]:
        return {"bases": self.bases.numel(), "hallucinators": 0, "synthetic_lr": 1,
                "total": self.bases.numel() + 1}  # fmt: skip

    def images_and_labels(self) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(self.num_classes).repeat_interleave(self.images_per_class)
        return self.bases.detach().flatten(0, 1).clone(), labels


def synthesize(synthetic, indices: torch.Tensor, hallucinator_id: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) of the flat base `indices` (class = index // ipc) through hallucinator `hallucinator_id`
    (None or a set without hallucinators: the bases themselves)."""
    bases = synthetic.bases.flatten(0, 1)[indices]
    labels = indices // synthetic.images_per_class
    if hallucinator_id is None or synthetic.num_hallucinators == 0:
        return bases, labels
    return synthetic.hallucinate(bases, int(hallucinator_id)), labels


# --- losses ----------------------------------------------------------------------------------------------------------
def parameter_matching_loss(final: torch.Tensor, start: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MTT's normalized parameter distance `||theta_N - theta*_{s+M}||^2 / ||theta*_s - theta*_{s+M}||^2` (both sums
    divided by the parameter count, as the official code; the ratio is the same)."""
    n = final.numel()
    return (F.mse_loss(final, target, reduction="sum") / n) / (F.mse_loss(start, target, reduction="sum") / n)


def supcon_loss(features: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07, base_temperature=0.07):
    """Supervised contrastive loss (Khosla et al. 2020) of `features` (batch x views x dim, L2-normalized) with
    `labels` (batch): every view is an anchor; positives are the other views of the same class."""
    b, v = features.shape[:2]
    flat = torch.cat(features.unbind(1), 0)  # (v*b) x dim, view-major
    lab = labels.repeat(v)
    logits = flat @ flat.T / temperature
    logits = logits - logits.max(dim=1, keepdim=True).values.detach()
    not_self = ~torch.eye(len(flat), dtype=torch.bool, device=flat.device)
    positives = (lab[:, None] == lab[None, :]) & not_self
    log_prob = logits - torch.log((logits.exp() * not_self).sum(1, keepdim=True))
    mean_log_prob = (log_prob * positives).sum(1) / positives.sum(1).clamp_min(1)
    return -(temperature / base_temperature) * mean_log_prob.mean()


class Extractor(nn.Module):
    """The diversity game's extractor: up to three blocks of conv3x3 (`width`, padding 1) -> GroupNorm(width, width)
    -> ReLU -> 2x2 average pool (as many as the image size allows), flatten, and a linear classifier. Returns (logits,
    embedding), the embedding being the flattened features (the official `Extractor`)."""

    def __init__(self, num_channels: int, image_hw, num_classes: int, width: int = 128):
        super().__init__()
        h, w = image_hw
        layers, channels = [], num_channels
        for _ in range(3):
            if min(h, w) < 2:
                break
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.GroupNorm(width, width), nn.ReLU(),
                       nn.AvgPool2d(2)]  # fmt: skip
            channels, h, w = width, h // 2, w // 2
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.classifier = nn.Linear(channels * h * w, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.features(x)
        return self.classifier(embedding), embedding


# --- the loop --------------------------------------------------------------------------------------------------------
class HaBaDistiller:
    """Learns a `HaBaDataset` (bases, hallucinators, synthetic learning rate) by matching expert trajectories, or a
    `DistilledImages` set (plain MTT) with the same loop.

        experts = train_expert_trajectories(images, labels, NetworkSpec(...), num_experts=5, epochs=10)
        haba = HaBaDataset(HaBaConfig(num_channels=1, image_size=8, images_per_class=1, num_labels=10))
        haba.init_bases_from(images, labels)
        history = HaBaDistiller(haba, experts, HaBaDistillerConfig.official(1, iterations=200)).distill()

    `history` holds one dict per iteration (param_loss, club_loss, extractor_loss and its parts, synthetic_lr,
    start_epoch). The extractor is `self.extractor` (built when the set has at least two hallucinators and the
    diversity or extractor weights are not all zero).
    """

    def __init__(self, synthetic, experts: ExpertTrajectories, config: HaBaDistillerConfig | None = None):
        self.config = config or HaBaDistillerConfig()
        self.synthetic, self.experts = synthetic, experts
        spec = experts.network
        c = self.config
        if not isinstance(synthetic, (HaBaDataset, DistilledImages)):
            raise TypeError(f"synthetic must be a HaBaDataset or DistilledImages, got {type(synthetic).__name__}.")
        shape = tuple(synthetic.bases.shape)
        out_channels = synthetic.config.num_channels if isinstance(synthetic, HaBaDataset) else shape[2]
        if (out_channels, *shape[3:]) != (spec.num_channels, *spec.image_size) or shape[0] != spec.num_classes:
            raise ValueError(
                f"the synthetic set makes {shape[0]} classes of {(out_channels, *shape[3:])} images but the experts' "
                f"network reads {spec.num_classes} classes of {(spec.num_channels, *spec.image_size)}."
            )
        if c.max_start_epoch + c.expert_epochs > experts.num_epochs:
            raise ValueError(
                f"max_start_epoch ({c.max_start_epoch}) + expert_epochs ({c.expert_epochs}) exceeds the experts' "
                f"{experts.num_epochs} epochs: train longer experts or lower max_start_epoch."
            )
        self.network = spec.build()
        self.layout = FlatParameters(self.network)
        if self.layout.numel != experts.trajectories[0][0].numel():
            raise ValueError("the expert trajectories do not hold the parameters of their network spec.")
        self.generator = torch.Generator().manual_seed(c.seed)
        self.num_bases = shape[0] * shape[1]
        self.batch_syn = min(c.batch_syn or self.num_bases, self.num_bases)
        self._chunks: list[torch.Tensor] = []
        self.hallucinating = synthetic.num_hallucinators > 0
        self.diversity = synthetic.num_hallucinators >= 2 and (
            c.lambda_club > 0 or c.lambda_cls > 0 or c.lambda_likelihood > 0 or c.lambda_contrast > 0
        )
        self.extractor = None
        if self.diversity:
            torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=self.generator)))
            self.extractor = Extractor(spec.num_channels, spec.image_size, spec.num_classes, c.extractor_width)
        self.optimizers = self._optimizers()

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        c, s = self.config, self.synthetic
        out = {
            "bases": torch.optim.SGD([s.bases], lr=c.lr_img, momentum=c.img_momentum),
            "synthetic_lr": torch.optim.SGD([s.synthetic_lr], lr=c.lr_lr, momentum=c.lr_momentum),
        }
        if self.hallucinating:
            out["hallucinators"] = torch.optim.SGD(
                s.hallucinators.parameters(), lr=c.lr_hallucinator, momentum=c.hallucinator_momentum
            )
        if self.extractor is not None:
            out["extractor"] = torch.optim.SGD(
                self.extractor.parameters(), lr=c.extractor_lr, momentum=c.extractor_momentum
            )
        return out

    # the pieces (public for tests) --------------------------------------------------------------------------------
    def next_indices(self) -> torch.Tensor:
        """The next batch of flat base indices: chunks of a fresh random permutation of all bases."""
        if not self._chunks:
            order = torch.randperm(self.num_bases, generator=self.generator)
            self._chunks = list(order.split(self.batch_syn))
        return self._chunks.pop()

    def _hallucinator(self) -> int | None:
        if not self.hallucinating:
            return None
        return int(torch.randint(self.synthetic.num_hallucinators, (1,), generator=self.generator))

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        return dsa_augment(x, self.config.dsa_strategy, self.generator) if self.config.dsa else x

    def sample_start(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(theta*_s, theta*_{s+M}, s) of a random expert and start epoch s in [0, max_start_epoch)."""
        expert = self.experts.trajectories[int(torch.randint(self.experts.num_experts, (1,), generator=self.generator))]
        start = int(torch.randint(self.config.max_start_epoch, (1,), generator=self.generator))
        return expert[start], expert[start + self.config.expert_epochs], start

    def unroll(self, start: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """theta_N from theta_0 = `start` after `steps` (default `syn_steps`) SGD steps on synthetic batches with the
        learnable eta_syn, `create_graph=True`: theta_N is differentiable in the bases, the hallucinators and
        eta_syn."""
        steps = self.config.syn_steps if steps is None else steps
        params = start.detach().clone().requires_grad_(True)
        eta = self.synthetic.synthetic_lr
        for _ in range(steps):
            x, y = synthesize(self.synthetic, self.next_indices(), self._hallucinator())
            logits = functional_call(self.network, self.layout.unflatten(params), (self._augment(x),))
            (grad,) = torch.autograd.grad(F.cross_entropy(logits, y), params, create_graph=True)
            params = params - eta * grad
        return params

    def _pair(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A batch of bases through two different random hallucinators, augmented together: (x0, x1, labels)."""
        indices = self.next_indices()
        j0, j1 = torch.randperm(self.synthetic.num_hallucinators, generator=self.generator)[:2].tolist()
        x0, labels = synthesize(self.synthetic, indices, j0)
        x1, _ = synthesize(self.synthetic, indices, j1)
        x = self._augment(torch.cat([x0, x1]))
        return x[: len(indices)], x[len(indices) :], labels

    def club_loss(self) -> torch.Tensor:
        """lambda_club * mean((cos(e0, e1) + 1) / 2): the hallucinators are pushed to make two hallucinations of one
        base look different to the extractor."""
        x0, x1, _ = self._pair()
        _, embedding = self.extractor(torch.cat([x0, x1]))
        e0, e1 = embedding.chunk(2)
        return self.config.lambda_club * ((F.cosine_similarity(e0, e1) + 1) / 2).mean()

    def extractor_losses(self) -> dict[str, torch.Tensor]:
        """The extractor's step on a fresh batch (synthetic images without gradient): classify both views, pull the
        two hallucinations of a base together (likelihood), supervised contrast between classes."""
        c = self.config
        with torch.no_grad():
            x0, x1, labels = self._pair()
        logits, embedding = self.extractor(torch.cat([x0, x1]))
        e0, e1 = embedding.chunk(2)
        cls = c.lambda_cls * F.cross_entropy(logits, torch.cat([labels, labels]))
        likelihood = c.lambda_likelihood * ((1 - F.cosine_similarity(e0, e1)) / 2).mean()
        views = torch.stack([F.normalize(e0, dim=1), F.normalize(e1, dim=1)], 1)
        contrast = c.lambda_contrast * supcon_loss(views, labels, c.supcon_temperature, c.supcon_temperature)
        return {"cls": cls, "likelihood": likelihood, "contrast": contrast, "total": cls + likelihood + contrast}

    def step(self) -> dict[str, float]:
        """One iteration: the synthesizers' step (L_param + diversity), eta_syn clipped, then the extractor's step."""
        c = self.config
        self.network.train()
        start, target, epoch = self.sample_start()
        final = self.unroll(start)
        param_loss = parameter_matching_loss(final, start, target)
        club = self.club_loss() if self.diversity and c.lambda_club > 0 else param_loss.new_zeros(())
        for optimizer in self.optimizers.values():
            optimizer.zero_grad()
        (param_loss + club).backward()
        for name in ("bases", "hallucinators", "synthetic_lr"):
            if name in self.optimizers:
                self.optimizers[name].step()
        with torch.no_grad():
            self.synthetic.synthetic_lr.clamp_(min=c.min_synthetic_lr)
        record = {"param_loss": param_loss.item(), "club_loss": club.item(), "start_epoch": epoch,
                  "synthetic_lr": self.synthetic.learning_rate}  # fmt: skip
        if self.extractor is not None:
            losses = self.extractor_losses()
            self.optimizers["extractor"].zero_grad()
            losses["total"].backward()
            self.optimizers["extractor"].step()
            record.update({f"extractor_{k}": v.item() for k, v in losses.items()})
        return record

    def distill(self, iterations: int | None = None) -> list[dict]:
        """`iterations` (default `config.iterations`) steps with a progress bar; returns their records."""
        from tqdm.auto import tqdm

        history = []
        bar = tqdm(range(iterations or self.config.iterations), desc="HaBa" if self.hallucinating else "MTT",
                   disable=self.config.disable_tqdm)  # fmt: skip
        for _ in bar:
            history.append(self.step())
            bar.set_postfix(param_loss=f"{history[-1]['param_loss']:.3f}", lr=f"{history[-1]['synthetic_lr']:.4f}")
        return history


# --- evaluation: train a fresh network on a synthetic set ------------------------------------------------------------
def epoch_sampler(train, generator: torch.Generator):
    """A function that returns the (images, labels) of one training epoch on `train`: a `HaBaDataset` (each base
    through a random hallucinator, drawn anew every epoch: HaBa's protocol), a `DistilledImages`, or a pair of
    tensors (images, labels)."""
    if isinstance(train, HaBaDataset):
        with torch.no_grad():
            out = train.generate()
        n = train.num_hallucinators
        all_images = out.pixel_values.detach().reshape(-1, n, *out.pixel_values.shape[1:])
        labels = out.labels.reshape(-1, n)[:, 0]

        def sample():
            j = torch.randint(n, (len(all_images),), generator=generator)
            return all_images[torch.arange(len(all_images)), j], labels

        return sample
    images, labels = train.images_and_labels() if isinstance(train, DistilledImages) else train
    images, labels = images.detach(), torch.as_tensor(labels)
    return lambda: (images, labels)


def evaluate_synthetic(
    train,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    network: NetworkSpec,
    *,
    lr: float,
    epochs: int = 1000,
    batch_size: int = 256,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    dsa: bool = True,
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate",
    standardize_batches: bool = False,
    seed: int = 0,
) -> dict:
    """Train a fresh `network` on `train` (see `epoch_sampler`) and return its test accuracy: the official
    `evaluate_synset` protocol (SGD with momentum 0.9 and weight decay 5e-4 at `lr` (the learned eta_syn for a
    distilled set), epochs + 1 passes, lr x 0.1 after epoch epochs // 2 + 1, batch 256, DSA). `standardize_batches`
    (the official `epoch()` does it): every training and test batch is shifted and scaled by its own global mean and
    std before DSA and the network, so a set whose pixel values drifted in scale is read on the real data's scale. Off
    by default: the distillation loop (official too) never standardizes, so the learned eta_syn and the matched
    trajectories are those of unstandardized images."""
    if epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs}.")
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = network.build()
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    sample = epoch_sampler(train, generator)
    net.train()
    for ep in range(epochs + 1):
        images, labels = sample()
        for batch in torch.randperm(len(images), generator=generator).split(batch_size):
            x = standardize(images[batch]) if standardize_batches else images[batch]
            x = dsa_augment(x, dsa_strategy, generator) if dsa else x
            loss = F.cross_entropy(net(x), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if ep == epochs // 2 + 1:
            for group in optimizer.param_groups:
                group["lr"] *= 0.1
    accuracy = network_accuracy(net, test_images, test_labels, standardize_batches=standardize_batches)
    return {"accuracy": accuracy, "train_loss": loss.item()}


def standardize(x: torch.Tensor) -> torch.Tensor:
    """A batch shifted and scaled by its own global mean and std (the official evaluation's `epoch()`)."""
    return (x - x.mean()) / x.std().clamp_min(1e-8)
