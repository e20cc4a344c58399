"""Test environment: offline Hub, no telemetry, quiet logs. Set before any Hugging Face import."""

import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="hf_methods_tests_home_"))

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """A running `tests.fake_hub.FakeHub` that huggingface_hub and transformers talk to for this test only.

    Late patch (HF_ENDPOINT is read at import): the endpoint constants, the endpoint baked into huggingface_hub's
    module-level `HfApi` (used by `huggingface_hub.upload_file`/`create_repo`/... and `ModelCard.push_to_hub`),
    offline mode off, transformers' cached `HfApi` dropped, a fresh download cache, and HF_TOKEN=hf_test_token
    (the only token the fake accepts). Everything is undone at teardown, so the suite is offline again.
    """
    import huggingface_hub.hf_api
    import transformers.utils.hub
    from huggingface_hub import constants

    from fake_hub import FakeHub  # tests/ is on sys.path (rootdir conftest, no __init__.py)

    hub = FakeHub(tokens={"hf_test_token"}).start()
    try:
        monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(huggingface_hub.hf_api.api, "endpoint", hub.endpoint)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # what huggingface_hub.is_offline_mode() returns
        monkeypatch.setattr(transformers.utils.hub, "is_offline_mode", lambda: False)
        monkeypatch.setattr(transformers.utils.hub, "_hf_api", None)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
        monkeypatch.setenv("HF_TOKEN", "hf_test_token")  # get_token() reads the environment on every call
        monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
        monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)  # would take precedence over HF_TOKEN
        yield hub
    finally:
        monkeypatch.undo()
        hub.stop()
