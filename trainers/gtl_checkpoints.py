"""The resumable state of a GTL evolution on disk: `EvolutionFolder` is the layout of `output_dir/evolution/`.

    evolution/generation-XXX/      the state at the start of generation XXX, written atomically by rank 0:
        state.json                 generation, population (ids, parents), every finished individual's record,
                                   history, a fingerprint of the settings
        masks.safetensors          the population's masks ("<individual>/<conv name>")
        parent_masks.safetensors   the masks of the previous generation's winners (and fittest)
        parents/<id>.safetensors   their trained weights (hard links to the individuals' files)
        rng.safetensors            the evolution generator's state (selection shuffles, mutations)
    evolution/individuals/gG-iI/   each finished individual (model.safetensors + result.json), written atomically
                                   as soon as it finishes (the first process to finish it wins), so a resumed run
                                   trains only the missing ones
    evolution/.scratch/rank-R/     each process's Trainer output_dir (nothing is saved there)

Everything is safetensors or JSON (never pickle). Folders are written through `hf_methods.report.write_folder_atomic`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file, save_model
from torch import nn

from hf_methods.models.gtl import GeneMask
from hf_methods.report import write_folder_atomic

STATE_FORMAT = 1


def individual_id(generation: int, index: int) -> str:
    return f"g{generation}-i{index}"


def _generation_of(name: str) -> int | None:
    """The generation of an individual's folder name `gG-iI`, or None for another name."""
    generation = name[1:].split("-")[0]
    return int(generation) if name.startswith("g") and generation.isdigit() else None


@dataclasses.dataclass
class EvolutionState:
    """The evolution at the start of generation `generation` (what a checkpoint holds)."""

    generation: int
    population: list[dict]  # {"id", "index", "parent"} per individual
    masks: list[GeneMask]
    parent_masks: dict[str, GeneMask]  # the previous generation's winners (and fittest), by id
    records: list[list[dict]]  # one list of individual records per finished generation
    history: list[dict]
    rng: torch.Generator


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, allow_nan=True) + "\n")


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


class EvolutionFolder:
    """The `evolution/` folder of a GTL run folder (see the module docstring): checkpoints and individual results."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / "evolution"

    # ------------------------------------------------------------------ individuals
    def result_dir(self, generation: int, index: int) -> Path:
        return self.path / "individuals" / individual_id(generation, index)

    def has_result(self, generation: int, index: int) -> bool:
        return (self.result_dir(generation, index) / "result.json").exists()

    def read_result(self, generation: int, index: int) -> dict:
        return json.loads((self.result_dir(generation, index) / "result.json").read_text())

    def write_result(self, generation: int, index: int, network: nn.Module, result: dict) -> bool:
        """An individual's trained weights and result, atomically; False when another process wrote them first."""

        def write(folder: Path):
            save_model(network, str(folder / "model.safetensors"))
            _write_json(folder / "result.json", result)

        return write_folder_atomic(self.result_dir(generation, index), write, replace=False)

    def weights_file(self, ident: str) -> Path:
        """Where an individual's trained weights are: its result folder, else a checkpoint's `parents/`."""
        candidates = [self.path / "individuals" / ident / "model.safetensors"]
        candidates += [c / "parents" / f"{ident}.safetensors" for c in reversed(self.checkpoints())]
        for path in candidates:
            if path.exists():
                return path
        raise FileNotFoundError(
            f"The trained weights of individual {ident} are missing from {self.path} (neither "
            f"individuals/{ident}/model.safetensors nor a checkpoint's parents/{ident}.safetensors); the run folder "
            "was changed by hand. Start afresh in another output_dir."
        )

    def scratch_dir(self, rank: int) -> Path:
        """The output_dir of rank `rank`'s Trainers (they save nothing)."""
        return self.path / ".scratch" / f"rank-{rank}"

    def remove_scratch(self, rank: int) -> None:
        shutil.rmtree(self.scratch_dir(rank), ignore_errors=True)
        try:
            (self.path / ".scratch").rmdir()  # once every process has removed its own
        except OSError:
            pass

    def remove_temporary(self) -> None:
        """Remove the temporary folders a killed run left (only safe when no other process is writing)."""
        for tmp in [*self.path.glob(".tmp-*"), *self.path.glob("individuals/.tmp-*")]:
            shutil.rmtree(tmp, ignore_errors=True)

    # ------------------------------------------------------------------ checkpoints
    def checkpoints(self) -> list[Path]:
        """The `generation-XXX` folders, oldest first."""
        if not self.path.exists():
            return []
        found = [p for p in self.path.glob("generation-*") if p.name.split("-")[-1].isdigit()]
        return sorted(found, key=lambda p: int(p.name.split("-")[-1]))

    def has_run(self, beyond_generation_zero: bool = False) -> bool:
        """Whether the folder holds a run (any checkpoint or individual; or only those past generation 0)."""
        first = 1 if beyond_generation_zero else 0
        checkpoints = [c for c in self.checkpoints() if int(c.name.split("-")[-1]) >= first]
        individuals = [
            p
            for p in (self.path / "individuals").glob("g*-i*")
            if (generation := _generation_of(p.name)) is not None and generation >= first
        ]
        return bool(checkpoints or individuals)

    def write_checkpoint(
        self,
        state: EvolutionState,
        *,
        fingerprint: dict,
        generations: int,
        granularity: str,
        gene_fraction: float,
        keep_individuals: bool = False,
    ) -> None:
        """Write `generation-XXX` for `state` (atomically), then prune what is no longer needed: checkpoints older
        than the previous one, and (unless `keep_individuals`) the individuals of generations before the previous one,
        which other processes may still be reading."""
        g = state.generation

        def write(folder: Path):
            _write_json(
                folder / "state.json",
                {
                    "format": STATE_FORMAT,
                    "generation": g,
                    "generations": generations,
                    "granularity": granularity,
                    "gene_fraction": gene_fraction,
                    "fingerprint": fingerprint,
                    "population": state.population,
                    "records": state.records,
                    "history": state.history,
                },
            )
            save_file(
                {f"{i}/{name}": t for i, m in enumerate(state.masks) for name, t in m.state_dict().items()},
                str(folder / "masks.safetensors"),
            )
            parent_masks = {
                f"{ident}/{name}": t for ident, m in state.parent_masks.items() for name, t in m.state_dict().items()
            }
            save_file(parent_masks or {"_empty": torch.zeros(0)}, str(folder / "parent_masks.safetensors"))
            save_file({"evolution": state.rng.get_state()}, str(folder / "rng.safetensors"))
            (folder / "parents").mkdir()
            for ident in state.parent_masks:
                _link_or_copy(self.weights_file(ident), folder / "parents" / f"{ident}.safetensors")

        write_folder_atomic(self.path / f"generation-{g:03d}", write, replace=False)
        for old in self.checkpoints():
            if int(old.name.split("-")[-1]) < g - 1:
                shutil.rmtree(old, ignore_errors=True)
        if not keep_individuals:
            for folder in (self.path / "individuals").glob("g*-i*"):
                generation = _generation_of(folder.name)
                if generation is not None and generation < g - 1:
                    shutil.rmtree(folder, ignore_errors=True)

    def load_latest(self, fingerprint: dict) -> EvolutionState | None:
        """The state in the latest checkpoint (None when there is none), checked against `fingerprint`."""
        for attempt in range(3):  # another process may replace the latest checkpoint while it is read
            checkpoints = self.checkpoints()
            if not checkpoints:
                return None
            try:
                return self.load_checkpoint(checkpoints[-1], fingerprint)
            except FileNotFoundError:
                if attempt == 2:
                    raise
        return None

    def load_checkpoint(self, folder: Path, fingerprint: dict) -> EvolutionState:
        """The state in `folder`; its settings' fingerprint must equal `fingerprint` (the differences are named)."""
        saved = json.loads((folder / "state.json").read_text())
        if saved.get("format") != STATE_FORMAT:
            raise ValueError(f"{folder} has state format {saved.get('format')}, this version reads {STATE_FORMAT}.")
        if saved["fingerprint"] != fingerprint:
            diffs = [
                f"{k}: checkpoint {saved['fingerprint'].get(k)!r}, now {fingerprint.get(k)!r}"
                for k in sorted(set(saved["fingerprint"]) | set(fingerprint))
                if saved["fingerprint"].get(k) != fingerprint.get(k)
            ]
            raise ValueError(
                f"Cannot resume the GTL run in {self.path}: its settings differ from this run's ("
                + "; ".join(diffs)
                + "). Use the same settings (only `generations` may grow), or another output_dir "
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
        return EvolutionState(
            generation=saved["generation"],
            population=saved["population"],
            masks=[population_masks[str(i)] for i in range(len(saved["population"]))],
            parent_masks=masks_by_prefix(load_file(str(folder / "parent_masks.safetensors"))),
            records=saved["records"],
            history=saved["history"],
            rng=rng,
        )
