"""Model cards rendered from `hub_cards/` templates, and saving a model folder atomically with its card."""

from __future__ import annotations

import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

LIBRARY_NAME = "hf-methods"


def render_card(template: str, card_data: ModelCardData, **context) -> ModelCard:
    """Render `hub_cards/<template>.md` with `card_data` as YAML metadata and `context` for the body."""
    path = resources.files("hf_methods.hub_cards") / f"{template}.md"
    return ModelCard.from_template(card_data, template_str=path.read_text(encoding="utf-8"), **context)


def save_model_folder(model, directory: str | Path, card: ModelCard | None = None) -> Path:
    """`save_pretrained` + README.md into a temporary sibling folder, then swap it in: a crash never leaves a
    half-written model folder behind."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        model.save_pretrained(tmp)
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


def push_folder(folder: str | Path, repo_id: str, *, private: bool | None = None, revision: str | None = None,
                commit_message: str | None = None, token: str | None = None):
    """Upload a saved model folder (weights, config, README.md card) to `repo_id` in one commit.

    Creates the repo (and the branch `revision`) when missing. Pickles (`*.bin`, `*.pt`, `*.pth`) and private
    files (`_*`, `checkpoint-*`) are never uploaded: hf-methods models are safetensors only.
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a saved model folder (no config.json); save_pretrained it first.")
    from huggingface_hub.errors import HfHubHTTPError

    api = _api(token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision is not None:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        return api.upload_folder(
            folder_path=str(folder), repo_id=repo_id, revision=revision,
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


def push_model(model, repo_id: str, card: ModelCard | None = None, **push_kwargs):
    """Save `model` (+ `card` as README.md) into a temporary folder and push it in one commit; nothing is
    written beside the caller's files, and a failed push leaves no trace locally."""
    with tempfile.TemporaryDirectory(prefix="hf_methods_push_") as tmp:
        model.save_pretrained(tmp)
        if card is not None:
            card.save(Path(tmp) / "README.md")
        return push_folder(tmp, repo_id, **push_kwargs)


def push_run(out_dir: str | Path, repo_id: str, *, private: bool | None = None, revision: str | None = None,
             token: str | None = None) -> dict[str, str]:
    """Push what the main job wrote to `out_dir`: the learngene to `repo_id`, each descendant to
    `<repo_id>-depth-<D>` and a teacher the job trained to `<repo_id>-teacher`, with cards re-rendered so
    the ancestry links point at these Hub repos. Returns {folder name: repo id}."""
    import json

    import transformers

    from .cards import descendant_card, hub_id, learngene_card

    out_dir = Path(out_dir)
    report = out_dir / "report.json"
    if not report.is_file():
        raise FileNotFoundError(f"{out_dir} has no report.json: give the output_dir of an `hf-methods` run.")
    if not hub_id(repo_id):
        raise ValueError(f"repo_id must look like 'org/name', got {repo_id!r}.")
    results = json.loads(report.read_text())
    kw = dict(private=private, revision=revision, token=token)
    pushed = {}
    if (out_dir / "teacher").is_dir() and not results["teacher"].get("hub_id"):
        push_folder(out_dir / "teacher", f"{repo_id}-teacher", commit_message="Upload the teacher", **kw)
        results["teacher"]["hub_id"] = pushed["teacher"] = f"{repo_id}-teacher"
    if results.get("method") == "Learngene Pool":
        return _push_pool_run(out_dir, repo_id, results, pushed, kw)
    if results.get("method") == "GTL":  # the learngene only: descendants are trained per downstream task
        from .cards import gtl_card

        gene = transformers.AutoModel.from_pretrained(out_dir / "learngene")
        push_model(gene, repo_id, gtl_card(gene, repo_id, results), commit_message="Upload the GTL learngene", **kw)
        return {**pushed, "learngene": repo_id}
    links = {row["depth"]: f"{repo_id}-depth-{row['depth']}" for row in results["descendants"]}
    learngene = transformers.AutoModel.from_pretrained(out_dir / "learngene")
    push_model(learngene, repo_id, learngene_card(learngene, repo_id, results, links),
               commit_message="Upload the learngene", **kw)
    pushed["learngene"] = repo_id
    for depth, target in links.items():
        folder = out_dir / "descendants" / f"depth-{depth}"
        config = transformers.AutoConfig.from_pretrained(folder)
        model = getattr(transformers, config.architectures[0]).from_pretrained(folder)
        push_model(model, target, descendant_card(model, target, results, learngene_ref=repo_id),
                   commit_message=f"Upload the depth-{depth} descendant", **kw)
        pushed[f"depth-{depth}"] = target
    return pushed


def _push_pool_run(out_dir: Path, repo_id: str, results: dict, pushed: dict, kw: dict) -> dict[str, str]:
    """A Learngene Pool run: the pool to `repo_id` (its card lists every network), and the networks on the
    accuracy-vs-parameters Pareto front, the ones worth deploying, to `<repo_id>-config-<id>`."""
    import transformers

    from .cards import pool_card, stitched_card
    from .pareto import pareto_front

    front = {int(e["path"].rsplit("-", 1)[1]) for e in pareto_front(results["choices"], "params")}
    links = {cid: f"{repo_id}-config-{cid}" for cid in sorted(front)}
    pool = transformers.AutoModel.from_pretrained(out_dir / "pool")
    push_model(pool, repo_id, pool_card(pool, repo_id, results, links), commit_message="Upload the Learngene Pool", **kw)
    pushed["pool"] = repo_id
    for cid, target in links.items():
        folder = out_dir / "stitched" / f"config-{cid}"
        model = transformers.AutoModelForImageClassification.from_pretrained(folder)
        push_model(model, target, stitched_card(model, target, results, pool_ref=repo_id),
                   commit_message=f"Upload network {cid} of the Learngene Pool", **kw)
        pushed[f"config-{cid}"] = target
    return pushed
