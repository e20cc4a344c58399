"""LIRF's deposit: `LIRFTrainer` fine-tunes an `LIRFModel`'s target and deposit lower parts on the deposit set
(Learning with Recoverable Forgetting, Ye et al., ECCV 2022; official `train_deposit.py`, read, not copied).

Per batch (x, y) of the deposit set: z0 = up0(low0(x)) (frozen, no gradient), z_T = up0(low_T(x)), z_R = up0(low_R(x)),
z_comb = z_R on the deposit classes' columns and z_T on the others. The target part distills the original on the
preserved classes' logits and learns random labels (it forgets the deposit set); the deposit part distills the
original on the deposit classes' logits and learns the true labels through z_comb (it keeps them, and its columns sit
beside the target's in the recover network). As in the official code, the cross-entropy of z_comb also reaches low_T
through z_comb's preserved columns.

Only deposit-class images may be used (the method's premise: the preserved data is not available). A preserved-class
label in a training batch is an error (`check_deposit_labels`), and a training set that holds one is refused before
training starts; `deposit_subset` selects the deposit set from a labelled data set.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from ..models.lirf import LIRFModel, combine_logits
from .distillation_trainer import soft_target_loss
from .lirf_config import LIRFTrainingConfig
from .resumable import ResumableTrainer


def _kd(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(teacher/T) || softmax(student/T)), mean over the batch (`KLDivLoss(reduction="batchmean")`): the
    shared soft KD without its T^2 (LIRF weighs it with alpha T^2 itself)."""
    return soft_target_loss(student, teacher, temperature) / (temperature * temperature)


def lirf_loss(
    original_logits: torch.Tensor,
    target_logits: torch.Tensor,
    deposit_logits: torch.Tensor,
    labels: torch.Tensor,
    deposit_classes,
    alpha: float = 0.9,
    temperature: float = 4.0,
    random_labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(L_T + L_R, parts) of one deposit-set batch:

    - L_T = alpha T^2 KL(z0[:, P] / T || z_T[:, P] / T) + (1 - alpha) CE(z_T, y_rand), P = the preserved classes;
    - L_R = alpha T^2 KL(z0[:, D] / T || z_comb[:, D] / T) + (1 - alpha) CE(z_comb, y), D = the deposit classes.

    `random_labels` (y_rand; default: uniform over all classes from torch's global generator, as the official
    `randint_like(labels, 10)`). Parts: `target_kd`, `target_ce`, `deposit_kd`, `deposit_ce` (unweighted).
    """
    num_labels = target_logits.shape[-1]
    deposit = sorted(deposit_classes)
    preserved = [c for c in range(num_labels) if c not in set(deposit)]
    if random_labels is None:
        random_labels = torch.randint(0, num_labels, labels.shape, device=labels.device)
    z0, z_t = original_logits.float().detach(), target_logits.float()
    z_comb = combine_logits(z_t, deposit_logits.float(), deposit, "replace")
    scale = alpha * temperature**2
    parts = {
        "target_kd": _kd(z_t[:, preserved], z0[:, preserved], temperature),
        "target_ce": F.cross_entropy(z_t, random_labels),
        "deposit_kd": _kd(z_comb[:, deposit], z0[:, deposit], temperature),
        "deposit_ce": F.cross_entropy(z_comb, labels),
    }
    loss = (scale * parts["target_kd"] + (1 - alpha) * parts["target_ce"]
            + scale * parts["deposit_kd"] + (1 - alpha) * parts["deposit_ce"])  # fmt: skip
    return loss, parts


def check_deposit_labels(labels, deposit_classes, where: str = "a training batch") -> None:
    """Refuse preserved-class samples: LIRF trains on the deposit set only."""
    labels = torch.as_tensor(labels).reshape(-1)
    allowed = torch.as_tensor(sorted(deposit_classes), device=labels.device)
    outside = ~torch.isin(labels, allowed)
    if bool(outside.any()):
        first = int(torch.nonzero(outside)[0])
        raise ValueError(
            f"{where} holds a sample of class {int(labels[first])} (position {first}), which is not a deposit class "
            f"{sorted(deposit_classes)}: LIRF trains on the deposit set only (the preserved data is not available); "
            "select it with deposit_subset(dataset, deposit_classes)."
        )


def deposit_subset(dataset, deposit_classes, label_column: str = "labels"):
    """The deposit set: the rows of `dataset` (a `datasets.Dataset` or a list of row dicts) whose label is a deposit
    class."""
    keep = set(deposit_classes)
    if isinstance(dataset, list):
        return [row for row in dataset if int(row[label_column]) in keep]
    labels = dataset.with_format(None)[label_column]
    return dataset.select([i for i, y in enumerate(labels) if int(y) in keep])


def _dataset_labels(dataset, label_column: str = "labels"):
    """Every label of a map-style training set when they can be read cheaply (a `datasets.Dataset` column, or a list
    of row dicts), else None (the per-batch check still applies)."""
    if isinstance(dataset, list) and all(isinstance(r, dict) and label_column in r for r in dataset):
        return [int(r[label_column]) for r in dataset]
    column_names = getattr(dataset, "column_names", None)
    if isinstance(column_names, list) and label_column in column_names and hasattr(dataset, "with_format"):
        return [int(y) for y in dataset.with_format(None)[label_column]]
    return None


class LIRFTrainer(ResumableTrainer):
    """`Trainer` for LIRF's deposit (see the module docstring and `LIRFTrainingConfig`): `model` is an `LIRFModel`,
    `train_dataset` its deposit set. Only `lower_target` and `lower_deposit` are optimized (`upper` and
    `lower_original` do not require gradients, and stay in eval mode). Logs `target_kd`, `target_ce`, `deposit_kd`
    and `deposit_ce` beside the loss.

    Evaluation (any classes allowed) reports the same objective with random labels from a fixed generator, so it does
    not move the training's random state; `hf_methods.models.lirf.lirf_compute_metrics(deposit_classes)` as
    `compute_metrics` gives LIRF's Pre Acc, Dep Acc, F, H-mean and Avg Acc on a test set of all classes.
    """

    def __init__(self, model: LIRFModel | None = None, args: LIRFTrainingConfig | None = None, **kwargs):
        if not isinstance(args, LIRFTrainingConfig):
            raise TypeError(f"LIRFTrainer takes an LIRFTrainingConfig, got {type(args).__name__}.")
        if not isinstance(model, LIRFModel):
            raise TypeError(
                f"LIRFTrainer trains an LIRFModel (LIRFModel.from_original(model, split_module_name, "
                f"deposit_classes)), got {type(model).__name__}."
            )
        train_dataset = kwargs.get("train_dataset")
        if train_dataset is not None:
            labels = _dataset_labels(train_dataset)
            if labels is not None:
                check_deposit_labels(labels, model.config.deposit_classes, where="train_dataset")
        super().__init__(model=model, args=args, **kwargs)
        self.deposit_classes = list(model.config.deposit_classes)
        self._parts: dict[str, float] = {}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs["labels"]
        random_labels = None
        if model.training:
            check_deposit_labels(labels, self.deposit_classes)
        else:  # evaluation: fixed random labels, the training's generator untouched
            g = torch.Generator().manual_seed(self.args.seed)
            random_labels = torch.randint(0, self.model.config.num_labels, labels.shape, generator=g).to(labels.device)
        outputs = model(pixel_values=inputs["pixel_values"])
        loss, parts = lirf_loss(outputs.original_logits, outputs.logits, outputs.deposit_logits, labels,
                                self.deposit_classes, self.args.alpha, self.args.temperature,
                                random_labels=random_labels)  # fmt: skip
        if model.training:
            self._parts = {k: float(v.detach()) for k, v in parts.items()}
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs and self._parts:
            logs = {**logs, **{k: round(v, 4) for k, v in self._parts.items()}}
        super().log(logs, *args, **kwargs)
