"""Learngene Pool, stage 2 (Shi et al., "Building Variable-sized Models via Learngene Pool", AAAI 2024): stock ViT
instances distilled from one teacher, joined by stitch layers as in SN-Net (Pan et al., CVPR 2023), so that one
pool holds many networks of different size and cost.

A config (front f, end e, j, k) runs the front instance's embeddings and blocks 0..j, a token-wise stitch layer
(width d_f -> d_e), the end instance's blocks k..n-1, its final norm and its classifier on the CLS token. Training
samples one config per step (SN-Net style), so only that path gets gradients: under DDP set
`ddp_find_unused_parameters=True`. `export(id)` freezes one config into a standalone model.

Deviations from the official (MindSpore) code, on purpose: instances keep their own head counts (upstream
re-splits every instance into 12 heads), labels are not shifted by one, and instances are stock transformers
`ViTForImageClassification` models (CLS token, their own LayerNorm eps).
"""

from __future__ import annotations

import logging
import os
from typing import ClassVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel, ViTForImageClassification
from transformers import initialization as init
from transformers.modeling_outputs import ImageClassifierOutput

from ...compat import (
    attn_implementation,
    build_from_config,
    optional_repo_file,
    set_attn_implementation,
    vit_building_blocks,
)
from ...engine.counting import count_flops, count_parameters
from ...modeling import HfMethodsModel, with_card_push
from .configuration_learngene_pool import (
    LearngenePoolConfig,
    StitchedViTConfig,
    build_vit_config,
)

ViTEmbeddings, ViTLayer = vit_building_blocks()

logger = logging.getLogger(__name__)

PROJECTOR_FILE = "feature_projectors.safetensors"


# --- stitch enumeration (SN-Net's paired stitching) ------------------------------------------------------------------
def _stitch_windows(n: int, kernel: int = 2, stride: int = 1):
    """(pairs, slot of each pair, first block id of each slot's window). A window that brings no new pair takes
    no slot; windows near the end are cut at block n-1."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n (the instances' depth) must be a positive integer, got {n!r}.")
    for name, value in (("kernel", kernel), ("stride", stride)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    pairs, slots, anchors, seen = [], [], [], set()
    for start in range(0, n, stride):
        window = range(start, min(start + kernel, n))
        new = [(j, k) for j in window for k in window if (j, k) not in seen]
        if not new:
            continue
        seen.update(new)
        pairs.extend(new)
        slots.extend([len(anchors)] * len(new))
        anchors.append(start)
    return pairs, slots, anchors


def paired_stitching(n: int, kernel: int = 2, stride: int = 1) -> tuple[list[tuple[int, int]], list[int]]:
    """SN-Net's stitch positions for instances of depth `n`: every ordered pair (j, k) of block ids inside a sliding
    window of `kernel` consecutive ids (moved by `stride`), first occurrence only, and the slot (stitch layer) of
    each pair = the index of the window that introduced it. Kernel 2, stride 1: 3n - 2 pairs sharing n - 1 slots.

    (j, k) means: keep front blocks 0..j, stitch, then end blocks k..n-1 (depth (j + 1) + (n - k)).
    """
    pairs, slots, _ = _stitch_windows(n, kernel, stride)
    return pairs, slots


def stitch_pairs(num_instances: int, directions: str = "small_to_large") -> list[tuple[int, int]]:
    """Ordered instance pairs (front, end) that get stitch layers, instances indexed small -> large."""
    m = range(num_instances)
    if directions == "small_to_large":
        return [(f, e) for f in m for e in m if f < e]
    if directions == "adjacent_small_to_large":
        return [(f, f + 1) for f in range(num_instances - 1)]
    if directions == "all":
        return [(f, e) for f in m for e in m if f != e]
    raise ValueError(
        f"stitch_directions={directions!r} is unknown; use 'small_to_large', 'adjacent_small_to_large' or 'all'."
    )


def enumerate_stitch_configs(
    num_instances: int,
    n: int,
    kernel: int = 2,
    stride: int = 1,
    directions: str = "small_to_large",
    include_singletons: bool = True,
) -> list[dict]:
    """Every network of a pool, in upstream order: the instances alone (if included), then for each instance pair
    every stitch position. Singletons have j = k = slot = None and depth n."""
    configs = []
    if include_singletons:
        configs += [
            {"front": i, "end": i, "j": None, "k": None, "slot": None, "depth": n} for i in range(num_instances)
        ]
    positions, slots, _ = _stitch_windows(n, kernel, stride)
    for f, e in stitch_pairs(num_instances, directions):
        configs += [
            {"front": f, "end": e, "j": j, "k": k, "slot": s, "depth": (j + 1) + (n - k)}
            for (j, k), s in zip(positions, slots)
        ]
    return [{"id": i, **c} for i, c in enumerate(configs)]


# --- stitch layers and their initialization -------------------------------------------------------------------------
class StitchLayer(nn.Module):
    """Token-wise map from the front width to the end width: `nn.Linear(d_front, d_end)` with bias, or the
    identity when the widths match (as upstream: equal widths need no stitch parameters)."""

    def __init__(self, d_front: int, d_end: int):
        super().__init__()
        self.d_front, self.d_end = d_front, d_end
        self.linear = nn.Linear(d_front, d_end) if d_front != d_end else nn.Identity()

    @property
    def is_identity(self) -> bool:
        return isinstance(self.linear, nn.Identity)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden_states)

    def extra_repr(self) -> str:
        return f"{self.d_front} -> {self.d_end}"


def least_squares_stitch(x_front: torch.Tensor, x_end: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SN-Net's stitch init: the affine map that best sends front activations to end activations,
    [x_f, 1] @ [W^T; b] = x_e in the least-squares sense (solved in float64; min-norm when underdetermined).

    Takes (..., d_front) and (..., d_end) with the same leading shape (tokens are flattened); returns
    (weight (d_end, d_front), bias (d_end,)) in x_front's dtype and device, ready for `nn.Linear`.
    """
    if x_front.shape[:-1] != x_end.shape[:-1]:
        raise ValueError(
            f"least_squares_stitch needs paired activations: x_front {tuple(x_front.shape)} and x_end "
            f"{tuple(x_end.shape)} must agree in every dimension but the last."
        )
    d_front = x_front.shape[-1]
    xf = x_front.reshape(-1, d_front).to("cpu", torch.float64)
    xe = x_end.reshape(-1, x_end.shape[-1]).to("cpu", torch.float64)
    if xf.shape[0] < d_front + 1:
        logger.warning(
            "least-squares stitch from %d tokens for %d unknowns per output: underdetermined, the "
            "minimum-norm solution is used; give more calibration images.",
            xf.shape[0],
            d_front + 1,
        )
    design = torch.cat([xf, torch.ones(xf.shape[0], 1, dtype=torch.float64)], dim=1)
    solution = torch.linalg.lstsq(design, xe).solution  # (d_front + 1, d_end)
    weight, bias = solution[:d_front].T.contiguous(), solution[d_front].contiguous()
    return weight.to(x_front.device, x_front.dtype), bias.to(x_front.device, x_front.dtype)


def projector_stitch_weight(path: str | os.PathLike) -> torch.Tensor:
    """The paper's stitch init from a stage-1 `feature_projectors.safetensors`: the student's `hidden.{k}.weight`
    (teacher width -> student width, shape (d_student, d_teacher)) averaged over matched points, transposed into a
    (d_teacher, d_student) `nn.Linear(d_student -> d_teacher)` weight."""
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise OSError(
            f"cannot read the feature projectors {str(path)!r} ({err}); save them again with stage 1."
        ) from err
    hidden = sorted(
        (k for k in tensors if k.startswith("hidden.") and k.endswith(".weight")),
        key=lambda k: int(k.split(".")[1]) if k.split(".")[1].isdigit() else k,
    )
    if not hidden:
        raise ValueError(
            f"{str(path)!r} has no 'hidden.{{k}}.weight' projectors (keys: {sorted(tensors)[:6]}); it is not a "
            "stage-1 feature_projectors.safetensors."
        )
    shapes = {tuple(tensors[k].shape) for k in hidden}
    if len(shapes) != 1:
        raise ValueError(f"the hidden projectors in {str(path)!r} have different shapes {sorted(shapes)}.")
    return torch.stack([tensors[k].float() for k in hidden]).mean(dim=0).T.contiguous()


def _find_projector_file(folder) -> str | None:
    """`feature_projectors.safetensors` in a local folder or a Hub repo (a student pushed with its projectors)."""
    local = os.path.join(str(folder), PROJECTOR_FILE)
    if os.path.isdir(str(folder)):
        return local if os.path.isfile(local) else None
    return optional_repo_file(str(folder), PROJECTOR_FILE)


# --- the shared forward -----------------------------------------------------------------------------------------------
def _stitched_logits(
    embeddings,
    front_layers,
    stitch,
    end_layers,
    layernorm,
    classifier,
    pixel_values,
    interpolate_pos_encoding=None,
    **kwargs,
):
    """What stock `ViTForImageClassification` computes, with the layer stack replaced by front -> stitch -> end:
    the final LayerNorm runs on every token, then the classifier reads the CLS token."""
    expected = embeddings.patch_embeddings.projection.weight.dtype
    if pixel_values.dtype != expected:
        pixel_values = pixel_values.to(expected)
    hidden = embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
    for layer in front_layers:
        hidden = layer(hidden, None, **kwargs)
    if stitch is not None:
        hidden = stitch(hidden)
    for layer in end_layers:
        hidden = layer(hidden, None, **kwargs)
    sequence = layernorm(hidden)
    return classifier(sequence[:, 0, :])


def _classification_loss(logits, labels):
    if labels is None:
        return None
    return F.cross_entropy(logits.view(-1, logits.shape[-1]).float(), labels.to(logits.device).view(-1))


def _stitched_card(model, repo_id):
    from ...cards import stitched_card

    return stitched_card(model, repo_id)


# --- the pool -------------------------------------------------------------------------------------------------------
class LearngenePoolModel(HfMethodsModel, PreTrainedModel):
    """A Learngene Pool: `instances` (stock `ViTForImageClassification`, small -> large) and `stitch_layers`
    ("f-e" -> one `StitchLayer` per slot). `stitch_configs` lists every network it holds.

    `forward(pixel_values, labels=None, stitch_config_id=None)` runs one config. In training mode with no id it
    samples one uniformly from `config.train_config_ids` (default: all) with the torch RNG, so
    `transformers.set_seed` makes the sequence reproducible and seeded DDP ranks draw the same configs; the id used
    is in `last_stitch_config_id`. In eval mode an id is required: every config is a different network (use
    `evaluate_configs` to score them all). Only the sampled path gets gradients: with DDP, set
    `ddp_find_unused_parameters=True`.
    """

    config_class = LearngenePoolConfig
    method_name = "Learngene Pool"
    base_model_prefix = "pool"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True
    _no_split_modules: ClassVar[list[str]] = ["ViTEmbeddings", "ViTLayer", "StitchLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    accepts_loss_kwargs = False  # the loss is a plain mean cross-entropy; Trainer passes no num_items_in_batch

    def model_card(self, repo_or_path, results: dict | None = None):
        from ...cards import pool_card

        return pool_card(self, repo_or_path, results)

    def __init__(self, config: LearngenePoolConfig):
        super().__init__(config)
        if not config.instance_configs:
            raise ValueError(
                "LearngenePoolConfig.instance_configs is empty; give the instances' ViT configs "
                "(small -> large), or build the pool with LearngenePoolModel.from_instances(models)."
            )
        impl = attn_implementation(config)
        vit_configs = [build_vit_config(c) for c in config.instance_configs]
        self.instances = nn.ModuleList(
            build_from_config(ViTForImageClassification, c, attn_implementation=impl) for c in vit_configs
        )
        self.num_instance_layers = n = vit_configs[0].num_hidden_layers
        self.widths = [c.hidden_size for c in vit_configs]
        _, _, self.slot_anchors = _stitch_windows(n, config.stitch_kernel_size, config.stitch_stride)
        self.stitch_pairs = stitch_pairs(len(vit_configs), config.stitch_directions)
        self.stitch_layers = nn.ModuleDict(
            {
                f"{f}-{e}": nn.ModuleList(StitchLayer(self.widths[f], self.widths[e]) for _ in self.slot_anchors)
                for f, e in self.stitch_pairs
            }
        )
        self.stitch_configs = enumerate_stitch_configs(
            len(vit_configs),
            n,
            config.stitch_kernel_size,
            config.stitch_stride,
            config.stitch_directions,
            config.include_singletons,
        )
        if not self.stitch_configs:
            raise ValueError(
                "this pool holds no network: include_singletons=False and no stitched pairs; set "
                "include_singletons=True or use more instances."
            )
        ids = config.train_config_ids
        if ids is not None:
            bad = [
                i for i in ids if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(self.stitch_configs)
            ]
            if bad or not ids:
                raise ValueError(
                    f"train_config_ids={ids!r} must be a non-empty list of config ids in "
                    f"0..{len(self.stitch_configs) - 1}; bad: {bad}."
                )
        self.last_stitch_config_id = None
        self.post_init()

    def _init_weights(self, module):
        """Nothing to do: instances initialize themselves (stock ViT init) and stitch layers keep the default
        `nn.Linear` init until `from_instances` / `initialize_stitches` sets them."""

    # --- configs ------------------------------------------------------------------------------------------------------
    def stitch_config(self, config_id: int) -> dict:
        if isinstance(config_id, torch.Tensor) and config_id.numel() == 1:
            config_id = int(config_id.item())
        if (
            isinstance(config_id, bool)
            or not isinstance(config_id, int)
            or not 0 <= config_id < len(self.stitch_configs)
        ):
            raise ValueError(
                f"stitch_config_id={config_id!r} is not a config of this pool; use an integer in "
                f"0..{len(self.stitch_configs) - 1} (see model.stitch_configs)."
            )
        return self.stitch_configs[config_id]

    def _path(self, config_id: int):
        """(front instance, front blocks, stitch layer or None, end instance, end blocks) of a config."""
        c = self.stitch_config(config_id)
        front, end = self.instances[c["front"]], self.instances[c["end"]]
        if c["j"] is None:  # a singleton: the instance alone
            return front, list(front.vit.layers), None, end, []
        stitch = self.stitch_layers[f"{c['front']}-{c['end']}"][c["slot"]]
        return front, list(front.vit.layers[: c["j"] + 1]), stitch, end, list(end.vit.layers[c["k"] :])

    def _used_modules(self, config_id: int) -> list[nn.Module]:
        front, front_layers, stitch, end, end_layers = self._path(config_id)
        used = [front.vit.embeddings, *front_layers, *end_layers, end.vit.layernorm, end.classifier]
        return used + ([stitch] if stitch is not None else [])

    def sample_config_id(self) -> int:
        ids = self.config.train_config_ids or range(len(self.stitch_configs))
        return int(ids[int(torch.randint(len(ids), (1,)).item())])

    # --- forward ------------------------------------------------------------------------------------------------------
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        stitch_config_id: int | None = None,
        interpolate_pos_encoding: bool | None = None,
        **kwargs,
    ):
        if pixel_values is None:
            raise ValueError("LearngenePoolModel.forward needs pixel_values.")
        if stitch_config_id is None:
            if not self.training:
                raise ValueError(
                    "in eval mode LearngenePoolModel.forward needs stitch_config_id: each id is a different network "
                    f"(0..{len(self.stitch_configs) - 1}, see model.stitch_configs); use model.evaluate_configs(...) "
                    "to score them all, or model.export(id) for one."
                )
            stitch_config_id = self.sample_config_id()
        stitch_config_id = self.stitch_config(stitch_config_id)["id"]
        self.last_stitch_config_id = stitch_config_id
        front, front_layers, stitch, end, end_layers = self._path(stitch_config_id)
        logits = _stitched_logits(
            front.vit.embeddings,
            front_layers,
            stitch,
            end_layers,
            end.vit.layernorm,
            end.classifier,
            pixel_values,
            interpolate_pos_encoding,
            **kwargs,
        )
        return ImageClassifierOutput(loss=_classification_loss(logits, labels), logits=logits)

    # --- building from trained instances ------------------------------------------------------------------------------
    @classmethod
    def from_instances(
        cls,
        instances: list[PreTrainedModel],
        stitch_init: str | dict = "projector",
        calibration_inputs: torch.Tensor | None = None,
        projector_folders=None,
        **config_kwargs,
    ):
        """A pool from trained `ViTForImageClassification` instances (small -> large; weights are copied).

        `stitch_init`: `"projector"` (the paper; the default) needs each front instance's stage-1
        `feature_projectors.safetensors`, looked up beside the instance's weights (its `name_or_path`: a folder or
        a Hub repo) or in `projector_folders` (a list per instance, or {index: folder or repo id});
        `"least_squares"` (SN-Net) fits each stitch on `calibration_inputs` (a pixel_values batch); `"random"` keeps
        the default init; or a dict {"f-e": method} per pair, unlisted pairs `"random"` (upstream initializes only
        tiny -> base).
        """
        if not isinstance(instances, (list, tuple)) or len(instances) < 2:
            raise ValueError("from_instances needs a list of at least two trained models, small -> large.")
        for i, model in enumerate(instances):
            if not isinstance(model, ViTForImageClassification):
                raise TypeError(
                    f"instances[{i}] is a {type(model).__name__}; pool instances are stock "
                    "ViTForImageClassification models."
                )
        config = LearngenePoolConfig(
            instance_configs=[m.config for m in instances], stitch_init=stitch_init, **config_kwargs
        )
        impls = {attn_implementation(m.config) for m in instances}
        if len(impls) == 1 and None not in impls:  # run the instances as they were run before pooling
            set_attn_implementation(config, impls.pop())
        pool = cls(config)
        reference = next(instances[0].parameters())
        pool.to(device=reference.device, dtype=reference.dtype)
        for target, source in zip(pool.instances, instances):
            target.load_state_dict(source.state_dict())
        if projector_folders is None:
            projector_folders = [getattr(m, "name_or_path", None) or None for m in instances]
        pool.initialize_stitches(
            stitch_init, calibration_inputs=calibration_inputs, projector_folders=projector_folders
        )
        return pool

    def _stitch_methods(self, stitch_init) -> dict[str, str]:
        if isinstance(stitch_init, str):
            return {key: stitch_init for key in self.stitch_layers}
        if not isinstance(stitch_init, dict):
            raise TypeError(f"stitch_init must be a method name or a {{'f-e': method}} dict, got {stitch_init!r}.")
        unknown = sorted(set(stitch_init) - set(self.stitch_layers))
        if unknown:
            raise ValueError(
                f"stitch_init names pair(s) {unknown} that have no stitches in this pool; its pairs are "
                f"{sorted(self.stitch_layers)} (stitch_directions={self.config.stitch_directions!r})."
            )
        return {key: stitch_init.get(key, "random") for key in self.stitch_layers}

    @torch.no_grad()
    def initialize_stitches(
        self,
        stitch_init: str | dict = "projector",
        calibration_inputs: torch.Tensor | None = None,
        projector_folders=None,
        batch_size: int = 64,
    ):
        """(Re)initialize the stitch layers; see `from_instances` for the methods. Identity stitches (equal widths)
        have nothing to set. Records the method in `config.stitch_init`."""
        methods = self._stitch_methods(stitch_init)
        for method in methods.values():
            if method not in ("projector", "least_squares", "random"):
                raise ValueError(f"stitch_init={method!r} is unknown; use 'projector', 'least_squares' or 'random'.")
        linear = {key: m for key, m in methods.items() if not self.stitch_layers[key][0].is_identity}
        if any(m == "least_squares" for m in linear.values()) and calibration_inputs is None:
            raise ValueError(
                "stitch_init='least_squares' fits each stitch on activations: pass calibration_inputs, "
                "a pixel_values batch (a few hundred training images is typical)."
            )
        needed = sorted({int(i) for key, m in linear.items() if m == "least_squares" for i in key.split("-")})
        outputs = {i: self.block_outputs(i, calibration_inputs, batch_size) for i in needed}
        for key, method in linear.items():
            f, e = (int(i) for i in key.split("-"))
            slots = self.stitch_layers[key]
            if method == "least_squares":
                for slot, anchor in zip(slots, self.slot_anchors):
                    weight, bias = least_squares_stitch(outputs[f][anchor], outputs[e][anchor])
                    slot.linear.weight.copy_(weight)
                    slot.linear.bias.copy_(bias)
            elif method == "random":  # a fresh default (torch) init, also when re-initializing a trained pool
                for slot in slots:
                    slot.linear.reset_parameters()
            elif method == "projector":
                weight = projector_stitch_weight(self._projector_file(f, projector_folders))
                d_teacher, d_student = weight.shape
                if d_student != self.widths[f]:
                    raise ValueError(
                        f"the feature projectors of instance {f} map the teacher to width {d_student}, but instance "
                        f"{f} has width {self.widths[f]}: they belong to another student; give the right folder."
                    )
                if d_teacher != self.widths[e]:
                    raise ValueError(
                        f"stitch_init='projector' for pair {key}: the projectors of instance {f} map to the teacher "
                        f"width {d_teacher}, but end instance {e} has width {self.widths[e]}; the paper's init only "
                        f"fits an end of the teacher's width. Use least_squares for this pair, e.g. "
                        f"stitch_init={{'{key}': 'least_squares', ...}} with calibration_inputs, or 'random'."
                    )
                for slot in slots:  # the same map at every slot; the bias gets the default init (as upstream)
                    slot.linear.reset_parameters()
                    slot.linear.weight.copy_(weight)
        self.config.stitch_init = stitch_init if isinstance(stitch_init, str) else dict(methods)

    def _projector_file(self, index: int, projector_folders) -> str:
        folder = None
        if isinstance(projector_folders, dict):
            folder = projector_folders.get(index)
        elif isinstance(projector_folders, (list, tuple)):
            if len(projector_folders) != len(self.instances):
                raise ValueError(
                    f"projector_folders has {len(projector_folders)} entries for "
                    f"{len(self.instances)} instances; give one folder (or None) per instance."
                )
            folder = projector_folders[index]
        elif projector_folders is not None:
            raise ValueError("projector_folders must be a list (one folder or None per instance) or {index: folder}.")
        path = _find_projector_file(folder) if folder else None
        if path is None:
            where = f"no {PROJECTOR_FILE} in {str(folder)!r}" if folder else "no folder known for it"
            raise FileNotFoundError(
                f"stitch_init='projector' needs the stage-1 feature projectors of instance {index} ({where}): pass "
                f"projector_folders with the folder that holds its {PROJECTOR_FILE}, or use "
                "stitch_init='least_squares' with calibration_inputs (SN-Net), or 'random'."
            )
        return path

    @torch.no_grad()
    def block_outputs(self, index: int, pixel_values: torch.Tensor, batch_size: int = 64) -> list[torch.Tensor]:
        """Hidden states of instance `index` after each block, tokens flattened: a list of n (tokens, width)."""
        instance = self.instances[index]
        was_training = instance.training
        instance.eval()
        device = next(instance.parameters()).device
        per_block = [[] for _ in range(self.num_instance_layers)]
        try:
            for start in range(0, pixel_values.shape[0], batch_size):
                batch = pixel_values[start : start + batch_size].to(device, instance.dtype)
                hidden = instance.vit.embeddings(batch)
                for i, layer in enumerate(instance.vit.layers):
                    hidden = layer(hidden, None)
                    per_block[i].append(hidden.reshape(-1, hidden.shape[-1]))
        finally:
            instance.train(was_training)
        return [torch.cat(chunks) for chunks in per_block]

    # --- size, cost, accuracy -----------------------------------------------------------------------------------------
    def config_num_parameters(self, config_id: int) -> int:
        """Parameters the config actually runs (each counted once): front embeddings and blocks, stitch, end
        blocks, final norm and classifier."""
        return count_parameters(nn.ModuleList(self._used_modules(config_id)))

    def config_flops(self, config_id: int, example_inputs) -> int:
        """Forward FLOPs per sample of one config (`hf_methods.engine.counting.count_flops`)."""
        inputs = {"pixel_values": example_inputs} if torch.is_tensor(example_inputs) else dict(example_inputs)
        inputs.pop("labels", None)
        return count_flops(self, inputs, stitch_config_id=self.stitch_config(config_id)["id"])

    @torch.no_grad()
    def evaluate_configs(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int = 64,
        config_ids: list[int] | None = None,
    ) -> list[dict]:
        """Top-1 accuracy, parameters and FLOPs per sample of each config (all by default), for Pareto plots."""
        if pixel_values.shape[0] != labels.shape[0] or pixel_values.shape[0] == 0:
            raise ValueError(
                f"evaluate_configs needs as many labels as images, got {pixel_values.shape[0]} images "
                f"and {labels.shape[0]} labels."
            )
        device = next(self.parameters()).device
        was_training = self.training
        self.eval()
        rows = []
        try:
            for cid in config_ids if config_ids is not None else range(len(self.stitch_configs)):
                c = self.stitch_config(cid)
                correct = 0
                for start in range(0, pixel_values.shape[0], batch_size):
                    batch = pixel_values[start : start + batch_size].to(device)
                    logits = self(pixel_values=batch, stitch_config_id=cid).logits
                    correct += (logits.argmax(-1).cpu() == labels[start : start + batch_size].cpu()).sum().item()
                rows.append(
                    {key: c[key] for key in ("id", "front", "end", "j", "k", "depth")}
                    | {
                        "params": self.config_num_parameters(cid),
                        "flops": self.config_flops(cid, pixel_values[:1].to(device)),
                        "accuracy": correct / pixel_values.shape[0],
                    }
                )
        finally:
            self.train(was_training)
        return rows

    # --- export -------------------------------------------------------------------------------------------------------
    def _provenance(self, config_id: int) -> dict:
        c = self.stitch_config(config_id)
        init_method = None
        if c["j"] is not None and isinstance(self.config.stitch_init, dict):
            init_method = self.config.stitch_init.get(f"{c['front']}-{c['end']}", "random")
        elif c["j"] is not None:
            init_method = self.config.stitch_init
        return {
            "pool": self.name_or_path or None,
            "num_instances": len(self.instances),
            **c,
            "stitch_init": init_method,
        }

    @torch.no_grad()
    def export(self, config_id: int) -> PreTrainedModel:
        """One config as a standalone model holding only the modules it uses (weights copied; the pool is not
        changed). A stitched config gives a `StitchedViTForImageClassification`; a singleton is just its instance,
        so it gives a stock `ViTForImageClassification` that loads without hf-methods. Either records its origin
        in `config.stitch_config`."""
        c = self.stitch_config(config_id)
        reference = next(self.parameters())
        impl = attn_implementation(self.config)
        if c["j"] is None:
            instance = self.instances[c["front"]]
            vit_config = build_vit_config(self.config.instance_configs[c["front"]])
            model = build_from_config(ViTForImageClassification, vit_config, attn_implementation=impl)
            model.to(device=reference.device, dtype=reference.dtype)
            model.load_state_dict(instance.state_dict())
            model.config.stitch_config = self._provenance(config_id)
            with_card_push(model, _stitched_card)  # its card, not a generic one
            return model.train(self.training)
        n = self.num_instance_layers
        config = StitchedViTConfig(
            front_config=self.config.instance_configs[c["front"]],
            end_config=self.config.instance_configs[c["end"]],
            front_layers=c["j"] + 1,
            end_start=c["k"],
            instance_num_layers=n,
            stitch_config=self._provenance(config_id),
        )
        model = build_from_config(StitchedViTForImageClassification, config, attn_implementation=impl)
        model.to(device=reference.device, dtype=reference.dtype)
        front, front_layers, stitch, end, end_layers = self._path(config_id)
        model.embeddings.load_state_dict(front.vit.embeddings.state_dict())
        for target, source in zip(model.front_layers, front_layers, strict=True):
            target.load_state_dict(source.state_dict())
        model.stitch.load_state_dict(stitch.state_dict())
        for target, source in zip(model.end_layers, end_layers, strict=True):
            target.load_state_dict(source.state_dict())
        model.layernorm.load_state_dict(end.vit.layernorm.state_dict())
        model.classifier.load_state_dict(end.classifier.state_dict())
        return model.train(self.training)


# --- one exported network --------------------------------------------------------------------------------------------
class StitchedViTForImageClassification(HfMethodsModel, PreTrainedModel):
    """One network of a Learngene Pool as a standalone image classifier: front embeddings and blocks 0..j, the
    stitch layer, end blocks k..n-1, end LayerNorm and classifier on the CLS token. Saves, loads and pushes like
    any transformers model; `config.stitch_config` says which pool config it is."""

    config_class = StitchedViTConfig
    method_name = "Learngene Pool"
    base_model_prefix = "stitched_vit"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True
    _no_split_modules: ClassVar[list[str]] = ["ViTEmbeddings", "ViTLayer", "StitchLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    accepts_loss_kwargs = False

    def model_card(self, repo_or_path, results: dict | None = None):
        from ...cards import stitched_card

        return stitched_card(self, repo_or_path, results)

    def __init__(self, config: StitchedViTConfig):
        super().__init__(config)
        if config.front_config is None:
            raise ValueError(
                "StitchedViTConfig needs front_config and end_config; export one with "
                "LearngenePoolModel.export(config_id)."
            )
        impl = attn_implementation(config)
        front = build_vit_config(config.front_config, impl)
        end = build_vit_config(config.end_config, impl)
        self._front_vit_config = front
        self.embeddings = ViTEmbeddings(front)
        self.front_layers = nn.ModuleList(ViTLayer(front) for _ in range(config.front_layers))
        self.stitch = StitchLayer(front.hidden_size, end.hidden_size)
        self.end_layers = nn.ModuleList(ViTLayer(end) for _ in range(config.instance_num_layers - config.end_start))
        self.layernorm = nn.LayerNorm(end.hidden_size, eps=end.layer_norm_eps)
        self.classifier = nn.Linear(end.hidden_size, end.num_labels) if end.num_labels > 0 else nn.Identity()
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module):
        """Stock ViT init (normal weights, zero biases, unit norms, truncated-normal CLS and positions), so a
        config built without a pool is a sensible fresh network; `export` overwrites everything."""
        std = self._front_vit_config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, ViTEmbeddings):
            init.trunc_normal_(module.position_embeddings, mean=0.0, std=std)
            init.trunc_normal_(module.cls_token, mean=0.0, std=std)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput:
        if pixel_values is None:
            raise ValueError("StitchedViTForImageClassification.forward needs pixel_values.")
        stitch = None if self.stitch.is_identity else self.stitch
        logits = _stitched_logits(
            self.embeddings,
            self.front_layers,
            stitch,
            self.end_layers,
            self.layernorm,
            self.classifier,
            pixel_values,
            interpolate_pos_encoding,
            **kwargs,
        )
        return ImageClassifierOutput(loss=_classification_loss(logits, labels), logits=logits)
