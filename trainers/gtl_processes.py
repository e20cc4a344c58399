"""The processes of a GTL evolution: one individual per process under a launcher, meeting through the run folder.

Under `accelerate launch`, torchrun or MPI, several processes run the same evolution: process `r` of `n` trains the
individuals `i` with `i % n == r`, each with a single-process `Trainer`. They train different networks, so no process
may join the launcher's process group (a `Trainer` would wrap every network in DDP across processes), and with several
GPUs each process gets its own.

- `evolution_process()` makes the current process one such process: it reads its identity from the launcher's
  variables, removes them from `os.environ` and pins the process to its GPU. It is the one place where a GTL evolution
  changes the environment, and it must run before any `TrainingArguments` (a `GTLEvolutionConfig` included), accelerate
  state or CUDA use: the GTL recipe calls it first thing. A `GTLEvolutionConfig` created while the launcher's variables
  are still there is refused (`refuse_launcher_environment`).
- `evolution_identity()` reads the identity back, without changing anything.
- `wait_for_all()` is the rendezvous: a process waits until every result of a generation exists in the run folder.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, MutableMapping

POLL_SECONDS = 0.2

# What launchers (torchrun / `accelerate launch`, MPI) set to describe a process group.
_RANK_VARS = ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")
_WORLD_VARS = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
_LOCAL_RANK_VARS = ("LOCAL_RANK", "MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "MV2_COMM_WORLD_LOCAL_RANK")
PROCESS_GROUP_VARS = (
    *_RANK_VARS,
    *_WORLD_VARS,
    *_LOCAL_RANK_VARS,
    "LOCAL_WORLD_SIZE",
    "MPI_LOCALNRANKS",
    "OMPI_COMM_WORLD_LOCAL_SIZE",
    "MV2_COMM_WORLD_LOCAL_SIZE",
    "GROUP_RANK",
    "GROUP_WORLD_SIZE",
    "ROLE_RANK",
    "ROLE_WORLD_SIZE",
    "ROLE_NAME",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_RUN_ID",
    "TORCHELASTIC_RESTART_COUNT",
    "TORCHELASTIC_MAX_RESTARTS",
    "TORCHELASTIC_USE_AGENT_STORE",
    "TORCHELASTIC_ERROR_FILE",
    "ACCELERATE_USE_DEEPSPEED",
    "ACCELERATE_USE_FSDP",
)
# Where the identity read from the launcher is kept once the launcher's variables are gone.
IDENTITY_VARS = ("HF_METHODS_GTL_RANK", "HF_METHODS_GTL_WORLD_SIZE", "HF_METHODS_GTL_LOCAL_RANK")


def _int_from_env(environ, names: tuple[str, ...], default: int) -> int:
    for name in names:
        if environ.get(name, "").strip():
            return int(environ[name])
    return default


def launched_rank(environ: MutableMapping[str, str] | None = None) -> int | None:
    """The rank a launcher gave this process (`RANK` or an MPI equivalent), or None when no launcher did."""
    environ = os.environ if environ is None else environ
    rank = _int_from_env(environ, _RANK_VARS, -1)
    return rank if rank >= 0 else None


def evolution_process(use_cpu: bool = False, environ: MutableMapping[str, str] | None = None) -> tuple[int, int, int]:
    """Make this process one GTL evolution process; returns its `(rank, world_size, local_rank)`.

    The identity comes from the launcher's variables (`RANK` / `WORLD_SIZE` / `LOCAL_RANK`, as set by torchrun and
    `accelerate launch`, or their MPI equivalents). They are then removed from the environment for good (with
    `MASTER_ADDR`, `MASTER_PORT` and the other process-group variables), so that no `Trainer` / accelerate state of this
    process joins a process group, and the identity is kept in `HF_METHODS_GTL_RANK` / `_WORLD_SIZE` / `_LOCAL_RANK`
    (so calling this again returns the same). With several processes and GPUs, the process is pinned to its
    `LOCAL_RANK`-th visible GPU by narrowing `CUDA_VISIBLE_DEVICES`, which must happen before CUDA is initialized.

    Call it before creating any `TrainingArguments` (the `GTLEvolutionConfig` too), `Accelerator` or `PartialState`,
    and before touching CUDA. Idempotent; a no-op for a plain single process. `environ`: the environment to read and
    change (default `os.environ`).
    """
    import torch

    environ = os.environ if environ is None else environ
    rank = launched_rank(environ)
    if rank is not None:
        world_size = _int_from_env(environ, _WORLD_VARS, 1)
        local_rank = _int_from_env(environ, _LOCAL_RANK_VARS, rank)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            raise RuntimeError(
                "torch.distributed is already initialized, but GTL evolution processes train different networks and "
                "must not share a process group. Call `evolution_process()` before any `Accelerator`, `PartialState`, "
                "`TrainingArguments` or `init_process_group` (it reads RANK / WORLD_SIZE itself)."
            )
        for name in PROCESS_GROUP_VARS:
            environ.pop(name, None)
        if not 0 <= rank < world_size:
            raise ValueError(f"RANK={rank} is outside [0, WORLD_SIZE={world_size}); check the launcher's variables.")
        environ.update(dict(zip(IDENTITY_VARS, map(str, (rank, world_size, local_rank)))))
        if world_size > 1 and not use_cpu:
            _pin_gpu(local_rank, environ)
    return evolution_identity(environ)


def evolution_identity(environ: MutableMapping[str, str] | None = None) -> tuple[int, int, int]:
    """This process's `(rank, world_size, local_rank)` among the evolution processes, as `evolution_process()` left it
    (`(0, 1, 0)` for a plain single process). Changes nothing."""
    environ = os.environ if environ is None else environ
    rank = _int_from_env(environ, IDENTITY_VARS[:1], 0)
    world_size = _int_from_env(environ, IDENTITY_VARS[1:2], 1)
    local_rank = _int_from_env(environ, IDENTITY_VARS[2:], 0)
    return rank, world_size, local_rank


def refuse_launcher_environment(what: str, environ: MutableMapping[str, str] | None = None) -> None:
    """Raise when the launcher's variables are still in the environment: creating `what` (e.g. the
    `GTLEvolutionConfig`, a `TrainingArguments`) now would make this process join the launcher's process group."""
    environ = os.environ if environ is None else environ
    rank = launched_rank(environ)
    if rank is not None:
        world_size = _int_from_env(environ, _WORLD_VARS, 1)
        raise RuntimeError(
            f"{what} is created in a process started by a launcher (RANK={rank}, WORLD_SIZE={world_size}), whose "
            "variables would make it join the launcher's process group; GTL evolution processes each train their own "
            "individuals. Call `hf_methods.trainers.gtl_processes.evolution_process()` first (the GTL recipe does), "
            "before any TrainingArguments, Accelerator or CUDA use, then create it."
        )


def _pin_gpu(local_rank: int, environ: MutableMapping[str, str]) -> None:
    import torch

    if torch.cuda.is_initialized():
        if torch.cuda.device_count() > 1:
            raise RuntimeError(
                "CUDA was initialized before `evolution_process()` ran, so this process cannot be pinned to its GPU "
                f"(LOCAL_RANK={local_rank}). Call it before touching CUDA."
            )
        return
    visible = [d for d in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    environ["CUDA_VISIBLE_DEVICES"] = visible[local_rank % len(visible)] if visible else str(local_rank)


def wait_for_all(
    count: int,
    finished: Callable[[int], bool],
    *,
    generation: int,
    world_size: int,
    timeout: float,
    poll: float = POLL_SECONDS,
) -> None:
    """The file-system rendezvous: return once `finished(i)` holds for every individual `i < count` of `generation`.

    Individual `i` is trained by rank `i % world_size`. With one process a missing result can only mean it was not
    written (RuntimeError). With several, the others' results are polled every `poll` seconds; `timeout` seconds without
    any new one (for example when a process died) is a TimeoutError naming the missing individuals and their ranks.
    """
    seen, last_progress = -1, time.monotonic()
    while True:
        done = [i for i in range(count) if finished(i)]
        if len(done) == count:
            return
        missing = sorted(set(range(count)) - set(done))
        if world_size == 1:
            raise RuntimeError(
                f"Results of generation {generation} individuals {missing} are missing after training them."
            )
        if len(done) > seen:
            seen, last_progress = len(done), time.monotonic()
        elif time.monotonic() - last_progress > timeout:
            ranks = sorted({i % world_size for i in missing})
            raise TimeoutError(
                f"Waited {timeout:g} s without a new result for generation {generation}: individuals {missing} "
                f"(trained by rank(s) {ranks}) are missing; a process may have died. Run again to resume (finished "
                "individuals are kept), and raise `sync_timeout` if one individual trains longer."
            )
        time.sleep(poll)
