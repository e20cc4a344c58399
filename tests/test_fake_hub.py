"""The fake Hub (tests/fake_hub.py) driven through the real huggingface_hub and transformers clients."""

import hashlib
from pathlib import Path

import httpx2
import pytest
import torch
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    ModelCard,
    constants,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors.torch import save_file
from transformers import BertConfig, BertModel

README = "---\nlicense: mit\ntags:\n- fake-hub\n---\n# Round trip\n"


def _write(folder, files: dict):
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return folder


def _safetensors(tmp_path, seed=0) -> bytes:
    path = tmp_path / f"weights-{seed}.safetensors"
    save_file({"w": torch.randn(4, 3, generator=torch.Generator().manual_seed(seed))}, str(path))
    return path.read_bytes()


def test_create_upload_list_download(fake_hub, tmp_path):
    api = HfApi()
    url = api.create_repo("tester/roundtrip")
    assert url.repo_id == "tester/roundtrip" and url.startswith(fake_hub.endpoint)
    assert api.create_repo("tester/roundtrip", exist_ok=True).repo_id == "tester/roundtrip"  # 409 swallowed
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo("tester/roundtrip")
    assert err.value.response.status_code == 409

    weights = _safetensors(tmp_path)
    folder = _write(tmp_path / "up", {"README.md": README.encode(), "model.safetensors": weights})
    info = api.upload_folder(folder_path=folder, repo_id="tester/roundtrip", commit_message="Add weights")

    # The weights went preupload -> LFS batch -> PUT -> verify -> lfsFile in the commit; README.md inline.
    routes = fake_hub.routes_used("POST") + fake_hub.routes_used("PUT")
    assert "/api/models/tester/roundtrip/preupload/main" in routes
    assert "/tester/roundtrip.git/info/lfs/objects/batch" in routes
    assert f"/_lfs_upload/{hashlib.sha256(weights).hexdigest()}" in routes
    assert "/tester/roundtrip.git/info/lfs/objects/verify" in routes
    assert "/api/validate-yaml" in routes
    assert info.oid == api.model_info("tester/roundtrip").sha

    assert sorted(api.list_repo_files("tester/roundtrip")) == [".gitattributes", "README.md", "model.safetensors"]
    (tree_entry,) = [f for f in api.list_repo_tree("tester/roundtrip") if f.path == "model.safetensors"]
    assert tree_entry.lfs is not None and tree_entry.lfs.size == len(weights)
    assert Path(hf_hub_download("tester/roundtrip", "model.safetensors")).read_bytes() == weights
    assert api.file_exists("tester/roundtrip", "README.md") and not api.file_exists("tester/roundtrip", "nope.txt")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("tester/roundtrip", "nope.txt")
    card = ModelCard.load("tester/roundtrip")
    assert card.data.tags == ["fake-hub"]
    card.data.tags.append("pushed")
    card.push_to_hub("tester/roundtrip")  # goes through huggingface_hub's module-level HfApi
    assert b"- pushed" in fake_hub.files("tester/roundtrip")["README.md"]

    snapshot = snapshot_download("tester/roundtrip", cache_dir=tmp_path / "snap")
    assert (tmp_path / "snap").is_dir() and Path(snapshot, "model.safetensors").read_bytes() == weights


def test_transformers_push_to_hub_and_from_pretrained(fake_hub):
    config = BertConfig(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    model = BertModel(config)
    model.push_to_hub("tester/tiny")
    assert {"config.json", "model.safetensors", "README.md"} <= set(fake_hub.files("tester/tiny"))

    loaded = BertModel.from_pretrained("tester/tiny")
    sha = HfApi().model_info("tester/tiny").sha  # transformers resolves "main" once, then reads at the commit
    assert ("GET", "/api/models/tester/tiny/revision/main") in fake_hub.requests
    assert ("GET", f"/tester/tiny/resolve/{sha}/model.safetensors") in fake_hub.requests
    expected, got = model.state_dict(), loaded.state_dict()
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():
        assert torch.equal(tensor, got[name]), name


def test_revisions_branches_and_commit_oids(fake_hub):
    api = HfApi()
    api.create_repo("tester/revs")
    first = api.upload_file(path_or_fileobj=b"v1", path_in_repo="weights.txt", repo_id="tester/revs")
    api.create_branch("tester/revs", branch="v2")
    api.create_branch("tester/revs", branch="v2", exist_ok=True)  # 409 swallowed
    api.upload_file(path_or_fileobj=b"v2", path_in_repo="weights.txt", repo_id="tester/revs", revision="v2")
    api.create_branch("tester/revs", branch="release/1.0", revision=first.oid)  # '/' is url-quoted by the client

    def read(revision):
        return Path(hf_hub_download("tester/revs", "weights.txt", revision=revision)).read_bytes()

    assert read("v2") == b"v2" and read("main") == b"v1"
    assert read(first.oid) == b"v1" and read("release/1.0") == b"v1"
    assert api.model_info("tester/revs", revision="v2").sha != first.oid
    assert api.list_repo_files("tester/revs", revision="release/1.0") == [".gitattributes", "weights.txt"]
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("tester/revs", "weights.txt", revision="v3")


def test_private_repo_needs_the_token(fake_hub, monkeypatch, tmp_path):
    api = HfApi()
    api.create_repo("tester/secret", private=True)
    api.upload_file(path_or_fileobj=b"hidden", path_in_repo="secret.txt", repo_id="tester/secret")
    assert api.model_info("tester/secret").private is True
    assert Path(hf_hub_download("tester/secret", "secret.txt")).read_bytes() == b"hidden"

    anonymous = HfApi(token=False)
    with pytest.raises(RepositoryNotFoundError):
        anonymous.model_info("tester/secret")
    with pytest.raises(RepositoryNotFoundError):
        anonymous.list_repo_files("tester/secret")
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(RepositoryNotFoundError):  # fresh cache: the copy cached above would be served otherwise
        hf_hub_download("tester/secret", "secret.txt", cache_dir=tmp_path)
    with pytest.raises(HfHubHTTPError) as err:  # writes need a token too
        HfApi().create_repo("tester/other")
    assert err.value.response.status_code == 401
    # An unknown token is refused even on public repos, like the real Hub.
    HfApi(token="hf_test_token").create_repo("tester/open")
    assert HfApi(token=False).list_repo_files("tester/open") == [".gitattributes"]
    with pytest.raises(HfHubHTTPError, match="Invalid credentials in Authorization header"):
        HfApi(token="hf_wrong").list_repo_files("tester/open")
    with pytest.raises(HfHubHTTPError, match="Invalid user token"):  # whoami words it its own way
        HfApi(token="hf_wrong").whoami()


def test_401_error_mentions_credentials(fake_hub):
    fake_hub.reject_all_with_401 = True
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(token="hf_wrong").create_repo("tester/denied")
    assert not isinstance(err.value, RepositoryNotFoundError)
    assert err.value.response.status_code == 401
    assert "401" in str(err.value) and "Invalid credentials in Authorization header" in str(err.value)
    assert "tester/denied" not in fake_hub.repos


def test_failed_commit_applies_nothing_and_retry_succeeds(fake_hub, tmp_path):
    api = HfApi()
    api.create_repo("tester/flaky")
    before = api.model_info("tester/flaky").sha
    weights = _safetensors(tmp_path, seed=1)
    folder = _write(tmp_path / "up", {"notes.txt": b"hello", "model.safetensors": weights})

    fake_hub.fail_next_commits = 1
    with pytest.raises(HfHubHTTPError) as err:
        api.upload_folder(folder_path=folder, repo_id="tester/flaky")
    assert err.value.response.status_code == 500
    assert api.model_info("tester/flaky").sha == before
    assert set(fake_hub.files("tester/flaky")) == {".gitattributes"}

    info = api.upload_folder(folder_path=folder, repo_id="tester/flaky")
    assert fake_hub.files("tester/flaky") == {
        ".gitattributes": fake_hub.files("tester/flaky", before)[".gitattributes"],
        "notes.txt": b"hello",
        "model.safetensors": weights,
    }
    assert [c.oid for c in fake_hub.repos["tester/flaky"].branches["main"]] == [before, info.oid]
    # The LFS object uploaded by the failed attempt was reused: one PUT in all.
    assert len([p for p in fake_hub.routes_used("PUT") if p.startswith("/_lfs_upload/")]) == 1


def test_injected_commit_faults_repo_deletion_and_commit_counts(fake_hub):
    api = HfApi()
    api.create_repo("tester/faults")
    add = [CommitOperationAdd(path_in_repo="a.txt", path_or_fileobj=b"a")]

    fake_hub.fail_next_commits, fake_hub.commit_failure_status = 1, 503
    with pytest.raises(HfHubHTTPError) as err:  # create_commit sends its commit once: no retry in huggingface_hub
        api.create_commit("tester/faults", add, commit_message="refused")
    assert err.value.response.status_code == 503
    assert [c.message for c in fake_hub.commits("tester/faults")] == ["initial commit"]

    fake_hub.fail_commits_to["tester/faults"], fake_hub.commit_failure_status = 1, 500
    with pytest.raises(HfHubHTTPError, match="fail_commits_to"):
        api.create_commit("tester/faults", add, commit_message="refused too")
    assert fake_hub.fail_commits_to == {"tester/faults": 0}

    fake_hub.lose_next_commit_answers = 1  # applied, answered 500
    with pytest.raises(HfHubHTTPError) as err:
        api.create_commit("tester/faults", add, commit_message="applied")
    assert err.value.response.status_code == 500
    assert [c.message for c in fake_hub.commits("tester/faults")] == ["initial commit", "applied"]
    assert fake_hub.files("tester/faults")["a.txt"] == b"a"
    assert fake_hub.commit_requests("tester/faults") == 3

    api.delete_repo("tester/faults")
    assert "tester/faults" not in fake_hub.repos
    with pytest.raises(RepositoryNotFoundError):
        api.delete_repo("tester/faults")
    api.delete_repo("tester/faults", missing_ok=True)


def test_a_stopped_hub_refuses_connections(fake_hub):
    fake_hub.stop()
    with pytest.raises(httpx2.ConnectError):  # what huggingface_hub lets through when the Hub is down
        HfApi().model_info("tester/anything")


def test_tree_paths_info_and_deletions(fake_hub):
    api = HfApi()
    api.create_repo("tester/tree")
    api.create_commit(
        "tester/tree",
        commit_message="files",
        operations=[
            CommitOperationAdd(path_in_repo=p, path_or_fileobj=p.encode()) for p in ("a/b.txt", "a/c/d.txt", "top.txt")
        ],
    )
    listing = {(type(e).__name__, e.path) for e in api.list_repo_tree("tester/tree", path_in_repo="a")}
    assert listing == {("RepoFile", "a/b.txt"), ("RepoFolder", "a/c")}
    infos = api.get_paths_info("tester/tree", ["a", "top.txt", "missing.txt"])
    assert [(type(e).__name__, e.path) for e in infos] == [("RepoFolder", "a"), ("RepoFile", "top.txt")]

    api.create_commit(
        "tester/tree",
        commit_message="prune",
        operations=[CommitOperationDelete(path_in_repo="a/c/"), CommitOperationDelete(path_in_repo="top.txt")],
    )
    assert set(fake_hub.files("tester/tree")) == {".gitattributes", "a/b.txt"}
    with pytest.raises(EntryNotFoundError):
        api.delete_file("gone.txt", repo_id="tester/tree")


def test_suite_is_offline_again_after_the_fixture(tmp_path):
    """Runs after the tests above: the fixture's teardown restored the offline defaults."""
    import huggingface_hub.hf_api
    import transformers.utils.hub

    assert constants.HF_HUB_OFFLINE and "127.0.0.1" not in constants.ENDPOINT + constants.HUGGINGFACE_CO_URL_TEMPLATE
    assert huggingface_hub.hf_api.api.endpoint == constants.ENDPOINT
    assert transformers.utils.hub._hf_api is None or "127.0.0.1" not in transformers.utils.hub._hf_api.endpoint
    with pytest.raises(LocalEntryNotFoundError):  # no request is attempted when offline
        hf_hub_download("tester/tiny", "config.json", cache_dir=tmp_path)
    with pytest.raises(OfflineModeIsEnabled):
        HfApi().model_info("tester/tiny")
