"""A reassembled network (DeRy, Deep Model Reassembly): blocks sliced out of source models (Hub ids or local folders,
loaded with the Auto classes), joined by DeRy's adapters, behind a stem suited to the input and before a global-average
pool and a linear head. The config stores every source's config and the checkpoint every block's weights, so a saved
model loads with `from_pretrained` without its sources.

Written from the paper and the official code's description (`mmcls_addon/models/backbones/dery.py`: `DeRy`,
`NeuralAdapter`); deviations, all documented in `DeRyConfig`: the stem is chosen for the input (none when the first
block reads the image itself, as it did in its source; else a 3x3 stride-1 conv stem for small images, or a patch
embedding before a ViT block; the official 7x7 stride-2 + max-pool stem, made for 224x224 images and for zoos whose
blocks start after their model's own stem, is `stem="imagenet"`), and the adapters' strides are stored in the config
instead of drawn at random.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput

from ...modeling import HfMethodsModel
from .configuration_dery import DeRyConfig
from .similarity import Node, source_nodes


# --- parts ------------------------------------------------------------------------------------------------------------
class DeRyBlock(nn.Module):
    """The nodes `start`..`end` of one source model, run in order; a max-pool (2x2, ceil mode) after each node the
    source pools after (the project convnets' stage ends)."""

    def __init__(self, nodes: list[Node]):
        super().__init__()
        self.layers = nn.ModuleList([node.module for node in nodes])
        self.pool_after = [node.pool_after for node in nodes]
        self.kind = nodes[0].kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer, pool in zip(self.layers, self.pool_after):
            x = layer(x)
            while isinstance(x, (tuple, list)):  # transformers layers of some versions return tuples
                x = x[0]
            if pool:
                x = F.max_pool2d(x, 2, ceil_mode=True)
        return x


class DeRyAdapter(nn.Module):
    """DeRy's neural adapter between two blocks. cnn2cnn: BN + Conv(k=s, stride=s, no bias) + LeakyReLU; cnn2vit: the
    same, then the map flattened to tokens; vit2vit: LayerNorm + Linear(no bias) + LeakyReLU; vit2cnn: tokens laid
    back on their h x w grid (row-major, as cnn2vit flattens them), then the conv adapter."""

    def __init__(self, mode: str, in_width: int, out_width: int, stride: int = 1, slope: float = 0.1):
        super().__init__()
        self.mode = mode
        if mode == "vit2vit":
            self.norm = nn.LayerNorm(in_width)
            self.proj = nn.Linear(in_width, out_width, bias=False)
        else:
            self.norm = nn.BatchNorm2d(in_width)
            self.proj = nn.Conv2d(in_width, out_width, kernel_size=stride, stride=stride, bias=False)
        self.act = nn.LeakyReLU(slope)

    def forward(self, x: torch.Tensor, shape: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        if self.mode == "vit2vit":
            return self.act(self.proj(self.norm(x))), shape
        if self.mode == "vit2cnn":
            h, w = shape
            if x.shape[1] != h * w:
                raise ValueError(f"vit2cnn adapter: {x.shape[1]} tokens cannot be laid on a {h}x{w} grid.")
            x = x.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)
        x = self.act(self.proj(self.norm(x)))
        shape = (x.shape[2], x.shape[3])
        if self.mode == "cnn2vit":
            x = x.flatten(2).transpose(1, 2)
        return x, shape


class DeRyPatchStem(nn.Module):
    """Patch embedding (Conv k=p, stride p) plus learned position embeddings; no class token (the head mean-pools)."""

    def __init__(self, num_channels: int, width: int, image_size: int, patch_size: int):
        super().__init__()
        self.projection = nn.Conv2d(num_channels, width, kernel_size=patch_size, stride=patch_size)
        self.position_embeddings = nn.Parameter(torch.zeros(1, (image_size // patch_size) ** 2, width))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.projection(x)
        shape = (x.shape[2], x.shape[3])
        x = x.flatten(2).transpose(1, 2)
        if x.shape[1] != self.position_embeddings.shape[1]:
            raise ValueError(
                f"the patch stem was built for {self.position_embeddings.shape[1]} patches (config.image_size), got "
                f"{x.shape[1]}: give images of the configured size."
            )
        return x + self.position_embeddings, shape


def _conv_stem(num_channels: int, width: int, imagenet: bool) -> nn.Sequential:
    if imagenet:  # the official stem: for 224x224 inputs
        return nn.Sequential(
            nn.Conv2d(num_channels, width, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
    return nn.Sequential(nn.Conv2d(num_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())


# --- the plan of a reassembly: what the blocks read and write ---------------------------------------------------------
@dataclass
class BlockPlan:
    nodes: list[Node]
    kind: str
    in_width: int
    out_width: int


def _build_source(source_config: dict, source: str):
    """A randomly initialized source model of the stored config (the base model: what `AutoModel` loads), built
    with `trust_remote_code=False` explicitly: a reassembled model never runs a source's remote code."""
    from transformers import AutoConfig, AutoModel

    values = dict(source_config)
    model_type = values.pop("model_type")
    try:
        config = AutoConfig.for_model(model_type, **values)
    except ValueError as err:
        raise ValueError(f"source {source!r}: its stored config (model_type {model_type!r}) is unusable: {err}") from (
            err
        )
    return AutoModel.from_config(config, trust_remote_code=False)


def load_source(source: str, *, trust_remote_code: bool = False):
    """`AutoModel.from_pretrained(source, trust_remote_code=trust_remote_code)` (the base model: a ViT without its
    head), refused when its checkpoint lacks weights of any of its block nodes (they would be random)."""
    from transformers import AutoModel

    from ...modeling import transformers_errors_only

    with transformers_errors_only():  # a head or pooler the base model lacks or adds is expected: not reported
        model, info = AutoModel.from_pretrained(source, trust_remote_code=trust_remote_code, output_loading_info=True)
    prefixes = tuple(node.name + "." for node in source_nodes(model))
    lacking = sorted(k for k in info.get("missing_keys", ()) if k.startswith(prefixes))
    if lacking:
        raise ValueError(
            f"source {source!r}: its checkpoint has no weights for {len(lacking)} tensor(s) of its blocks (e.g. "
            f"{lacking[0]}), so they would be random; give a trained model of that architecture."
        )
    return model


def block_plan(block: dict, source_model, position: int) -> BlockPlan:
    """The nodes `block["start"]`..`block["end"]` of `source_model`, checked: known node names, start not after
    end, the declared type the nodes' kind."""
    nodes = source_nodes(source_model)
    names = [node.name for node in nodes]
    for key in ("start", "end"):
        if block[key] not in names:
            raise ValueError(
                f"blocks[{position}]['{key}'] = {block[key]!r} is not a node of source {block['source']!r}; its nodes "
                f"are {names}."
            )
    i, j = names.index(block["start"]), names.index(block["end"])
    if i > j:
        raise ValueError(
            f"blocks[{position}] starts at {block['start']!r}, after its end {block['end']!r} in source "
            f"{block['source']!r}: a block runs forward, give start <= end."
        )
    chosen = nodes[i : j + 1]
    if block["type"] != chosen[0].kind:
        raise ValueError(
            f"blocks[{position}] has type {block['type']!r} but the nodes of source {block['source']!r} are "
            f"{chosen[0].kind!r} nodes; set its type to {chosen[0].kind!r}."
        )
    return BlockPlan(chosen, chosen[0].kind, chosen[0].in_width, chosen[-1].out_width)


def adapter_modes(plans: list[BlockPlan]) -> list[str]:
    return [f"{a.kind}2{b.kind}" for a, b in zip(plans, plans[1:])]


STEM_TEXT = {
    "none": "with no stem of its own (the first block reads the pixels, as in its source)",
    "conv": "behind a 3x3 stride-1 conv stem",
    "imagenet": "behind the official 7x7 stride-2 conv + max-pool stem",
    "patch": "behind a patch-embedding stem",
}


def _stem_kind(config: DeRyConfig, first: BlockPlan) -> str:
    stem = config.stem
    if stem == "auto":
        stem = "patch" if first.kind == "vit" else "none" if first.in_width == config.num_channels else "conv"
    if stem == "none" and (first.kind != "cnn" or first.in_width != config.num_channels):
        raise ValueError(
            f"stem 'none' needs a first CNN block that reads the {config.num_channels}-channel image, but blocks[0] "
            f"reads {first.in_width} {'channels' if first.kind == 'cnn' else 'dimensional tokens'}; use a 'conv' or "
            "'patch' stem ('auto' picks)."
        )
    if (stem == "patch") != (first.kind == "vit"):
        raise ValueError(
            f"stem {config.stem!r} does not fit a first block of type {first.kind!r}: a 'patch' stem feeds a ViT "
            "block, a 'conv' or 'imagenet' stem a CNN block ('auto' picks)."
        )
    if stem == "patch" and config.image_size % config.stem_patch_size:
        raise ValueError(
            f"`stem_patch_size` {config.stem_patch_size} must divide `image_size` {config.image_size} (patch stem)."
        )
    return stem


def build_parts(config: DeRyConfig, plans: list[BlockPlan]) -> tuple[nn.Module, nn.ModuleList]:
    """(stem, adapters) of a reassembly whose blocks are `plans`."""
    first = plans[0]
    stem = _stem_kind(config, first)
    if stem == "none":
        stem_module = nn.Identity()
    elif stem == "patch":
        stem_module = DeRyPatchStem(config.num_channels, first.in_width, config.image_size, config.stem_patch_size)
    else:
        stem_module = _conv_stem(config.num_channels, first.in_width, imagenet=stem == "imagenet")
    adapters = nn.ModuleList(
        DeRyAdapter(mode, a.out_width, b.in_width, stride, config.adapter_slope)
        for mode, a, b, stride in zip(adapter_modes(plans), plans, plans[1:], config.strides)
    )
    return stem_module, adapters


def reassembly_num_parameters(config: DeRyConfig, source_models: dict, with_head: bool = True) -> int:
    """Parameters of the `DeRyForImageClassification` of `config` (with_head) or its `DeRyModel`, counted from the
    already loaded `source_models` ({source: model}) and the stem / adapters / head built on the meta device: cheap
    enough for a search to call on every candidate. Equal to counting the built model's parameters."""
    if not config.blocks:
        raise ValueError("the config has no blocks.")
    missing = sorted({b["source"] for b in config.blocks} - set(source_models))
    if missing:
        raise ValueError(f"source_models has no loaded model for source(s) {missing}.")
    plans = [block_plan(b, source_models[b["source"]], i) for i, b in enumerate(config.blocks)]
    total = sum(p.numel() for plan in plans for node in plan.nodes for p in node.module.parameters())
    with torch.device("meta"):
        stem, adapters = build_parts(config, plans)
        total += sum(p.numel() for p in stem.parameters()) + sum(p.numel() for p in adapters.parameters())
        if with_head:
            total += plans[-1].out_width * config.num_labels + config.num_labels
    return total


# --- models -----------------------------------------------------------------------------------------------------------
class DeRyPreTrainedModel(HfMethodsModel, PreTrainedModel):
    config_class = DeRyConfig
    base_model_prefix = "dery"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    method_name = "DeRy"
    accepts_loss_kwargs = False

    @torch.no_grad()
    def _init_weights(self, module):
        """Stem, adapters and head: Kaiming-normal convs (fan_out), N(0, 0.02) linears and position embeddings, unit
        norms. The blocks keep the initialization their source architecture gave them when they were built (a
        reassembled model from scratch is the same network with every block freshly initialized its own way); from
        `from_sources` / `from_pretrained` they hold the loaded weights."""
        if getattr(module, "_dery_block_module", False):
            return
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm2d, nn.LayerNorm)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            if isinstance(module, nn.BatchNorm2d):
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
                init.zeros_(module.num_batches_tracked)
        elif isinstance(module, DeRyPatchStem):
            init.normal_(module.position_embeddings, mean=0.0, std=0.02)

    def _body(self) -> DeRyModel:
        return self if isinstance(self, DeRyModel) else self.dery

    @classmethod
    def from_sources(
        cls, config: DeRyConfig, *, trust_remote_code: bool = False, source_models: dict | None = None
    ) -> DeRyPreTrainedModel:
        """The reassembled model of `config` with every block's weights copied from its source model, loaded with
        `AutoModel.from_pretrained(source, trust_remote_code=trust_remote_code)` (or taken from `source_models`:
        {source: a loaded model}, nothing read from disk). Stem, adapters and head are freshly initialized."""
        model = cls(config)
        loaded = dict(source_models or {})
        body = model._body()
        for i, block in enumerate(config.blocks):
            source = block["source"]
            if source not in loaded:
                loaded[source] = load_source(source, trust_remote_code=trust_remote_code)
            plan = block_plan(block, loaded[source], i)
            for j, node in enumerate(plan.nodes):
                try:
                    body.blocks[i].layers[j].load_state_dict(node.module.state_dict())
                except RuntimeError as err:
                    raise ValueError(
                        f"blocks[{i}]: node {node.name!r} of source {source!r} does not match the stored config of "
                        f"that source ({err}); rebuild the config with DeRyConfig.from_blocks."
                    ) from err
        return model

    @classmethod
    def assemble(
        cls, blocks: list[dict], *, trust_remote_code: bool = False, source_models: dict | None = None, **kwargs
    ) -> DeRyPreTrainedModel:
        """`from_sources(DeRyConfig.from_blocks(blocks, **kwargs))`: a reassembled model straight from block specs."""
        config = DeRyConfig.from_blocks(
            blocks, trust_remote_code=trust_remote_code, source_models=source_models, **kwargs
        )
        return cls.from_sources(config, trust_remote_code=trust_remote_code, source_models=source_models)

    def block_num_parameters(self) -> list[int]:
        return [sum(p.numel() for p in block.parameters()) for block in self._body().blocks]

    def model_card(self, repo_or_path, results: dict | None = None):
        """The card: every source model and block (nodes, type, parameters), the adapters, the run's figures."""
        from ...cards import hub_id, link, run_model_card
        from ...report import fmt_params

        results = results or {}
        config = self.config
        body = self._body()
        rows = ["| position | source model | first node | last node | type | parameters |", "|---|---|---|---|---|---|"]
        for i, (block, size) in enumerate(zip(config.blocks, self.block_num_parameters())):
            rows.append(
                f"| {i + 1} | {link(block['source'])} | `{block['start']}` | `{block['end']}` | {block['type']} | "
                f"{fmt_params(size)} |"
            )
        modes = [adapter.mode for adapter in body.adapters]
        description = (
            f"A network reassembled with DeRy (Deep Model Reassembly) from {len(config.source_configs)} source "
            f"model(s): {len(config.blocks)} blocks sliced out of them, joined by adapters "
            f"({', '.join(modes) or 'none'}), {STEM_TEXT[body.stem_kind]}, with a global-average-pool and a "
            f"linear head ({config.num_labels} labels). Blocks "
            f"{'frozen' if config.block_fixed else 'trained end to end'}. "
            f"{fmt_params(sum(p.numel() for p in self.parameters()))} parameters. The checkpoint holds every block's "
            "weights: it loads without its sources.\n\n" + "\n".join(rows)
        )
        if config.reassembly:
            description += "\n\nHow the blocks were chosen: " + ", ".join(
                f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}"
                for k, v in config.reassembly.items()
                if isinstance(v, (int, float, str))
            )
        card = run_model_card(
            self,
            repo_or_path,
            method="DeRy",
            title=results.get("title") or f"DeRy reassembled network ({len(config.blocks)} blocks)",
            description=description,
            tags=["model-reassembly"],
            training_setup=results.get("training_setup"),
            metrics=results.get("metrics"),
            dataset=results.get("dataset"),
            input_format=results.get("input_format"),
        )
        hub_sources = sorted({s for s in config.source_configs if hub_id(s)})
        if hub_sources:
            card.data.base_model = hub_sources
            card.data.base_model_relation = "merge" if len(hub_sources) > 1 else "finetune"
        return card


class DeRyModel(DeRyPreTrainedModel):
    """stem -> [block, adapter]* -> block. `forward(pixel_values)` returns the last block's output
    (`last_hidden_state`: a map (batch, C, h, w) or tokens (batch, N, D)) and its global average (`pooler_output`).
    Loads from a `DeRyForImageClassification` checkpoint too (its head is left out)."""

    _keys_to_ignore_on_load_unexpected = [r"^classifier\."]

    def __init__(self, config: DeRyConfig):
        super().__init__(config)
        if not config.blocks:
            raise ValueError(
                "DeRyConfig has no blocks: build it with DeRyConfig.from_blocks([{'source': ..., 'start': ..., "
                "'end': ..., 'type': 'cnn' | 'vit'}, ...])."
            )
        plans = []
        for i, block in enumerate(config.blocks):
            source = _build_source(config.source_configs[block["source"]], block["source"])  # one copy per block
            plans.append(block_plan(block, source, i))
        self.stem_kind = _stem_kind(config, plans[0])
        self.stem, self.adapters = build_parts(config, plans)
        self.blocks = nn.ModuleList(DeRyBlock(plan.nodes) for plan in plans)
        for module in self.blocks.modules():
            module._dery_block_module = True
        self.out_width = plans[-1].out_width
        if config.block_fixed:
            self.blocks.requires_grad_(False)
        self.post_init()

    def forward(
        self, pixel_values: torch.Tensor | None = None, output_hidden_states: bool | None = None, **kwargs
    ) -> BaseModelOutputWithPooling:
        if pixel_values is None:
            raise ValueError("DeRyModel.forward needs pixel_values.")
        channels = self.config.num_channels
        if pixel_values.dim() != 4 or pixel_values.shape[1] != channels:
            raise ValueError(
                f"pixel_values must have shape (batch, {channels}, height, width) (config.num_channels), got "
                f"{tuple(pixel_values.shape)}."
            )
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        x = self.stem(pixel_values)
        if isinstance(x, tuple):
            x, shape = x
        else:
            shape = (x.shape[2], x.shape[3])
        states = []
        for i, block in enumerate(self.blocks):
            if i > 0:
                x, shape = self.adapters[i - 1](x, shape)
            x = block(x)
            if block.kind == "cnn":
                shape = (x.shape[2], x.shape[3])
            states.append(x)
        pooled = x.mean(dim=(2, 3)) if x.dim() == 4 else x.mean(dim=1)
        return BaseModelOutputWithPooling(
            last_hidden_state=x, pooler_output=pooled, hidden_states=tuple(states) if output_hidden_states else None
        )


class DeRyForImageClassification(DeRyPreTrainedModel):
    """A `DeRyModel` with a linear head on its pooled output; `loss` = mean cross-entropy given integer `labels`."""

    def __init__(self, config: DeRyConfig):
        super().__init__(config)
        self.dery = DeRyModel(config)
        self.classifier = nn.Linear(self.dery.out_width, config.num_labels)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput:
        outputs = self.dery(pixel_values, output_hidden_states=output_hidden_states)
        logits = self.classifier(outputs.pooler_output)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float(), labels.to(logits.device).view(-1))
        return ImageClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)
