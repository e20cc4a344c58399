"""Arguments for `GTLEvolution` (Genetic Transfer Learning, "Transferring Core Knowledge via Learngenes",
arXiv 2401.08139)."""

import math
from dataclasses import dataclass, field
from typing import Literal

from transformers import TrainingArguments

from hf_methods.models.gtl import GRANULARITIES

from .gtl_processes import evolution_process, refuse_launcher_environment  # noqa: F401 - was defined here
from .gtl_tasks import TASK_TYPES

FITNESSES = ("query_accuracy", "neg_query_loss")


@dataclass
class GTLEvolutionConfig(TrainingArguments):
    r"""
    [`~transformers.TrainingArguments`] plus the evolution settings of [`GTLEvolution`] (Genetic Transfer Learning).

    The `TrainingArguments` fields are the settings of every individual's training: `learning_rate`,
    `per_device_train_batch_size`, `max_steps` (the per-individual training budget; with `max_steps=-1`,
    `num_train_epochs` over the support set), `optim`, `weight_decay`, ... `seed` seeds the whole evolution (each
    individual's task, initialization and training seeds are derived from `(seed, generation, individual)`);
    `output_dir` is the run folder (`evolution/` holds the resumable state, `learngene/` the final learngene);
    `disable_tqdm` switches the evolution's progress bar. Each individual's `Trainer` never saves checkpoints, never
    evaluates, reports to nothing and shows no bar of its own, whatever `save_strategy`, `eval_strategy`, `report_to`
    and `disable_tqdm` say.

    Every constant below except `gene_fraction` is unknown from the paper's available text; the defaults are documented
    choices (GRL, the authors' reference code for RL agents, uses tournaments of 3).

    Inheritance is Lamarckian: a child starts from its parent's *trained* values at the child's (mutated) mask, the
    rest of its network freshly initialized; the paper passes on what an individual learned, and a Darwinian variant
    (genes never updated by training) would have nothing to evolve but the masks, so it is not offered.

    Under `accelerate launch` / torchrun, each process trains its share of the individuals (individual `i` on rank
    `i % world_size`), each with a single-process `Trainer`. Call `evolution_process()` (from
    `hf_methods.trainers.gtl_processes`, as the GTL recipe does) first in every process, before creating this config or
    any `Accelerator` and before CUDA use: it reads `RANK` / `WORLD_SIZE` / `LOCAL_RANK`, removes the launcher's
    variables from `os.environ` and pins the process to its `LOCAL_RANK` GPU. This config changes no environment
    variable: created while the launcher's variables are still set (which would make it join the launcher's process
    group), it raises an error saying so.

    Parameters:
        population_size (`int`, *optional*, defaults to `8`):
            Individuals per generation (each trains one network on its own task).
        tournament_size (`int`, *optional*, defaults to `2`):
            Individuals per tournament, in `[1, population_size]`. Each generation the population is shuffled into
            consecutive groups of this size (the last one smaller when it does not divide `population_size`); the
            fittest of each group wins (ties: the lower individual index). GRL uses 3.
        generations (`int`, *optional*, defaults to `5`):
            Generations to run. Raising it on a finished run's folder continues that run.
        gene_fraction (`float`, *optional*, defaults to `0.2`):
            The learngene's budget, a fraction of the convolution weights in `(0, 1]` (the paper's "20% parameters").
        granularity (`str`, *optional*, defaults to `"channel"`):
            What a gene selects: `"channel"` (output channels, the paper's "channel subsets within convolutional
            kernels"), `"kernel"` (single k x k kernels) or `"layer"` (whole convolutions).
        mutation_rate (`float`, *optional*, defaults to `0.1`):
            In `[0, 1]`: each unit of a winner's gene is swapped for a unit outside it with this probability when it
            is passed to a child (the budget stays exact), so about this fraction of the units changes per child.
        task_type (`str`, *optional*, defaults to `"n_way_k_shot"`):
            The environment each individual learns in. `"n_way_k_shot"`: `n_way` classes drawn from `base_classes`,
            `k_shot` support (training) and `query_shots` query (fitness) examples per class. `"class_subset"`:
            `n_way` classes, all their examples; `query_shots` per class form the query set, the rest the support set.
            Labels are remapped to `0 .. n_way - 1` in the order the classes were drawn.
        n_way (`int`, *optional*, defaults to `5`):
            Classes per task (>= 2, at most the number of base classes).
        k_shot (`int`, *optional*, defaults to `10`):
            Support examples per class (`"n_way_k_shot"` only).
        query_shots (`int`, *optional*, defaults to `15`):
            Query examples per class, on which the fitness is measured (15 is the few-shot convention).
        base_classes (`list[int]`, *optional*):
            The labels tasks are drawn from (e.g. the 64 base classes of miniImageNet); None: every label of the
            training set.
        fitness (`str`, *optional*, defaults to `"query_accuracy"`):
            `"query_accuracy"`: accuracy on the query set after training. `"neg_query_loss"`: minus the mean query
            cross-entropy (separates individuals that tie in accuracy on small query sets).
        save_individuals (`bool`, *optional*, defaults to `False`):
            Keep every individual's trained weights under `evolution/individuals/`. By default a generation's weights
            are deleted once the following generation has finished (resuming needs only the last finished one's, and
            the checkpoint keeps the winners'); every individual's fitness stays in the checkpoint.
        sync_timeout (`float`, *optional*, defaults to `3600`):
            With several processes: seconds a process waits without any new result from the others (for example
            when a process died) before it stops with an error. It must exceed one individual's training time.
    """

    population_size: int = field(default=8, metadata={"help": "Individuals per generation."})
    tournament_size: int = field(
        default=2,
        metadata={
            "help": "Individuals per tournament, in [1, population_size]; the fittest of each group wins (ties: "
            "lower index). GRL uses 3."
        },
    )
    generations: int = field(default=5, metadata={"help": "Generations to run (raise it to continue a finished run)."})
    gene_fraction: float = field(
        default=0.2, metadata={"help": "Learngene budget: fraction of the convolution weights, in (0, 1] (paper: 0.2)."}
    )
    granularity: Literal["channel", "kernel", "layer"] = field(
        default="channel",
        metadata={
            "help": "What a gene selects: 'channel' (output channels, the paper's), 'kernel' (k x k kernels) or "
            "'layer' (whole convolutions)."
        },
    )
    mutation_rate: float = field(
        default=0.1,
        metadata={
            "help": "Probability in [0, 1] that each unit of a winner's gene is swapped for an outside unit when "
            "passed to a child (budget kept)."
        },
    )
    task_type: Literal["n_way_k_shot", "class_subset"] = field(
        default="n_way_k_shot",
        metadata={
            "help": "'n_way_k_shot': k_shot support + query_shots query examples of n_way classes; "
            "'class_subset': all examples of n_way classes, query_shots per class for the query set."
        },
    )
    n_way: int = field(default=5, metadata={"help": "Classes per task (>= 2)."})
    k_shot: int = field(default=10, metadata={"help": "Support (training) examples per class ('n_way_k_shot')."})
    query_shots: int = field(default=15, metadata={"help": "Query (fitness) examples per class."})
    base_classes: list[int] | None = field(
        default=None, metadata={"help": "Labels tasks are drawn from; default: every label of the training set."}
    )
    fitness: Literal["query_accuracy", "neg_query_loss"] = field(
        default="query_accuracy",
        metadata={"help": "'query_accuracy' or 'neg_query_loss' (minus the mean query cross-entropy)."},
    )
    save_individuals: bool = field(
        default=False,
        metadata={
            "help": "Keep every individual's trained weights (default: a generation's are deleted once the next "
            "one has finished)."
        },
    )
    sync_timeout: float = field(
        default=3600.0,
        metadata={
            "help": "Multi-process: seconds to wait without any new result from the other processes before "
            "stopping with an error (must exceed one individual's training time)."
        },
    )

    def __post_init__(self):
        self._check_evolution()  # before any training, and before TrainingArguments creates accelerate state
        refuse_launcher_environment("GTLEvolutionConfig")  # TrainingArguments would join the launcher's group
        super().__post_init__()

    def _check_evolution(self):
        def integer(name, minimum):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")

        integer("population_size", 1)
        integer("generations", 1)
        integer("n_way", 2)
        integer("k_shot", 1)
        integer("query_shots", 1)
        integer("tournament_size", 1)
        if self.tournament_size > self.population_size:
            raise ValueError(
                f"`tournament_size` ({self.tournament_size}) is larger than `population_size` "
                f"({self.population_size}); use a tournament of at most {self.population_size} individuals or a larger "
                "population."
            )
        fraction = self.gene_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
            raise ValueError(
                f"`gene_fraction` must be in (0, 1] (a fraction of the convolution weights, e.g. 0.2 as in the paper), "
                f"got {fraction!r}."
            )
        rate = self.mutation_rate
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            raise ValueError(f"`mutation_rate` must be in [0, 1] (probability per gene unit), got {rate!r}.")
        for name, allowed in (("granularity", GRANULARITIES), ("task_type", TASK_TYPES), ("fitness", FITNESSES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"`{name}` must be one of {allowed}, got {getattr(self, name)!r}.")
        if self.base_classes is not None:
            classes = self.base_classes
            if isinstance(classes, (str, bytes)) or not hasattr(classes, "__iter__"):
                raise ValueError(f"`base_classes` must be a list of integer labels or None, got {classes!r}.")
            classes = list(classes)
            if any(isinstance(c, bool) or not isinstance(c, int) for c in classes):
                raise ValueError(f"`base_classes` must hold integer labels only, got {classes!r}.")
            if len(set(classes)) != len(classes):
                duplicates = sorted({c for c in classes if classes.count(c) > 1})
                raise ValueError(f"`base_classes` lists labels {duplicates} more than once; list each label once.")
            if self.n_way > len(classes):
                raise ValueError(
                    f"`n_way` ({self.n_way}) is larger than the number of `base_classes` ({len(classes)}); lower n_way "
                    "or give more base classes."
                )
            self.base_classes = classes
        timeout = self.sync_timeout
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0 or math.isnan(timeout):
            raise ValueError(f"`sync_timeout` must be a number of seconds > 0, got {timeout!r}.")
        if self.push_to_hub:
            raise ValueError(
                "`push_to_hub` is not supported by GTLEvolution (the individuals are not pushed); push the final "
                "learngene with `gene.push_to_hub(repo_id)` after `run()`."
            )
