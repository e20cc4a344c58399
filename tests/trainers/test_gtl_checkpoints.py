"""The GTL run folder: a checkpoint reads back as written, settings that changed are named, results are written once
(the first process wins), weights are found after pruning, and a killed run's temporary folders are recognized."""

import json

import pytest
import torch

from hf_methods.models.convnets import VGGConfig, VGGForImageClassification
from hf_methods.models.gtl import conv_layers, sample_mask
from hf_methods.trainers.gtl_checkpoints import STATE_FORMAT, EvolutionFolder, EvolutionState, individual_id

FINGERPRINT = {"seed": 0, "population_size": 2, "conv_layers": ["a", "b"]}


def network(seed=0):
    torch.manual_seed(seed)
    return VGGForImageClassification(VGGConfig(num_channels=1, hidden_sizes=[4, 8], depths=[1, 1], num_labels=3))


def state(generation=1, parents=("g0-i1",)):
    rng = torch.Generator().manual_seed(7)
    layers = conv_layers(network())
    masks = [sample_mask(layers, 0.5, "channel", generator=rng) for _ in range(2)]
    torch.rand(3, generator=rng)  # a state that is not the seed's
    population = [{"id": individual_id(generation, i), "index": i, "parent": p} for i, p in enumerate(parents * 2)]
    records = [[{"id": individual_id(0, i), "fitness": 0.5 + i} for i in range(2)]]
    history = [{"generation": 0, "fitnesses": [0.5, 1.5], "best": 1.5, "best_id": "g0-i1", "winners": ["g0-i1"]}]
    parent_masks = {p: masks[0] for p in parents if p is not None}
    return EvolutionState(generation, population, masks, parent_masks, records, history, rng)


def write(folder, s, **kw):
    folder.write_checkpoint(s, fingerprint=FINGERPRINT, generations=3, granularity="channel", gene_fraction=0.5, **kw)


def test_a_checkpoint_reads_back_as_written(tmp_path):
    folder = EvolutionFolder(tmp_path)
    assert folder.checkpoints() == [] and folder.load_latest(FINGERPRINT) is None and not folder.has_run()
    assert folder.write_result(0, 1, network(1), {"id": "g0-i1", "fitness": 1.5})
    saved = state()
    write(folder, saved)
    assert [p.name for p in folder.checkpoints()] == ["generation-001"]
    meta = json.loads((folder.checkpoints()[0] / "state.json").read_text())
    assert meta["format"] == STATE_FORMAT and meta["generations"] == 3 and meta["fingerprint"] == FINGERPRINT
    loaded = folder.load_latest(FINGERPRINT)
    assert (loaded.generation, loaded.population, loaded.records, loaded.history) == (
        saved.generation,
        saved.population,
        saved.records,
        saved.history,
    )
    for got, want in zip([*loaded.masks, *loaded.parent_masks.values()], [*saved.masks, *saved.parent_masks.values()]):
        assert got.units.keys() == want.units.keys()
        assert all(torch.equal(got.units[k], want.units[k]) for k in want.units)
    assert torch.equal(loaded.rng.get_state(), saved.rng.get_state())
    parent = folder.checkpoints()[0] / "parents" / "g0-i1.safetensors"
    assert parent.read_bytes() == (folder.result_dir(0, 1) / "model.safetensors").read_bytes()


def test_changed_settings_and_formats_are_named(tmp_path):
    folder = EvolutionFolder(tmp_path)
    write(folder, state(parents=(None,)))
    with pytest.raises(ValueError, match=r"seed: checkpoint 0, now 1.*only `generations` may grow"):
        folder.load_latest({**FINGERPRINT, "seed": 1})
    meta = folder.checkpoints()[0] / "state.json"
    meta.write_text(meta.read_text().replace(f'"format": {STATE_FORMAT}', '"format": 99'))
    with pytest.raises(ValueError, match="state format 99"):
        folder.load_latest(FINGERPRINT)


def test_results_are_written_once_and_weights_are_found_after_pruning(tmp_path):
    folder = EvolutionFolder(tmp_path)
    assert folder.write_result(0, 1, network(1), {"fitness": 1.0})
    assert not folder.write_result(0, 1, network(2), {"fitness": 2.0})  # another process finished it first
    assert folder.has_result(0, 1) and folder.read_result(0, 1) == {"fitness": 1.0} and not folder.has_result(0, 0)
    assert folder.has_run() and not folder.has_run(beyond_generation_zero=True)
    for g in (1, 2, 3):
        write(folder, state(generation=g))
    assert [p.name for p in folder.checkpoints()] == ["generation-002", "generation-003"]  # older ones pruned
    assert not folder.result_dir(0, 1).exists()  # generation 0 < 3 - 1: its individuals are pruned ...
    assert folder.weights_file("g0-i1").parent.name == "parents"  # ... but a checkpoint kept the parent's weights
    assert folder.has_run(beyond_generation_zero=True)
    with pytest.raises(FileNotFoundError, match="g5-i0"):
        folder.weights_file("g5-i0")

    kept = EvolutionFolder(tmp_path / "kept")
    kept.write_result(0, 1, network(1), {})
    for g in (1, 2, 3):
        write(kept, state(generation=g), keep_individuals=True)
    assert kept.has_result(0, 1)


def test_temporary_and_scratch_folders(tmp_path):
    folder = EvolutionFolder(tmp_path)
    (folder.path / "individuals" / ".tmp-g0-i0-123-abc").mkdir(parents=True)
    (folder.path / ".tmp-generation-000-123-abc").mkdir()
    assert not folder.has_run()  # half-written folders are not a run
    folder.remove_temporary()
    assert not list(folder.path.rglob(".tmp-*"))
    folder.scratch_dir(0).mkdir(parents=True)
    folder.scratch_dir(1).mkdir()
    folder.remove_scratch(0)
    assert (folder.path / ".scratch").exists()  # rank 1 still has its own
    folder.remove_scratch(1)
    assert not (folder.path / ".scratch").exists()
