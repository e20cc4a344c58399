"""GTL evolution processes: the identity read from a launcher's variables, which `evolution_process()` alone removes
(and pins the GPU), the config refusing a launcher's environment without changing it, and the rendezvous's waiting."""

import os

import pytest

from hf_methods.trainers.gtl_config import GTLEvolutionConfig
from hf_methods.trainers.gtl_processes import (
    IDENTITY_VARS,
    PROCESS_GROUP_VARS,
    evolution_identity,
    evolution_process,
    launched_rank,
    refuse_launcher_environment,
    wait_for_all,
)

LAUNCHED = {
    "RANK": "1",
    "WORLD_SIZE": "2",
    "LOCAL_RANK": "1",
    "MASTER_ADDR": "127.0.0.1",
    "MASTER_PORT": "29500",
    "TORCHELASTIC_RUN_ID": "x",
    "PATH": "/bin",
    "CUDA_VISIBLE_DEVICES": "3,5",
}


def test_a_plain_process_is_rank_0_of_1_and_nothing_changes():
    env = {"PATH": "/bin"}
    assert launched_rank(env) is None
    assert evolution_process(environ=env) == (0, 1, 0) == evolution_identity(env)
    assert env == {"PATH": "/bin"}
    refuse_launcher_environment("X", env)  # no launcher: nothing to refuse


def test_evolution_process_takes_the_identity_removes_the_launcher_and_pins_the_gpu():
    env = dict(LAUNCHED)
    assert launched_rank(env) == 1
    assert evolution_process(environ=env) == (1, 2, 1)
    assert not set(PROCESS_GROUP_VARS) & set(env) and env["PATH"] == "/bin"
    assert [env[name] for name in IDENTITY_VARS] == ["1", "2", "1"]
    assert env["CUDA_VISIBLE_DEVICES"] == "5"  # its LOCAL_RANK-th visible GPU
    assert evolution_process(environ=env) == (1, 2, 1) == evolution_identity(env)  # idempotent

    on_cpu = dict(LAUNCHED)
    evolution_process(use_cpu=True, environ=on_cpu)
    assert on_cpu["CUDA_VISIBLE_DEVICES"] == "3,5"
    mpi = {"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "3", "OMPI_COMM_WORLD_LOCAL_RANK": "0"}
    assert evolution_process(use_cpu=True, environ=mpi) == (0, 3, 0) and set(mpi) == set(IDENTITY_VARS)
    with pytest.raises(ValueError, match="outside"):
        evolution_process(environ={"RANK": "2", "WORLD_SIZE": "2"})


def test_the_config_refuses_a_launchers_environment_and_changes_nothing(tmp_path, monkeypatch):
    for name, value in LAUNCHED.items():
        monkeypatch.setenv(name, value)
    before = dict(os.environ)
    with pytest.raises(RuntimeError, match=r"RANK=1, WORLD_SIZE=2.*evolution_process\(\)"):
        GTLEvolutionConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    assert dict(os.environ) == before


def test_wait_for_all_returns_times_out_or_reports_missing_results():
    wait_for_all(3, lambda i: True, generation=0, world_size=2, timeout=1)
    with pytest.raises(RuntimeError, match=r"generation 4 individuals \[1\] are missing"):
        wait_for_all(3, lambda i: i != 1, generation=4, world_size=1, timeout=1)
    with pytest.raises(TimeoutError, match=r"individuals \[1, 3\] \(trained by rank\(s\) \[1\]\)"):
        wait_for_all(4, lambda i: i % 2 == 0, generation=0, world_size=2, timeout=0.05, poll=0.01)
    calls = []

    def arriving(i):  # results arrive one poll after another, each within the timeout
        calls.append(i)
        return i < len(calls) // 4

    wait_for_all(4, arriving, generation=0, world_size=2, timeout=0.5, poll=0.01)
