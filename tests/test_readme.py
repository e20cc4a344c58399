"""The README's Python example runs as written (in a temporary working directory)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no Python example"
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    model = namespace["model"]
    assert type(model).__name__ == "ViTForImageClassification" and model.config.num_hidden_layers == 6
    assert (tmp_path / "out" / "learngene" / "model.safetensors").is_file()
