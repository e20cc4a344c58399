"""GTL evolution driver: tournaments against brute force, config errors before training, Lamarckian inheritance,
resume after a kill == uninterrupted, 2 processes == 1 process, history / lineage / saved learngene. (The task sampler,
the checkpoint folder and the processes have their own test modules.)

Also the worker of the 2-process test: `python test_gtl_evolution.py --worker OUTPUT_DIR THREADS` (with RANK /
WORLD_SIZE set) runs the same evolution as `reference` and prints one JSON line.
"""

import itertools
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from hf_methods.data import digits
from hf_methods.models.convnets import VGGConfig, VGGForImageClassification
from hf_methods.models.gtl import GTLModel, conv_layers
from hf_methods.trainers.gtl_config import GTLEvolutionConfig
from hf_methods.trainers.gtl_evolution import GTLEvolution, derive_seed, tournament_selection
from hf_methods.trainers.gtl_processes import PROCESS_GROUP_VARS, evolution_process

POPULATION, GENERATIONS = 4, 2


def model_init(num_labels):
    return VGGForImageClassification(
        VGGConfig(num_channels=1, hidden_sizes=[4, 8], depths=[1, 1], num_labels=num_labels)
    )


def config(output_dir, **overrides):
    kwargs = {
        "output_dir": str(output_dir),
        "report_to": "none",
        "use_cpu": True,
        "seed": 0,
        "disable_tqdm": True,
        "max_steps": 2,
        "learning_rate": 1e-2,
        "per_device_train_batch_size": 8,
        "lr_scheduler_type": "constant",
        "dataloader_num_workers": 0,
        "population_size": POPULATION,
        "tournament_size": 2,
        "generations": GENERATIONS,
        "n_way": 3,
        "k_shot": 4,
        "query_shots": 4,
        "fitness": "neg_query_loss",  # the loss separates individuals
    }
    return GTLEvolutionConfig(**{**kwargs, **overrides})


class Killed(Exception):
    pass


class Recorder(TrainerCallback):
    """Counts trainings, keeps every individual's initial weights, and raises ("kill") after `kill_after` trainings.
    Also notes whether any individual's Trainer ran in a process group or saw a launcher's variables."""

    def __init__(self, kill_after=None):
        self.trained, self.kill_after, self.initial = 0, kill_after, []
        self.saw_process_group = False

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.initial.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        launcher = set(PROCESS_GROUP_VARS) & set(os.environ)
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.saw_process_group |= bool(launcher) or distributed or args.world_size != 1

    def on_train_end(self, args, state, control, **kwargs):
        if self.kill_after is not None and self.trained >= self.kill_after:
            raise Killed(f"killed after {self.trained} trainings")
        self.trained += 1


@pytest.fixture(scope="module")
def data():
    return digits(image_size=8)["train"]


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """An uninterrupted run that keeps every individual's weights."""
    out = tmp_path_factory.mktemp("gtl_reference")
    recorder = Recorder()
    evolution = GTLEvolution(model_init, config(out, save_individuals=True), data, callbacks=[recorder])
    gene = evolution.run()
    return evolution, gene, out, recorder


def gene_tensors(gene):
    return {k: v.detach().clone() for k, v in gene.state_dict().items()}


def assert_same_gene(gene, expected):
    a, b = gene_tensors(gene), gene_tensors(expected)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key  # bit-identical
    for name, units in expected.mask.units.items():
        assert torch.equal(gene.mask.units[name], units), name
    assert gene.config.lineage == expected.config.lineage


# ---------------------------------------------------------------- selection
@pytest.mark.parametrize("n, k", [(8, 2), (7, 3), (6, 6), (5, 1)])
def test_tournament_picks_the_fittest_of_each_group(n, k):
    for seed in range(5):
        values = torch.randint(0, 4, (n,), generator=torch.Generator().manual_seed(100 + seed))  # many ties
        fitnesses = [float(v) for v in values]
        groups, winners = tournament_selection(fitnesses, k, torch.Generator().manual_seed(seed))
        # brute force: the same seeded shuffle, cut into groups, scanned in index order
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
        expected_groups = [order[s : s + k] for s in range(0, n, k)]
        expected = []
        for group in expected_groups:
            best = None
            for i in sorted(group):
                if best is None or fitnesses[i] > fitnesses[best]:
                    best = i
            expected.append(best)
        assert groups == expected_groups and winners == expected
        assert sorted(i for g in groups for i in g) == list(range(n))
        assert all(fitnesses[w] == max(fitnesses[i] for i in g) for g, w in zip(groups, winners))
    assert tournament_selection([0.1, float("nan"), 0.2], 3, torch.Generator().manual_seed(0))[1] == [2]


def test_derived_seeds_are_stable_and_distinct():
    assert derive_seed(0, "task", 1, 2) == derive_seed(0, "task", 1, 2)
    seeds = {
        derive_seed(s, what, g, i) for s in (0, 1) for what in ("task", "init") for g in range(3) for i in range(4)
    }
    assert len(seeds) == 2 * 2 * 3 * 4 and all(0 <= s < 2**31 for s in seeds)


# ---------------------------------------------------------------- configs
@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"gene_fraction": 0.0}, "gene_fraction"),
        ({"gene_fraction": 1.5}, "gene_fraction"),
        ({"tournament_size": 5}, "tournament_size"),
        ({"tournament_size": 0}, "tournament_size"),
        ({"granularity": "filter"}, "granularity"),
        ({"task_type": "episodes"}, "task_type"),
        ({"fitness": "accuracy"}, "fitness"),
        ({"mutation_rate": 1.5}, "mutation_rate"),
        ({"n_way": 4, "base_classes": [0, 1, 2]}, "n_way"),
        ({"base_classes": [0, 1, 1, 2]}, "base_classes"),
        ({"population_size": 0}, "population_size"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path, overrides, field):
    with pytest.raises(ValueError, match=f"`{field}`"):
        config(tmp_path / "run", **overrides)
    assert not (tmp_path / "run").exists()


def test_bad_data_or_model_fails_before_training(tmp_path, data):
    recorder = Recorder()
    with pytest.raises(ValueError, match="n_way"):
        GTLEvolution(model_init, config(tmp_path, n_way=11), data)  # digits has 10 classes
    with pytest.raises(ValueError, match="k_shot"):
        GTLEvolution(model_init, config(tmp_path, k_shot=500), data)
    with pytest.raises(ValueError, match="num_labels=10"):
        GTLEvolution(lambda n: model_init(10), config(tmp_path), data, callbacks=[recorder]).run()
    assert recorder.trained == 0 and not (tmp_path / "evolution").exists()


# ---------------------------------------------------------------- the reference run
def test_history_lineage_and_saved_learngene(reference):
    evolution, gene, out, recorder = reference
    assert recorder.trained == POPULATION * GENERATIONS
    assert [h["generation"] for h in evolution.history] == list(range(GENERATIONS))
    for h in evolution.history:
        assert len(h["fitnesses"]) == POPULATION and h["best"] == max(h["fitnesses"])
        assert h["mean"] == pytest.approx(sum(h["fitnesses"]) / POPULATION)
        assert h["best_id"] == f"g{h['generation']}-i{h['fitnesses'].index(h['best'])}"
        assert len(h["winners"]) == POPULATION // 2
    lineage = evolution.lineage
    assert [e["generation"] for e in lineage] == list(range(GENERATIONS))
    assert lineage[0]["parent"] is None and lineage[-1]["id"] == evolution.history[-1]["best_id"]
    for parent, child in itertools.pairwise(lineage):
        assert child["parent"] == parent["id"]
        assert parent["id"] in evolution.history[parent["generation"]]["winners"]  # only winners have children
    for entry in lineage:
        assert entry["fitness"] == evolution.history[entry["generation"]]["fitnesses"][entry["index"]]
    assert gene.config.lineage == lineage
    # the budget: one of the 4 and 2 of the 8 channels (the gene rule keeps round(0.2 * units), at least 1, per layer)
    assert gene.num_gene_parameters == 1 * 1 * 9 + 2 * 4 * 9
    saved = GTLModel.from_pretrained(out / "learngene")
    assert_same_gene(saved, gene)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert files and all(p.suffix in (".json", ".safetensors", ".py") for p in files), files  # never pickle


def test_children_inherit_their_parents_trained_gene(reference):
    """Lamarckian: at the start of training, a child holds its parent's trained values in its mask's channels."""
    evolution, _, out, recorder = reference
    checkpoint = out / "evolution" / f"generation-{GENERATIONS - 1:03d}"
    state = json.loads((checkpoint / "state.json").read_text())
    masks = load_file(checkpoint / "masks.safetensors")
    layers = conv_layers(model_init(3))
    for j, child in enumerate(state["population"]):
        initial = recorder.initial[(GENERATIONS - 1) * POPULATION + j]
        parent = load_file(out / "evolution" / "individuals" / child["parent"] / "model.safetensors")
        assert child["parent"] in evolution.history[GENERATIONS - 2]["winners"]
        for layer in layers:
            units = masks[f"{j}/{layer.name}"]
            weight = f"{layer.name}.weight"
            assert torch.equal(initial[weight][units], parent[weight][units])
            assert not torch.equal(initial[weight][~units], parent[weight][~units])  # the rest is fresh
            for t in ("weight", "bias", "running_mean", "running_var"):
                key = f"{layer.norm}.{t}"
                assert torch.equal(initial[key][units], parent[key][units])
    assert [i["classifier.weight"].shape for i in recorder.initial] == [(3, 8)] * POPULATION * GENERATIONS


def test_finished_run_is_not_retrained_and_folder_is_protected(reference, data):
    evolution, gene, out, _ = reference
    recorder = Recorder()
    again = GTLEvolution(model_init, config(out, save_individuals=True), data, callbacks=[recorder])
    assert_same_gene(again.run(), gene)
    assert recorder.trained == 0 and again.history == evolution.history and again.lineage == evolution.lineage
    with pytest.raises(FileExistsError, match="resume=True"):
        GTLEvolution(model_init, config(out), data).run(resume=False)
    with pytest.raises(ValueError, match="mutation_rate: checkpoint 0.1, now 0.3"):
        GTLEvolution(model_init, config(out, mutation_rate=0.3), data).run()


# ---------------------------------------------------------------- resume, processes
def test_resume_after_kill_equals_uninterrupted(reference, data, tmp_path):
    _, expected, _, _ = reference
    killed = 6  # all of generation 0 and two of generation 1 finish; the 7th is killed at the end of its training
    with pytest.raises(Killed):
        GTLEvolution(model_init, config(tmp_path), data, callbacks=[Recorder(kill_after=killed)]).run()
    finished = sorted(p.name for p in (tmp_path / "evolution" / "individuals").iterdir())
    assert finished == ["g0-i0", "g0-i1", "g0-i2", "g0-i3", "g1-i0", "g1-i1"]
    recorder = Recorder()
    resumed = GTLEvolution(model_init, config(tmp_path), data, callbacks=[recorder])
    assert_same_gene(resumed.run(), expected)
    assert recorder.trained == POPULATION * GENERATIONS - killed  # only the missing individuals were trained
    assert resumed.history == reference[0].history
    # without save_individuals, only the last generation's weights are kept (the fitnesses stay in the checkpoint)
    kept = {p.name.split("-")[0] for p in (tmp_path / "evolution" / "individuals").iterdir()}
    assert kept == {f"g{GENERATIONS - 1}"}
    assert not list((tmp_path / "evolution").glob(".tmp-*"))


def test_two_processes_equal_one_process(reference, tmp_path):
    _, expected, _, _ = reference
    env = {**os.environ, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29531"}
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", str(tmp_path), str(torch.get_num_threads())],
            env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    reports = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=300)
            assert proc.returncode == 0, stderr[-3000:]
            reports.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    per_rank = POPULATION // 2 * GENERATIONS
    assert [r["rank"] for r in reports] == [0, 1] and [r["trained"] for r in reports] == [per_rank, per_rank]
    assert all(r["scrubbed"] for r in reports)  # no process saw RANK / WORLD_SIZE / MASTER_* in its Trainer
    assert all(r["config_refused"] for r in reports)  # a config created before evolution_process() is an error
    assert all(r["history"] == reference[0].history for r in reports)
    assert_same_gene(GTLModel.from_pretrained(tmp_path / "learngene"), expected)


def _worker(output_dir: str, threads: int) -> None:
    torch.set_num_threads(threads)
    recorder = Recorder()
    try:  # the launcher's variables are still set: the config refuses to join its process group
        config(output_dir)
        config_refused = False
    except RuntimeError as err:
        config_refused = "evolution_process()" in str(err)
    evolution_process(use_cpu=True)  # what the GTL recipe does first
    scrubbed = not {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"} & set(os.environ)
    args = config(output_dir, sync_timeout=120)  # a crashed peer fails the test instead of hanging it
    evolution = GTLEvolution(model_init, args, digits(image_size=8)["train"], callbacks=[recorder])
    evolution.run()
    print(
        json.dumps(
            {
                "rank": evolution.rank,
                "trained": recorder.trained,
                "scrubbed": scrubbed and not recorder.saw_process_group,
                "config_refused": config_refused,
                "history": evolution.history,
            }
        )
    )


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--worker":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _worker(sys.argv[2], int(sys.argv[3]))
