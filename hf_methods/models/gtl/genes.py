"""GTL learngenes as masks over a CNN's convolutions: which units are inherited, the budget, mutation, placement.

A *unit* is what a gene selects: an output channel of a convolution (`"channel"`, the paper's "channel subsets
within convolutional kernels"), one kernel (`"kernel"`: the k x k filter from input channel i to output channel o),
or a whole convolution (`"layer"`). The budget is a fraction of the convolution weights:

- channel / kernel: every convolution keeps exactly `max(1, floor(fraction * units + 0.5))` of its units, so the gene
  holds about `fraction` of the convolution weights of every layer (exact per layer, not only in total);
- layer: whole convolutions in a random order, each taken while the total stays within `fraction` of all
  convolution weights (never above).

Only convolution weights count towards the budget. The per-channel tensors that belong to a selected output channel
(the convolution's bias, and the BatchNorm2d right after it: weight, bias, running mean and variance) travel with it;
kernel genes carry kernel weights only, since a BatchNorm channel belongs to a whole output channel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

GRANULARITIES = ("channel", "kernel", "layer")
NORM_TENSORS = ("weight", "bias", "running_mean", "running_var")


def check_granularity(granularity: str) -> str:
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}.")
    return granularity


def check_fraction(fraction: float, name: str = "gene_fraction") -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ValueError(
            f"{name} must be in (0, 1] (a fraction of the convolution weights, e.g. 0.2), got {fraction!r}."
        )
    return float(fraction)


@dataclass(frozen=True)
class ConvLayer:
    """One `nn.Conv2d` of a network, in forward (registration) order."""

    name: str  # module name of the convolution
    shape: tuple[int, int, int, int]  # weight shape (out, in, kh, kw)
    norm: str | None = None  # the BatchNorm2d registered right after it, whose channels follow the convolution's
    bias: bool = False

    @property
    def kernel(self) -> tuple[int, int]:
        return self.shape[2], self.shape[3]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def unit_mask_shape(self, granularity: str) -> tuple[int, ...]:
        return {"channel": self.shape[:1], "kernel": self.shape[:2], "layer": (1,)}[granularity]

    def unit_shape(self, granularity: str) -> tuple[int, ...]:
        """Shape of one unit's weights."""
        return {"channel": self.shape[1:], "kernel": self.shape[2:], "layer": self.shape}[granularity]

    def num_units(self, granularity: str) -> int:
        return math.prod(self.unit_mask_shape(granularity))

    def quota(self, fraction: float, granularity: str) -> int:
        """Units this layer keeps under the channel / kernel budget rule."""
        return max(1, math.floor(fraction * self.num_units(granularity) + 0.5))

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "norm": self.norm, "bias": self.bias}

    @classmethod
    def from_dict(cls, d: dict) -> ConvLayer:
        return cls(d["name"], tuple(int(s) for s in d["shape"]), d.get("norm"), bool(d.get("bias", False)))


def conv_layers(model: nn.Module) -> list[ConvLayer]:
    """The network's convolutions in registration order, each with the BatchNorm2d registered right after it (if
    that norm has as many channels). Works for hf-methods' VGG / ResNet-12 and stock transformers CNNs (ResNet)."""
    modules = list(model.named_modules())
    layers = []
    for i, (name, module) in enumerate(modules):
        if not isinstance(module, nn.Conv2d):
            continue
        if module.groups != 1:
            raise ValueError(f"{name}: grouped convolutions (groups={module.groups}) are not supported by GTL genes.")
        nxt = modules[i + 1][1] if i + 1 < len(modules) else None
        norm = (
            modules[i + 1][0] if isinstance(nxt, nn.BatchNorm2d) and nxt.num_features == module.out_channels else None
        )
        layers.append(ConvLayer(name, tuple(module.weight.shape), norm, module.bias is not None))
    if not layers:
        raise ValueError(f"{type(model).__name__} has no nn.Conv2d layers; GTL genes live in convolutions.")
    return layers


@dataclass
class GeneMask:
    """Which units of each convolution the gene holds: `units[name]` is a bool tensor of shape (out,) for channels,
    (out, in) for kernels, (1,) for whole layers."""

    granularity: str
    fraction: float
    units: dict[str, torch.Tensor]

    def __post_init__(self):
        check_granularity(self.granularity)
        check_fraction(self.fraction)

    def element_mask(self, layer: ConvLayer) -> torch.Tensor:
        """Bool mask of the convolution's weight elements in the gene."""
        units = self.units[layer.name]
        if self.granularity == "channel":
            return units[:, None, None, None].expand(layer.shape).clone()
        if self.granularity == "kernel":
            return units[:, :, None, None].expand(layer.shape).clone()
        return units.reshape(1, 1, 1, 1).expand(layer.shape).clone()

    def num_units(self) -> int:
        return sum(int(u.sum()) for u in self.units.values())

    def num_parameters(self, layers: list[ConvLayer]) -> int:
        """Convolution weights in the gene."""
        return sum(
            int(self.units[layer.name].sum()) * math.prod(layer.unit_shape(self.granularity)) for layer in layers
        )

    def changed_fraction(self, other: GeneMask) -> float:
        """Fraction of this gene's units that `other` does not hold (what a mutation changed)."""
        changed = sum(int((u & ~other.units[n]).sum()) for n, u in self.units.items())
        return changed / max(1, self.num_units())

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: units.clone() for name, units in self.units.items()}

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor], granularity: str, fraction: float) -> GeneMask:
        return cls(granularity, fraction, {name: t.to(torch.bool).clone() for name, t in state.items()})

    def check(self, layers: list[ConvLayer]) -> None:
        """The mask fits these layers (names and unit shapes)."""
        names = [layer.name for layer in layers]
        if sorted(self.units) != sorted(names):
            raise ValueError(f"the gene mask covers layers {sorted(self.units)} but the network has {sorted(names)}.")
        for layer in layers:
            shape = layer.unit_mask_shape(self.granularity)
            if tuple(self.units[layer.name].shape) != shape:
                raise ValueError(f"{layer.name}: mask shape {tuple(self.units[layer.name].shape)}, expected {shape}.")


def _random_subset(n: int, k: int, generator: torch.Generator) -> torch.Tensor:
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=generator)[:k]] = True
    return mask


def _fill_layers(chosen: dict[str, bool], layers, budget: float, candidates, generator) -> None:
    """Add whole layers from `candidates` in a random order while the total stays within `budget` weights."""
    used = sum(layer.numel for layer in layers if chosen[layer.name])
    for i in torch.randperm(len(candidates), generator=generator).tolist():
        layer = candidates[i]
        if not chosen[layer.name] and used + layer.numel <= budget:
            chosen[layer.name] = True
            used += layer.numel


def layer_budget(layers: list[ConvLayer], fraction: float) -> float:
    budget = fraction * sum(layer.numel for layer in layers)
    smallest = min(layers, key=lambda layer: layer.numel)
    if smallest.numel > budget:
        raise ValueError(
            f"gene_fraction={fraction} allows {budget:.0f} convolution weights, less than the smallest layer "
            f"({smallest.name}, {smallest.numel}); raise gene_fraction or use granularity='channel'."
        )
    return budget


def sample_mask(
    layers: list[ConvLayer],
    fraction: float = 0.2,
    granularity: str = "channel",
    generator: torch.Generator | None = None,
) -> GeneMask:
    """A uniformly random gene under the budget rule of the module docstring."""
    check_granularity(granularity)
    check_fraction(fraction)
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    if granularity == "layer":
        chosen = dict.fromkeys((layer.name for layer in layers), False)
        _fill_layers(chosen, layers, layer_budget(layers, fraction), layers, generator)
        return GeneMask(granularity, fraction, {n: torch.tensor([c]) for n, c in chosen.items()})
    units = {}
    for layer in layers:
        n = layer.num_units(granularity)
        units[layer.name] = _random_subset(n, layer.quota(fraction, granularity), generator).reshape(
            layer.unit_mask_shape(granularity)
        )
    return GeneMask(granularity, fraction, units)


def mutate_mask(
    mask: GeneMask, layers: list[ConvLayer], rate: float = 0.1, generator: torch.Generator | None = None
) -> GeneMask:
    """Each unit of the gene is, with probability `rate`, swapped for a unit of the same layer outside the gene
    (channel / kernel: the budget stays exact). For whole layers, each selected layer is dropped with probability
    `rate` and the freed budget refilled with randomly chosen other layers."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
        raise ValueError(f"mutation_rate must be in [0, 1], got {rate!r}.")
    mask.check(layers)
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    if mask.granularity == "layer":
        chosen = {n: bool(u.item()) for n, u in mask.units.items()}
        dropped = [n for n in chosen if chosen[n] and torch.rand((), generator=generator).item() < rate]
        for n in dropped:
            chosen[n] = False
        others = [layer for layer in layers if layer.name not in dropped]
        _fill_layers(chosen, layers, layer_budget(layers, mask.fraction), others, generator)
        return GeneMask("layer", mask.fraction, {n: torch.tensor([c]) for n, c in chosen.items()})
    units = {}
    for layer in layers:
        flat = mask.units[layer.name].flatten().clone()
        inside, outside = flat.nonzero().flatten(), (~flat).nonzero().flatten()
        swap = inside[torch.rand(len(inside), generator=generator) < rate][: len(outside)]
        incoming = outside[torch.randperm(len(outside), generator=generator)[: len(swap)]]
        flat[swap] = False
        flat[incoming] = True
        units[layer.name] = flat.reshape(mask.units[layer.name].shape)
    return GeneMask(mask.granularity, mask.fraction, units)


def match_layers(source: list[ConvLayer], target: list[ConvLayer]) -> dict[str, str]:
    """Where each gene layer goes in a descendant: {target conv name: source conv name}.

    Convolutions are matched within groups of the same kernel size (3x3 with 3x3, a ResNet's 1x1 shortcuts with
    1x1 shortcuts), in forward order, by relative depth: with as many target layers as source layers, layer i goes
    to layer i; a deeper target spreads the gene layers evenly (source i -> target round(i * (M-1) / (L-1))) and
    initializes the layers between them freshly; a shallower target takes, for each of its layers j, the source
    layer round(j * (L-1) / (M-1)), and the other gene layers stay unused.
    """
    groups_s: dict[tuple, list[ConvLayer]] = {}
    groups_t: dict[tuple, list[ConvLayer]] = {}
    for layer in source:
        groups_s.setdefault(layer.kernel, []).append(layer)
    for layer in target:
        groups_t.setdefault(layer.kernel, []).append(layer)
    placed = {}
    for kernel, src in groups_s.items():
        tgt = groups_t.get(kernel, [])
        n_s, n_t = len(src), len(tgt)
        if not n_t:
            continue
        if n_t >= n_s:
            for i, layer in enumerate(src):
                j = 0 if n_s == 1 else math.floor(i * (n_t - 1) / (n_s - 1) + 0.5)
                placed[tgt[j].name] = layer.name
        else:
            for j, layer in enumerate(tgt):
                i = 0 if n_t == 1 else math.floor(j * (n_s - 1) / (n_t - 1) + 0.5)
                placed[layer.name] = src[i].name
    return placed
