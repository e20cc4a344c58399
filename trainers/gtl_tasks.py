"""The tasks (environments) of a GTL evolution: N-way K-shot tasks, or class subsets, drawn from a labelled dataset
with labels remapped to `0..N-1`. The same generator state gives the same task, whichever process draws it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from datasets import ClassLabel, Dataset, Value

if TYPE_CHECKING:
    from .gtl_config import GTLEvolutionConfig

TASK_TYPES = ("n_way_k_shot", "class_subset")


class TaskSampler:
    """Draws the tasks (environments) individuals learn in, from a labelled dataset.

    `sample(generator) -> (support, query, classes)`: `n_way` distinct classes drawn from `base_classes` (all labels of
    the dataset by default), relabelled `0..n_way-1` in the order drawn (`classes[j]` is the original label of new
    label `j`); support and query are disjoint `datasets.Dataset`s (torch format) with the dataset's columns and the
    new `labels` (a `ClassLabel` naming the original classes when the dataset's labels are one).

    - `"n_way_k_shot"`: per class, `k_shot` support and `query_shots` query examples drawn without replacement.
    - `"class_subset"`: per class, all its examples: `query_shots` random ones form the query set, the rest the support
      set (a fixed query count rather than a fraction, so fitness is measured on equally many examples everywhere).

    Every class must have enough examples (`k_shot + query_shots`, or `query_shots + 1` for `"class_subset"`); this
    is checked for every base class when the sampler is built, before any training. The same generator state gives
    the same task.
    """

    def __init__(
        self,
        dataset: Dataset,
        task_type: str = "n_way_k_shot",
        n_way: int = 5,
        k_shot: int = 10,
        query_shots: int = 15,
        base_classes: list[int] | None = None,
        label_column: str = "labels",
    ):
        if task_type not in TASK_TYPES:
            raise ValueError(f"task_type must be one of {TASK_TYPES}, got {task_type!r}.")
        if label_column not in dataset.column_names:
            raise ValueError(
                f"The training dataset has no {label_column!r} column (it has {dataset.column_names}); GTL tasks are "
                "drawn by integer class label."
            )
        if n_way < 2 or k_shot < 1 or query_shots < 1:
            raise ValueError(
                f"need n_way >= 2, k_shot >= 1 and query_shots >= 1, got {n_way}, {k_shot}, {query_shots}."
            )
        labels = np.asarray(dataset.with_format("numpy", columns=[label_column])[label_column])
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"`{label_column}` must hold one integer class label per example, got dtype {labels.dtype}."
            )
        present = sorted(int(c) for c in np.unique(labels))
        if base_classes is None:
            base_classes = present
        else:
            base_classes = [int(c) for c in base_classes]
            missing = sorted(set(base_classes) - set(present))
            if missing:
                raise ValueError(
                    f"base_classes {missing} have no example in the training dataset (its labels are {present}); "
                    "list only labels that occur in it."
                )
        if n_way > len(base_classes):
            raise ValueError(
                f"n_way ({n_way}) is larger than the number of base classes ({len(base_classes)}); lower n_way or give "
                "more base classes."
            )
        order = np.argsort(labels, kind="stable")
        bounds = np.searchsorted(labels[order], [[c, c + 1] for c in base_classes])
        self.indices = {c: order[lo:hi] for c, (lo, hi) in zip(base_classes, bounds)}
        need = query_shots + (k_shot if task_type == "n_way_k_shot" else 1)
        short = {c: len(idx) for c, idx in self.indices.items() if len(idx) < need}
        if short:
            what = (
                f"k_shot + query_shots = {k_shot} + {query_shots}"
                if task_type == "n_way_k_shot"
                else f"query_shots + 1 = {query_shots} + 1 (at least one support example)"
            )
            raise ValueError(
                f"Every base class needs {need} examples ({what}), but class(es) {short} (label: count) have fewer. "
                "Lower k_shot / query_shots, or leave those classes out of base_classes."
            )
        self.dataset = dataset
        self.task_type, self.n_way, self.k_shot, self.query_shots = task_type, n_way, k_shot, query_shots
        self.base_classes = base_classes
        self.label_column = label_column
        feature = dataset.features.get(label_column)
        self._names = feature.names if isinstance(feature, ClassLabel) else None

    @classmethod
    def from_config(cls, dataset: Dataset, args: GTLEvolutionConfig) -> TaskSampler:
        return cls(dataset, args.task_type, args.n_way, args.k_shot, args.query_shots, args.base_classes)

    def sample(self, generator: torch.Generator) -> tuple[Dataset, Dataset, list[int]]:
        picks = torch.randperm(len(self.base_classes), generator=generator)[: self.n_way].tolist()
        classes = [self.base_classes[p] for p in picks]
        support, query = [], []
        for new_label, c in enumerate(classes):
            idx = self.indices[c]
            idx = idx[torch.randperm(len(idx), generator=generator).numpy()]
            if self.task_type == "n_way_k_shot":
                s, q = idx[: self.k_shot], idx[self.k_shot : self.k_shot + self.query_shots]
            else:
                q, s = idx[: self.query_shots], idx[self.query_shots :]
            support += [(int(i), new_label) for i in s]
            query += [(int(i), new_label) for i in q]
        return self._subset(support, classes), self._subset(query, classes), classes

    def _subset(self, rows: list[tuple[int, int]], classes: list[int]) -> Dataset:
        indices, labels = zip(*rows)
        if self._names is not None:
            feature = ClassLabel(names=[self._names[c] for c in classes])
        else:
            feature = Value("int64")
        subset = self.dataset.select(list(indices)).remove_columns(self.label_column)
        subset = subset.add_column(self.label_column, list(labels), feature=feature)
        return subset.with_format("torch")
