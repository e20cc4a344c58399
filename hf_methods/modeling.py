"""One base for hf-methods model classes: the `auto_map` stub, strict loading and a card-aware `push_to_hub`.

Every model class of the library mixes `HfMethodsModel` in before `PreTrainedModel`; a class only says what is
particular to it (`model_card`, `check_loaded`). Stock models the library builds (a learngene's descendants, a pool's
exported networks) stay stock classes; `with_card_push` gives one object a `push_to_hub` that writes its card.
"""

from __future__ import annotations

import json
import os
import types
from contextlib import contextmanager

import torch
import transformers
from safetensors import SafetensorError, safe_open

STUB_MODULE = "hf_methods_learngene"
_STUB_SOURCE = '''"""This repository holds an hf-methods {method} model (model_type {model_type!r}).

Load it with the hf-methods library, which registers its classes with transformers:

    pip install hf-methods

    import hf_methods
    from transformers import AutoModel
    model = AutoModel.from_pretrained("<this repository>")
"""

raise ImportError(
    "This is an hf-methods {method} model: install the library with `pip install hf-methods`, then "
    "`import hf_methods` before `AutoModel.from_pretrained(...)`."
)
'''

_LOADING_PROBLEMS = ("missing_keys", "unexpected_keys", "mismatched_keys")


@contextmanager
def transformers_errors_only():
    """transformers' logging at error level inside the `with` (e.g. a load report the caller turns into its own
    message), then back to what it was."""
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(verbosity)


def loading_problems(info: dict, *, allow_mismatched: bool = False) -> dict[str, list[str]]:
    """The non-empty missing / unexpected / mismatched key lists of a `from_pretrained` loading info."""
    kinds = [k for k in _LOADING_PROBLEMS if not (allow_mismatched and k == "mismatched_keys")]
    return {k: sorted(map(str, info[k])) for k in kinds if info.get(k)}


def _with_variant(name: str, variant: str | None) -> str:
    """transformers' file name of a weights variant: "model.safetensors" -> "model.fp16.safetensors"."""
    if not variant:
        return name
    stem, ext = name.rsplit(".", 1)
    return f"{stem}.{variant}.{ext}"


def stored_dtypes(
    pretrained_model_name_or_path, *, subfolder: str = "", variant=None, cache_dir=None, revision=None
) -> dict[str, str] | None:
    """The stored dtype ("F32", "BF16", "I64", "BOOL", ...) of every tensor of a safetensors checkpoint, a folder or a
    Hub repo already in the local cache, read from the file headers only (no tensor is read, nothing is downloaded).
    None when there is no such checkpoint (e.g. `.bin` weights)."""
    from huggingface_hub import try_to_load_from_cache

    path = str(pretrained_model_name_or_path)

    def locate(name: str) -> str | None:
        relative = "/".join(part for part in (subfolder, name) if part)
        if os.path.isdir(path):
            full = os.path.join(path, relative)
            return full if os.path.isfile(full) else None
        try:
            found = try_to_load_from_cache(path, relative, cache_dir=cache_dir, revision=revision)
        except ValueError:  # not a repo id (huggingface_hub's HFValidationError): nothing to read
            return None
        return found if isinstance(found, str) else None

    index = locate(_with_variant("model.safetensors.index.json", variant))
    if index is not None:
        with open(index, encoding="utf-8") as f:
            files = [locate(name) for name in sorted(set(json.load(f)["weight_map"].values()))]
    else:
        files = [locate(_with_variant("model.safetensors", variant))]
    if None in files:
        return None
    dtypes = {}
    for file in files:
        with safe_open(file, framework="pt") as f:
            dtypes.update({key: f.get_slice(key).get_dtype() for key in f.keys()})
    return dtypes


def check_loaded_values(
    model, pretrained_model_name_or_path, kwargs: dict, allow_non_finite: bool, method_name: str = "hf-methods"
) -> None:
    """The dtype and value checks of `HfMethodsModel.from_pretrained` (see there) on a `model` just loaded from
    `pretrained_model_name_or_path` with `kwargs` (its `subfolder`, `revision`, ... or `state_dict`): no integer or bool
    tensor stored for a floating one, no NaN or inf unless `allow_non_finite`. Any `PreTrainedModel` (e.g. the proxy of
    a proxy-tuned model)."""
    state = model.state_dict()
    given = kwargs.get("state_dict")
    if given is not None:
        stored = {key: (str(t.dtype), t.is_floating_point()) for key, t in given.items() if torch.is_tensor(t)}
    else:
        codes = stored_dtypes(
            pretrained_model_name_or_path,
            subfolder=kwargs.get("subfolder") or "",
            variant=kwargs.get("variant"),
            cache_dir=kwargs.get("cache_dir"),
            revision=kwargs.get("revision"),
        )
        stored = {key: (code, _is_floating_code(code)) for key, code in (codes or {}).items()}
    # A stored key the model does not have (transformers renamed it on load) is judged by its last name part.
    integer_leaves = {_leaf(k) for k, t in state.items() if not t.is_floating_point()}
    floating_leaves = {_leaf(k): t.dtype for k, t in state.items() if t.is_floating_point()}
    for key, (code, floating) in sorted(stored.items()):
        tensor = state.get(key)
        expected = tensor.dtype if tensor is not None else floating_leaves.get(_leaf(key))
        if tensor is None and _leaf(key) in integer_leaves:
            continue
        if not floating and expected is not None and expected.is_floating_point:
            raise ValueError(
                f"{method_name} checkpoint {str(pretrained_model_name_or_path)!r} stores {key} as {code}, but "
                f"{type(model).__name__} holds it as {expected}, so loading would cast its values silently; save "
                "the checkpoint again from a model with floating weights."
            )
    if allow_non_finite:
        return
    for key, tensor in state.items():
        if tensor.is_floating_point() and tensor.device.type != "meta" and not bool(torch.isfinite(tensor).all()):
            raise ValueError(
                f"{method_name} checkpoint {str(pretrained_model_name_or_path)!r}: {key} holds NaN or inf "
                "values (a diverged run or a corrupt save); load a healthy checkpoint, or pass "
                "allow_non_finite=True to load it anyway."
            )


def _is_floating_code(code: str) -> bool:
    """Whether a safetensors dtype code is a floating type (F16, F32, F64, BF16, F8_*), not I*, U*, BOOL or C*."""
    return code.startswith(("F", "BF"))


def _leaf(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def push_with_card(
    model,
    repo_id: str,
    card=None,
    *,
    commit_message: str | None = None,
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
):
    """Save `model` with `card` as README.md and push both in one commit (see `hf_methods.hub.push_model`)."""
    from .hub import push_model

    return push_model(
        model, repo_id, card, private=private, revision=revision, commit_message=commit_message, token=token
    )


def with_card_push(model, make_card):
    """Give one stock model object a `push_to_hub` that writes `make_card(model, repo_id)` instead of transformers'
    generic card (an expanded descendant, an exported network). Once saved and reloaded it is a plain model again."""

    def push_to_hub(
        self,
        repo_id: str,
        *,
        card=None,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        revision: str | None = None,
        **_,
    ):
        card = card if card is not None else make_card(self, repo_id)
        return push_with_card(
            self, repo_id, card, commit_message=commit_message, private=private, token=token, revision=revision
        )

    model.push_to_hub = types.MethodType(push_to_hub, model)
    return model


class HfMethodsModel:
    """Mixin for every hf-methods model class (put it before `PreTrainedModel`).

    - `save_pretrained` also writes a one-file stub named in `auto_map`, so loading the folder where hf-methods is not
      installed ends in "pip install hf-methods" rather than an unknown model type (with hf-methods installed, its
      registered classes win over `auto_map`).
    - `from_pretrained` is strict: missing, unexpected or misshaped tensors, or a truncated weights file, are errors
      instead of a partly random model (`ignore_mismatched_sizes=True` still allows a new head); so are an integer or
      bool tensor stored for a floating one (transformers would cast it silently) and NaN / inf values (unless
      `allow_non_finite=True`). `check_loaded` adds a class's own consistency checks.
    - `push_to_hub` pushes weights, config and the class's `model_card(repo_id, results)` in one commit.
    """

    method_name = "hf-methods"

    def stub_auto_map(self) -> dict[str, str]:
        """`config.auto_map`: every Auto class that can load this checkpoint, pointed at the stub."""
        auto = {"AutoConfig": type(self.config).__name__, "AutoModel": type(self).__name__}
        if type(self).__name__.endswith("ForImageClassification"):
            auto["AutoModelForImageClassification"] = type(self).__name__
        return {k: f"{STUB_MODULE}.{v}" for k, v in auto.items()}

    def write_stub(self, save_directory) -> None:
        with open(os.path.join(save_directory, f"{STUB_MODULE}.py"), "w", encoding="utf-8") as f:
            f.write(_STUB_SOURCE.format(method=self.method_name, model_type=self.config.model_type))

    def save_pretrained(self, save_directory, *args, **kwargs):
        self.config.auto_map = self.stub_auto_map()
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            self.write_stub(save_directory)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, allow_non_finite: bool = False, **kwargs):
        """`PreTrainedModel.from_pretrained`, strictly: safetensors weights only (`use_safetensors=True` unless the
        caller says otherwise: a `.bin` is a pickle), every tensor present with its shape (`ignore_mismatched_sizes`
        still allows a new head), no integer or bool tensor stored where the model holds a floating one (read from the
        safetensors headers, or from `state_dict=`), and only finite values (`check_loaded_values`).

        Args:
            allow_non_finite: load a checkpoint whose floating tensors hold NaN or inf (default False: an error naming
                the tensor, since such weights come from a diverged run or a corrupt save). Checking costs one
                `isfinite().all()` per tensor.
        """
        want_info = kwargs.pop("output_loading_info", False)
        if kwargs.get("state_dict") is None:  # safetensors only: no pickle is read, and its dtypes can be checked
            kwargs.setdefault("use_safetensors", True)
        try:
            model, info = super().from_pretrained(
                pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs
            )
        except SafetensorError as err:
            raise OSError(
                f"the weights file of {cls.method_name} model {pretrained_model_name_or_path!r} is truncated "
                f"or corrupt ({err}); download or save it again."
            ) from err
        problems = loading_problems(info, allow_mismatched=kwargs.get("ignore_mismatched_sizes", False))
        if problems:
            raise ValueError(
                f"{cls.method_name} checkpoint {pretrained_model_name_or_path!r} does not match "
                f"{cls.__name__}: {problems}"
            )
        check_loaded_values(model, pretrained_model_name_or_path, kwargs, allow_non_finite, cls.method_name)
        model.check_loaded(pretrained_model_name_or_path)
        return (model, info) if want_info else model

    def check_loaded(self, pretrained_model_name_or_path) -> None:
        """Consistency checks of a freshly loaded checkpoint beyond its tensor names and shapes (none by default)."""

    def model_card(self, repo_or_path, results: dict | None = None):
        """The hf-methods card of this model (None: transformers' own card)."""
        return None

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        revision: str | None = None,
        card=None,
        results: dict | None = None,
        **kwargs,
    ):
        """Push weights, config and this model's hf-methods card in one commit (`card=` overrides it; `results`, a
        recipe's report, adds the run's figures)."""
        card = card if card is not None else self.model_card(repo_id, results)
        if card is None:
            return super().push_to_hub(
                repo_id, commit_message=commit_message, private=private, token=token, revision=revision, **kwargs
            )
        return push_with_card(
            self, repo_id, card, commit_message=commit_message, private=private, token=token, revision=revision
        )
