"""Knowledge Factorization (KF) as one `PreTrainedModel`: a common-knowledge network (CKN) shared by every task, one
task-specific network (TSN) per task, and per-task heads.

KF (Yang, Ye and Wang, "Factorizing Knowledge in Neural Networks", ECCV 2022) decomposes a pretrained multi-task
teacher into factor networks, one per task: the shared CKN plus that task's TSN and heads. Any subset of factor networks
can be put back together without fine-tuning (`assemble`): task k's prediction reads only the CKN and TSN_k, so
removing or adding other TSNs leaves it unchanged. `KnowledgeFactorTrainer` (hf_methods.trainers) trains it.

Written from the paper and the official code (Adamdad/KnowledgeFactor, `KFImageClassifier`, `TSN_backbone`): the
per-task heads of the multi-task case are inferred (the official multi-task classifier is not released: its single-task
classifier has one `head` on `c_L + tau` and one `head_task` on `tau`, here one of each per task).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from ...modeling import HfMethodsModel
from .configuration_knowledge_factor import KnowledgeFactorConfig


@dataclass
class KnowledgeFactorOutput(ModelOutput):
    """Output of a KF model (one entry per task, in the model's task order, in every tuple).

    Args:
        loss: sum over tasks of the cross-entropy of `logits[k]` on `labels[:, k]`, when labels are given (what
            `Trainer.evaluate` reports; `KnowledgeFactorTrainer` computes KF's own loss).
        logits: per task, `head_k(c_L + tau_k)`, (batch, classes of task k): the prediction.
        task_logits: per task, `head_task_k(tau_k)`, the TSN's own prediction (a training term).
        ckn_hidden_states: the CKN's multi-scale features `c_l`, globally averaged hidden states at
            `config.ckn_feature_layers`, (batch, width); the last is `c_L`.
        tsn_features: per task, `tau_k` (batch, width of `c_L`).
        teacher_projections: when `teacher_features` are given, the feature projectors' outputs, one per CKN feature
            layer (what InfoMax compares with `ckn_hidden_states`).
    """

    loss: torch.Tensor | None = None
    logits: tuple[torch.Tensor, ...] | None = None
    task_logits: tuple[torch.Tensor, ...] | None = None
    ckn_hidden_states: tuple[torch.Tensor, ...] | None = None
    tsn_features: tuple[torch.Tensor, ...] | None = None
    teacher_projections: tuple[torch.Tensor, ...] | None = None


def global_pool(hidden: torch.Tensor) -> torch.Tensor:
    """A hidden state as one vector per example: the mean over space of a (batch, channels, h, w) map, over tokens of
    a (batch, tokens, width) sequence; (batch, width) is returned as it is."""
    if hidden.dim() == 4:
        return hidden.mean(dim=(2, 3))
    if hidden.dim() == 3:
        return hidden.mean(dim=1)
    if hidden.dim() == 2:
        return hidden
    raise ValueError(f"cannot pool a hidden state of shape {tuple(hidden.shape)} (expected 2, 3 or 4 dimensions).")


def _feature_backbone(config) -> nn.Module:
    """A backbone as a feature extractor: `AutoModel.from_config`, without the classifier some image models carry
    (the project's VGG / ResNet-12 register their classification class as `AutoModel`): KF's heads read its features,
    so a classifier would only hold parameters that never get a gradient."""
    model = AutoModel.from_config(config)
    if isinstance(getattr(model, "classifier", None), nn.Linear):
        model.classifier = nn.Identity()
    return model


def _hidden_states(backbone: nn.Module, pixel_values: torch.Tensor, who: str) -> tuple[torch.Tensor, ...]:
    out = backbone(pixel_values=pixel_values, output_hidden_states=True, return_dict=True)
    states = out.get("hidden_states") if isinstance(out, dict) else getattr(out, "hidden_states", None)
    if not states:
        raise ValueError(
            f"the {who} returned no hidden_states with output_hidden_states=True; KF reads its features from them, so "
            "give a backbone that returns them (e.g. 'hf_methods_vgg', 'hf_methods_resnet12', 'resnet', 'vit')."
        )
    return tuple(states)


class TaskSpecificNetwork(nn.Module):
    """TSN: a small backbone, its last hidden state globally averaged, then a Linear without bias to the width of the
    CKN's last feature (the official `TSN_backbone`)."""

    def __init__(self, config: KnowledgeFactorConfig):
        super().__init__()
        self.backbone = _feature_backbone(config.get_tsn_config())
        self.projection = nn.Linear(config.tsn_feature_size, config.ckn_feature_sizes[-1], bias=False)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        last = global_pool(_hidden_states(self.backbone, pixel_values, "TSN backbone")[-1])
        if last.shape[-1] != self.projection.in_features:
            raise ValueError(
                f"the TSN backbone's last hidden state has width {last.shape[-1]}, but tsn_feature_size is "
                f"{self.projection.in_features}; set tsn_feature_size to {last.shape[-1]}."
            )
        return self.projection(last)


def feature_projector(teacher_width: int, student_width: int) -> nn.Sequential:
    """The official InfoMax projector (`feat_fcs`): Linear(teacher, student) - BatchNorm1d - ReLU - Linear(student,
    student)."""
    return nn.Sequential(
        nn.Linear(teacher_width, student_width),
        nn.BatchNorm1d(student_width),
        nn.ReLU(),
        nn.Linear(student_width, student_width),
    )


class KnowledgeFactorModel(HfMethodsModel, PreTrainedModel):
    """A KF model: `ckn` (the common-knowledge network), `tsns[k]` (task k's TSN), `heads[k]` (on `c_L + tau_k`),
    `task_heads[k]` (on `tau_k`) and, for training, `feature_projectors[l]` (see `KnowledgeFactorConfig`).

    `forward(pixel_values, labels=None, teacher_features=None)` returns a `KnowledgeFactorOutput`; `labels` are
    (batch, num_tasks) class indices (or (batch,) for one task). A network that reads one channel also takes RGB
    images, averaged to gray. `assemble(task_ids)` returns the factor networks of those tasks as a model of their own.
    """

    config_class = KnowledgeFactorConfig
    method_name = "KF"
    base_model_prefix = "knowledge_factor"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    accepts_loss_kwargs = False

    def __init__(self, config: KnowledgeFactorConfig):
        super().__init__(config)
        if config.ckn_config is None or config.tsn_config is None:
            config._backbone("ckn" if config.ckn_config is None else "tsn")  # raises, naming the empty field
        width = config.ckn_feature_sizes[-1]
        self.ckn = _feature_backbone(config.get_ckn_config())
        self.tsns = nn.ModuleList(TaskSpecificNetwork(config) for _ in range(config.num_tasks))
        self.heads = nn.ModuleList(nn.Linear(width, n) for n in config.task_num_labels)
        self.task_heads = nn.ModuleList(nn.Linear(width, n) for n in config.task_num_labels)
        self.feature_projectors = nn.ModuleList()
        if config.teacher_feature_sizes is not None:
            self.feature_projectors.extend(
                feature_projector(t, s) for t, s in zip(config.teacher_feature_sizes, config.ckn_feature_sizes)
            )
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module):
        """Heads: N(0, 0.01) weights, zero biases (mmcls' `LinearClsHead`, the official heads). The TSN projections
        and the feature projectors: PyTorch's default `nn.Linear` init (the official code leaves them at it);
        BatchNorm1d: weight 1, bias 0. The backbones initialize themselves."""
        if isinstance(module, nn.Linear):
            if any(module is h for h in (*self.heads, *self.task_heads)):
                init.normal_(module.weight, mean=0.0, std=0.01)
                init.zeros_(module.bias)
                return
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                bound = 1 / math.sqrt(module.in_features)
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, nn.BatchNorm1d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            init.zeros_(module.num_batches_tracked)

    # --- inputs -----------------------------------------------------------------------------------------------------
    def _pixels(self, pixel_values: torch.Tensor | None) -> torch.Tensor:
        if pixel_values is None:
            raise ValueError("KnowledgeFactorModel.forward needs pixel_values.")
        gray = getattr(self.config.get_ckn_config(), "num_channels", 3) == 1
        if gray and pixel_values.dim() == 4 and pixel_values.shape[1] == 3:  # RGB (a pipeline's gray image)
            pixel_values = pixel_values.mean(dim=1, keepdim=True)
        return pixel_values

    def task_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """`labels` as (batch, num_tasks) class indices, checked against the tasks' class counts."""
        k = self.config.num_tasks
        if labels.dim() == 1 and k == 1:
            labels = labels.unsqueeze(1)
        if labels.dim() != 2 or labels.shape[1] != k:
            raise ValueError(
                f"labels must have shape (batch, num_tasks={k}) (one class index per task: "
                f"{', '.join(self.config.task_names)}), got {tuple(labels.shape)}."
            )
        for j, n in enumerate(self.config.task_num_labels):
            column = labels[:, j]
            if column.numel() and (int(column.min()) < 0 or int(column.max()) >= n):
                raise ValueError(
                    f"labels[:, {j}] (task {self.config.task_names[j]!r}) must be class indices in [0, {n}), got "
                    f"values in [{int(column.min())}, {int(column.max())}]."
                )
        return labels

    # --- forward ----------------------------------------------------------------------------------------------------
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        teacher_features: list[torch.Tensor] | tuple[torch.Tensor, ...] | None = None,
        **kwargs,
    ) -> KnowledgeFactorOutput:
        pixel_values = self._pixels(pixel_values)
        states = _hidden_states(self.ckn, pixel_values, "CKN")
        layers = self.config.ckn_feature_layers
        if any(not -len(states) <= i < len(states) for i in layers):
            raise ValueError(
                f"ckn_feature_layers {layers} do not fit the CKN, which returns {len(states)} hidden states."
            )
        common = tuple(global_pool(states[i]) for i in layers)
        for i, c, width in zip(layers, common, self.config.ckn_feature_sizes):
            if c.shape[-1] != width:
                raise ValueError(
                    f"the CKN's hidden state {i} has width {c.shape[-1]}, but ckn_feature_sizes says {width}; set "
                    "ckn_feature_sizes to the widths of the listed hidden states."
                )
        last = common[-1]
        taus = tuple(tsn(pixel_values) for tsn in self.tsns)
        logits = tuple(head(last + tau) for head, tau in zip(self.heads, taus))
        task_logits = tuple(head(tau) for head, tau in zip(self.task_heads, taus))

        projections = None
        if teacher_features is not None:
            if len(self.feature_projectors) == 0:
                raise ValueError(
                    "teacher_features were given but this model has no feature projectors; build it with "
                    "teacher_feature_sizes (KnowledgeFactorTrainer does so from the teacher's config)."
                )
            if len(teacher_features) != len(self.feature_projectors):
                raise ValueError(
                    f"got {len(teacher_features)} teacher features for {len(self.feature_projectors)} feature "
                    "projectors (one per CKN feature layer)."
                )
            projections = []
            for j, (projector, feature) in enumerate(zip(self.feature_projectors, teacher_features)):
                if feature.shape[-1] != projector[0].in_features:
                    raise ValueError(
                        f"teacher feature {j} has width {feature.shape[-1]}, but teacher_feature_sizes[{j}] is "
                        f"{projector[0].in_features}; build the model with the teacher's widths."
                    )
                projections.append(projector(feature.to(projector[0].weight.dtype)))
            projections = tuple(projections)

        loss = None
        if labels is not None:
            labels = self.task_labels(labels.to(last.device))
            loss = sum(F.cross_entropy(z.float(), labels[:, k]) for k, z in enumerate(logits))
        return KnowledgeFactorOutput(
            loss=loss,
            logits=logits,
            task_logits=task_logits,
            ckn_hidden_states=common,
            tsn_features=taus,
            teacher_projections=projections,
        )

    # --- plug and play ----------------------------------------------------------------------------------------------
    def task_index(self, task: int | str) -> int:
        """The index of a task given by index or name; a ValueError naming the tasks otherwise."""
        names = self.config.task_names
        known = ", ".join(f"{i} {n!r}" for i, n in enumerate(names))
        if isinstance(task, str):
            if task not in names:
                raise ValueError(f"task_ids: {task!r} is not a task of this model (it has {len(names)}: {known}).")
            return names.index(task)
        if isinstance(task, bool) or not isinstance(task, int) or not 0 <= task < len(names):
            raise ValueError(f"task_ids: {task!r} is not a task of this model (it has {len(names)}: {known}).")
        return task

    def assemble(self, task_ids) -> KnowledgeFactorModel:
        """The factor networks of `task_ids` (indices or names, in the order given) as a model of their own: the
        shared CKN (copied) with only those TSNs and heads, without fine-tuning and without the training-only
        feature projectors. Each task's logits equal this model's for that task (in eval mode)."""
        if isinstance(task_ids, (int, str)):
            task_ids = [task_ids]
        ids = [self.task_index(t) for t in task_ids]
        if not ids:
            raise ValueError("task_ids must name at least one task.")
        if len(set(ids)) != len(ids):
            raise ValueError(f"task_ids must be distinct, got {list(task_ids)}.")
        values = self.config.to_dict()
        for key in ("id2label", "label2id", "model_type", "transformers_version", "architectures", "auto_map"):
            values.pop(key, None)
        values.update(
            task_names=[self.config.task_names[i] for i in ids],
            task_labels=[self.config.task_labels[i] for i in ids],
            teacher_feature_sizes=None,
        )
        config = KnowledgeFactorConfig(**values)
        state = {}
        for key, tensor in self.state_dict().items():
            top, _, rest = key.partition(".")
            if top == "ckn":
                state[key] = tensor
            elif top in ("tsns", "heads", "task_heads"):
                index, _, leaf = rest.partition(".")
                if int(index) in ids:
                    state[f"{top}.{ids.index(int(index))}.{leaf}"] = tensor
        reference = next(self.parameters())
        assembled = type(self)(config)
        assembled.load_state_dict(state, strict=True)  # copies: the assembled model owns its weights
        assembled.to(device=reference.device, dtype=reference.dtype)
        assembled.name_or_path = self.name_or_path
        assembled.train(self.training)
        return assembled

    def model_card(self, repo_or_path, results: dict | None = None):
        from ...cards import run_model_card

        results = results or {}
        tasks = ", ".join(
            f"{name} ({n} classes)" for name, n in zip(self.config.task_names, self.config.task_num_labels)
        )
        ckn, tsn = self.config.ckn_model_type, self.config.tsn_model_type
        source = results.get("assembled_from")
        description = (
            f"A Knowledge Factorization model: a common-knowledge network ({ckn}) shared by every task and one "
            f"task-specific network ({tsn} + a linear map) per task; tasks: {tasks}. Task k predicts with "
            "head_k(c_L + tau_k) from the CKN's last feature c_L and its TSN's feature tau_k, so any subset of "
            "tasks can be taken out with `model.assemble([...])` without fine-tuning."
        )
        if source:
            description += f" This model was assembled, without fine-tuning, from {source}."
        return run_model_card(
            self,
            repo_or_path,
            method="KF",
            title=f"Knowledge Factorization model ({tasks})",
            description=description,
            tags=["knowledge-factorization", "knowledge-distillation", "multi-task"],
            ancestor=results.get("teacher_ref"),
            relation="distillation" if results.get("teacher_ref") else None,
            training_setup=results.get("training_setup"),
            metrics={k: v for k, v in results.get("metrics", {}).items() if isinstance(v, (int, float))},
            dataset=results.get("dataset"),
        )
