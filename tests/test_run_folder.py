"""A run owns its output folder (`hf_methods.run_folder`, claimed by `Run`): one run at a time, a finished run is not
overwritten without --overwrite_output_dir, an unfinished one continues only with the same settings; report.json
is written last."""

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

import pytest

from hf_methods import run_folder
from hf_methods.recipe import RecipeArguments, Run
from hf_methods.run_folder import LOCK, STATE, RunFolderError


@dataclass
class Toy(RecipeArguments):
    depths: list[int] = field(default_factory=lambda: [2])


def test_a_second_run_into_a_folder_in_use_is_refused_naming_the_other(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / LOCK).write_text(json.dumps({"pid": other.pid, "host": socket.gethostname(), "started": time.time()}))
        with pytest.raises(RunFolderError, match=rf"in use by another hf-methods run \(pid {other.pid} on"):
            Run(Toy(output_dir=str(out)), stages=1)
    finally:
        other.kill()
        other.wait()
    run = Run(Toy(output_dir=str(out)), stages=1)  # its process is gone: a stale lock is taken over
    assert json.loads((out / LOCK).read_text())["pid"] == os.getpid() and run.folder_state == "new"


def test_finished_runs_are_kept_unless_overwritten_and_report_json_comes_last(tmp_path):
    out = tmp_path / "out"
    run = Run(Toy(output_dir=str(out)), stages=1)
    (out / "descendants" / "depth-1").mkdir(parents=True)
    run.write_report({"method": "toy"}, markdown="# toy")
    assert not (out / "report.json").exists() and (out / STATE).exists()  # not finished yet
    assert STATE == "UNFINISHED-RUN.json" and "Rerun the same command" in json.loads((out / STATE).read_text())["note"]
    run.finish("toy done")
    assert json.loads((out / "report.json").read_text()) == {"method": "toy"}
    assert not (out / STATE).exists() and not (out / LOCK).exists()
    with pytest.raises(RunFolderError, match="holds a finished run .*--overwrite_output_dir true"):
        Run(Toy(output_dir=str(out), depths=[3]), stages=1)
    assert (out / "descendants" / "depth-1").is_dir()  # nothing touched
    run = Run(Toy(output_dir=str(out), depths=[3], overwrite_output_dir=True), stages=1)
    assert run.folder_state == "overwritten" and sorted(p.name for p in out.iterdir()) == sorted([LOCK, STATE])


def test_unfinished_runs_continue_only_with_their_settings(tmp_path):
    out = tmp_path / "out"
    Run(Toy(output_dir=str(out), depths=[2, 4]), stages=1)
    (out / "_stages").mkdir()
    run_folder.release(out)  # as if killed
    with pytest.raises(RunFolderError, match=r"other settings \(depths: \[2, 4\] there, \[3\] now\)"):
        Run(Toy(output_dir=str(out), depths=[3]), stages=1)
    run = Run(Toy(output_dir=str(out), depths=[2, 4], num_threads=1), stages=1)  # threads do not change results
    assert run.folder_state == "continued" and (out / "_stages").is_dir()


def test_a_folder_hf_methods_did_not_write_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="not empty and was not written by an hf-methods run"):
        Run(Toy(output_dir=str(tmp_path)), stages=1)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_the_cli_says_it_in_one_line(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text("{}")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for args, expected in [
        (["tleg", "--output_dir", str(out)], "hf-methods tleg: error: output_dir"),
        (["tleg", "--depths", "0"], "hf-methods tleg: error: depths must be positive integers"),
    ]:
        proc = subprocess.run(
            [sys.executable, "-m", "hf_methods.cli", *args], capture_output=True, text=True, env=env, timeout=120
        )
        assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
        assert expected in proc.stderr and "Traceback" not in proc.stderr
