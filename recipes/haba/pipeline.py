"""The HaBa main job on scikit-learn's digits: expert trajectories trained here, then per seed and per images-per-class
(ipc) three synthetic training sets of the same number of stored images per class: random real images, plain
trajectory matching (MTT: the HaBa loop without hallucinators) and HaBa (ipc bases per class + shared hallucinators).
Each is evaluated by training a fresh ConvNet on it and testing on the real test split; mean ± std over the seeds, the
stored floats of each, a verdict, the HaBa sets of the first seed saved with their cards, the images they generate
saved as `datasets.Dataset` folders with dataset cards, and a push of both (model repos and dataset repos).

    hf-methods haba                                   # the embedded default: a few minutes on 2 CPUs
    hf-methods haba --iterations 300 --seeds 0 1 2 3   # any recipe field can be overridden
    hf-methods haba --push_to_hub true --hub_model_id org/haba-digits
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import datasets
import torch

from hf_methods import __version__
from hf_methods.cli import run_script
from hf_methods.data import digits
from hf_methods.models.haba import HaBaConfig, HaBaDataset
from hf_methods.recipe import RecipeArguments, Run, parse_recipe
from hf_methods.report import VERDICT_RULE, summarize_arms, verdict_against, write_folder_atomic
from hf_methods.trainers.haba_config import OFFICIAL_PER_IPC, HaBaDistillerConfig, official_ipc
from hf_methods.trainers.haba_distiller import (
    DistilledImages,
    ExpertTrajectories,
    HaBaDistiller,
    NetworkSpec,
    evaluate_synthetic,
    train_expert_trajectories,
)

DEFAULT_RECIPE = resources.files("hf_methods.recipes") / "haba" / "digits.yaml"
METHOD = "HaBa"
ARMS = ("random real", "MTT", "HaBa")
NUM_CLASSES = 10
DATASET = "scikit-learn digits"


@dataclass
class HaBaRecipe(RecipeArguments):
    """Every field can be set in the YAML recipe or overridden as `--field value` (shared fields: `RecipeArguments`).
    Lists with one entry per ipc (`syn_steps`, `max_start_epoch`) follow `ipcs`."""

    output_dir: str = field(default="outputs/haba-digits", metadata={"help": "Where the sets, data and report go."})
    hub_model_id: str | None = field(
        default=None,
        metadata={
            "help": "Repo of the HaBa set at the largest ipc (org/name); the others go to <id>-ipc<k>. The images "
            "each generates go to the dataset repos of the same names."
        },
    )
    batch_size: int = field(default=256, metadata={"help": "Batch of the evaluation training (official 256)."})
    image_size: int = field(default=8, metadata={"help": "Digits are 8x8; a larger size upsamples them."})
    ipcs: list[int] = field(default_factory=lambda: [1, 10], metadata={"help": "Images (bases) per class to test."})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "One full comparison per seed."})
    num_hallucinators: int = field(default=5, metadata={"help": "Hallucinators shared by the classes (official 5)."})
    hallucinator_channels: int | None = field(
        default=None, metadata={"help": "Hidden channels of a hallucinator; empty: the image's (official)."}
    )
    hallucinator_init: str = field(
        default="default", metadata={"help": "'default' (official, PyTorch's init) or 'identity' (near-copy)."}
    )
    network_width: int = field(default=32, metadata={"help": "ConvNet width (experts, students, evaluation)."})
    network_depth: int = field(default=2, metadata={"help": "ConvNet depth (conv-norm-ReLU-pool blocks)."})
    num_experts: int = field(default=5, metadata={"help": "Expert trajectories (official 100)."})
    expert_train_epochs: int = field(default=12, metadata={"help": "Epochs per expert (official 50)."})
    expert_lr: float = field(default=0.01, metadata={"help": "Experts' SGD learning rate (official 0.01)."})
    expert_batch_size: int = field(
        default=32, metadata={"help": "Experts' batch (official 256 on 50,000 images; 32 gives 45 steps per epoch)."}
    )
    iterations: int = field(default=100, metadata={"help": "Distillation iterations per set (official 15000)."})
    syn_steps: list[int] = field(
        default_factory=lambda: [20, 12], metadata={"help": "Unrolled steps per ipc (official 50 at ipc 1, 30 at 10)."}
    )
    max_start_epoch: list[int] = field(
        default_factory=lambda: [2, 8], metadata={"help": "Latest start epoch per ipc (official 2 at ipc 1, 20 at 10)."}
    )
    expert_epochs: int = field(default=2, metadata={"help": "M, expert epochs the student must match (official 2)."})
    lr_img: float = field(default=10.0, metadata={"help": "Learning rate of the bases / images (official 100)."})
    lr_hallucinator: float = field(default=1.0, metadata={"help": "Learning rate of the hallucinators (official 100)."})
    extractor_width: int = field(default=64, metadata={"help": "Channels of the diversity extractor (official 128)."})
    dsa_strategy: str = field(
        default="color_crop_cutout_scale_rotate",
        metadata={"help": "DSA augmentations (official adds flip; a flipped digit is another symbol)."},
    )
    eval_epochs: int = field(default=300, metadata={"help": "Epochs of each evaluation training (official 1000)."})
    real_lr: float = field(
        default=0.01, metadata={"help": "Evaluation learning rate of random real images (distilled sets: learned)."}
    )
    standardize_batches: bool = field(
        default=False,
        metadata={
            "help": "Evaluation: standardize every batch by its own mean and std (the official evaluation does; the "
            "distillation never does, so off by default)."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        for name in ("num_hallucinators", "network_width", "network_depth", "num_experts", "expert_train_epochs",
                     "expert_batch_size", "iterations", "expert_epochs", "extractor_width", "eval_epochs"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        if self.image_size < 8:
            raise ValueError(f"image_size must be at least 8 (the digits are 8x8), got {self.image_size}.")
        if not self.ipcs or any(ipc < 1 for ipc in self.ipcs) or len(set(self.ipcs)) != len(self.ipcs):
            raise ValueError(f"ipcs must be distinct integers >= 1 (images per class), got {self.ipcs}.")
        for name in ("syn_steps", "max_start_epoch"):
            if len(getattr(self, name)) != len(self.ipcs):
                raise ValueError(f"{name} needs one value per ipc ({len(self.ipcs)}: {self.ipcs}), got "
                                 f"{getattr(self, name)}.")  # fmt: skip
        if max(self.max_start_epoch) + self.expert_epochs > self.expert_train_epochs:
            raise ValueError(
                f"max_start_epoch {self.max_start_epoch} + expert_epochs {self.expert_epochs} exceeds "
                f"expert_train_epochs {self.expert_train_epochs}: train longer experts or start earlier."
            )
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct and at least one, got {self.seeds}.")
        self.distiller_config(self.ipcs[0], 0)  # the distiller's own checks (dsa_strategy, rates, ...), before any work
        HaBaConfig(num_channels=1, image_size=self.image_size, num_labels=NUM_CLASSES,
                   num_hallucinators=self.num_hallucinators, hallucinator_channels=self.hallucinator_channels,
                   hallucinator_init=self.hallucinator_init)  # fmt: skip

    def network(self) -> NetworkSpec:
        return NetworkSpec(kind="convnet", num_channels=1, image_size=(self.image_size, self.image_size),
                           num_classes=NUM_CLASSES, width=self.network_width, depth=self.network_depth)  # fmt: skip

    def distiller_config(self, ipc: int, seed: int) -> HaBaDistillerConfig:
        """The official settings of `ipc`, with this recipe's budget and rates."""
        i = self.ipcs.index(ipc)
        return HaBaDistillerConfig.official(
            ipc, iterations=self.iterations, syn_steps=self.syn_steps[i], max_start_epoch=self.max_start_epoch[i],
            expert_epochs=self.expert_epochs, lr_img=self.lr_img, lr_hallucinator=self.lr_hallucinator,
            extractor_width=self.extractor_width, dsa_strategy=self.dsa_strategy, seed=seed,
        )  # fmt: skip

    def haba_config(self, ipc: int) -> HaBaConfig:
        return HaBaConfig(
            num_channels=1, image_size=self.image_size, images_per_class=ipc, num_hallucinators=self.num_hallucinators,
            hallucinator_channels=self.hallucinator_channels, hallucinator_init=self.hallucinator_init,
            initial_synthetic_lr=OFFICIAL_PER_IPC[official_ipc(ipc)]["initial_synthetic_lr"],
            image_mean=[0.0], image_std=[1.0], id2label={d: str(d) for d in range(NUM_CLASSES)},
            distillation=dataclasses.asdict(self.distiller_config(ipc, 0)) | {"seed": None},
        )  # fmt: skip


def real_digits(recipe: HaBaRecipe) -> dict[str, torch.Tensor]:
    """The digits splits as tensors, pixel values in [0, 1] (`hf_methods.data.digits` standardizes to [-1, 1]; here the
    background is 0, what the zero padding of the networks, the hallucinators' zero border and DSA's zero fill assume).
    """
    data = digits(image_size=recipe.image_size, seed=recipe.seed)
    train, test = data["train"][:], data["test"][:]
    return {"images": train["pixel_values"] * 0.5 + 0.5, "labels": train["labels"],
            "test_images": test["pixel_values"] * 0.5 + 0.5, "test_labels": test["labels"]}  # fmt: skip


def storage(ipc: int, haba: HaBaDataset, image_floats: int) -> dict[str, int]:
    """Floats each arm stores at `ipc`: real images; MTT's images and its learned learning rate; HaBa's bases,
    hallucinators and learning rate."""
    images = NUM_CLASSES * ipc * image_floats
    return {"random real": images, "MTT": images + 1, "HaBa": haba.stored_floats()["total"]}


def compare(
    recipe: HaBaRecipe, real: dict, experts: ExpertTrajectories, seed: int, ipc: int
) -> tuple[dict, HaBaDataset]:
    """One seed at one ipc: the three sets from the same random real images, distilled and evaluated."""
    import time

    spec, size = recipe.network(), recipe.image_size
    config = recipe.haba_config(ipc)
    mtt = DistilledImages(NUM_CLASSES, ipc, (1, size, size), config.initial_synthetic_lr)
    chosen = mtt.init_bases_from(real["images"], real["labels"], torch.Generator().manual_seed(1000 * seed + ipc))
    torch.manual_seed(seed)  # the hallucinators' init
    haba = HaBaDataset(config)
    same = haba.init_bases_from(real["images"], real["labels"], torch.Generator().manual_seed(1000 * seed + ipc))
    assert torch.equal(same, chosen)  # both start from the same real images
    distiller = recipe.distiller_config(ipc, seed)
    start = time.time()
    mtt_history = HaBaDistiller(mtt, experts, distiller).distill()
    mtt_seconds, start = time.time() - start, time.time()
    haba_history = HaBaDistiller(haba, experts, distiller).distill()
    haba_seconds = time.time() - start
    evaluation = dict(epochs=recipe.eval_epochs, batch_size=recipe.batch_size, dsa_strategy=recipe.dsa_strategy,
                      standardize_batches=recipe.standardize_batches, seed=seed)  # fmt: skip
    test = (real["test_images"], real["test_labels"])
    picked = (real["images"][chosen.flatten()], real["labels"][chosen.flatten()])
    accuracy = {
        "random real": evaluate_synthetic(picked, *test, spec, lr=recipe.real_lr, **evaluation)["accuracy"],
        "MTT": evaluate_synthetic(mtt, *test, spec, lr=mtt.learning_rate, **evaluation)["accuracy"],
        "HaBa": evaluate_synthetic(haba, *test, spec, lr=haba.learning_rate, **evaluation)["accuracy"],
    }
    floats = storage(ipc, haba, size * size)
    per_class = {"random real": ipc, "MTT": ipc, "HaBa": ipc * recipe.num_hallucinators}
    lrs = {"random real": recipe.real_lr, "MTT": mtt.learning_rate, "HaBa": haba.learning_rate}
    rows = [{"arm": arm, "seed": seed, "ipc": ipc, "accuracy": accuracy[arm], "stored_floats": floats[arm],
             "images_per_class": per_class[arm], "learning_rate": lrs[arm]} for arm in ARMS]  # fmt: skip
    result = {
        "rows": rows,
        "distill_seconds": {"MTT": mtt_seconds, "HaBa": haba_seconds},
        "param_loss": {"MTT": [h["param_loss"] for h in mtt_history], "HaBa": [h["param_loss"] for h in haba_history]},
        "real_images": picked[0].flatten(1).tolist(),
        "mtt_images": mtt.bases.detach().flatten(0, 1).flatten(1).tolist(),
    }
    return result, haba


def run(recipe: HaBaRecipe) -> dict:
    run = Run(recipe, stages=2 + len(recipe.seeds) * len(recipe.ipcs))
    datasets.disable_progress_bars()
    real = real_digits(recipe)
    spec = recipe.network()
    done = run.resume_stage(
        f"{recipe.num_experts} expert trajectories ({recipe.expert_train_epochs} epochs of a ConvNet "
        f"{recipe.network_width}x{recipe.network_depth} on the real training split)", "experts"
    )  # fmt: skip
    trajectories = run.stage_folder("experts") / "trajectories.safetensors"
    if done is None:
        experts = train_expert_trajectories(
            real["images"], real["labels"], spec, num_experts=recipe.num_experts, epochs=recipe.expert_train_epochs,
            lr=recipe.expert_lr, batch_size=recipe.expert_batch_size, dsa_strategy=recipe.dsa_strategy,
            seed=recipe.seed, test_images=real["test_images"], test_labels=real["test_labels"],
        )  # fmt: skip
        if run.is_main_process:
            experts.save(trajectories)
        done = {"test_accuracy": experts.settings["test_accuracy"]}
        run.save_stage("experts", done)
    experts = ExpertTrajectories.load(trajectories)
    expert_accuracy = done["test_accuracy"]
    run.say(f"  experts' test accuracy {sum(expert_accuracy) / len(expert_accuracy):.3f}")

    rows, stages, kept = [], {}, {}
    for seed in recipe.seeds:
        for ipc in recipe.ipcs:
            key = f"seed{seed}-ipc{ipc}"
            text = (f"seed {seed}, ipc {ipc}: random real, MTT and HaBa ({recipe.iterations} distillation "
                    "iterations each), each evaluated by a fresh ConvNet")  # fmt: skip
            done = run.resume_stage(text, key)
            if done is None:
                done, haba = compare(recipe, real, experts, seed, ipc)
                run.save_stage(key, done, haba)
                run.say("  test accuracy " + ", ".join(f"{r['arm']} {r['accuracy']:.3f}" for r in done["rows"]))
            if seed == recipe.seeds[0]:
                kept[ipc] = HaBaDataset.from_pretrained(run.stage_folder(key), trust_remote_code=False)
                stages[ipc] = done
            rows += done["rows"]

    summary = {ipc: summarize_arms([r for r in rows if r["ipc"] == ipc], ARMS, ["accuracy"]) for ipc in recipe.ipcs}
    verdicts = [verdict_against(summary[ipc], "HaBa", "accuracy", f"test accuracy at ipc {ipc}") for ipc in recipe.ipcs]
    image_floats = recipe.image_size**2
    results = {
        "method": METHOD,
        "dataset": f"{DATASET} ({recipe.image_size}x{recipe.image_size}, one channel, pixel values in [0, 1])",
        "dataset_id": "sklearn-digits",
        "training_setup": _training_setup(recipe),
        "recipe": dataclasses.asdict(recipe),
        "experts": {
            "test_accuracy": expert_accuracy,
            "epochs": recipe.expert_train_epochs,
            "stored_floats": sum(len(t) for t in experts.trajectories) * experts.trajectories[0][0].numel(),
        },
        "runs": rows,
        "summary": [{"ipc": ipc, **s} for ipc in recipe.ipcs for s in summary[ipc]],
        "storage": {str(ipc): storage(ipc, kept[ipc], image_floats) for ipc in recipe.ipcs},
        "distill_seconds": {str(ipc): stages[ipc]["distill_seconds"] for ipc in recipe.ipcs},
        "verdict": " ".join(verdicts) + " " + VERDICT_RULE + " " + paired_counts(rows, recipe.ipcs, recipe.seeds),
        "hf_methods_version": __version__,
    }
    run.stage("saving the HaBa sets of the first seed with their cards, the images they generate as datasets, and the "
              "report")  # fmt: skip
    for ipc, haba in kept.items():
        card_results = card_figures(results, ipc)
        run.save_model(haba, f"haba-ipc{ipc}", haba.model_card(run.out / f"haba-ipc{ipc}", card_results))
        if run.is_main_process:
            save_generated(haba, run.out / f"haba-ipc{ipc}-generated", card_results)
    if run.is_main_process:
        (run.out / "experts").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(trajectories, run.out / "experts" / "trajectories.safetensors")
    results["elapsed_s"] = run.elapsed()
    run.write_report(results, markdown=report_markdown(results), figure=report_figure(results, stages, kept))
    run.finish(
        f"HaBa done in {results['elapsed_s']:.0f}s: test accuracy "
        + "; ".join(f"ipc {s['ipc']} {s['arm']} {s['accuracy_mean']:.3f}" for s in results["summary"])
        + f". Report in {run.out}/"
    )
    return results


def paired_counts(rows: list[dict], ipcs, seeds) -> str:
    """Seed by seed (the three arms of a seed share the real start and the experts): in how many seeds HaBa's test
    accuracy is above each baseline's."""
    parts = []
    for ipc in ipcs:
        mine = {r["seed"]: r["accuracy"] for r in rows if r["ipc"] == ipc and r["arm"] == "HaBa"}
        counts = []
        for arm in ARMS[:-1]:
            theirs = {r["seed"]: r["accuracy"] for r in rows if r["ipc"] == ipc and r["arm"] == arm}
            counts.append(f"above {arm} in {sum(mine[s] > theirs[s] for s in seeds)} of {len(seeds)} seeds")
        parts.append(f"at ipc {ipc} HaBa is " + ", ".join(counts))
    return "Seed by seed (same real start, same experts): " + "; ".join(parts) + "."


def save_generated(haba: HaBaDataset, path: Path, card_results: dict) -> None:
    """The generated set as a `datasets.Dataset` folder (`save_to_disk`) with its dataset card, written atomically."""
    dataset = haba.to_datasets()

    def write(tmp: Path):
        dataset.save_to_disk(str(tmp))
        haba.dataset_card(path, card_results).save(str(tmp / "README.md"))

    write_folder_atomic(path, write)


def card_figures(results: dict, ipc: int, **extra) -> dict:
    """What the cards of the HaBa set at `ipc` (model and dataset) report: the run's setup and the three arms."""
    rows = [s for s in results["summary"] if s["ipc"] == ipc]
    metrics = {f"test accuracy, {s['arm']} (mean over {s['seeds']} seeds)": round(s["accuracy_mean"], 4) for s in rows}
    metrics.update({f"stored floats, {arm}": n for arm, n in results["storage"][str(ipc)].items()})
    return {"training_setup": results["training_setup"], "metrics": metrics, "dataset": results["dataset"], **extra}


def _training_setup(recipe: HaBaRecipe) -> str:
    ipcs = ", ".join(f"ipc {ipc}: {s} unrolled steps, start epochs < {m}, lr_lr "
                     f"{OFFICIAL_PER_IPC[official_ipc(ipc)]['lr_lr']:g}, initial eta_syn "
                     f"{OFFICIAL_PER_IPC[official_ipc(ipc)]['initial_synthetic_lr']:g}"
                     for ipc, s, m in zip(recipe.ipcs, recipe.syn_steps, recipe.max_start_epoch))  # fmt: skip
    standardized = "each batch standardized" if recipe.standardize_batches else "no per-batch re-standardization"
    return (
        f"{DATASET} ({recipe.image_size}x{recipe.image_size}, pixel values in [0, 1]). Experts: {recipe.num_experts} "
        f"ConvNets (width {recipe.network_width}, depth {recipe.network_depth}, instance norm, average pooling) "
        f"trained {recipe.expert_train_epochs} epochs with SGD lr {recipe.expert_lr:g}, batch "
        f"{recipe.expert_batch_size}, DSA; parameters kept every epoch. Distillation (HaBa and MTT, the same loop): "
        f"{recipe.iterations} iterations, match M = {recipe.expert_epochs} expert epochs; {ipcs}; bases/images SGD "
        f"lr {recipe.lr_img:g} (momentum 0.95), hallucinators lr {recipe.lr_hallucinator:g} (0.95); "
        f"{recipe.num_hallucinators} hallucinators ({recipe.hallucinator_init} init); diversity extractor width "
        f"{recipe.extractor_width}, lambda_club 0.1, lambda_cls 1, lambda_likelihood 0.1, lambda_contrast 0.1; DSA "
        f"'{recipe.dsa_strategy}'. All three sets start from the same random real images. Evaluation: a fresh "
        f"ConvNet trained {recipe.eval_epochs} epochs on the set (SGD momentum 0.9, weight decay 5e-4, the learned "
        f"eta_syn for distilled sets and {recipe.real_lr:g} for real images, lr x0.1 at half, batch "
        f"{recipe.batch_size}, DSA, {standardized}; HaBa: one random hallucination per base and epoch), tested on the "
        "real test split. "
        f"Seeds {recipe.seeds}."
    )


def report_figure(results: dict, stages: dict, kept: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    ipcs = [int(k) for k in results["storage"]]
    fig = plt.figure(figsize=(16, 5.2))
    grid = fig.add_gridspec(1, 3, width_ratios=[1.1, 1.1, 1.4])
    ax = fig.add_subplot(grid[0])
    colors = {"random real": "#999999", "MTT": "#4c72b0", "HaBa": "#dd8452"}
    width = 0.8 / len(ARMS)
    for i, arm in enumerate(ARMS):
        entries = [next(s for s in results["summary"] if s["ipc"] == ipc and s["arm"] == arm) for ipc in ipcs]
        ax.bar(np.arange(len(ipcs)) + (i - 1) * width, [e["accuracy_mean"] for e in entries], width,
               yerr=[e["accuracy_std"] for e in entries], capsize=3, color=colors[arm], label=arm)  # fmt: skip
    full = results["experts"]["test_accuracy"]
    ax.axhline(sum(full) / len(full), ls="--", color="black", lw=1, label="experts (all real images)")
    ax.set_xticks(range(len(ipcs)), [f"ipc {ipc}" for ipc in ipcs])
    low = min(s["accuracy_mean"] - s["accuracy_std"] for s in results["summary"])
    ax.set(ylabel="test accuracy of a fresh ConvNet", title="Training on each synthetic set", ylim=(max(0, low - 0.05),
           1.0))  # fmt: skip
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2, frameon=False)
    ax = fig.add_subplot(grid[1])
    for ipc in ipcs:
        for arm, style in (("MTT", "-"), ("HaBa", "--")):
            losses = stages[ipc]["param_loss"][arm]
            smooth = np.convolve(losses, np.ones(10) / 10, mode="valid") if len(losses) >= 10 else losses
            ax.plot(smooth, style, label=f"{arm}, ipc {ipc}")
    ax.set(xlabel="iteration (10-iteration mean)", ylabel="L_param", title="Trajectory matching (first seed)")
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    ax = fig.add_subplot(grid[2])
    ipc = min(ipcs)
    haba, stage = kept[ipc], stages[ipc]
    size = haba.config.image_hw
    with torch.no_grad():
        generated = haba.generate().pixel_values.reshape(NUM_CLASSES, ipc, haba.num_hallucinators, *size)[:, 0]
    real_images = torch.tensor(stage["real_images"]).reshape(NUM_CLASSES, ipc, *size)[:, 0]
    mtt_images = torch.tensor(stage["mtt_images"]).reshape(NUM_CLASSES, ipc, *size)[:, 0]
    bases = haba.bases.detach()[:, 0, 0]
    columns = [real_images, mtt_images, bases] + [generated[:, j] for j in range(haba.num_hallucinators)]
    tiles = [[(t[c] - t[c].min()) / (t[c].max() - t[c].min() + 1e-8) for t in columns] for c in range(NUM_CLASSES)]
    pad = lambda t: torch.nn.functional.pad(t, (1, 1, 1, 1), value=1.0)  # noqa: E731
    mosaic = torch.cat([torch.cat([pad(t) for t in row], 1) for row in tiles], 0)
    ax.imshow(mosaic.numpy(), cmap="gray", interpolation="nearest")
    labels = ["real", "MTT", "HaBa\nbase"] + [f"H{j + 1}" for j in range(haba.num_hallucinators)]
    ax.set_xticks([(i + 0.5) * (size[1] + 2) for i in range(len(labels))], labels, fontsize=8)
    ax.set_yticks([(c + 0.5) * (size[0] + 2) for c in range(NUM_CLASSES)], [str(c) for c in range(NUM_CLASSES)])
    ax.set_title(f"ipc {ipc}, first seed: the real start, MTT's image, HaBa's base and its {haba.num_hallucinators} "
                 "hallucinations", fontsize=9)  # fmt: skip
    fig.tight_layout()
    return fig


def report_markdown(results: dict) -> str:
    recipe = results["recipe"]
    full = results["experts"]["test_accuracy"]
    lines = [f"# HaBa on {results['dataset']}", "", results["training_setup"], "", f"**{results['verdict']}**", "",
             "![report](report.png)", "", "| ipc | arm | test accuracy | stored floats | images per class | "
             "learning rate |", "|---|---|---|---|---|---|"]  # fmt: skip
    for s in results["summary"]:
        ipc, arm = s["ipc"], s["arm"]
        runs = [r for r in results["runs"] if r["ipc"] == ipc and r["arm"] == arm]
        lr = sum(r["learning_rate"] for r in runs) / len(runs)
        lines.append(f"| {ipc} | {arm} | {s['accuracy_mean']:.4f} ± {s['accuracy_std']:.4f} | "
                     f"{results['storage'][str(ipc)][arm]:,} | {runs[0]['images_per_class']} | {lr:.4g} |")  # fmt: skip
    mean = sum(full) / len(full)
    lines += [
        "",
        f"Reference: the {len(full)} experts, trained on all real training images, reach {mean:.4f} test accuracy. "
        f"They are short plain-SGD runs ({recipe['expert_train_epochs']} epochs, lr {recipe['expert_lr']:g}, no "
        "momentum), the trajectories the distilled sets match, not the best a network reaches on all the data; the "
        "evaluation trains longer and with momentum.",
        "",
        "Storage: random real and MTT store ipc images per class (MTT also its learned learning rate); HaBa stores ipc "
        f"bases per class plus {recipe['num_hallucinators']} shared hallucinators, and every base x hallucinator pair "
        "is an image, so it trains on more images per class than it stores. Compare the accuracy at equal *stored "
        "floats*, not only at equal ipc. The expert trajectories are the recipe's own cost "
        f"({results['experts']['stored_floats']:,} floats), needed by MTT and HaBa alike, not part of a set.",
        "",
        "Distillation time, first seed: " + "; ".join(
            f"ipc {ipc}: MTT {t['MTT']:.0f} s, HaBa {t['HaBa']:.0f} s" for ipc, t in results["distill_seconds"].items()
        ) + ".",
        "",
        "| seed | ipc | arm | test accuracy | learning rate |",
        "|---|---|---|---|---|",
    ]  # fmt: skip
    lines += [f"| {r['seed']} | {r['ipc']} | {r['arm']} | {r['accuracy']:.4f} | {r['learning_rate']:.4g} |"
              for r in results["runs"]]  # fmt: skip
    ipcs = [int(k) for k in results["storage"]]
    lines += ["", "Saved: the HaBa sets of the first seed (" + ", ".join(f"`haba-ipc{i}/`" for i in ipcs) + ", with "
              "their cards; `AutoModel.from_pretrained` after `import hf_methods`), the images each generates as a "
              "`datasets.Dataset` (" + ", ".join(f"`haba-ipc{i}-generated/`" for i in ipcs) + ", `load_from_disk`, "
              "with a dataset card), and the expert trajectories (`experts/trajectories.safetensors`).",
              ""]  # fmt: skip
    return "\n".join(lines)


def main(argv=None):
    logging.basicConfig(level=logging.WARNING)
    (recipe,) = parse_recipe(HaBaRecipe, argv, default_config=DEFAULT_RECIPE)
    return run(recipe)


def push_haba_run(out_dir: Path, repo_id: str, results: dict, **hub_kwargs) -> dict[str, str]:
    """`hf-methods push` of a HaBa run: the HaBa set at the largest ipc to `repo_id`, the others to `<repo_id>-ipc<k>`,
    and the images each generates to the dataset repo of the same name (returned as `datasets/<repo>`)."""
    from datasets import load_from_disk

    from hf_methods.hub import push_saved_model

    ipcs = sorted(int(k) for k in results["storage"])
    pushed = {}
    for ipc in ipcs:
        target = repo_id if ipc == ipcs[-1] else f"{repo_id}-ipc{ipc}"
        folder = out_dir / f"haba-ipc{ipc}"
        model = HaBaDataset.from_pretrained(folder, trust_remote_code=False)
        figures = card_figures(results, ipc, dataset_repo=target, model_repo=target)
        push_saved_model(folder, target, model.model_card(target, figures),
                         commit_message=f"Upload the HaBa set (ipc {ipc})", **hub_kwargs)  # fmt: skip
        pushed[f"haba-ipc{ipc}"] = target
        generated = load_from_disk(str(out_dir / f"haba-ipc{ipc}-generated"))
        model.push_dataset_to_hub(target, results=figures, dataset=generated, private=hub_kwargs.get("private"),
                                  token=hub_kwargs.get("token"), revision=hub_kwargs.get("revision"),
                                  commit_message=f"Upload the images of the HaBa set (ipc {ipc})")  # fmt: skip
        pushed[f"haba-ipc{ipc}-generated"] = f"datasets/{target}"
    return pushed


if __name__ == "__main__":
    sys.exit(run_script(main, prog="python -m hf_methods.recipes.haba.pipeline"))
