"""hf_methods model classes. Each package here registers its classes (Auto classes, top-level exports) in its own
`__init__.py` with `hf_methods.registry.register_models`; importing this package imports every one of them."""

from ..registry import discover

discover(__name__)
