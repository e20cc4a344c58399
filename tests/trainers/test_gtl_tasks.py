"""GTL tasks: N-way K-shot and class-subset tasks drawn with remapped labels, reproducible from the generator,
and data errors raised when the sampler is built."""

import pytest
import torch

from hf_methods.data import digits
from hf_methods.trainers.gtl_tasks import TASK_TYPES, TaskSampler


@pytest.fixture(scope="module")
def data():
    return digits(image_size=8)["train"]


def column(dataset, name):
    return list(dataset.with_format(None)[name])


def test_task_sampler_n_way_k_shot(data):
    rows = data.add_column("row", list(range(len(data))))
    labels = column(rows, "labels")
    base = [0, 2, 3, 5, 7, 9]
    sampler = TaskSampler(rows, "n_way_k_shot", n_way=4, k_shot=3, query_shots=5, base_classes=base)
    support, query, classes = sampler.sample(torch.Generator().manual_seed(1))
    assert len(set(classes)) == 4 and set(classes) <= set(base)
    for subset, per_class in ((support, 3), (query, 5)):
        assert sorted(column(subset, "labels")) == sorted(list(range(4)) * per_class)  # remapped to 0..N-1
        for row, new in zip(column(subset, "row"), column(subset, "labels")):
            assert labels[row] == classes[new]  # the original class of every example
    assert not set(column(support, "row")) & set(column(query, "row"))
    assert support.features["labels"].names == [str(c) for c in classes]
    again = sampler.sample(torch.Generator().manual_seed(1))
    assert again[2] == classes and column(again[0], "row") == column(support, "row")
    assert column(again[1], "row") == column(query, "row")
    other = sampler.sample(torch.Generator().manual_seed(2))
    assert (other[2], column(other[0], "row")) != (classes, column(support, "row"))


def test_task_sampler_class_subset(data):
    rows = data.add_column("row", list(range(len(data))))
    labels = column(rows, "labels")
    sampler = TaskSampler(rows, "class_subset", n_way=3, query_shots=5)
    support, query, classes = sampler.sample(torch.Generator().manual_seed(0))
    for new, c in enumerate(classes):
        everything = {i for i, label in enumerate(labels) if label == c}
        s = {r for r, label in zip(column(support, "row"), column(support, "labels")) if label == new}
        q = {r for r, label in zip(column(query, "row"), column(query, "labels")) if label == new}
        assert len(q) == 5 and not s & q and s | q == everything


def test_task_sampler_errors(data):
    with pytest.raises(ValueError, match="k_shot"):
        TaskSampler(data, n_way=3, k_shot=200, query_shots=15)
    with pytest.raises(ValueError, match=r"base_classes \[42\]"):
        TaskSampler(data, n_way=2, base_classes=[1, 42])
    with pytest.raises(ValueError, match="n_way"):
        TaskSampler(data, n_way=11)
    with pytest.raises(ValueError, match="task_type"):
        TaskSampler(data, "episodes")
    assert TASK_TYPES == ("n_way_k_shot", "class_subset")
