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

Under `torchrun --nproc_per_node M` / `accelerate launch --num_processes M` (M = `imwa_replicas`) each process trains
one replica (rank r: replica r) exactly as the one-process mode would, without DistributedDataParallel or data sharding
(see `_LocalReplica`), and the processes average their weights and EMAs with all-reduces (`_all_average`).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import os
from collections.abc import Mapping, Sequence

import torch
import torch.distributed as dist
from accelerate.utils import DistributedType
from torch import nn
from tqdm.auto import tqdm
from transformers import (
    PreTrainedModel,
    PrinterCallback,
    ProgressCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    get_scheduler,
)

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


def _all_average(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`average_state_dicts` over the processes of a launch, one state dict each, with all-reduces: every process gets
    the average. Floating tensors are summed in float64 and divided by the process count (exact for equal copies),
    integer tensors take the maximum, bool tensors stay as they are."""
    world = dist.get_world_size()
    averaged = {}
    for key, value in state_dict.items():
        if value.dtype == torch.bool:
            averaged[key] = value.clone()
        elif value.is_floating_point() or value.is_complex():
            total = value.to(torch.complex128 if value.is_complex() else torch.float64, copy=True)
            dist.all_reduce(total, op=dist.ReduceOp.SUM)
            averaged[key] = (total / world).to(value.dtype)
        else:
            averaged[key] = value.clone()
            dist.all_reduce(averaged[key], op=dist.ReduceOp.MAX)
    return averaged


class _OneProcess:
    """A launch's `PartialState`/`AcceleratorState` as one replica's trainer must see it: one process of its own, not
    distributed. Everything else (device, plugins, mixed precision) is the wrapped state's."""

    num_processes = 1
    process_index = 0
    is_main_process = is_local_main_process = True
    distributed_type = DistributedType.NO
    use_distributed = False

    def __init__(self, state):
        self._state = state

    def __getattr__(self, name):
        if name == "_state":  # not set yet (copy, unpickling)
            raise AttributeError(name)
        return getattr(self._state, name)


class _LocalReplica:
    """Mixin for a replica's `Trainer` under a launch: it trains its replica alone, as one process would.

    A stock `Trainer` there would wrap the model in DistributedDataParallel (gradients averaged over the processes,
    i.e. over the replicas), give each process a shard of the data, and average the logged loss over the processes.
    Rather than override its data and model preparation (transformers internals), the trainer's `Accelerator` and
    `TrainingArguments` get a one-process view of the launch (`_OneProcess`) right after the Accelerator is made and
    before anything is prepared: accelerate then places the model without wrapping it, and prepares the whole dataset
    with the replica's own `data_seed`, as with one process; the Trainer sees `world_size` 1. Mixed into `trainer_cls`
    (any `Trainer` subclass), which must not talk to `torch.distributed` itself; DeepSpeed and FSDP, which shard one
    model over the processes, are refused.
    """

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:
            raise ValueError(
                "IMWATrainer trains one whole replica per process; DeepSpeed and FSDP (one model sharded over the "
                "processes) are not supported. Launch without a DeepSpeed/FSDP config."
            )
        self.accelerator.state = _OneProcess(self.accelerator.state)
        self.args.distributed_state = _OneProcess(self.args.distributed_state)


@functools.cache
def _local(trainer_cls: type[Trainer]) -> type[Trainer]:
    return type(f"_Local{trainer_cls.__name__}", (_LocalReplica, trainer_cls), {})


class _EMA(TrainerCallback):
    """An exponential moving average of a replica's floating weights, updated after every optimizer step."""

    def __init__(self, model: nn.Module, decay: float):
        self.model = model
        self.decay = decay
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def on_train_begin(self, args, state, control, **kwargs):
        self.state = {k: v.to(args.device) for k, v in self.state.items()}  # where the Trainer put the model

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


def _optimizer_and_schedule(trainer: Trainer, args: TrainingArguments) -> tuple:
    """The trainer's optimizer and a schedule over the whole budget (`args.max_steps`). Not `create_scheduler`: the
    Trainer rebuilds a schedule it created itself for each `train()` (here: one episode's steps), so later episodes
    would restart it."""
    optimizer = trainer.create_optimizer()
    warmup = args.get_warmup_steps(args.max_steps)
    schedule = get_scheduler(
        args.lr_scheduler_type,
        optimizer,
        num_warmup_steps=warmup,
        num_training_steps=args.max_steps,
        scheduler_specific_kwargs=args.lr_scheduler_kwargs,
    )
    trainer.lr_scheduler = schedule
    return optimizer, schedule


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

    Launched (WORLD_SIZE = `imwa_replicas` processes), process r trains replica r only, and after every episode the
    processes all-reduce the average, so each holds the same `model` and `ema_model`; the logs are gathered too, so
    `history` and `log_history` are the whole run's on every process (rank 0 included), as in one process. Call
    `train`, `evaluate` (a distributed evaluation of the average) and `save_model` (writes on the main process only)
    on every process.
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
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size > 1 and world_size != args.imwa_replicas:
            raise ValueError(
                f"IMWATrainer under a launcher trains one replica per process, but imwa_replicas={args.imwa_replicas} "
                f"and {world_size} processes were launched. Launch imwa_replicas processes (torchrun --nproc_per_node "
                f"{args.imwa_replicas}, accelerate launch --num_processes {args.imwa_replicas}) or set "
                f"imwa_replicas={world_size}."
            )
        self._launched = world_size > 1
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

    def _trainer(self, model, args, callbacks=(), optimizers=(None, None), local=False) -> Trainer:
        trainer_cls = _local(self.trainer_cls) if local and self._launched else self.trainer_cls
        trainer = trainer_cls(
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
        mine = [args.process_index] if self._launched else list(range(len(seeds)))  # the replicas trained here
        replicas = [copy.deepcopy(self.model) for _ in mine]
        emas = [_EMA(r, args.imwa_ema_decay) if args.imwa_ema_decay else None for r in replicas]
        optimizers: list[tuple] = [(None, None)] * len(replicas)
        quiet = args.disable_tqdm or args.process_index != 0  # launched: the main process's bar only
        bar = tqdm(total=args.imwa_episodes * len(mine), desc="IMWA", disable=quiet)
        for episode in range(args.imwa_episodes):
            episode_logs = []
            for i, (m, replica) in enumerate(zip(mine, replicas)):
                run_seed = seeds[m] * 1000 + episode  # its own data order (and dropout) in every episode
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
                trainer = self._trainer(replica, episode_args, [e for e in (emas[i],) if e], optimizers[i], local=True)
                if optimizers[i][0] is None:  # one optimizer and schedule over the replica's whole budget
                    optimizers[i] = _optimizer_and_schedule(trainer, args)
                elif args.imwa_optimizer_state == "reset":
                    optimizers[i][0].state.clear()
                trainer.train()
                episode_logs += [{**e, "imwa_episode": episode, "imwa_replica": m} for e in trainer.state.log_history]
                bar.update()
            if self._launched:  # every process gets every replica's logs, in replica order
                gathered = [None] * dist.get_world_size()
                dist.all_gather_object(gathered, episode_logs)
                episode_logs = [entry for logs in gathered for entry in logs]
            self.log_history.extend(episode_logs)
            self._average(replicas, emas)
            losses = [e.get("train_loss") for e in self.log_history if e["imwa_episode"] == episode]
            self.history.append({"episode": episode, "train_loss": [x for x in losses if x is not None]})
        bar.close()
        return self.model

    def _average(self, replicas: list[nn.Module], emas: list[_EMA | None]) -> None:
        averaged = self._mean([r.state_dict() for r in replicas])
        for model in (*replicas, self.model):
            model.load_state_dict(averaged)
        if emas[0] is not None:
            ema = self._mean([e.state for e in emas])
            for e in emas:
                e.state = {k: v.clone() for k, v in ema.items()}
            if self.ema_model is None:
                self.ema_model = copy.deepcopy(self.model)
            self.ema_model.load_state_dict(ema)

    def _mean(self, state_dicts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """The replicas' average: of this process's one replica with the others' (`_all_average`) when launched."""
        return _all_average(state_dicts[0]) if self._launched else average_state_dicts(state_dicts)

    def evaluate(self, eval_dataset=None, model: nn.Module | None = None) -> dict[str, float]:
        """`Trainer.evaluate` of the average (or `model`, e.g. `ema_model`)."""
        args = _plain_arguments(self.args, output_dir=os.path.join(self.args.output_dir, "eval"), disable_tqdm=True)
        return self._trainer(model or self.model, args).evaluate(eval_dataset=eval_dataset)

    def save_model(self, output_dir: str) -> None:
        """Save the average (safetensors, with `save_pretrained` for transformers models); launched, from the main
        process only (every process holds the same average)."""
        if self._launched and self.args.process_index != 0:
            return
        if isinstance(self.model, PreTrainedModel):
            self.model.save_pretrained(output_dir)
        else:
            args = _plain_arguments(self.args, output_dir=output_dir)
            self._trainer(self.model, args).save_model(output_dir)
