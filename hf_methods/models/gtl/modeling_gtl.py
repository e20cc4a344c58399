"""A GTL learngene as a `PreTrainedModel`: the masked convolution weights of an ancestor CNN and their masks,
inherited into descendants of the same or another depth and width (the rest freshly initialized)."""

from __future__ import annotations

import logging

import torch
from torch import nn
from transformers import (
    AutoModelForImageClassification,
    PreTrainedConfig,
    PreTrainedModel,
)

from ...engine.learngene import _descendant_card
from ...engine.report import ExpansionReport
from ...modeling import HfMethodsModel, with_card_push
from .configuration_gtl import GTLConfig
from .genes import NORM_TENSORS, ConvLayer, GeneMask, conv_layers, match_layers

logger = logging.getLogger(__name__)


def model_class(name: str) -> type:
    """A model class by name: hf-methods' own (VGG, ResNet-12, ...) or stock transformers'."""
    from ...engine.architectures import resolve_model_class
    from ...registry import exports

    cls = exports().get(name)
    return cls if isinstance(cls, type) and issubclass(cls, PreTrainedModel) else resolve_model_class(name)


class GeneTensors(nn.Module):
    """The stored part of one ancestor convolution: its unit mask, the selected units' weights (in mask order) and,
    for channel and layer genes, the selected channels' bias and BatchNorm tensors."""

    def __init__(self, layer: ConvLayer, granularity: str, units: int):
        super().__init__()
        self.register_buffer("units", torch.zeros(layer.unit_mask_shape(granularity), dtype=torch.bool))
        if units == 0:
            return
        # Parameters (frozen), so that transformers' saving, loading and dtype handling treat them as weights.
        self.weight = nn.Parameter(torch.zeros(units, *layer.unit_shape(granularity)), requires_grad=False)
        channels = {"channel": units, "layer": layer.shape[0], "kernel": 0}[granularity]
        if channels and layer.bias:
            self.bias = nn.Parameter(torch.zeros(channels), requires_grad=False)
        if channels and layer.norm:
            for t in NORM_TENSORS:
                setattr(self, f"norm_{t}", nn.Parameter(torch.zeros(channels), requires_grad=False))


class GTLModel(HfMethodsModel, PreTrainedModel):
    """A GTL learngene: `from_network(trained_cnn, mask)` takes it, `inherit(fresh_cnn)` / `expand(...)` place it.

    It holds only the gene (about `gene_fraction` of the ancestor's convolution weights), never a whole network; it
    has no forward. Descendants are ordinary models (hf-methods' VGG / ResNet-12 or transformers' ResNet).
    """

    config_class = GTLConfig
    base_model_prefix = "gtl"
    method_name = "GTL"
    main_input_name = "pixel_values"

    def __init__(self, config: GTLConfig):
        super().__init__(config)
        self.genes = nn.ModuleList(
            GeneTensors(layer, config.granularity, d["units"])
            for layer, d in zip(config.conv_layers, config.layers or [])
        )
        self.post_init()

    def _init_weights(self, module):
        """Nothing to initialize: every tensor comes from an ancestor (or the saved file)."""

    def forward(self, *args, **kwargs):
        raise TypeError("A GTL learngene has no forward: `inherit()` it into a network, or `expand()` it.")

    # --- taking a gene ----------------------------------------------------------------------------------------
    @classmethod
    def from_network(cls, network: PreTrainedModel, mask: GeneMask, lineage: list | None = None) -> GTLModel:
        """The gene `mask` selects in `network` (usually trained: its trained values are what is passed on)."""
        layers = conv_layers(network)
        mask.check(layers)
        config = GTLConfig(
            base_model_class=type(network).__name__,
            base_config=network.config.to_dict(),
            granularity=mask.granularity,
            gene_fraction=mask.fraction,
            layers=[{**layer.to_dict(), "units": int(mask.units[layer.name].sum())} for layer in layers],
            lineage=lineage,
        )
        gene = cls(config)
        state = network.state_dict()
        with torch.no_grad():
            for layer, tensors in zip(layers, gene.genes):
                units = mask.units[layer.name]
                tensors.units.copy_(units)
                if not units.any():
                    continue
                weight = state[f"{layer.name}.weight"]
                channels = None
                if mask.granularity == "channel":
                    channels = units.nonzero().flatten()
                    tensors.weight.copy_(weight[channels])
                elif mask.granularity == "kernel":
                    o, i = units.nonzero().unbind(1)
                    tensors.weight.copy_(weight[o, i])
                else:
                    channels = torch.arange(layer.shape[0])
                    tensors.weight.copy_(weight[None])
                if hasattr(tensors, "bias"):
                    tensors.bias.copy_(state[f"{layer.name}.bias"][channels])
                for t in NORM_TENSORS if hasattr(tensors, "norm_weight") else ():
                    getattr(tensors, f"norm_{t}").copy_(state[f"{layer.norm}.{t}"][channels])
        return gene

    @property
    def mask(self) -> GeneMask:
        units = {layer.name: t.units.clone() for layer, t in zip(self.config.conv_layers, self.genes)}
        return GeneMask(self.config.granularity, self.config.gene_fraction, units)

    @property
    def num_gene_parameters(self) -> int:
        """Convolution weights in the gene (what the budget counts)."""
        return sum(t.weight.numel() for t in self.genes if hasattr(t, "weight"))

    def learngene_num_parameters(self) -> int:
        """Every stored number except the masks: weights, biases, BatchNorm tensors."""
        return sum(p.numel() for p in self.parameters())

    @property
    def stored_fraction(self) -> float:
        """The gene's share of the ancestor's convolution weights."""
        return self.num_gene_parameters / sum(layer.numel for layer in self.config.conv_layers)

    # --- passing it on ----------------------------------------------------------------------------------------
    def inherit(self, target: PreTrainedModel) -> PreTrainedModel:
        """Place the gene into `target` (freshly initialized) in place and return it.

        Gene layers go to the target's convolutions by `genes.match_layers` (same kernel size, relative depth). In a
        matched layer, output channel / kernel `o` (input `i`) goes to the same index; input channels beyond the
        target's are cut, and units whose index the target lacks (a narrower target) are dropped and reported. A
        wider or deeper target keeps every gene weight bit-exactly. Everything else keeps its fresh init.
        `target.expansion_report` accounts for every tensor and `target.inheritance_masks[name]` is the bool mask of
        the elements that came from the gene.
        """
        source = self.config.conv_layers
        index = {layer.name: i for i, layer in enumerate(source)}
        targets = conv_layers(target)
        placement = match_layers(source, targets)
        masks: dict[str, torch.Tensor] = {}
        details: dict[str, str] = {}
        dropped = 0
        state = target.state_dict()
        with torch.no_grad():
            for t_layer in targets:
                if t_layer.name not in placement:
                    continue
                s_layer = source[index[placement[t_layer.name]]]
                dropped += self._place(self.genes[index[s_layer.name]], s_layer, t_layer, state, masks)
                details[t_layer.name] = s_layer.name
        report = ExpansionReport("GTL", len(targets), type(target).__name__)
        conv_of = {f"{t.name}.weight": t.name for t in targets} | {f"{t.name}.bias": t.name for t in targets}
        conv_of |= {f"{t.norm}.{x}": t.name for t in targets if t.norm for x in NORM_TENSORS}
        for name, tensor in state.items():
            if name.endswith("num_batches_tracked"):
                continue
            count = int(masks[name].sum()) if name in masks else 0
            if count:
                src = details[conv_of[name]]
                report.add(name, tensor.shape, "learngene", f"{count}/{tensor.numel()} from gene layer {src}", count)
            elif conv_of.get(name) in details:
                report.add(name, tensor.shape, "new", "gene holds no unit of this tensor")
            elif name in conv_of:
                report.add(name, tensor.shape, "new", "no gene layer maps here")
            else:
                report.add(name, tensor.shape, "new", "not part of a convolution (never in a gene)")
        used = set(details.values())
        report.unused = [layer.name for layer, t in zip(source, self.genes) if t.units.any() and layer.name not in used]
        if dropped:
            report.unused.append(f"{dropped} units beyond the target's width")
        target.config.learngene_ancestry = {
            "method": self.method_name,
            "learngene": self.name_or_path or None,
            "granularity": self.config.granularity,
            "gene_fraction": self.config.gene_fraction,
            "num_layers": len(targets),
        }
        target.expansion_report = report
        target.inheritance_masks = masks
        with_card_push(target, _descendant_card)
        logger.info(report.summary())
        return target

    def _place(self, tensors: GeneTensors, s: ConvLayer, t: ConvLayer, state: dict, masks: dict) -> int:
        """Copy one gene layer into one target convolution (+ its bias / BatchNorm); returns the units dropped."""
        weight = state[f"{t.name}.weight"]
        mask = masks.setdefault(f"{t.name}.weight", torch.zeros(weight.shape, dtype=torch.bool))
        n_in = min(s.shape[1], t.shape[1])
        granularity, channels, values = self.config.granularity, None, None
        if not tensors.units.any():
            return 0
        if granularity == "channel":
            outs = tensors.units.nonzero().flatten()
            keep = outs < t.shape[0]
            channels = outs[keep]
            weight[channels, :n_in] = tensors.weight[keep, :n_in].to(weight.dtype)
            mask[channels, :n_in] = True
            values = keep
            dropped = int((~keep).sum())
        elif granularity == "kernel":
            pairs = tensors.units.nonzero()
            keep = (pairs[:, 0] < t.shape[0]) & (pairs[:, 1] < t.shape[1])
            o, i = pairs[keep].unbind(1)
            weight[o, i] = tensors.weight[keep].to(weight.dtype)
            mask[o, i] = True
            dropped = int((~keep).sum())
        else:
            n_out = min(s.shape[0], t.shape[0])
            weight[:n_out, :n_in] = tensors.weight[0, :n_out, :n_in].to(weight.dtype)
            mask[:n_out, :n_in] = True
            channels, values = torch.arange(n_out), slice(0, n_out)
            dropped = 0
        extras = []
        if channels is not None and hasattr(tensors, "bias") and t.bias:
            extras.append((f"{t.name}.bias", tensors.bias))
        if channels is not None and hasattr(tensors, "norm_weight") and t.norm:
            extras += [(f"{t.norm}.{x}", getattr(tensors, f"norm_{x}")) for x in NORM_TENSORS]
        for name, stored in extras:
            target_tensor = state[name]
            target_tensor[channels] = stored[values].to(target_tensor.dtype)
            extra_mask = masks.setdefault(name, torch.zeros(target_tensor.shape, dtype=torch.bool))
            extra_mask[channels] = True
        return dropped

    def descendant_config(self, **overrides) -> PreTrainedConfig:
        """The ancestor's config with `overrides` (e.g. `num_labels=5`, `hidden_sizes=[...]`, `depths=[...]`)."""
        cls = model_class(self.config.base_model_class)
        values = {
            k: v
            for k, v in (self.config.base_config or {}).items()
            if k not in ("model_type", "transformers_version", "architectures", "learngene_ancestry")
        }
        if "num_labels" in overrides:  # a new label space replaces the ancestor's
            values.pop("id2label", None)
            values.pop("label2id", None)
        return cls.config_class(**{**values, **overrides})

    def expand(self, config: PreTrainedConfig | None = None, **overrides) -> PreTrainedModel:
        """A freshly initialized descendant with the gene inherited: of the ancestor's class with its config and
        `overrides` (wider, deeper, other labels), or of the class `AutoModelForImageClassification` maps `config`
        to (e.g. a `transformers.ResNetConfig`)."""
        if config is None:
            target = model_class(self.config.base_model_class)(self.descendant_config(**overrides))
        else:
            if overrides:
                raise ValueError("give either a target config or field overrides of the ancestor's config, not both.")
            target = AutoModelForImageClassification.from_config(config)
        return self.inherit(target)

    def descendant_num_parameters(self, **overrides) -> int:
        """Parameters of `expand(**overrides)`, counted on the meta device."""
        with torch.device("meta"):
            model = model_class(self.config.base_model_class)(self.descendant_config(**overrides))
        return sum(p.numel() for p in model.parameters())

    def check_loaded(self, pretrained_model_name_or_path) -> None:
        """Every layer's mask holds as many units as its config says (a tampered or mixed-up checkpoint otherwise)."""
        for d, t in zip(self.config.layers, self.genes):
            if int(t.units.sum()) != d["units"]:
                raise ValueError(
                    f"GTL learngene {pretrained_model_name_or_path!r}: layer {d['name']} mask holds "
                    f"{int(t.units.sum())} units but its config says {d['units']}."
                )

    def model_card(self, repo_or_path, results: dict | None = None):
        from ...cards import gtl_card

        return gtl_card(self, repo_or_path, results)

    def extra_repr(self) -> str:
        return (
            f"{self.config.granularity} gene, {self.num_gene_parameters:,} convolution weights "
            f"({self.stored_fraction:.1%} of {self.config.base_model_class}'s)"
        )
