"""accelerate launch configs shipped with hf-methods (as TRL ships its own): `multi_gpu`, `zero2`, `zero3`, `fsdp`
(FSDP2, GPUs only).

    accelerate launch --config_file $(python -m hf_methods.recipes.accelerate_configs zero2) \
        -m hf_methods.recipes.tleg.pipeline --config my.yaml
"""

from importlib import resources
from pathlib import Path

NAMES = ("multi_gpu", "zero2", "zero3", "fsdp")


def config_file(name: str) -> Path:
    """The path of the shipped accelerate config `name` (one of `NAMES`)."""
    if name not in NAMES:
        raise ValueError(f"no accelerate config named {name!r}; shipped: {list(NAMES)}")
    return Path(str(resources.files(__name__) / f"{name}.yaml"))
