"""One base for hf-methods model classes: the `auto_map` stub, strict loading and a card-aware `push_to_hub`.

Every model class of the library mixes `HfMethodsModel` in before `PreTrainedModel`; a class only says what is
particular to it (`model_card`, `check_loaded`). Stock models the library builds (a learngene's descendants, a pool's
exported networks) stay stock classes; `with_card_push` gives one object a `push_to_hub` that writes its card.
"""

from __future__ import annotations

import os
import types

from safetensors import SafetensorError

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


def loading_problems(info: dict, *, allow_mismatched: bool = False) -> dict[str, list[str]]:
    """The non-empty missing / unexpected / mismatched key lists of a `from_pretrained` loading info."""
    kinds = [k for k in _LOADING_PROBLEMS if not (allow_mismatched and k == "mismatched_keys")]
    return {k: sorted(map(str, info[k])) for k in kinds if info.get(k)}


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
      instead of a partly random model (`ignore_mismatched_sizes=True` still allows a new head). `check_loaded` adds a
      class's own consistency checks.
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
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        want_info = kwargs.pop("output_loading_info", False)
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
