"""Config of a Knowledge Factorization (KF) model: a common-knowledge network shared by every task, one
task-specific network per task, and their heads."""

from __future__ import annotations

from transformers import CONFIG_MAPPING, PreTrainedConfig

from ...engine.learngene import reject_unknown_fields
from ..label_query.configuration_label_query import _NOT_ARCHITECTURE_KEYS, build_backbone_config

# A backbone here is a feature extractor: its own labels (and classifier) are not used.
_LABEL_KEYS = ("id2label", "label2id", "num_labels")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_ints(value, name: str) -> list[int]:
    if not isinstance(value, (list, tuple)) or not value or not all(_is_int(v) and v > 0 for v in value):
        raise ValueError(f"`{name}` must be a non-empty list of positive integers, got {value!r}.")
    return list(value)


def hidden_state_widths(config: PreTrainedConfig) -> list[int] | None:
    """Width of every entry of a backbone's `hidden_states` (`forward(output_hidden_states=True)`), read from its
    config, or None when the config does not say. The project's VGG / ResNet-12 return one map per stage
    (`hidden_sizes`); stock CNNs with an `embedding_size` (transformers' ResNet) return the stem's output first;
    transformers (ViT, ...) return `num_hidden_layers + 1` token states of width `hidden_size`."""
    sizes = getattr(config, "hidden_sizes", None)
    if isinstance(sizes, (list, tuple)) and sizes:
        stem = getattr(config, "embedding_size", None)
        return ([stem] if _is_int(stem) else []) + list(sizes)
    size, layers = getattr(config, "hidden_size", None), getattr(config, "num_hidden_layers", None)
    if _is_int(size) and _is_int(layers):
        return [size] * (layers + 1)
    return None


def _normalize_backbone(config: PreTrainedConfig, name: str) -> None:
    """`config.<name>_config` as one canonical dict (defaults filled in, no labels, no provenance keys) and
    `config.<name>_model_type` checked."""
    values = getattr(config, f"{name}_config")
    if isinstance(values, PreTrainedConfig):
        values = values.to_dict()
    if values is None:
        return  # an empty config (transformers builds one to read defaults); the model refuses it
    if not isinstance(values, dict):
        raise ValueError(
            f"`{name}_config` must be a dict (e.g. VGGConfig(...).to_dict()) or a PreTrainedConfig, got "
            f"{type(values).__name__}."
        )
    model_type = getattr(config, f"{name}_model_type") or values.get("model_type")
    if model_type is None:
        raise ValueError(
            f"`{name}_model_type` is missing: {name}_config has no 'model_type' key; set {name}_model_type to the "
            "backbone's model type, e.g. 'hf_methods_vgg' or 'vit'."
        )
    if model_type not in CONFIG_MAPPING:
        raise ValueError(f"`{name}_model_type`={model_type!r} is not a registered transformers model type.")
    if model_type == config.model_type:
        raise ValueError(f"`{name}_model_type` cannot be a KF model; give a backbone's type (e.g. 'hf_methods_vgg').")
    canonical = build_backbone_config(model_type, {k: v for k, v in values.items() if k not in _LABEL_KEYS})
    setattr(
        config,
        f"{name}_config",
        {k: v for k, v in canonical.to_dict().items() if k not in (*_NOT_ARCHITECTURE_KEYS, *_LABEL_KEYS[:2])},
    )
    setattr(config, f"{name}_model_type", model_type)


class KnowledgeFactorConfig(PreTrainedConfig):
    r"""A Knowledge Factorization model ("Factorizing Knowledge in Neural Networks", Yang et al., ECCV 2022).

    The common-knowledge network (CKN) is any backbone that returns `hidden_states` (the project's VGG / ResNet-12,
    transformers' ResNet, ViT, ...); its features `c_l` are the global averages of the hidden states listed in
    `ckn_feature_layers`, the last being `c_L`. Task k has a task-specific network (TSN): a small backbone of its own,
    globally averaged, then a Linear without bias to the width of `c_L` (`tau_k`). Task k predicts with
    `head_k(c_L + tau_k)`; its task head reads `tau_k` alone (`head_task_k(tau_k)`), as in the official code. Feature
    projectors (teacher width -> `c_l` width: Linear-BN-ReLU-Linear, the official `feat_fcs`) exist only when
    `teacher_feature_sizes` is set: they serve training (InfoMax) and are dropped by `assemble`.

    Args:
        ckn_config: the CKN's config, a dict (`VGGConfig(...).to_dict()`) or a `PreTrainedConfig`. Its labels are
            ignored (its own classifier, if any, is not used).
        ckn_model_type: its transformers `model_type`; taken from `ckn_config["model_type"]` when left out.
        tsn_config / tsn_model_type: the same for the backbone of every TSN (one copy per task).
        ckn_feature_layers: indices into the CKN's `hidden_states` of the multi-scale features (official CIFAR-10:
            stages 1-3 of 4); the last is `c_L`. Default: every hidden state.
        ckn_feature_sizes: widths of those features; read from `ckn_config` when left out (see
            `hidden_state_widths`; give them for a backbone whose config does not say).
        tsn_feature_size: width of the TSN backbone's last hidden state; read from `tsn_config` when left out.
        task_names: one name per task (default "task_0", ...; one task: "task").
        task_labels: the class names of every task (a list per task, at least 2 each). Left out: one task whose
            classes are `id2label`'s.
        teacher_feature_sizes: widths of the teacher's features that InfoMax matches to the `c_l` (one per CKN
            feature layer); set by `KnowledgeFactorTrainer` when it can read them from the teacher's config.

    `id2label` is derived: every task's classes side by side ("<task>:<label>"; just the labels for one task), so
    `num_labels` is the total number of classes, the width of a teacher whose logits are the tasks' logits
    concatenated.
    """

    model_type = "hf_methods_knowledge_factor"
    ckn_config: dict | None = None
    ckn_model_type: str | None = None
    tsn_config: dict | None = None
    tsn_model_type: str | None = None
    ckn_feature_layers: list[int] | None = None
    ckn_feature_sizes: list[int] | None = None
    tsn_feature_size: int | None = None
    task_names: list[str] | None = None
    task_labels: list[list[str]] | None = None
    teacher_feature_sizes: list[int] | None = None

    def __post_init__(self, **kwargs):
        reject_unknown_fields(self, kwargs)
        super().__post_init__(**{k: v for k, v in kwargs.items() if k != "model_type"})
        _normalize_backbone(self, "ckn")
        _normalize_backbone(self, "tsn")
        self._resolve_tasks()
        self._resolve_widths()
        self.check_knowledge_factor()

    # --- tasks ------------------------------------------------------------------------------------------------------
    def _resolve_tasks(self) -> None:
        labels = self.task_labels
        if labels is None:  # one task: the classes of id2label
            labels = [[str(self.id2label[i]) for i in range(self.num_labels)]]
        if not isinstance(labels, (list, tuple)) or not labels:
            raise ValueError(
                f"`task_labels` must be a non-empty list (one list of class names per task), got {labels!r}."
            )
        for k, names in enumerate(labels):
            if not isinstance(names, (list, tuple)) or len(names) < 2:
                raise ValueError(
                    f"`task_labels[{k}]` must list at least 2 class names (a softmax over the task's classes), got "
                    f"{names!r}."
                )
        self.task_labels = [[str(n) for n in names] for names in labels]
        names = self.task_names
        if names is None:
            names = ["task"] if len(labels) == 1 else [f"task_{k}" for k in range(len(labels))]
        if not isinstance(names, (list, tuple)) or len(names) != len(labels):
            raise ValueError(f"`task_names` must give one name per task ({len(labels)} in task_labels), got {names!r}.")
        names = [str(n) for n in names]
        if len(set(names)) != len(names) or not all(names):
            raise ValueError(f"`task_names` must be distinct and non-empty, got {names!r}.")
        self.task_names = names
        if len(labels) == 1:
            combined = list(self.task_labels[0])
        else:
            combined = [f"{task}:{label}" for task, classes in zip(names, self.task_labels) for label in classes]
        self.id2label = dict(enumerate(combined))
        self.label2id = {label: i for i, label in enumerate(combined)}

    @property
    def num_tasks(self) -> int:
        return len(self.task_labels)

    @property
    def task_num_labels(self) -> list[int]:
        """Number of classes of every task (the sizes that split a concatenated teacher's logits)."""
        return [len(classes) for classes in self.task_labels]

    # --- widths -----------------------------------------------------------------------------------------------------
    def _resolve_widths(self) -> None:
        if self.ckn_config is None or self.tsn_config is None:
            return  # an empty config; the model refuses it
        widths = hidden_state_widths(self.get_ckn_config())
        layers = self.ckn_feature_layers
        if layers is None:
            if widths is None:
                raise ValueError(
                    "`ckn_feature_layers` is missing and the CKN's config does not say how many hidden states it "
                    "returns; list the indices of its hidden_states to use, e.g. [1, 2, 3]."
                )
            layers = list(range(len(widths)))
        if not isinstance(layers, (list, tuple)) or not layers or not all(_is_int(i) for i in layers):
            raise ValueError(f"`ckn_feature_layers` must be a non-empty list of hidden-state indices, got {layers!r}.")
        if widths is not None:
            bad = [i for i in layers if not -len(widths) <= i < len(widths)]
            if bad:
                raise ValueError(
                    f"`ckn_feature_layers` {list(layers)} names hidden state {bad[0]}, but the CKN returns "
                    f"{len(widths)} (indices {-len(widths)}..{len(widths) - 1})."
                )
        self.ckn_feature_layers = list(layers)
        if self.ckn_feature_sizes is None:
            if widths is None:
                raise ValueError(
                    "`ckn_feature_sizes` is missing and the CKN's config does not give its widths; set it (one width "
                    "per entry of ckn_feature_layers)."
                )
            self.ckn_feature_sizes = [widths[i] for i in layers]
        if self.tsn_feature_size is None:
            tsn_widths = hidden_state_widths(self.get_tsn_config())
            if tsn_widths is None:
                raise ValueError(
                    "`tsn_feature_size` is missing and the TSN's config does not give the width of its last hidden "
                    "state; set it."
                )
            self.tsn_feature_size = tsn_widths[-1]

    # --- checks -----------------------------------------------------------------------------------------------------
    def check_knowledge_factor(self) -> None:
        """Raise a ValueError naming the first bad field and how to fix it."""
        if self.ckn_config is None or self.tsn_config is None:
            return
        self.ckn_feature_sizes = _positive_ints(self.ckn_feature_sizes, "ckn_feature_sizes")
        if len(self.ckn_feature_sizes) != len(self.ckn_feature_layers):
            raise ValueError(
                f"`ckn_feature_sizes` has {len(self.ckn_feature_sizes)} entries but `ckn_feature_layers` has "
                f"{len(self.ckn_feature_layers)}; give one width per feature layer."
            )
        if not _is_int(self.tsn_feature_size) or self.tsn_feature_size < 1:
            raise ValueError(f"`tsn_feature_size` must be a positive integer, got {self.tsn_feature_size!r}.")
        if self.teacher_feature_sizes is not None:
            self.teacher_feature_sizes = _positive_ints(self.teacher_feature_sizes, "teacher_feature_sizes")
            if len(self.teacher_feature_sizes) != len(self.ckn_feature_layers):
                raise ValueError(
                    f"`teacher_feature_sizes` has {len(self.teacher_feature_sizes)} entries but the CKN has "
                    f"{len(self.ckn_feature_layers)} feature layers; InfoMax pairs them one to one (give one teacher "
                    "width per CKN feature layer)."
                )

    def get_ckn_config(self) -> PreTrainedConfig:
        """The CKN's own transformers config."""
        return self._backbone("ckn")

    def get_tsn_config(self) -> PreTrainedConfig:
        """The config of every TSN's backbone."""
        return self._backbone("tsn")

    def _backbone(self, name: str) -> PreTrainedConfig:
        values = getattr(self, f"{name}_config")
        if values is None:
            raise ValueError(
                f"KnowledgeFactorConfig.{name}_config is empty; give the backbone's config, e.g. "
                f"KnowledgeFactorConfig(ckn_config=VGGConfig(...).to_dict(), tsn_config=VGGConfig(...).to_dict(), "
                "task_labels=[[...], [...]])."
            )
        return build_backbone_config(getattr(self, f"{name}_model_type"), values)
