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

# HF_METHODS_TEST_THREADS=1 when several test runs share this 2-core machine (2 threads each thrash).
torch.set_num_threads(int(os.environ.get("HF_METHODS_TEST_THREADS", "2")))


def pytest_collection_finish(session):
    """Every test module is imported (torch, transformers, hf_methods: about a million objects): freeze them out of
    the cyclic garbage collector, which every `Trainer.train()` runs at its end (accelerate's `free_memory`). A full
    collection then costs microseconds instead of about 0.25 s; objects made by the tests are still collected."""
    import gc

    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """A running `tests.fake_hub.FakeHub` that huggingface_hub and transformers talk to for this test only.

    Late patch (HF_ENDPOINT is read at import; `hf_methods.compat.hub_endpoint_patches` lists what is patched): the
    endpoint constants, the endpoint baked into huggingface_hub's module-level `HfApi` (used by
    `huggingface_hub.upload_file`/`create_repo`/... and `ModelCard.push_to_hub`), offline mode off, transformers'
    cached `HfApi` dropped, a fresh download cache, and HF_TOKEN=hf_test_token (the only token the fake accepts).
    Everything is undone at teardown, so the suite is offline again.
    """
    from fake_hub import FakeHub  # tests/ is on sys.path (rootdir conftest, no __init__.py)

    from hf_methods.compat import hub_endpoint_patches

    hub = FakeHub(tokens={"hf_test_token"}).start()
    try:
        for obj, name, value in hub_endpoint_patches(hub.endpoint, str(tmp_path / "hf_cache")):
            monkeypatch.setattr(obj, name, value)
        monkeypatch.setenv("HF_TOKEN", "hf_test_token")  # get_token() reads the environment on every call
        monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
        monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)  # would take precedence over HF_TOKEN
        yield hub
    finally:
        monkeypatch.undo()
        hub.stop()
