"""Hub faults during a push (tests/fake_hub.py): retries on 5xx, clear errors when the Hub fails or is down, no empty
repo left behind, and no commit made twice when a push is repeated."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import transformers as T
import yaml
from huggingface_hub.errors import HfHubHTTPError

import hf_methods  # noqa: F401
from hf_methods import cli, hub
from hf_methods.hub import HubServerError, HubUnreachableError, push_folder, push_run

# a TLEG run small enough to train in seconds: a trained teacher, the learngene, one descendant
TINY_RUN = {
    "image_size": 8,
    "patch_size": 4,
    "hidden_size": 16,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "teacher_num_layers": 2,
    "teacher_epochs": 1,
    "aux_num_layers": 3,
    "distill_epochs": 1,
    "depths": [1],
    "finetune_epochs": 1,
    "batch_size": 32,
    "max_train_samples": 64,
}


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch):
    monkeypatch.setattr(hub, "RETRY_BASE_DELAY", 0.0)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """The output folder of a tiny TLEG run (trained offline once for this module)."""
    from hf_methods.recipes.tleg.pipeline import main

    base = tmp_path_factory.mktemp("tleg_run")
    (base / "tiny.yaml").write_text(yaml.safe_dump(TINY_RUN))
    main(["--config", str(base / "tiny.yaml"), "--output_dir", str(base / "run")])
    assert (base / "run" / "report.json").is_file() and (base / "run" / "teacher").is_dir()
    return base / "run"


@pytest.fixture
def model_folder(tmp_path):
    config = T.BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16
    )
    folder = tmp_path / "tiny-bert"
    T.BertModel(config).save_pretrained(folder)
    (folder / "README.md").write_text("---\nlicense: mit\n---\n# tiny\n")
    return folder


def messages(fake_hub, repo_id):
    return [commit.message for commit in fake_hub.commits(repo_id)]


def local_files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def without_gitattributes(files):
    return {name: content for name, content in files.items() if name != ".gitattributes"}


def test_a_500_on_the_first_commit_is_retried_and_commits_once(fake_hub, model_folder):
    fake_hub.fail_next_commits = 1
    result = push_folder(model_folder, "tester/retried", commit_message="Upload tiny")
    assert result.committed and result.created_repo
    assert fake_hub.commit_requests("tester/retried") == 2  # the 500, then the commit
    assert messages(fake_hub, "tester/retried") == ["initial commit", "Upload tiny"]
    assert without_gitattributes(fake_hub.files("tester/retried")) == local_files(model_folder)
    assert result.oid == fake_hub.commits("tester/retried")[-1].oid


def test_a_commit_applied_but_answered_with_500_is_not_made_twice(fake_hub, model_folder):
    fake_hub.lose_next_commit_answers = 1  # the commit lands, the client hears a 500
    result = push_folder(model_folder, "tester/lost-answer", commit_message="Upload tiny")
    assert result.committed
    assert fake_hub.commit_requests("tester/lost-answer") == 1  # the retry saw the files there and sent nothing
    assert messages(fake_hub, "tester/lost-answer") == ["initial commit", "Upload tiny"]
    assert without_gitattributes(fake_hub.files("tester/lost-answer")) == local_files(model_folder)


def test_500_on_every_try_is_a_clear_error_and_leaves_no_empty_repo(fake_hub, model_folder):
    fake_hub.fail_next_commits = 100
    with pytest.raises(HubServerError) as err:
        push_folder(model_folder, "tester/failing")
    message = str(err.value)
    assert message.startswith(f"the Hub at {fake_hub.endpoint} answered HTTP 500 to the commit to tester/failing")
    assert "nothing was committed to tester/failing and the empty repo this push had created was deleted" in message
    assert "\n" not in message and err.value.committed is False and err.value.response.status_code == 500
    assert isinstance(err.value, HfHubHTTPError)  # callers catching huggingface_hub's error still do
    assert fake_hub.commit_requests("tester/failing") == hub.HUB_TRIES
    assert "tester/failing" not in fake_hub.repos

    # a repo that existed before the push is never deleted, and keeps its history
    fake_hub.fail_next_commits = 0
    push_folder(model_folder, "tester/existing", commit_message="v1")
    (model_folder / "README.md").write_text("---\nlicense: mit\n---\n# tiny, v2\n")
    fake_hub.fail_next_commits = 100
    with pytest.raises(HubServerError, match="nothing was committed to tester/existing;"):
        push_folder(model_folder, "tester/existing", commit_message="v2")
    assert messages(fake_hub, "tester/existing") == ["initial commit", "v1"]


def test_a_4xx_is_not_retried_and_leaves_no_empty_repo(fake_hub, model_folder):
    fake_hub.fail_next_commits, fake_hub.commit_failure_status = 1, 422
    with pytest.raises(HfHubHTTPError) as err:
        push_folder(model_folder, "tester/rejected")
    assert err.value.response.status_code == 422 and not isinstance(err.value, HubServerError)
    assert fake_hub.commit_requests("tester/rejected") == 1
    assert "tester/rejected" not in fake_hub.repos
    assert "nothing was committed to tester/rejected" in str(err.value)


def test_a_down_hub_is_a_clear_connection_error(fake_hub, model_folder):
    fake_hub.stop()  # connection refused on its port from now on
    with pytest.raises(ConnectionError) as err:
        push_folder(model_folder, "tester/unreachable")
    assert isinstance(err.value, HubUnreachableError) and err.value.endpoint == fake_hub.endpoint
    message = str(err.value)
    assert message.startswith(f"cannot reach the Hub at {fake_hub.endpoint} (ConnectError: ")
    assert f"{hub.HUB_TRIES} tries), so nothing was committed to tester/unreachable" in message
    assert "check HF_ENDPOINT and your network connection" in message and "\n" not in message


def test_pushing_the_same_run_twice_makes_no_new_commit(fake_hub, run_dir, capsys):
    first = push_run(run_dir, "tester/twice")
    assert set(first.values()) == {"tester/twice-teacher", "tester/twice", "tester/twice-depth-1"}
    assert all(result.committed for result in first.results.values())
    histories = {repo: messages(fake_hub, repo) for repo in first.values()}
    assert all(len(history) == 2 for history in histories.values())  # one commit per repo
    seen = len(fake_hub.requests)

    second = push_run(run_dir, "tester/twice")
    assert second == first
    assert not any(result.committed for result in second.results.values())
    assert {repo: messages(fake_hub, repo) for repo in first.values()} == histories
    assert {method for method, _ in fake_hub.requests[seen:]} == {"GET"}  # looked, wrote nothing

    cli.push_main([str(run_dir), "--repo-id", "tester/twice"])
    out = capsys.readouterr().out
    assert "learngene -> tester/twice (unchanged)" in out and "teacher -> tester/twice-teacher (unchanged)" in out
    assert {repo: messages(fake_hub, repo) for repo in first.values()} == histories


def test_a_run_push_failing_half_way_says_so_and_pushing_again_finishes_it(fake_hub, run_dir):
    fake_hub.fail_commits_to["tester/half"] = 100  # the learngene's repo; the teacher's goes first
    with pytest.raises(HubServerError) as err:
        push_run(run_dir, "tester/half")
    assert "nothing was committed to tester/half and the empty repo" in str(err.value)
    assert str(err.value).endswith(
        f"Pushed before it: tester/half-teacher. To finish the push: `hf-methods push {run_dir} --repo-id tester/half`"
        " (it skips what is already there)."
    )
    assert "tester/half" not in fake_hub.repos and "tester/half-depth-1" not in fake_hub.repos
    teacher = messages(fake_hub, "tester/half-teacher")

    fake_hub.fail_commits_to.clear()
    pushed = push_run(run_dir, "tester/half")
    assert messages(fake_hub, "tester/half-teacher") == teacher == ["initial commit", "Upload the teacher"]
    assert not pushed.results["tester/half-teacher"].committed and pushed.results["tester/half"].committed
    assert len(fake_hub.commits("tester/half-depth-1")) == 2


def test_push_command_on_500s_prints_one_line_and_exits_2(fake_hub, run_dir, capsys):
    fake_hub.fail_next_commits = 100
    with pytest.raises(SystemExit) as exit_:
        cli.push_main([str(run_dir), "--repo-id", "tester/cli-500"])
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    (line,) = captured.err.splitlines()
    assert line.startswith("hf-methods push: error: the Hub at ") and "HTTP 500" in line
    assert "nothing was committed to tester/cli-500-teacher" in line and not captured.out
    assert not [repo for repo in fake_hub.repos if repo.startswith("tester/cli-500")]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_push_command_with_the_hub_down_prints_one_line_and_exits_2(run_dir, tmp_path):
    endpoint = f"http://127.0.0.1:{closed_port()}"
    env = {
        **os.environ,
        "HF_ENDPOINT": endpoint,
        "HF_HUB_OFFLINE": "0",
        "HF_TOKEN": "hf_test_token",
        "HF_HUB_DISABLE_XET": "1",
        "HF_HOME": str(tmp_path / "home"),
    }
    # `hf-methods push ...` as the console command runs it, without the waits between tries
    code = "import sys, hf_methods.hub as hub; hub.RETRY_BASE_DELAY = 0; from hf_methods.cli import main; "
    code += "sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run(
        [sys.executable, "-c", code, "push", str(run_dir), "--repo-id", "tester/offline"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        stdin=subprocess.DEVNULL,
        cwd=Path(__file__).parent,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and not proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("hf-methods push: error:")]
    assert errors == [proc.stderr.splitlines()[-1]]
    assert errors[0].startswith(f"hf-methods push: error: cannot reach the Hub at {endpoint} (ConnectError:")
    assert "nothing was committed to tester/offline-teacher" in errors[0] and "HF_ENDPOINT" in errors[0]
