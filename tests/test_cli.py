"""What a new user meets at the `hf-methods` command line: every mistake is one line naming the fix (exit 2), never
a traceback; `hf-methods choose` takes every kind of run report."""

import json
import os
import subprocess
import sys

import pytest

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


def cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "hf_methods.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env or ENV,
        timeout=120,
    )


def one_line_error(proc, command: str, expected: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr and f"hf-methods {command}: error:" in lines[-1], proc.stderr
    assert expected in lines[-1], lines[-1]


@pytest.fixture(scope="module")
def learngene_folder(tmp_path_factory):
    from transformers import ViTConfig, ViTForImageClassification

    from hf_methods import TLEGModel

    teacher = ViTForImageClassification(
        ViTConfig(
            image_size=16,
            patch_size=4,
            num_channels=1,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            num_labels=10,
        )  # fmt: skip
    )
    folder = tmp_path_factory.mktemp("learngene")
    TLEGModel.from_teacher(teacher, aux_num_layers=2).save_pretrained(folder)
    return folder


def in_process(capsys, *args):
    """`hf-methods ARGS` run by `hf_methods.cli.main` in this process (no interpreter start-up: 4-5 s each): the
    exit code and stderr. An uncaught exception fails the test, as a traceback would."""
    import torch

    from hf_methods.cli import main

    threads = torch.get_num_threads()  # a recipe sets its threads while parsing
    capsys.readouterr()
    try:
        code = main([str(a) for a in args])
    except SystemExit as err:  # argparse
        code = err.code
    finally:
        torch.set_num_threads(threads)
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


def test_user_mistakes_are_one_line_errors(tmp_path, learngene_folder, capsys):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    one_line_error(cli("tleg", "--no_such_flag", "3"), "tleg", "unknown argument(s) ['--no_such_flag', '3']")
    cases = [  # the same entry point, in this process
        (["tleg", "--output_dir", a_file], "is a file or lies inside one"),
        (["tleg", "--output_dir", a_file / "run"], "is a file or lies inside one"),
        (["tleg", "--teacher", "does/not/exist"], "teacher: no such folder 'does/not/exist'"),
        (["rdd", "--teacher", "does/not/exist"], "teacher: no such folder 'does/not/exist'"),
        (["tleg", "--teacher", a_file], "is a file; give the folder of a saved model"),
        (
            ["tleg", "--teacher", learngene_folder, "--output_dir", tmp_path / "run"],
            "is not a ViTForImageClassification checkpoint",
        ),
    ]
    for args, expected in cases:
        one_line_error(in_process(capsys, *args), args[0], expected)


def test_a_pipeline_run_as_a_module_says_it_in_one_line_too(tmp_path, name="sws"):
    """`python -m` / `accelerate launch -m hf_methods.recipes.<name>.pipeline` (the Scaling out commands; every
    pipeline ends in the same `run_script`)."""
    folder = tmp_path / "a-file"
    folder.write_text("x")
    module = f"hf_methods.recipes.{name}.pipeline"
    proc = subprocess.run([sys.executable, "-m", module, "--output_dir", str(folder)], capture_output=True, text=True,
                          env=ENV, timeout=120)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(f"python -m {module}: error: output_dir ")


def test_a_value_argparse_cannot_read_names_the_command(capsys):
    proc = in_process(capsys, "tleg", "--depths", "abc")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (
        proc.stderr.startswith("usage: hf-methods tleg ") and "hf-methods tleg: error: argument --depths" in proc.stderr
    )


def test_pushing_without_a_token_says_so_before_any_work(tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "home" / "token"))  # no stored token either
    (tmp_path / "run").mkdir()
    one_line_error(in_process(capsys, "push", tmp_path / "run", "--repo-id", "org/name"), "push", "not logged in")
    proc = in_process(capsys, "tleg", "--push_to_hub", "true", "--hub_model_id", "org/name", "--output_dir",
                      tmp_path / "x")  # fmt: skip
    one_line_error(proc, "tleg", "push_to_hub needs a Hub token")
    assert not (tmp_path / "x").exists()  # refused before the run took its folder


def test_choose_skips_reports_without_models_to_choose_with_a_note(tmp_path, capsys):
    tleg, gtl = tmp_path / "tleg", tmp_path / "gtl"
    for folder in (tleg, gtl):
        folder.mkdir()
    choices = [{"method": "TLEG", "name": f"depth {d}", "params": 1000 * d, "flops": 10**6 * d, "accuracy": d / 10,
                "path": f"descendants/depth-{d}"} for d in (1, 2, 3)]  # fmt: skip
    (tleg / "report.json").write_text(json.dumps({"method": "TLEG", "choices": choices}))
    (gtl / "report.json").write_text(json.dumps({"method": "GTL", "learngene": {}}))
    proc = in_process(capsys, "choose", tleg / "report.json", gtl / "report.json", "--budget-params", "2.5K")
    assert proc.returncode == 0, proc.stderr
    assert "depth 2" in proc.stdout
    assert f"note: skipping {gtl / 'report.json'}: a GTL run" in proc.stderr
    proc = in_process(capsys, "choose", gtl / "report.json", "--budget-params", "1M")
    one_line_error(proc, "choose", "none of the reports")


@pytest.mark.parametrize("args", [[], ["--help"]])
def test_the_command_list_does_not_load_torch(args):
    """`hf-methods` and `hf-methods --help` only list the commands: no torch or transformers import (seconds)."""
    code = (
        f"import sys; sys.argv = ['/usr/bin/hf-methods', *{args!r}]\n"  # as the console script runs
        "from hf_methods.cli import main\n"
        "code = main()\n"
        "print(code, 'torch' in sys.modules, 'transformers' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1] == "0 False False", lines[-1]
    assert all(f"  {command}" in proc.stdout for command in ("tleg", "sws", "pool", "gtl", "push", "choose"))
