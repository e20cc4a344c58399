"""Config of a reassembled network (DeRy): which blocks of which source models, in which order, and the config of
every source, so that a saved reassembled model is rebuilt (and loaded) without its sources."""

from __future__ import annotations

import copy

from transformers import PreTrainedConfig

from ...engine.learngene import reject_unknown_fields
from ..convnets.configuration_convnets import _is_int

BLOCK_KEYS = ("source", "start", "end", "type")
BLOCK_TYPES = ("cnn", "vit")
STEMS = ("auto", "none", "conv", "imagenet", "patch")


class DeRyConfig(PreTrainedConfig):
    r"""A DeRy network: stem -> block 1 -> adapter -> block 2 -> ... -> block K -> global average pool -> linear head.

    Args:
        blocks: one dict per block, in forward order: `{"source": <Hub id or local folder of the source model>,
            "start": <first node>, "end": <last node>, "type": "cnn" | "vit"}`. Nodes are the source's block-boundary
            modules named relative to its base model (`hf_methods.models.dery.block_nodes(model)`: `layers.3` of a
            ViT, `stages.1.0` of the project's VGG / ResNet-12); a block is every node from `start` to `end`.
        source_configs: {source: that source's `config.to_dict()`}, so the blocks are rebuilt without the sources
            (`DeRyConfig.from_blocks` fills it in).
        num_channels: channels of the input images.
        image_size: side of the input images (needed by a patch stem's position embeddings).
        stem: "auto" ("none" when the first block is a CNN block that reads the image itself, i.e. starts at its
            source's first node; else a "conv" stem before a CNN block, a "patch" stem before a ViT block), "none"
            (the first block reads the pixels), "conv" (3x3 conv, stride 1, BN, ReLU, to the first block's input
            channels: what small images such as 8x8 or 16x16 digits need),
            "imagenet" (the official stem: 7x7 conv stride 2, BN, ReLU, 3x3 max-pool stride 2; it divides the
            resolution by 4, for 224x224 inputs), or "patch" (a ViT patch embedding of `stem_patch_size` with
            learned position embeddings, no class token, to the first block's hidden size).
        stem_patch_size: patch side of a patch stem (must divide `image_size`).
        adapter_strides: stride (= kernel size) of the convolution of each of the K-1 adapters that has one
            (cnn2cnn, cnn2vit, vit2cnn); None is stride 1 everywhere. The official search draws 2 with probability
            0.1 per adapter; here it is a deterministic, stored choice.
        adapter_slope: negative slope of the adapters' LeakyReLU (0.1 as official).
        block_fixed: freeze the blocks (only stem, adapters and head train), the official `block_fixed=True`.
        reassembly: a record of how the blocks were chosen (partition groups, search score, budget), for the card;
            not used to build the model.
        num_labels / id2label: the classes of the head.
    """

    model_type = "hf_methods_dery"
    blocks: list[dict] | None = None
    source_configs: dict | None = None
    num_channels: int = 3
    image_size: int = 224
    stem: str = "auto"
    stem_patch_size: int = 4
    adapter_strides: list[int] | None = None
    adapter_slope: float = 0.1
    block_fixed: bool = False
    reassembly: dict | None = None

    def __post_init__(self, **kwargs):
        reject_unknown_fields(self, kwargs)
        super().__post_init__(**{k: v for k, v in kwargs.items() if k != "model_type"})
        self.check_dery()

    def check_dery(self):
        """A ValueError naming the first bad field and the fix. A config without blocks is allowed (transformers
        builds default configs); a model refuses it."""
        for name in ("num_channels", "image_size", "stem_patch_size"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        if self.stem not in STEMS:
            raise ValueError(f"`stem` must be one of {STEMS}, got {self.stem!r}.")
        if not isinstance(self.block_fixed, bool):
            raise ValueError(f"`block_fixed` must be True or False, got {self.block_fixed!r}.")
        if not isinstance(self.adapter_slope, (int, float)) or isinstance(self.adapter_slope, bool):
            raise ValueError(f"`adapter_slope` must be a number, got {self.adapter_slope!r}.")
        if self.blocks is None:
            return
        if not isinstance(self.blocks, (list, tuple)) or not self.blocks:
            raise ValueError(f"`blocks` must be a non-empty list of block dicts {BLOCK_KEYS}, got {self.blocks!r}.")
        self.blocks = [dict(block) if isinstance(block, dict) else block for block in self.blocks]
        for i, block in enumerate(self.blocks):
            if not isinstance(block, dict):
                raise ValueError(f"`blocks[{i}]` must be a dict with keys {BLOCK_KEYS}, got {block!r}.")
            missing = [k for k in BLOCK_KEYS if k not in block]
            extra = sorted(set(block) - set(BLOCK_KEYS))
            if missing or extra:
                raise ValueError(
                    f"`blocks[{i}]` must have exactly the keys {BLOCK_KEYS}; missing {missing}, unknown {extra}."
                )
            for key in ("source", "start", "end"):
                if not isinstance(block[key], str) or not block[key]:
                    raise ValueError(f"`blocks[{i}]['{key}']` must be a non-empty string, got {block[key]!r}.")
            if block["type"] not in BLOCK_TYPES:
                raise ValueError(f"`blocks[{i}]['type']` must be one of {BLOCK_TYPES}, got {block['type']!r}.")
        sources = {block["source"] for block in self.blocks}
        configs = self.source_configs or {}
        if not isinstance(configs, dict):
            raise ValueError(f"`source_configs` must be a dict {{source: config dict}}, got {type(configs).__name__}.")
        missing = sorted(sources - set(configs))
        if missing:
            raise ValueError(
                f"`source_configs` has no config for source(s) {missing}: build the config with "
                "DeRyConfig.from_blocks(blocks), which reads every source's config."
            )
        for source in sources:
            if not isinstance(configs[source], dict) or "model_type" not in configs[source]:
                raise ValueError(f"`source_configs[{source!r}]` must be a config dict with a model_type.")
        if self.adapter_strides is not None:
            strides = list(self.adapter_strides)
            if len(strides) != len(self.blocks) - 1 or any(not _is_int(s) or s < 1 for s in strides):
                raise ValueError(
                    f"`adapter_strides` must hold {len(self.blocks) - 1} positive integers (one per adapter between "
                    f"the {len(self.blocks)} blocks), got {self.adapter_strides!r}; or leave it empty (stride 1)."
                )
            self.adapter_strides = strides

    @property
    def strides(self) -> list[int]:
        return list(self.adapter_strides) if self.adapter_strides is not None else [1] * (len(self.blocks or ()) - 1)

    @classmethod
    def from_blocks(
        cls, blocks: list[dict], *, trust_remote_code: bool = False, source_models: dict | None = None, **kwargs
    ) -> DeRyConfig:
        """The config of `blocks`, with every source's config read from it (`AutoConfig.from_pretrained(source,
        trust_remote_code=...)`, or `source_models[source].config` for models already loaded). `kwargs`: the other
        fields (num_channels, image_size, stem, num_labels, id2label, ...)."""
        from transformers import AutoConfig

        source_models = source_models or {}
        configs = {}
        for block in blocks:
            source = block.get("source") if isinstance(block, dict) else None
            if not isinstance(source, str) or source in configs:
                continue  # a malformed block is reported by the config's own checks
            if source in source_models:
                configs[source] = source_models[source].config.to_dict()
            else:
                configs[source] = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code).to_dict()
        return cls(blocks=[dict(b) if isinstance(b, dict) else b for b in blocks], source_configs=configs, **kwargs)

    def with_sources_renamed(self, names: dict[str, str]) -> DeRyConfig:
        """A copy whose sources are renamed (`names`: old -> new), e.g. local folders -> the Hub repos they were
        pushed to; the blocks and weights are unchanged."""
        new = copy.deepcopy(self)
        new.blocks = [{**b, "source": names.get(b["source"], b["source"])} for b in new.blocks]
        new.source_configs = {names.get(k, k): v for k, v in new.source_configs.items()}
        return new
