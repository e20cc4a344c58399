"""Saving a model folder atomically with its card, and pushing folders, models and whole runs to the Hub."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from huggingface_hub import ModelCard

from .cards import LIBRARY_NAME, hub_id


def save_model_folder(model, directory: str | Path, card: ModelCard | None = None, processor=None) -> Path:
    """`save_pretrained` (+ the `processor`'s, e.g. a tokenizer, so that `pipeline(...)` loads the folder) + README.md
    into a temporary sibling folder, then swap it in: a crash never leaves a half-written model folder behind."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        model.save_pretrained(tmp)
        if processor is not None:
            processor.save_pretrained(tmp)
        if card is not None:
            card.save(tmp / "README.md")
        old = None
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
        os.replace(tmp, directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _api(token=None):
    from huggingface_hub import HfApi

    from . import __version__

    return HfApi(token=token, library_name=LIBRARY_NAME, library_version=__version__)


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
):
    """Upload a saved model folder (weights, config, README.md card), or a PEFT adapter folder (adapter_config.json),
    to `repo_id` in one commit.

    Creates the repo (and the branch `revision`) when missing. Pickles (`*.bin`, `*.pt`, `*.pth`) and private
    files (`_*`, `checkpoint-*`) are never uploaded: hf-methods models are safetensors only.
    """
    folder = Path(folder)
    if not any((folder / name).is_file() for name in ("config.json", "adapter_config.json")):
        raise FileNotFoundError(
            f"{folder} is not a saved model or adapter folder (no config.json or adapter_config.json); "
            "save_pretrained it first."
        )
    from huggingface_hub.errors import HfHubHTTPError

    api = _api(token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision is not None:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        return api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            revision=revision,
            commit_message=commit_message or f"Upload {folder.name} with hf-methods",
            ignore_patterns=["_*", "checkpoint-*", "*.bin", "*.pt", "*.pth", ".*"],
        )
    except HfHubHTTPError as err:
        if getattr(err.response, "status_code", None) in (401, 403):
            raise PermissionError(
                f"the Hub refused to write {repo_id!r} (HTTP {err.response.status_code}): the token is missing or "
                "wrong, or has no write access. Log in with `hf auth login` or set HF_TOKEN to a write token."
            ) from err
        raise


def push_model(model, repo_id: str, card: ModelCard | None = None, processor=None, **push_kwargs):
    """Save `model` (+ `processor`, + `card` as README.md) into a temporary folder and push it in one commit;
    nothing is written beside the caller's files, and a failed push leaves no trace locally."""
    with tempfile.TemporaryDirectory(prefix="hf_methods_push_") as tmp:
        model.save_pretrained(tmp)
        if processor is not None:
            processor.save_pretrained(tmp)
        if card is not None:
            card.save(Path(tmp) / "README.md")
        return push_folder(tmp, repo_id, **push_kwargs)


def push_saved_model(folder: str | Path, repo_id: str, card: ModelCard | None = None, **push_kwargs):
    """Push a saved model folder as it is (weights, config, files a trainer saved beside them), with `card` as its
    README.md instead of the one on disk (e.g. re-rendered so its links point at the Hub repos). The folder on disk is
    not changed."""
    folder = Path(folder)
    if card is None:
        return push_folder(folder, repo_id, **push_kwargs)
    with tempfile.TemporaryDirectory(prefix="hf_methods_push_") as tmp:
        copy = Path(tmp) / folder.name
        shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("README.md"))
        card.save(copy / "README.md")
        return push_folder(copy, repo_id, **push_kwargs)


def push_run(
    out_dir: str | Path,
    repo_id: str,
    *,
    private: bool | None = None,
    revision: str | None = None,
    token: str | None = None,
) -> dict[str, str]:
    """Push what an `hf-methods` run wrote to `out_dir`, laid out by its method (`report.json`'s "method", see
    `hf_methods.registry.Method.push`): e.g. a learngene to `repo_id` and each descendant to `<repo_id>-depth-<D>`.
    A teacher the run trained goes to `<repo_id>-teacher` first, so the cards' ancestry links point at it.
    Returns {folder name: repo id}."""
    import json

    from . import registry

    out_dir = Path(out_dir)
    report = out_dir / "report.json"
    if not report.is_file():
        raise FileNotFoundError(f"{out_dir} has no report.json: give the output_dir of an `hf-methods` run.")
    if not hub_id(repo_id):
        raise ValueError(f"repo_id must look like 'org/name', got {repo_id!r}.")
    results = json.loads(report.read_text())
    name = results.get("method")
    method = registry.methods().get(name)
    if method is None or method.push is None:
        known = sorted(m.name for m in registry.methods().values() if m.push)
        raise ValueError(
            f"{out_dir} is a run of {name!r}, which `hf-methods push` cannot lay out; it pushes runs "
            f"of {known}. Push its models one by one with `model.push_to_hub(...)`."
        )
    kw = dict(private=private, revision=revision, token=token)
    pushed = {}
    teacher = results.get("teacher")
    if (out_dir / "teacher").is_dir() and isinstance(teacher, dict) and not teacher.get("hub_id"):
        push_folder(out_dir / "teacher", f"{repo_id}-teacher", commit_message="Upload the teacher", **kw)
        teacher["hub_id"] = pushed["teacher"] = f"{repo_id}-teacher"
    pushed.update(registry.resolve(method.push)(out_dir, repo_id, results, **kw))
    return pushed
