"""Where every method declares itself, once, from its own folder.

A method is its folders (`hf_methods/models/<name>/`, `recipes/<name>/`, its trainer) and one `register_method(...)`
call in `recipes/<name>/__init__.py` (or beside its trainer when it has no recipe); its model classes declare their
Auto classes with `register_models(...)` in their package's `__init__.py`. `import hf_methods` imports every package
under `hf_methods.models` and `hf_methods.recipes` (`discover()`), so a new method needs no edit anywhere else: the
Auto classes, the top-level exports, the `hf-methods` CLI, the model cards' citations and `hf-methods push` all read
from here.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable


@dataclasses.dataclass(frozen=True)
class Method:
    """One method as the rest of the library sees it.

    `name` is how reports (`report.json`'s "method") and cards name it. `command` is its `hf-methods <command>`,
    run by `recipe` ("module" whose `main(argv)` takes the command line, or "module:function"). `push` lays out
    `hf-methods push` for a run folder of this method ("module:function" called as
    `push(out_dir, repo_id, results, **hub_kwargs) -> {folder: repo}`); without one, a run pushes nothing but its
    teacher. `citation` is the BibTeX the method's cards cite.
    """

    name: str
    command: str | None = None
    recipe: str | None = None
    summary: str = ""
    citation: str = ""
    push: str | None = None


_METHODS: dict[str, Method] = {}
_COMMANDS: dict[str, Method] = {}
_EXPORTS: dict[str, object] = {}


def register_method(
    name: str,
    *,
    command: str | None = None,
    recipe: str | None = None,
    summary: str = "",
    citation: str = "",
    push: str | None = None,
) -> Method:
    """Declare a method (see `Method`). Declaring the same name again with different fields is an error: two
    folders would be fighting over one method."""
    method = Method(name=name, command=command, recipe=recipe, summary=summary, citation=citation, push=push)
    known = _METHODS.get(name)
    if known is not None and known != method:
        raise ValueError(f"method {name!r} is registered twice with different settings: {known} and {method}.")
    if command is not None:
        if command in _COMMANDS and _COMMANDS[command].name != name:
            raise ValueError(f"command {command!r} already belongs to method {_COMMANDS[command].name!r}.")
        if recipe is None:
            raise ValueError(f"method {name!r} declares command {command!r} but no `recipe` module to run it.")
        _COMMANDS[command] = method
    _METHODS[name] = method
    return method


def register_models(
    config_cls: type, model_cls: type, *, auto: tuple[str, ...] = ("AutoModel",), export: bool = True
) -> None:
    """Register a config and model class with `AutoConfig` and the Auto classes named in `auto` (default
    `AutoModel`; add e.g. "AutoModelForImageClassification"; a config that serves several tasks names only the task
    classes), and export both from `hf_methods`."""
    import transformers

    transformers.AutoConfig.register(config_cls.model_type, config_cls, exist_ok=True)
    for name in auto:
        getattr(transformers, name).register(config_cls, model_cls, exist_ok=True)
    if export:
        _export(config_cls, model_cls)


def _export(*objects) -> None:
    for obj in objects:
        known = _EXPORTS.get(obj.__name__)
        if known is not None and known is not obj:
            raise ValueError(f"two different objects want to be exported as hf_methods.{obj.__name__}.")
        _EXPORTS[obj.__name__] = obj


def export(*objects) -> None:
    """Make `objects` importable from `hf_methods` directly (besides the registered configs and models)."""
    _export(*objects)


def exports() -> dict[str, object]:
    return dict(_EXPORTS)


def methods() -> dict[str, Method]:
    return dict(_METHODS)


def commands() -> dict[str, Method]:
    return dict(_COMMANDS)


def method(name: str) -> Method:
    try:
        return _METHODS[name]
    except KeyError:
        raise KeyError(f"no method named {name!r} is registered; known: {sorted(_METHODS)}.") from None


def citation(name: str) -> str:
    """The BibTeX of method `name`, or "" when it has none."""
    found = _METHODS.get(name)
    return found.citation if found is not None else ""


def resolve(reference: str) -> Callable:
    """The function a "module:function" reference names (or the module's `main` for a bare "module")."""
    module_name, _, attr = reference.partition(":")
    return getattr(importlib.import_module(module_name), attr or "main")


def discover(*packages: str) -> None:
    """Import every subpackage of `packages` (their `__init__` registers them). Recipe pipelines are not imported:
    only the `__init__.py` of each recipe folder, which holds its `register_method` call."""
    for package_name in packages:
        package = importlib.import_module(package_name)
        for info in pkgutil.iter_modules(package.__path__, prefix=package_name + "."):
            if info.ispkg:
                importlib.import_module(info.name)
