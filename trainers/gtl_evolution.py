"""Genetic Transfer Learning (GTL, "Transferring Core Knowledge via Learngenes", arXiv 2401.08139): the evolution
driver that finds a learngene by training a population of CNNs, selecting by tournaments, mutating and inheriting.

Per generation `g`, every individual `i`:

1. draws a task (`TaskSampler`: N-way K-shot from the base classes, labels remapped to `0..N-1`) from a generator
   seeded from `(seed, g, i)`, so that nothing depends on the order or the process in which individuals run;
2. builds its network with `model_init(n_way)` under a seed derived from `(seed, g, i)`. Generation 0 has no gene
   (the whole network is random); later, the individual inherits its parent's gene under its own (mutated) mask:
   `GTLModel.from_network(parent_trained_network, mask).inherit(fresh)`. Lamarckian: the gene's values are the
   parent's *trained* values;
3. trains on the support set with a `transformers.Trainer`; its fitness is the query accuracy (or minus the query
   loss).

Selection: the population is shuffled (seeded) into groups of `tournament_size`; the fittest of each group wins
(ties: the lower index). The winners fill the next population round-robin (child `j` descends from winner
`j % n_winners`), each child's mask being `mutate_mask(winner_mask, ...)`. Generation 0's masks are random
(`sample_mask`). The final learngene is the gene (mask + trained weights) of the last generation's fittest individual,
with its lineage (ancestors back to generation 0, each with its fitness) in its config.

The run folder (`args.output_dir`) holds `evolution/` (the resumable state: checkpoints per generation and every
finished individual, see `gtl_checkpoints.EvolutionFolder`) and `learngene/` (the final learngene,
`GTLModel.save_pretrained`). Everything is safetensors or JSON (never pickle). A run killed at any point and resumed
ends with the same learngene, bit for bit, as an uninterrupted run with the same seed.

Several processes (`accelerate launch`, torchrun, or anything that sets RANK / WORLD_SIZE / LOCAL_RANK), each made an
evolution process by `gtl_processes.evolution_process()` before its config is created: process `r` trains the
individuals `i` with `i % world_size == r`, each with a single-process `Trainer`; processes meet through the run
folder only: each writes its results, waits until the generation's results all exist (`gtl_processes.wait_for_all`),
and computes the same selection; rank 0 writes the checkpoints.

The pieces live in their own modules: the tasks in `gtl_tasks.py`, the checkpoint format and resume in
`gtl_checkpoints.py`, the processes and their rendezvous in `gtl_processes.py`; their public names are importable
from here too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
from collections.abc import Callable
from pathlib import Path

import datasets
import torch
import torch.nn.functional as F
import transformers
from datasets import Dataset
from safetensors.torch import load_model
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel, Trainer, TrainingArguments
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from hf_methods.hub import save_model_folder
from hf_methods.models.gtl import GTLModel, conv_layers, mutate_mask, sample_mask

from .gtl_checkpoints import STATE_FORMAT, EvolutionFolder, EvolutionState, individual_id  # noqa: F401 - public
from .gtl_config import GTLEvolutionConfig
from .gtl_processes import evolution_identity, evolution_process, wait_for_all  # noqa: F401 - public here too
from .gtl_tasks import TASK_TYPES, TaskSampler  # noqa: F401 - public here too

logger = logging.getLogger(__name__)

# Settings that must not change when a run is resumed (`generations` may grow: it continues a finished run).
_FINGERPRINT_FIELDS = (
    "seed",
    "population_size",
    "tournament_size",
    "gene_fraction",
    "granularity",
    "mutation_rate",
    "task_type",
    "n_way",
    "k_shot",
    "query_shots",
    "base_classes",
    "fitness",
    "learning_rate",
    "max_steps",
    "num_train_epochs",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "weight_decay",
    "lr_scheduler_type",
    "warmup_steps",
    "optim",
)


def derive_seed(seed: int, *keys) -> int:
    """A seed in [0, 2**31) derived from `seed` and `keys` (e.g. `("init", generation, individual)`), stable across
    processes, platforms and Python runs (a hash, not Python's randomized `hash`)."""
    digest = hashlib.sha256(json.dumps([seed, *keys]).encode()).digest()
    return int.from_bytes(digest[:8], "little") % 2**31


def _fitness_key(value: float) -> float:
    return -math.inf if value is None or math.isnan(value) else value


def tournament_selection(
    fitnesses: list[float], tournament_size: int, generator: torch.Generator
) -> tuple[list[list[int]], list[int]]:
    """Tournaments over a seeded shuffle: `(groups, winners)`.

    The individuals `0..len(fitnesses)-1` are shuffled with `torch.randperm(n, generator=generator)` and cut into
    consecutive groups of `tournament_size` (the last group is smaller when `tournament_size` does not divide `n`). The
    winner of a group is its fittest member; ties go to the lower individual index; NaN counts as -inf.
    """
    n = len(fitnesses)
    if not 1 <= tournament_size <= n:
        raise ValueError(f"tournament_size must be in [1, {n}] (the population size), got {tournament_size}.")
    order = torch.randperm(n, generator=generator).tolist()
    groups = [order[start : start + tournament_size] for start in range(0, n, tournament_size)]
    winners = [max(group, key=lambda i: (_fitness_key(fitnesses[i]), -i)) for group in groups]
    return groups, winners


@contextlib.contextmanager
def _no_library_bars():
    """Silence datasets' and transformers' own progress bars (index flattening, shard writing): the evolution shows
    one bar over individuals instead."""
    datasets_on = datasets.is_progress_bar_enabled()
    transformers_on = transformers.utils.logging.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    try:
        yield
    finally:
        if datasets_on:
            datasets.enable_progress_bars()
        if transformers_on:
            transformers.utils.logging.enable_progress_bar()


# ---------------------------------------------------------------------------------------------------------- driver
class GTLEvolution:
    """The GTL evolution driver (not a `Trainer`: it runs one `Trainer` per individual).

    Args:
        model_init: `model_init(num_labels) -> PreTrainedModel`, a freshly initialized CNN (e.g.
            `lambda n: VGGForImageClassification(VGGConfig(..., num_labels=n))`). The driver seeds torch before
            every call, so builds are reproducible.
        args: a `GTLEvolutionConfig` (evolution settings + each individual's training arguments).
        train_dataset: a `datasets.Dataset` with `pixel_values` and integer `labels`, from which tasks are drawn.
        callbacks: `TrainerCallback`s (classes or instances) given to every individual's `Trainer`.

    After `run()`: `history` (one dict per generation: `generation`, `fitnesses`, `best`, `mean`, `best_id`,
    `winners`), `lineage` (the final learngene's ancestors, oldest first, itself last, each with `id`, `generation`,
    `index`, `parent`, `fitness`, `query_accuracy`, `query_loss`, `classes`) and `gene` (the final `GTLModel`).
    """

    def __init__(
        self,
        model_init: Callable[[int], PreTrainedModel],
        args: GTLEvolutionConfig,
        train_dataset: Dataset,
        callbacks: list | None = None,
    ):
        if not isinstance(args, GTLEvolutionConfig):
            raise TypeError(f"args must be a GTLEvolutionConfig, got {type(args).__name__}.")
        if not callable(model_init):
            raise TypeError("model_init must be a callable: model_init(num_labels) -> a freshly initialized CNN.")
        if not isinstance(train_dataset, Dataset):
            raise TypeError(f"train_dataset must be a datasets.Dataset, got {type(train_dataset).__name__}.")
        # set by `evolution_process()` under a launcher (the config refuses a launcher's environment without it)
        self.rank, self.world_size, self.local_rank = evolution_identity()
        self.model_init = model_init
        self.args = args
        self.train_dataset = train_dataset
        self.callbacks = list(callbacks or [])
        self.sampler = TaskSampler.from_config(train_dataset, args)  # checks the data before any training
        self.run_dir = Path(args.output_dir)
        self.folder = EvolutionFolder(self.run_dir)
        self.evolution_dir = self.folder.path
        self.history: list[dict] = []
        self.lineage: list[dict] = []
        self.gene: GTLModel | None = None
        self._layers = None
        self._fingerprint = None

    # ------------------------------------------------------------------ public
    def run(self, resume: bool = True) -> GTLModel:
        """Run (or continue) the evolution and return the final learngene (also saved to `output_dir/learngene`).

        `resume=True` (default) continues from the latest checkpoint in `output_dir/evolution/` (and reuses every
        finished individual); a finished run is not retrained. `resume=False` refuses to touch a folder that already
        holds a run (FileExistsError): delete it or choose another `output_dir` to start afresh; nothing is
        overwritten implicitly. (With several processes, ranks > 0 cannot tell rank 0's fresh generation-0 files from
        an old run's, so they refuse only a run that got past generation 0; rank 0 refuses any.)
        """
        with _no_library_bars():
            return self._run(resume)

    def _run(self, resume: bool) -> GTLModel:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            raise RuntimeError(
                "torch.distributed is initialized in this process, but GTL evolution processes train different "
                "networks and must not share a process group: do not create an Accelerator / process group before "
                "run()."
            )
        args = self.args
        if self.world_size == 1:  # temporary folders of a killed run (nobody else is writing)
            self.folder.remove_temporary()
        self._layers = self._probe_layers()
        self._fingerprint = self._make_fingerprint()
        state = None
        if resume:
            state = self.folder.load_latest(self._fingerprint)
        elif self.folder.has_run(beyond_generation_zero=self.rank != 0):
            raise FileExistsError(
                f"{self.evolution_dir} already holds a GTL evolution run. Pass resume=True to continue it, or delete "
                "that folder (or choose another output_dir) to start afresh."
            )
        if state is None:
            state = self._initial_state()
            if self.rank == 0:
                self._write_checkpoint(state)
        if state.generation > args.generations:
            raise ValueError(
                f"The run in {self.evolution_dir} already finished {state.generation} generations, more than "
                f"generations={args.generations}; set generations >= {state.generation} (or use another output_dir)."
            )
        mine = [i for i in range(args.population_size) if i % self.world_size == self.rank]
        bar = tqdm(
            total=len(mine) * (args.generations - state.generation),
            desc="GTL evolution",
            unit="individual",
            disable=bool(args.disable_tqdm) or self.rank != 0,
            dynamic_ncols=True,
        )
        try:
            while state.generation < args.generations:
                g = state.generation
                bar.set_description(f"GTL generation {g + 1}/{args.generations}")
                parents: dict[str, nn.Module] = {}
                for i in mine:
                    if not self.folder.has_result(g, i):
                        self._train_individual(state, i, parents)
                    bar.update(1)
                parents.clear()
                results = self._gather(g)
                state = self._advance(state, results)
                self.history = [dict(entry) for entry in state.history]
                entry = state.history[-1]
                line = (
                    f"generation {g} ({g + 1}/{args.generations}): best {entry['best']:.4g} mean "
                    f"{entry['mean']:.4g} (gene {entry['best_id']})"
                )
                if self.rank == 0:
                    if bar.disable:
                        logger.info(line)
                    else:
                        bar.write(line)
                    self._write_checkpoint(state)
        finally:
            bar.close()
            self.folder.remove_scratch(self.rank)
        self.history = [dict(entry) for entry in state.history]
        self.gene = self._final_gene(state)
        if self.rank == 0:
            save_model_folder(self.gene, self.run_dir / "learngene")
        return self.gene

    # ------------------------------------------------------------------ setup
    def _build(self, seed: int) -> PreTrainedModel:
        transformers.set_seed(seed)
        model = self.model_init(self.args.n_way)
        if not isinstance(model, nn.Module):
            raise TypeError(f"model_init({self.args.n_way}) must return a torch model, got {type(model).__name__}.")
        labels = getattr(getattr(model, "config", None), "num_labels", self.args.n_way)
        if labels != self.args.n_way:
            raise ValueError(
                f"model_init({self.args.n_way}) returned a model with num_labels={labels}; it must build a classifier "
                f"with as many outputs as the argument it gets (n_way={self.args.n_way})."
            )
        return model

    def _probe_layers(self):
        return conv_layers(self._build(derive_seed(self.args.seed, "probe")))

    def _make_fingerprint(self) -> dict:
        args = self.args
        fingerprint = {}
        for name in _FINGERPRINT_FIELDS:
            value = getattr(args, name, None)
            fingerprint[name] = getattr(value, "value", value)
        fingerprint["conv_layers"] = [layer.to_dict() for layer in self._layers]
        fingerprint["train_dataset_rows"] = len(self.train_dataset)
        return json.loads(json.dumps(fingerprint))  # as it reads back from JSON (tuples -> lists)

    def _fingerprint_hash(self) -> str:
        return hashlib.sha256(json.dumps(self._fingerprint, sort_keys=True).encode()).hexdigest()[:16]

    def _initial_state(self) -> EvolutionState:
        args = self.args
        rng = torch.Generator().manual_seed(derive_seed(args.seed, "evolution"))
        masks = [
            sample_mask(self._layers, args.gene_fraction, args.granularity, generator=rng)
            for _ in range(args.population_size)
        ]
        population = [{"id": individual_id(0, i), "index": i, "parent": None} for i in range(args.population_size)]
        return EvolutionState(0, population, masks, {}, [], [], rng)

    # ------------------------------------------------------------------ one individual
    def _individual_args(self, g: int, i: int) -> TrainingArguments:
        args = self.args
        values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainingArguments) if f.init}
        values.update(
            output_dir=str(self.folder.scratch_dir(self.rank)),
            seed=derive_seed(args.seed, "train", g, i),
            data_seed=None if args.data_seed is None else derive_seed(args.data_seed, "data", g, i),
            save_strategy="no",
            eval_strategy="no",
            load_best_model_at_end=False,
            report_to="none",
            disable_tqdm=True,
            push_to_hub=False,
            resume_from_checkpoint=None,
        )
        return TrainingArguments(**values)

    def _trained_network(self, ident: str) -> PreTrainedModel:
        network = self._build(derive_seed(self.args.seed, "load"))  # every tensor is overwritten below
        load_model(network, self.folder.weights_file(ident), strict=True)
        return network

    def _train_individual(self, state: EvolutionState, i: int, parents: dict) -> None:
        args, g = self.args, state.generation
        me = state.population[i]
        support, query, classes = self.sampler.sample(
            torch.Generator().manual_seed(derive_seed(args.seed, "task", g, i))
        )
        parent = me["parent"]
        gene_parameters = 0
        if parent is not None and parent not in parents:
            parents[parent] = self._trained_network(parent)
        network = self._build(derive_seed(args.seed, "init", g, i))
        if parent is not None:
            gene = GTLModel.from_network(parents[parent], state.masks[i], lineage=self._ancestry(state, parent))
            network = gene.inherit(network)
            gene_parameters = gene.num_gene_parameters
        trainer = Trainer(
            model=network, args=self._individual_args(g, i), train_dataset=support, callbacks=list(self.callbacks)
        )
        for callback in (PrinterCallback, ProgressCallback):
            trainer.remove_callback(callback)
        train_output = trainer.train()
        accuracy, loss = self._evaluate(network, query, trainer.args.per_device_eval_batch_size)
        network.to("cpu")
        result = {
            "id": me["id"],
            "generation": g,
            "index": i,
            "parent": parent,
            "fitness": accuracy if args.fitness == "query_accuracy" else -loss,
            "query_accuracy": accuracy,
            "query_loss": loss,
            "train_loss": train_output.training_loss,
            "classes": classes,
            "support_size": len(support),
            "query_size": len(query),
            "gene_parameters": gene_parameters,
            "fingerprint": self._fingerprint_hash(),
        }
        self.folder.write_result(g, i, network, result)
        del trainer

    @torch.no_grad()
    def _evaluate(self, model: nn.Module, query: Dataset, batch_size: int) -> tuple[float, float]:
        """Query accuracy and mean cross-entropy of a trained network."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        correct, loss, count = 0, 0.0, 0
        for start in range(0, len(query), batch_size):
            batch = query[start : start + batch_size]
            labels = batch["labels"].to(device)
            logits = model(pixel_values=batch["pixel_values"].to(device)).logits.float()
            loss += F.cross_entropy(logits, labels, reduction="sum").item()
            correct += (logits.argmax(-1) == labels).sum().item()
            count += len(labels)
        model.train(was_training)
        return correct / count, loss / count

    # ------------------------------------------------------------------ a generation's end
    def _gather(self, g: int) -> list[dict]:
        """Every result of generation `g`, waiting for the other processes' (no new result for `sync_timeout`
        seconds is an error)."""
        n = self.args.population_size
        wait_for_all(
            n,
            lambda i: self.folder.has_result(g, i),
            generation=g,
            world_size=self.world_size,
            timeout=self.args.sync_timeout,
        )
        results = []
        for i in range(n):
            result = self.folder.read_result(g, i)
            if result.get("fingerprint") != self._fingerprint_hash():
                raise ValueError(
                    f"{self.folder.result_dir(g, i)} was trained with other settings than this run's (fingerprint "
                    f"{result.get('fingerprint')} vs {self._fingerprint_hash()}). Use the same settings to resume, or "
                    "another output_dir to start afresh."
                )
            results.append(result)
        return results

    def _advance(self, state: EvolutionState, results: list[dict]) -> EvolutionState:
        """Selection, mutation and inheritance: the state at the start of the next generation."""
        args, g = self.args, state.generation
        fitnesses = [r["fitness"] for r in results]
        _, winners = tournament_selection(fitnesses, args.tournament_size, state.rng)
        best = max(range(len(fitnesses)), key=lambda i: (_fitness_key(fitnesses[i]), -i))
        keys = ("id", "generation", "index", "parent", "fitness", "query_accuracy", "query_loss", "classes")
        records = [*state.records, [{k: r[k] for k in keys} for r in results]]
        finite = [f for f in fitnesses if f is not None and math.isfinite(f)]
        history = [
            *state.history,
            {
                "generation": g,
                "fitnesses": fitnesses,
                "best": fitnesses[best],
                "mean": sum(finite) / len(finite) if finite else math.nan,
                "best_id": results[best]["id"],
                "winners": [results[w]["id"] for w in winners],
            },
        ]
        parent_of = [winners[j % len(winners)] for j in range(args.population_size)]
        masks = [mutate_mask(state.masks[p], self._layers, args.mutation_rate, generator=state.rng) for p in parent_of]
        population = [
            {"id": individual_id(g + 1, j), "index": j, "parent": results[p]["id"]} for j, p in enumerate(parent_of)
        ]
        kept = sorted({*winners, best})
        parent_masks = {results[w]["id"]: state.masks[w] for w in kept}
        return EvolutionState(g + 1, population, masks, parent_masks, records, history, state.rng)

    def _ancestry(self, state: EvolutionState, ident: str | None) -> list[dict]:
        """The records of `ident` and its ancestors, oldest first."""
        by_id = {r["id"]: r for generation in state.records for r in generation}
        chain = []
        while ident is not None:
            record = by_id[ident]
            chain.append(dict(record))
            ident = record["parent"]
        return chain[::-1]

    def _final_gene(self, state: EvolutionState) -> GTLModel:
        best_id = state.history[-1]["best_id"]
        self.lineage = self._ancestry(state, best_id)
        network = self._trained_network(best_id)
        return GTLModel.from_network(network, state.parent_masks[best_id], lineage=self.lineage)

    # ------------------------------------------------------------------ checkpoints
    def _write_checkpoint(self, state: EvolutionState) -> None:
        self.folder.write_checkpoint(
            state,
            fingerprint=self._fingerprint,
            generations=self.args.generations,
            granularity=self.args.granularity,
            gene_fraction=self.args.gene_fraction,
            keep_individuals=self.args.save_individuals,
        )
