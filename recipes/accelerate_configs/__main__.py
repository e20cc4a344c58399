"""`python -m hf_methods.recipes.accelerate_configs NAME` prints the path of a shipped accelerate config."""

import sys

from . import NAMES, config_file

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in NAMES:
        sys.exit(f"usage: python -m hf_methods.recipes.accelerate_configs {{{','.join(NAMES)}}}")
    print(config_file(sys.argv[1]))
