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
