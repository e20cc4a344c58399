"""Kill a recipe run at a chosen point, rerun it, compare with an uninterrupted run (the resume tests of
tests/recipes). A kill is a KeyboardInterrupt raised where the process would die: nothing after it runs."""

import json
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file

WALL_TIMES = {"elapsed_s", "step_time_s", "train_time_s"}


def kill_and_rerun(monkeypatch, pipeline, name: str, after: int, argv: list[str]):
    """`pipeline.main(argv)` killed at call `after + 1` of `pipeline.<name>`, then rerun to the end: its results."""
    real, calls = getattr(pipeline, name), []

    def killed(*args, **kwargs):
        calls.append(1)
        if len(calls) > after:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, name, killed)
    with pytest.raises(KeyboardInterrupt):
        pipeline.main(argv)
    monkeypatch.setattr(pipeline, name, real)
    return pipeline.main(argv)


def kill_after_checkpoints(monkeypatch, count: int) -> None:
    """Every Trainer dies right after saving its `count`-th checkpoint of this process (inside a stage)."""
    real, saved = transformers.Trainer._save_checkpoint, []

    def save_then_die(self, *args, **kwargs):
        real(self, *args, **kwargs)
        saved.append(1)
        if len(saved) == count:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(transformers.Trainer, "_save_checkpoint", save_then_die)


def comparable(results: dict, out, drop=("recipe", "training_setup")):
    """`results` without wall times (and `drop`), the run folder written as OUT."""

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in WALL_TIMES}
        return [strip(v) for v in value] if isinstance(value, list) else value

    text = json.dumps({k: v for k, v in results.items() if k not in drop}).replace(str(out), "OUT")
    return strip(json.loads(text))


def same_weights(a, b) -> bool:
    """Whether two model folders hold bit-identical model.safetensors."""
    x, y = load_file(Path(a) / "model.safetensors"), load_file(Path(b) / "model.safetensors")
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
