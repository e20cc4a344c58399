"""Configs of a Learngene Pool (stage 2 of "Learngene Pool", SN-Net-style stitching of learngene instances) and
of one stitched network exported from it."""

from __future__ import annotations

from transformers import PreTrainedConfig, ViTConfig

from ...compat import set_attn_implementation
from ...engine.learngene import reject_unknown_fields

STITCH_DIRECTIONS = ("small_to_large", "adjacent_small_to_large", "all")
STITCH_INITS = ("projector", "least_squares", "random")

# Keys of a saved config that say where it came from or how it was last loaded, not what it is: dropped from stored
# instance configs so a pool saved twice has the same config.json, and the pool alone decides its dtype.
_NOT_ARCHITECTURE_KEYS = ("_name_or_path", "transformers_version", "dtype", "torch_dtype")


def as_vit_config_dict(config, field: str) -> dict:
    """A stock ViT config as a plain dict (accepts a dict or a `ViTConfig`), checked to be a ViT config."""
    if isinstance(config, PreTrainedConfig):
        config = config.to_dict()
    if not isinstance(config, dict):
        raise TypeError(f"{field} must be a ViT config dict (ViTConfig().to_dict()), got {type(config).__name__}.")
    model_type = config.get("model_type", "vit")
    if model_type != "vit":
        raise ValueError(
            f"{field} has model_type={model_type!r}; pool instances are stock ViTForImageClassification models, "
            "so give a ViT config (model_type 'vit')."
        )
    hidden, heads = config.get("hidden_size", 768), config.get("num_attention_heads", 12)
    if isinstance(hidden, int) and isinstance(heads, int) and heads > 0 and hidden % heads:
        raise ValueError(
            f"{field} has hidden_size={hidden} and num_attention_heads={heads}: hidden_size must be divisible by "
            "num_attention_heads (ViT would build a narrower attention silently), so pick a head count that divides it."
        )
    canonical = build_vit_config(config).to_dict()  # defaults filled in, id2label keys as ints
    return {k: v for k, v in canonical.items() if k not in _NOT_ARCHITECTURE_KEYS}


def build_vit_config(config: dict, attn_implementation: str | None = None) -> ViTConfig:
    values = {k: v for k, v in config.items() if k != "model_type"}
    vit = ViTConfig(**values)
    set_attn_implementation(vit, attn_implementation)
    return vit


def _same_input_and_labels(a: ViTConfig, b: ViTConfig, what_a: str, what_b: str, fix: str):
    for attr in ("image_size", "patch_size", "num_channels"):
        if getattr(a, attr) != getattr(b, attr):
            raise ValueError(
                f"{what_a} has {attr}={getattr(a, attr)!r} but {what_b} has {getattr(b, attr)!r}; stitched networks "
                f"share one input, so {fix}."
            )
    if a.num_labels != b.num_labels:
        raise ValueError(
            f"{what_a} has num_labels={a.num_labels} but {what_b} has {b.num_labels}; every network in the pool "
            f"predicts the same label space, so {fix}."
        )
    if a.id2label != b.id2label:
        raise ValueError(f"{what_a} and {what_b} have different id2label; {fix} (same label names in the same order).")


def _positive_int(value, field: str):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{field} must be a positive integer, got {value!r}.")


class LearngenePoolConfig(PreTrainedConfig):
    r"""A Learngene Pool: stock ViT instances of the same depth n, ordered small -> large, plus stitch layers that
    join block j of a front instance to block k of an end instance (SN-Net's paired stitching).

    Args:
        instance_configs: stock ViT configs (`ViTConfig.to_dict()` or `ViTConfig`) of the instances, small ->
            large, all with the same depth, image/patch size, channels and labels. Each instance keeps its own
            `num_attention_heads` exactly as given: unlike the official code, which silently re-splits every
            instance into 12 heads when it builds the pool, the pool runs the very network that was distilled.
        stitch_kernel_size, stitch_stride: SN-Net's sliding window over block ids (2 and 1 in both papers):
            3n - 2 stitch positions (j, k) sharing n - 1 stitch layers per instance pair.
        stitch_directions: which ordered instance pairs (front, end) get stitches. `"small_to_large"` (the paper)
            stitches every smaller front to every larger end; the released code only ever uses (0, last), which
            `train_config_ids` reproduces. `"adjacent_small_to_large"` only (i, i+1); `"all"` every ordered pair,
            large -> small too.
        include_singletons: whether each instance on its own is a config of the pool (ids 0 .. m-1, as upstream).
        stitch_init: how `LearngenePoolModel.from_instances` initialized the stitch layers (recorded for
            reproducibility; exported models copy it): `"projector"` (the paper: mean stage-1 feature projector of the
            front student, transposed), `"least_squares"` (SN-Net: fit on activations), `"random"` (default Linear
            init), or a dict {"f-e": method} per pair (pairs not listed: `"random"`). A pool built from a config alone
            has default-initialized stitches whatever this says.
        train_config_ids: the config ids training samples from (None: all). The released Learngene Pool code
            samples only the two end instances alone and their stitches, e.g. `[0, 2, 19..34]` for three
            6-block instances.
    """

    model_type = "hf_methods_learngene_pool"
    instance_configs: list | None = None
    stitch_kernel_size: int = 2
    stitch_stride: int = 1
    stitch_directions: str = "small_to_large"
    include_singletons: bool = True
    stitch_init: str | dict = "projector"
    train_config_ids: list | None = None

    def __post_init__(self, **kwargs):
        reject_unknown_fields(
            self,
            kwargs,
            "architecture settings go inside instance_configs",
            allowed={"attn_implementation", "experts_implementation"},
        )
        super().__post_init__(**kwargs)
        for name in ("instance_configs", "train_config_ids"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (list, tuple)):
                raise ValueError(
                    f"{name} must be a list (or None), got a {type(value).__name__} ({value!r}); give the items in "
                    "order as a list."
                )
        if self.instance_configs is not None:
            self.instance_configs = [
                as_vit_config_dict(c, f"instance_configs[{i}]") for i, c in enumerate(self.instance_configs)
            ]
        self.validate_pool()
        if self.instance_configs:  # the pool's label space is its instances'
            first = build_vit_config(self.instance_configs[0])
            self.id2label = dict(first.id2label)
            self.label2id = {v: k for k, v in first.id2label.items()}

    def validate_pool(self):
        _positive_int(self.stitch_kernel_size, "stitch_kernel_size")
        _positive_int(self.stitch_stride, "stitch_stride")
        if self.stitch_directions not in STITCH_DIRECTIONS:
            raise ValueError(
                f"stitch_directions={self.stitch_directions!r} is unknown; use one of {list(STITCH_DIRECTIONS)} "
                "('small_to_large' is the paper's)."
            )
        if not isinstance(self.include_singletons, bool):
            raise TypeError(f"include_singletons must be True or False, got {self.include_singletons!r}.")
        inits = self.stitch_init.values() if isinstance(self.stitch_init, dict) else [self.stitch_init]
        for init in inits:
            if init not in STITCH_INITS:
                raise ValueError(f"stitch_init={init!r} is unknown; use one of {list(STITCH_INITS)}.")
        if not self.instance_configs:
            return  # an empty config (transformers builds one to find the defaults); the model refuses it
        if len(self.instance_configs) < 2:
            raise ValueError(
                f"instance_configs has {len(self.instance_configs)} instance; a pool stitches instances, so give "
                "at least two (small -> large)."
            )
        configs = [build_vit_config(c) for c in self.instance_configs]
        first = configs[0]
        for i, cfg in enumerate(configs[1:], start=1):
            if cfg.num_hidden_layers != first.num_hidden_layers:
                raise ValueError(
                    f"instance_configs[{i}] has num_hidden_layers={cfg.num_hidden_layers} but instance_configs[0] "
                    f"has {first.num_hidden_layers}; stitching pairs block ids across instances, so give every "
                    "instance the same depth."
                )
            _same_input_and_labels(
                cfg, first, f"instance_configs[{i}]", "instance_configs[0]", "give every instance the same value"
            )
            if cfg.hidden_size < configs[i - 1].hidden_size:
                raise ValueError(
                    f"instance_configs[{i}] (hidden_size={cfg.hidden_size}) is narrower than instance_configs[{i - 1}] "
                    f"(hidden_size={configs[i - 1].hidden_size}); order the instances small -> large."
                )
        if isinstance(self.stitch_init, dict):
            m = len(configs)
            valid = {f"{f}-{e}" for f in range(m) for e in range(m) if f != e}
            bad = sorted(set(self.stitch_init) - valid)
            if bad:
                raise ValueError(
                    f"stitch_init names unknown pair(s) {bad}; keys look like 'front-end', e.g. '0-{m - 1}'."
                )

    @property
    def num_instance_layers(self) -> int:
        return build_vit_config(self.instance_configs[0]).num_hidden_layers


class StitchedViTConfig(PreTrainedConfig):
    r"""One network of a Learngene Pool, frozen: the front instance's embeddings and blocks 0..j, a stitch layer,
    the end instance's blocks k..n-1, final norm and classifier.

    Args:
        front_config, end_config: stock ViT configs (dicts) of the front and end instances.
        front_layers: j + 1, the number of front blocks kept.
        end_start: k, the first end block kept (the end instance contributes n - k blocks).
        instance_num_layers: n, the depth of the instances it came from.
        stitch_config: where it came from (pool, config id, front, end, j, k, slot).
    """

    model_type = "hf_methods_stitched_vit"
    front_config: dict | None = None
    end_config: dict | None = None
    front_layers: int = 1
    end_start: int = 1
    instance_num_layers: int = 1
    stitch_config: dict | None = None

    def __post_init__(self, **kwargs):
        reject_unknown_fields(
            self,
            kwargs,
            "architecture settings go inside front_config and end_config",
            allowed={"attn_implementation", "experts_implementation"},
        )
        super().__post_init__(**kwargs)
        if self.front_config is not None:
            self.front_config = as_vit_config_dict(self.front_config, "front_config")
        if self.end_config is not None:
            self.end_config = as_vit_config_dict(self.end_config, "end_config")
        for field in ("front_layers", "instance_num_layers"):
            _positive_int(getattr(self, field), field)
        n = self.instance_num_layers
        if self.front_layers > n:
            raise ValueError(f"front_layers={self.front_layers} exceeds instance_num_layers={n}; use 1..{n}.")
        if isinstance(self.end_start, bool) or not isinstance(self.end_start, int) or not 0 <= self.end_start <= n:
            raise ValueError(f"end_start must be an integer in 0..{n} (instance_num_layers), got {self.end_start!r}.")
        if (self.front_config is None) != (self.end_config is None):
            raise ValueError("give both front_config and end_config, or neither.")
        if self.front_config is None:
            return
        front, end = build_vit_config(self.front_config), build_vit_config(self.end_config)
        for name, cfg in (("front_config", front), ("end_config", end)):
            if cfg.num_hidden_layers != n:
                raise ValueError(
                    f"{name} has num_hidden_layers={cfg.num_hidden_layers} but instance_num_layers={n}; they must "
                    "agree."
                )
        _same_input_and_labels(front, end, "front_config", "end_config", "make them agree")
        self.id2label = dict(end.id2label)
        self.label2id = {v: k for k, v in end.id2label.items()}

    @property
    def num_hidden_layers(self) -> int:
        """Depth of the stitched network: (j + 1) + (n - k)."""
        return self.front_layers + self.instance_num_layers - self.end_start
