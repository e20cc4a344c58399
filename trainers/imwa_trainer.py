"""IMWA, "Iterative Model Weight Averaging" for class-imbalanced learning (arXiv 2404.16331; no official code).

    theta = init
    for e in 1..E:
        for m in 1..M:  theta_m = copy(theta); train theta_m for T / E steps with its own data order
        theta = mean_m(theta_m)          # parameters and buffers (BatchNorm statistics); counters: max
    return theta

Averaging early and often (E > 1) rather than once at the end (E = 1, vanilla model weight averaging) is the paper's
point; the compute is the same M x T steps. `IMWATrainer` runs the replicas in turn in one process, each episode of each
replica with a stock `Trainer` (or `trainer_cls`), and keeps per replica across episodes what the paper leaves open,
each an option of `IMWAConfig`: the optimizer and its learning-rate schedule (one schedule over the whole budget,
indexed by the global step; the optimizer state kept or reset), and an optional per-replica EMA averaged like the
weights. `average_state_dicts` is the averaging, usable on its own.

Not yet: one replica per process under `accelerate launch` (averaged with a collective); a launched run is refused.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PrinterCallback, ProgressCallback, Trainer, TrainerCallback, TrainingArguments

from .imwa_config import IMWAConfig

logger = logging.getLogger(__name__)


def average_state_dicts(
    state_dicts: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float] | None = None
) -> dict[str, torch.Tensor]:
    """The (weighted) average of state dicts with the same keys and shapes.

    Floating tensors (parameters, BatchNorm running mean and variance) are averaged in float64 and cast back to their
    dtype; integer and bool tensors (BatchNorm's `num_batches_tracked`) take the maximum. `weights` default to uniform
    and are normalized to sum to 1. Averaging copies of one state dict returns it exactly.
    """
    if not state_dicts:
        raise ValueError("average_state_dicts needs at least one state dict.")
    weights = [1.0] * len(state_dicts) if weights is None else [float(w) for w in weights]
    if len(weights) != len(state_dicts) or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be {len(state_dicts)} non-negative numbers with a positive sum, got {weights}.")
    total = sum(weights)
    first = state_dicts[0]
    for i, other in enumerate(state_dicts[1:], start=1):
        if other.keys() != first.keys():
            diff = sorted(set(other.keys()) ^ set(first.keys()))
            raise ValueError(f"state dict {i} does not have the keys of state dict 0: {diff[:5]} differ.")
    averaged = {}
    for key, value in first.items():
        values = [sd[key] for sd in state_dicts]
        if any(v.shape != value.shape for v in values):
            raise ValueError(f"{key}: shapes differ between the state dicts ({[tuple(v.shape) for v in values]}).")
        if value.is_floating_point() or value.is_complex():
            if all(torch.equal(v, value) for v in values[1:]):
                averaged[key] = value.clone()  # exact: no float64 round trip
                continue
            acc = sum(v.to(torch.float64) * (w / total) for v, w in zip(values, weights))
            averaged[key] = acc.to(value.dtype)
        else:
            averaged[key] = torch.stack(values).max(dim=0).values if value.dtype != torch.bool else value.clone()
    return averaged


class _EMA(TrainerCallback):
    """An exponential moving average of a replica's floating weights, updated after every optimizer step."""

    def __init__(self, model: nn.Module, decay: float):
        self.model = model
        self.decay = decay
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def on_step_end(self, args, state, control, **kwargs):
        with torch.no_grad():
            for key, value in self.model.state_dict().items():
                if value.is_floating_point():
                    self.state[key].mul_(self.decay).add_(value.detach(), alpha=1 - self.decay)
                else:
                    self.state[key].copy_(value)


def _plain_arguments(args: IMWAConfig, **overrides) -> TrainingArguments:
    """The `TrainingArguments` part of `args`, as a plain `TrainingArguments` with `overrides`."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainingArguments) if f.init}
    values.update(overrides)
    return TrainingArguments(**values)


class IMWATrainer:
    """Iterative model weight averaging around a `Trainer` (see the module docstring and `IMWAConfig`).

    Args:
        model: the initial model; after `train()` it holds the final average (trained in place, as `Trainer` does).
        args: an `IMWAConfig`.
        train_dataset, eval_dataset, data_collator, processing_class, compute_metrics, callbacks: as for `Trainer`;
            `callbacks` go to every replica's trainer.
        trainer_cls: the `Trainer` class each replica trains with (e.g. a distillation trainer), and `trainer_kwargs`
            its other arguments (e.g. `teacher_model=`).

    After `train()`: `model` (the average), `ema_model` (with `imwa_ema_decay`), `history` (one record per episode:
    each replica's last logged loss) and `log_history` (every replica's logs, tagged with episode and replica).
    """

    def __init__(
        self,
        model: nn.Module,
        args: IMWAConfig,
        train_dataset=None,
        eval_dataset=None,
        data_collator=None,
        processing_class=None,
        compute_metrics=None,
        callbacks: Sequence[TrainerCallback] | None = None,
        trainer_cls: type[Trainer] = Trainer,
        **trainer_kwargs,
    ):
        if not isinstance(args, IMWAConfig):
            raise TypeError(f"IMWATrainer takes an IMWAConfig, got {type(args).__name__}.")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise RuntimeError(
                "IMWATrainer trains its replicas in turn in one process; one replica per process under a launcher "
                "is not implemented yet. Run it without accelerate launch / torchrun."
            )
        if train_dataset is None:
            raise ValueError("IMWATrainer needs a train_dataset.")
        self.model = model
        self.args = args
        self.train_dataset = train_dataset
        self.eval_dataset = eval_dataset
        self.data_collator = data_collator
        self.processing_class = processing_class
        self.compute_metrics = compute_metrics
        self.callbacks = list(callbacks or [])
        self.trainer_cls = trainer_cls
        self.trainer_kwargs = trainer_kwargs
        self.ema_model: nn.Module | None = None
        self.history: list[dict] = []
        self.log_history: list[dict] = []

    def _trainer(self, model, args, callbacks=(), optimizers=(None, None)) -> Trainer:
        trainer = self.trainer_cls(
            model=model,
            args=args,
            train_dataset=self.train_dataset,
            eval_dataset=self.eval_dataset,
            data_collator=self.data_collator,
            processing_class=self.processing_class,
            compute_metrics=self.compute_metrics,
            callbacks=[*self.callbacks, *callbacks],
            optimizers=optimizers,
            **self.trainer_kwargs,
        )
        for quiet in (PrinterCallback, ProgressCallback):  # one bar for the whole run (IMWA's), no per-replica prints
            trainer.remove_callback(quiet)
        return trainer

    def train(self) -> nn.Module:
        """Run the E episodes of M replicas; returns `self.model`, now the final average."""
        args = self.args
        seeds = args.replica_seeds()
        replicas = [copy.deepcopy(self.model) for _ in seeds]
        emas = [_EMA(r, args.imwa_ema_decay) if args.imwa_ema_decay else None for r in replicas]
        optimizers: list[tuple] = [(None, None)] * len(replicas)
        bar = tqdm(total=args.imwa_episodes * len(replicas), desc="IMWA", disable=args.disable_tqdm)
        for episode in range(args.imwa_episodes):
            for m, (replica, seed) in enumerate(zip(replicas, seeds)):
                run_seed = seed * 1000 + episode  # its own data order (and dropout) in every episode
                episode_args = _plain_arguments(
                    args,
                    output_dir=os.path.join(args.output_dir, f"replica-{m}"),
                    max_steps=args.steps_per_episode,
                    seed=run_seed,
                    data_seed=run_seed,
                    save_strategy="no",
                    eval_strategy="no",
                    load_best_model_at_end=False,
                    disable_tqdm=True,
                )
                trainer = self._trainer(replica, episode_args, [e for e in (emas[m],) if e], optimizers[m])
                if optimizers[m][0] is None:  # one optimizer and schedule over the replica's whole budget
                    trainer.create_optimizer_and_scheduler(num_training_steps=args.max_steps)
                    optimizers[m] = (trainer.optimizer, trainer.lr_scheduler)
                elif args.imwa_optimizer_state == "reset":
                    optimizers[m][0].state.clear()
                trainer.train()
                logs = [{**entry, "imwa_episode": episode, "imwa_replica": m} for entry in trainer.state.log_history]
                self.log_history.extend(logs)
                bar.update()
            self._average(replicas, emas)
            losses = [e.get("train_loss") for e in self.log_history if e["imwa_episode"] == episode]
            self.history.append({"episode": episode, "train_loss": [x for x in losses if x is not None]})
        bar.close()
        return self.model

    def _average(self, replicas: list[nn.Module], emas: list[_EMA | None]) -> None:
        averaged = average_state_dicts([r.state_dict() for r in replicas])
        for model in (*replicas, self.model):
            model.load_state_dict(averaged)
        if emas[0] is not None:
            ema = average_state_dicts([e.state for e in emas])
            for e in emas:
                e.state = {k: v.clone() for k, v in ema.items()}
            if self.ema_model is None:
                self.ema_model = copy.deepcopy(self.model)
            self.ema_model.load_state_dict(ema)

    def evaluate(self, eval_dataset=None, model: nn.Module | None = None) -> dict[str, float]:
        """`Trainer.evaluate` of the average (or `model`, e.g. `ema_model`)."""
        args = _plain_arguments(self.args, output_dir=os.path.join(self.args.output_dir, "eval"), disable_tqdm=True)
        return self._trainer(model or self.model, args).evaluate(eval_dataset=eval_dataset)

    def save_model(self, output_dir: str) -> None:
        """Save the average (safetensors, with `save_pretrained` for transformers models)."""
        if isinstance(self.model, PreTrainedModel):
            self.model.save_pretrained(output_dir)
        else:
            args = _plain_arguments(self.args, output_dir=output_dir)
            self._trainer(self.model, args).save_model(output_dir)
