"""LoRA fine-tuning of the stock transformers models hf-methods produces (learngene descendants, teacher-layer
selections), through the real `peft` library, and sharing the adapters on the Hub.

peft is an optional dependency (`pip install hf-methods[peft]`): it is imported inside the functions, so this module
imports without it.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

from torch import nn

LORA_DEFAULTS = dict(r=8, alpha=16, dropout=0.1)

# Default targets of architectures hf-methods produces that peft's own mapping lacks. Candidates in order of
# preference; only those the live model has are used (transformers 5 renamed ViT's query/value to q_proj/v_proj).
_EXTRA_TARGETS = {"vit": ("q_proj", "v_proj", "query", "value")}


def _peft():
    try:
        import peft
    except ImportError as err:
        raise ImportError("LoRA needs peft: `pip install hf-methods[peft]`.") from err
    return peft


def _peft_target_mapping() -> dict:
    _peft()
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    return TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING


def _matches(model: nn.Module, target: str) -> bool:
    """peft's rule for a name in a `target_modules` list: the module's full name, or its dotted suffix."""
    return any(name == target or name.endswith(f".{target}") for name, _ in model.named_modules())


def default_target_modules(model: nn.Module) -> list[str]:
    """peft's per-architecture LoRA targets for `model.config.model_type` (the attention query/value projections),
    keeping only the names the live model has, so a renamed module fails here rather than deep inside peft."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    candidates = _peft_target_mapping().get(model_type) or _EXTRA_TARGETS.get(model_type)
    if not candidates:
        raise ValueError(
            f"no default LoRA target modules for model_type={model_type!r}: name the Linear layers to adapt with "
            "the recipe field `lora_target_modules` (or `target_modules=` in Python), e.g. ['q_proj', 'v_proj']."
        )
    targets = [t for t in candidates if _matches(model, t)]
    if not targets:
        raise ValueError(
            f"the default LoRA targets {list(candidates)} of model_type={model_type!r} match no module of this "
            "model: set `lora_target_modules` (or `target_modules=`) to names of its Linear layers."
        )
    return targets


def _embedding_pointers(model: nn.Module) -> set[int]:
    try:
        embeddings = model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        return set()
    return {p.data_ptr() for p in embeddings.parameters()} if embeddings is not None else set()


def head_modules(model: nn.Module) -> list[str]:
    """Top-level modules outside the base model that hold parameters (the task head, e.g. `classifier`, `score`):
    freshly initialised, so LoRA must train them in full and save them with the adapter (`modules_to_save`). A head
    tied to the input embeddings (GPT-2's `lm_head`) is left out: a trained copy would untie it."""
    base = getattr(model, "base_model", model)
    if base is model:
        return []
    tied = _embedding_pointers(model)
    heads = []
    for name, child in model.named_children():
        params = list(child.parameters())
        if child is base or not params or any(p.data_ptr() in tied for p in params):
            continue
        heads.append(name)
    return heads


def _is_conv1d(module: nn.Module) -> bool:  # GPT-2's Linear layers (transformers' Conv1D), which LoRA adapts too
    return type(module).__name__ == "Conv1D"


def _check_target_modules(model: nn.Module, target_modules) -> list[str] | str:
    if isinstance(target_modules, str):  # peft reads a string as a regex over full module names
        if not any(re.fullmatch(target_modules, name) for name, _ in model.named_modules()):
            raise ValueError(
                f"target_modules={target_modules!r} (a regex) matches no module name; give a list of module names, "
                "e.g. the last part of a Linear layer's name such as 'query'."
            )
        return target_modules
    targets = list(target_modules)
    if not targets or not all(isinstance(t, str) and t for t in targets):
        raise ValueError(f"target_modules must be a non-empty list of module names, got {target_modules!r}.")
    missing = [t for t in targets if not _matches(model, t)]
    if missing:
        linear = sorted(
            {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear) or _is_conv1d(m)}
        )
        raise ValueError(
            f"target_modules {missing} match no module of this {type(model).__name__}; its Linear layers are "
            f"named {linear}."
        )
    return targets


def lora_model(
    model: nn.Module,
    r: int = LORA_DEFAULTS["r"],
    alpha: float = LORA_DEFAULTS["alpha"],
    dropout: float = LORA_DEFAULTS["dropout"],
    target_modules: list[str] | str | None = None,
):
    """Wrap `model` in a `peft.PeftModel` with a LoRA adapter: only the adapter and the task head train.

    No `task_type`: the plain PeftModel passes every batch key (labels, pixel_values, ...) to the model, so a HF
    `Trainer` trains text and image classifiers alike, and the head is saved through `modules_to_save`.
    """
    peft = _peft()
    if isinstance(model, peft.PeftModel):
        raise ValueError("model already is a PeftModel: pass the base model (`peft_model.get_base_model()`).")
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ValueError(f"r (the LoRA rank) must be an integer >= 1, e.g. {LORA_DEFAULTS['r']}; got {r!r}.")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0:
        raise ValueError(f"alpha (the LoRA scale) must be > 0, e.g. {LORA_DEFAULTS['alpha']} (2 x r); got {alpha!r}.")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), e.g. {LORA_DEFAULTS['dropout']}; got {dropout!r}.")
    targets = default_target_modules(model) if target_modules is None else _check_target_modules(model, target_modules)
    config = peft.LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=float(dropout),
        target_modules=targets,
        modules_to_save=head_modules(model) or None,
    )
    return peft.get_peft_model(model, config)


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; tied weights count once."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


class _AdapterWriter:
    """Gives `hub.save_model_folder` (which calls `save_pretrained`) an adapter to write, so adapters are swapped in
    atomically by the same code as models; records the base model's reference instead of peft's `name_or_path`."""

    def __init__(self, peft_model, base_model_ref: str):
        self.peft_model, self.base_model_ref = peft_model, str(base_model_ref)

    def save_pretrained(self, folder):
        self.peft_model.save_pretrained(str(folder), safe_serialization=True)
        _set_base_model_ref(Path(folder), self.base_model_ref)


def save_adapter(peft_model, directory: str | Path, base_model_ref: str, card=None) -> Path:
    """Save the adapter (adapter_config.json + adapter_model.safetensors + README.md) into `directory` atomically.

    `base_model_ref` (the descendant's Hub id or folder) is what `adapter_config.json` names as the base model;
    `card` defaults to `cards.adapter_card` (peft's own README is an empty template).
    """
    from .cards import adapter_card
    from .hub import save_model_folder

    if card is None:
        card = adapter_card(peft_model, base_model_ref, directory)
    return save_model_folder(_AdapterWriter(peft_model, base_model_ref), directory, card)


def _set_base_model_ref(folder: Path, base_model_ref: str) -> None:
    config = folder / "adapter_config.json"
    data = json.loads(config.read_text(encoding="utf-8"))
    data["base_model_name_or_path"] = str(base_model_ref)
    config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def push_adapter(peft_model_or_folder, repo_id: str, base_model_ref: str, card=None, **push_kwargs):
    """Push a LoRA adapter (a PeftModel, or a folder `save_adapter` wrote) to `repo_id` in one commit.

    `base_model_ref` should be the descendant's Hub id, so that `PeftModel.from_pretrained` users and the card's
    `base_model` find it. A PeftModel gets `cards.adapter_card` unless `card` is given; a folder keeps its README.md
    unless `card` is given. Nothing is written beside the caller's files.
    """
    from .cards import hub_id
    from .hub import push_folder

    if not hub_id(repo_id):
        raise ValueError(f"repo_id must look like 'org/name', got {repo_id!r}.")
    with tempfile.TemporaryDirectory(prefix="hf_methods_push_") as tmp:
        if isinstance(peft_model_or_folder, (str, Path)):
            source = Path(peft_model_or_folder)
            if not (source / "adapter_config.json").is_file():
                raise FileNotFoundError(
                    f"{source} is not a saved adapter folder (no adapter_config.json): save it with save_adapter."
                )
            folder = Path(tmp) / source.name
            shutil.copytree(source, folder)
            _set_base_model_ref(folder, base_model_ref)
            if card is not None:
                card.save(folder / "README.md")
        else:
            from .cards import adapter_card

            card = card if card is not None else adapter_card(peft_model_or_folder, base_model_ref, repo_id)
            folder = save_adapter(peft_model_or_folder, Path(tmp) / repo_id.split("/")[-1], base_model_ref, card)
        return push_folder(folder, repo_id, **push_kwargs)
