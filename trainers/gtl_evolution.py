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

The run folder (`args.output_dir`):

    evolution/generation-XXX/      the state at the start of generation XXX, written atomically by rank 0:
        state.json                 generation, population (ids, parents), every finished individual's record,
                                   history, a fingerprint of the settings
        masks.safetensors          the population's masks ("<individual>/<conv name>")
        parent_masks.safetensors   the masks of the previous generation's winners (and fittest)
        parents/<id>.safetensors   their trained weights (hard links to the individuals' files)
        rng.safetensors            the evolution generator's state (selection shuffles, mutations)
    evolution/individuals/gG-iI/   each finished individual (model.safetensors + result.json), written atomically
                                   as soon as it finishes, so a resumed run trains only the missing ones
    learngene/                     the final learngene (`GTLModel.save_pretrained`)

Everything is safetensors or JSON (never pickle). A run killed at any point and resumed ends with the same
learngene, bit for bit, as an uninterrupted run with the same seed.

Several processes (`accelerate launch`, torchrun, or anything that sets RANK / WORLD_SIZE / LOCAL_RANK): process `r`
trains the individuals `i` with `i % world_size == r`, each with a single-process `Trainer` (see
`gtl_config.evolution_process`); processes meet through the run folder only: each writes its results, waits until the
generation's results all exist, and computes the same selection; rank 0 writes the checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import datasets
import numpy as np
import torch
import torch.nn.functional as F
import transformers
from datasets import ClassLabel, Dataset, Value
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel, Trainer, TrainingArguments
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from hf_methods.models.gtl import GeneMask, GTLModel, conv_layers, mutate_mask, sample_mask

from .gtl_config import TASK_TYPES, GTLEvolutionConfig, evolution_process

logger = logging.getLogger(__name__)

STATE_FORMAT = 1
_POLL_SECONDS = 0.2
# Settings that must not change when a run is resumed (`generations` may grow: it continues a finished run).
_FINGERPRINT_FIELDS = (
    "seed", "population_size", "tournament_size", "gene_fraction", "granularity", "mutation_rate", "task_type",
    "n_way", "k_shot", "query_shots", "base_classes", "fitness", "learning_rate", "max_steps", "num_train_epochs",
    "per_device_train_batch_size", "gradient_accumulation_steps", "weight_decay", "lr_scheduler_type", "warmup_steps",
    "optim",
)


def derive_seed(seed: int, *keys) -> int:
    """A seed in [0, 2**31) derived from `seed` and `keys` (e.g. `("init", generation, individual)`), stable across
    processes, platforms and Python runs (a hash, not Python's randomized `hash`)."""
    digest = hashlib.sha256(json.dumps([seed, *keys]).encode()).digest()
    return int.from_bytes(digest[:8], "little") % 2**31


def individual_id(generation: int, index: int) -> str:
    return f"g{generation}-i{index}"


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
    groups = [order[start:start + tournament_size] for start in range(0, n, tournament_size)]
    winners = [max(group, key=lambda i: (_fitness_key(fitnesses[i]), -i)) for group in groups]
    return groups, winners


# ---------------------------------------------------------------------------------------------------------- tasks
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
            raise ValueError(f"need n_way >= 2, k_shot >= 1 and query_shots >= 1, got {n_way}, {k_shot}, {query_shots}.")
        labels = np.asarray(dataset.with_format("numpy", columns=[label_column])[label_column])
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"`{label_column}` must hold one integer class label per example, got dtype {labels.dtype}.")
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
            what = (f"k_shot + query_shots = {k_shot} + {query_shots}" if task_type == "n_way_k_shot"
                    else f"query_shots + 1 = {query_shots} + 1 (at least one support example)")
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
                s, q = idx[: self.k_shot], idx[self.k_shot: self.k_shot + self.query_shots]
            else:
                q, s = idx[: self.query_shots], idx[self.query_shots:]
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


# ---------------------------------------------------------------------------------------------------------- state
@dataclasses.dataclass
class _State:
    """The evolution at the start of generation `generation` (what a checkpoint holds)."""

    generation: int
    population: list[dict]  # {"id", "index", "parent"} per individual
    masks: list[GeneMask]
    parent_masks: dict[str, GeneMask]  # the previous generation's winners (and fittest), by id
    records: list[list[dict]]  # one list of individual records per finished generation
    history: list[dict]
    rng: torch.Generator


def _atomic_dir(final: Path, write: Callable[[Path], None]) -> bool:
    """Write a folder with `write(tmp)` in a temporary sibling, then rename it to `final` (atomic on one file system).
    Returns False (and leaves the existing folder) when `final` already exists."""
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write(tmp)
        if final.exists():
            return False
        try:
            os.rename(tmp, final)
        except OSError:
            if final.exists():  # someone else finished the same folder first
                return False
            raise
        return True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, allow_nan=True) + "\n")


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


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
        self.rank, self.world_size, self.local_rank = evolution_process(use_cpu=bool(args.use_cpu))
        self.model_init = model_init
        self.args = args
        self.train_dataset = train_dataset
        self.callbacks = list(callbacks or [])
        self.sampler = TaskSampler.from_config(train_dataset, args)  # checks the data before any training
        self.run_dir = Path(args.output_dir)
        self.evolution_dir = self.run_dir / "evolution"
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
                "torch.distributed is initialized in this process, but GTL evolution processes train different networks "
                "and must not share a process group: do not create an Accelerator / process group before run()."
            )
        args = self.args
        if self.world_size == 1:  # temporary folders of a killed run (nobody else is writing)
            for tmp in [*self.evolution_dir.glob(".tmp-*"), *self.evolution_dir.glob("individuals/.tmp-*")]:
                shutil.rmtree(tmp, ignore_errors=True)
        self._layers = self._probe_layers()
        self._fingerprint = self._make_fingerprint()
        state = None
        if resume:
            state = self._load_latest()
        elif self._has_run(beyond_generation_zero=self.rank != 0):
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
            total=len(mine) * (args.generations - state.generation), desc="GTL evolution", unit="individual",
            disable=bool(args.disable_tqdm) or self.rank != 0, dynamic_ncols=True,
        )
        try:
            while state.generation < args.generations:
                g = state.generation
                bar.set_description(f"GTL generation {g + 1}/{args.generations}")
                parents: dict[str, nn.Module] = {}
                for i in mine:
                    if not self._result_dir(g, i).joinpath("result.json").exists():
                        self._train_individual(state, i, parents)
                    bar.update(1)
                parents.clear()
                results = self._gather(g)
                state = self._advance(state, results)
                self.history = [dict(entry) for entry in state.history]
                entry = state.history[-1]
                line = (f"generation {g} ({g + 1}/{args.generations}): best {entry['best']:.4g} mean "
                        f"{entry['mean']:.4g} (gene {entry['best_id']})")
                if self.rank == 0:
                    if bar.disable:
                        logger.info(line)
                    else:
                        bar.write(line)
                    self._write_checkpoint(state)
        finally:
            bar.close()
            shutil.rmtree(self.evolution_dir / ".scratch" / f"rank-{self.rank}", ignore_errors=True)
            with contextlib.suppress(OSError):
                (self.evolution_dir / ".scratch").rmdir()  # once every process has removed its own
        self.history = [dict(entry) for entry in state.history]
        self.gene = self._final_gene(state)
        if self.rank == 0:
            _atomic_replace_dir(self.run_dir / "learngene", self.gene.save_pretrained)
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

    def _initial_state(self) -> _State:
        args = self.args
        rng = torch.Generator().manual_seed(derive_seed(args.seed, "evolution"))
        masks = [sample_mask(self._layers, args.gene_fraction, args.granularity, generator=rng)
                 for _ in range(args.population_size)]
        population = [{"id": individual_id(0, i), "index": i, "parent": None} for i in range(args.population_size)]
        return _State(0, population, masks, {}, [], [], rng)

    # ------------------------------------------------------------------ one individual
    def _result_dir(self, generation: int, index: int) -> Path:
        return self.evolution_dir / "individuals" / individual_id(generation, index)

    def _individual_args(self, g: int, i: int) -> TrainingArguments:
        args = self.args
        values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainingArguments) if f.init}
        values.update(
            output_dir=str(self.evolution_dir / ".scratch" / f"rank-{self.rank}"),
            seed=derive_seed(args.seed, "train", g, i),
            data_seed=None if args.data_seed is None else derive_seed(args.data_seed, "data", g, i),
            save_strategy="no", eval_strategy="no", load_best_model_at_end=False, report_to="none",
            disable_tqdm=True, push_to_hub=False, resume_from_checkpoint=None,
        )
        return TrainingArguments(**values)

    def _weights_file(self, ident: str) -> Path:
        """Where an individual's trained weights are: its result folder, else a checkpoint's `parents/`."""
        candidates = [self.evolution_dir / "individuals" / ident / "model.safetensors"]
        candidates += [c / "parents" / f"{ident}.safetensors" for c in reversed(self._checkpoints())]
        for path in candidates:
            if path.exists():
                return path
        raise FileNotFoundError(
            f"The trained weights of individual {ident} are missing from {self.evolution_dir} (neither "
            f"individuals/{ident}/model.safetensors nor a checkpoint's parents/{ident}.safetensors); the run folder "
            "was changed by hand. Start afresh in another output_dir."
        )

    def _trained_network(self, ident: str) -> PreTrainedModel:
        network = self._build(derive_seed(self.args.seed, "load"))  # every tensor is overwritten below
        load_model(network, self._weights_file(ident), strict=True)
        return network

    def _train_individual(self, state: _State, i: int, parents: dict) -> None:
        args, g = self.args, state.generation
        me = state.population[i]
        support, query, classes = self.sampler.sample(torch.Generator().manual_seed(derive_seed(args.seed, "task", g, i)))
        parent = me["parent"]
        gene_parameters = 0
        if parent is not None and parent not in parents:
            parents[parent] = self._trained_network(parent)
        network = self._build(derive_seed(args.seed, "init", g, i))
        if parent is not None:
            gene = GTLModel.from_network(parents[parent], state.masks[i], lineage=self._ancestry(state, parent))
            network = gene.inherit(network)
            gene_parameters = gene.num_gene_parameters
        trainer = Trainer(model=network, args=self._individual_args(g, i), train_dataset=support,
                          callbacks=list(self.callbacks))
        for callback in (PrinterCallback, ProgressCallback):
            trainer.remove_callback(callback)
        train_output = trainer.train()
        accuracy, loss = self._evaluate(network, query, trainer.args.per_device_eval_batch_size)
        network.to("cpu")
        result = {
            "id": me["id"], "generation": g, "index": i, "parent": parent,
            "fitness": accuracy if args.fitness == "query_accuracy" else -loss,
            "query_accuracy": accuracy, "query_loss": loss, "train_loss": train_output.training_loss,
            "classes": classes, "support_size": len(support), "query_size": len(query),
            "gene_parameters": gene_parameters, "fingerprint": self._fingerprint_hash(),
        }

        def write(folder: Path):
            save_model(network, str(folder / "model.safetensors"))
            _write_json(folder / "result.json", result)

        _atomic_dir(self._result_dir(g, i), write)
        del trainer

    @torch.no_grad()
    def _evaluate(self, model: nn.Module, query: Dataset, batch_size: int) -> tuple[float, float]:
        """Query accuracy and mean cross-entropy of a trained network."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        correct, loss, count = 0, 0.0, 0
        for start in range(0, len(query), batch_size):
            batch = query[start:start + batch_size]
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
        seen, last_progress = -1, time.monotonic()
        while True:
            done = [i for i in range(n) if self._result_dir(g, i).joinpath("result.json").exists()]
            if len(done) == n:
                break
            missing = sorted(set(range(n)) - set(done))
            if self.world_size == 1:
                raise RuntimeError(f"Results of generation {g} individuals {missing} are missing after training them.")
            if len(done) > seen:
                seen, last_progress = len(done), time.monotonic()
            elif time.monotonic() - last_progress > self.args.sync_timeout:
                ranks = sorted({i % self.world_size for i in missing})
                raise TimeoutError(
                    f"Waited {self.args.sync_timeout:g} s without a new result for generation {g}: individuals "
                    f"{missing} (trained by rank(s) {ranks}) are missing; a process may have died. Run again to resume "
                    "(finished individuals are kept), and raise `sync_timeout` if one individual trains longer."
                )
            time.sleep(_POLL_SECONDS)
        results = []
        for i in range(n):
            result = json.loads(self._result_dir(g, i).joinpath("result.json").read_text())
            if result.get("fingerprint") != self._fingerprint_hash():
                raise ValueError(
                    f"{self._result_dir(g, i)} was trained with other settings than this run's (fingerprint "
                    f"{result.get('fingerprint')} vs {self._fingerprint_hash()}). Use the same settings to resume, or "
                    "another output_dir to start afresh."
                )
            results.append(result)
        return results

    def _advance(self, state: _State, results: list[dict]) -> _State:
        """Selection, mutation and inheritance: the state at the start of the next generation."""
        args, g = self.args, state.generation
        fitnesses = [r["fitness"] for r in results]
        _, winners = tournament_selection(fitnesses, args.tournament_size, state.rng)
        best = max(range(len(fitnesses)), key=lambda i: (_fitness_key(fitnesses[i]), -i))
        keys = ("id", "generation", "index", "parent", "fitness", "query_accuracy", "query_loss", "classes")
        records = [*state.records, [{k: r[k] for k in keys} for r in results]]
        finite = [f for f in fitnesses if f is not None and math.isfinite(f)]
        history = [*state.history, {
            "generation": g, "fitnesses": fitnesses, "best": fitnesses[best],
            "mean": sum(finite) / len(finite) if finite else math.nan, "best_id": results[best]["id"],
            "winners": [results[w]["id"] for w in winners],
        }]
        parent_of = [winners[j % len(winners)] for j in range(args.population_size)]
        masks = [mutate_mask(state.masks[p], self._layers, args.mutation_rate, generator=state.rng) for p in parent_of]
        population = [{"id": individual_id(g + 1, j), "index": j, "parent": results[p]["id"]}
                      for j, p in enumerate(parent_of)]
        kept = sorted({*winners, best})
        parent_masks = {results[w]["id"]: state.masks[w] for w in kept}
        return _State(g + 1, population, masks, parent_masks, records, history, state.rng)

    def _ancestry(self, state: _State, ident: str | None) -> list[dict]:
        """The records of `ident` and its ancestors, oldest first."""
        by_id = {r["id"]: r for generation in state.records for r in generation}
        chain = []
        while ident is not None:
            record = by_id[ident]
            chain.append(dict(record))
            ident = record["parent"]
        return chain[::-1]

    def _final_gene(self, state: _State) -> GTLModel:
        best_id = state.history[-1]["best_id"]
        self.lineage = self._ancestry(state, best_id)
        network = self._trained_network(best_id)
        return GTLModel.from_network(network, state.parent_masks[best_id], lineage=self.lineage)

    # ------------------------------------------------------------------ checkpoints
    def _checkpoints(self) -> list[Path]:
        if not self.evolution_dir.exists():
            return []
        found = [p for p in self.evolution_dir.glob("generation-*") if p.name.split("-")[-1].isdigit()]
        return sorted(found, key=lambda p: int(p.name.split("-")[-1]))

    def _has_run(self, beyond_generation_zero: bool = False) -> bool:
        """Whether the folder holds a run (any checkpoint or individual; or only those past generation 0)."""
        first = 1 if beyond_generation_zero else 0
        checkpoints = [c for c in self._checkpoints() if int(c.name.split("-")[-1]) >= first]
        individuals = [p for p in (self.evolution_dir / "individuals").glob("g*-i*")
                       if p.name[1:].split("-")[0].isdigit() and int(p.name[1:].split("-")[0]) >= first]
        return bool(checkpoints or individuals)

    def _write_checkpoint(self, state: _State) -> None:
        g = state.generation

        def write(folder: Path):
            _write_json(folder / "state.json", {
                "format": STATE_FORMAT, "generation": g, "generations": self.args.generations,
                "granularity": self.args.granularity, "gene_fraction": self.args.gene_fraction,
                "fingerprint": self._fingerprint, "population": state.population, "records": state.records,
                "history": state.history,
            })
            save_file({f"{i}/{name}": t for i, m in enumerate(state.masks) for name, t in m.state_dict().items()},
                      str(folder / "masks.safetensors"))
            parent_masks = {f"{ident}/{name}": t for ident, m in state.parent_masks.items()
                            for name, t in m.state_dict().items()}
            save_file(parent_masks or {"_empty": torch.zeros(0)}, str(folder / "parent_masks.safetensors"))
            save_file({"evolution": state.rng.get_state()}, str(folder / "rng.safetensors"))
            (folder / "parents").mkdir()
            for ident in state.parent_masks:
                _link_or_copy(self._weights_file(ident), folder / "parents" / f"{ident}.safetensors")

        _atomic_dir(self.evolution_dir / f"generation-{g:03d}", write)
        # Older state is no longer needed; keep the previous checkpoint and the previous generation's individuals, which
        # other processes may still be reading.
        for old in self._checkpoints():
            if int(old.name.split("-")[-1]) < g - 1:
                shutil.rmtree(old, ignore_errors=True)
        if not self.args.save_individuals:
            for folder in (self.evolution_dir / "individuals").glob("g*-i*"):
                generation = folder.name[1:].split("-")[0]
                if generation.isdigit() and int(generation) < g - 1:
                    shutil.rmtree(folder, ignore_errors=True)

    def _load_latest(self) -> _State | None:
        for attempt in range(3):  # another process may replace the latest checkpoint while it is read
            checkpoints = self._checkpoints()
            if not checkpoints:
                return None
            try:
                return self._load_checkpoint(checkpoints[-1])
            except FileNotFoundError:
                if attempt == 2:
                    raise
        return None

    def _load_checkpoint(self, folder: Path) -> _State:
        saved = json.loads((folder / "state.json").read_text())
        if saved.get("format") != STATE_FORMAT:
            raise ValueError(f"{folder} has state format {saved.get('format')}, this version reads {STATE_FORMAT}.")
        if saved["fingerprint"] != self._fingerprint:
            diffs = [f"{k}: checkpoint {saved['fingerprint'].get(k)!r}, now {self._fingerprint.get(k)!r}"
                     for k in sorted(set(saved["fingerprint"]) | set(self._fingerprint))
                     if saved["fingerprint"].get(k) != self._fingerprint.get(k)]
            raise ValueError(
                f"Cannot resume the GTL run in {self.evolution_dir}: its settings differ from this run's ("
                + "; ".join(diffs) + "). Use the same settings (only `generations` may grow), or another output_dir "
                "to start afresh."
            )
        granularity, fraction = saved["granularity"], saved["gene_fraction"]

        def masks_by_prefix(tensors: dict) -> dict[str, GeneMask]:
            grouped: dict[str, dict] = {}
            for key, tensor in tensors.items():
                if key == "_empty":
                    continue
                prefix, name = key.split("/", 1)
                grouped.setdefault(prefix, {})[name] = tensor
            return {p: GeneMask.from_state_dict(d, granularity, fraction) for p, d in grouped.items()}

        population_masks = masks_by_prefix(load_file(str(folder / "masks.safetensors")))
        rng = torch.Generator()
        rng.set_state(load_file(str(folder / "rng.safetensors"))["evolution"])
        return _State(
            generation=saved["generation"], population=saved["population"],
            masks=[population_masks[str(i)] for i in range(len(saved["population"]))],
            parent_masks=masks_by_prefix(load_file(str(folder / "parent_masks.safetensors"))),
            records=saved["records"], history=saved["history"], rng=rng,
        )


def _atomic_replace_dir(final: Path, save: Callable[[str], None]) -> None:
    """`save(folder)` into a temporary sibling, then swap it in place of `final` (replacing an older one)."""
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        save(str(tmp))
        if final.exists():
            old = final.parent / f".old-{final.name}-{os.getpid()}"
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
