"""A method declares itself once, from its own folder, and the library finds it: the Auto classes, the top-level
exports, the `hf-methods` CLI, model cards' citations and `hf-methods push`. Proof: a tiny example method, written
as its own package (no file of the library touched), registers itself and is found by all of them."""

import importlib
import json
import sys
import textwrap

import pytest
import transformers

import hf_methods
from hf_methods import registry
from hf_methods.cli import main as cli
from hf_methods.hub import push_run

TOY = {
    "__init__.py": '''
        """The toy method: its model classes and its declaration, nothing else."""
        from hf_methods.registry import register_method, register_models

        from .modeling_toy import ToyConfig, ToyForImageClassification

        register_models(ToyConfig, ToyForImageClassification,
                        auto=("AutoModel", "AutoModelForImageClassification"))
        register_method("Toy", command="toy", recipe="toy_method.pipeline", summary="the toy method end to end",
                        push="toy_method.pipeline:push_toy_run", citation="@misc{toy, title={Toy}}")
        ''',
    "modeling_toy.py": """
        import torch
        from transformers import PreTrainedConfig, PreTrainedModel

        from hf_methods.modeling import HfMethodsModel


        class ToyConfig(PreTrainedConfig):
            model_type = "hf_methods_toy"
            num_features: int = 4
            num_labels: int = 2


        class ToyForImageClassification(HfMethodsModel, PreTrainedModel):
            config_class = ToyConfig
            method_name = "Toy"

            def __init__(self, config):
                super().__init__(config)
                self.linear = torch.nn.Linear(config.num_features, config.num_labels)
                self.post_init()

            def forward(self, pixel_values, labels=None):
                return {"logits": self.linear(pixel_values)}

            def model_card(self, repo_or_path, results=None):
                from hf_methods.cards import _data, render_card
                from hf_methods.registry import citation

                data = _data("toy", ["toy"], type(self).__name__)
                return render_card("stitched", data, title="Toy", cls_name=type(self).__name__,
                                   repo_or_path=repo_or_path, citation=citation("Toy"))
        """,
    "pipeline.py": """
        import json
        from pathlib import Path

        from .modeling_toy import ToyConfig, ToyForImageClassification


        def main(argv=None):
            out = Path(argv[argv.index("--output_dir") + 1])
            ToyForImageClassification(ToyConfig()).save_pretrained(out / "model")
            (out / "report.json").write_text(json.dumps({"method": "Toy"}))
            print("toy done")


        def push_toy_run(out_dir, repo_id, results, **hub_kwargs):
            model = ToyForImageClassification.from_pretrained(out_dir / "model")
            model.push_to_hub(repo_id, **hub_kwargs)
            return {"model": repo_id}
        """,
}


@pytest.fixture
def toy_method(tmp_path, monkeypatch):
    package = tmp_path / "src" / "toy_method"
    package.mkdir(parents=True)
    for name, text in TOY.items():
        (package / name).write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    for table in ("_METHODS", "_COMMANDS", "_EXPORTS"):  # the toy leaves the registry as it found it
        monkeypatch.setattr(registry, table, dict(getattr(registry, table)))
    yield importlib.import_module("toy_method")
    for name in [m for m in sys.modules if m.startswith("toy_method")]:
        del sys.modules[name]


def test_every_method_of_the_library_is_registered_once_with_its_command():
    methods = registry.methods()
    learngenes = {"TLEG", "SWS", "Learngene Pool", "GTL"}
    assert learngenes | {"L2D", "CPT", "RDD", "IMWA", "Optimum Shifting", "LayerMatch", "DPC"} <= set(methods)
    assert {"DeRy", "KF", "LIRF", "HaBa"} <= set(methods)
    commands = {
        "tleg",
        "sws",
        "pool",
        "gtl",
        "l2d",
        "cpt",
        "rdd",
        "imwa",
        "sos",
        "layermatch",
        "dpc",
        "rankmatch",
        "dn-ildl",
        "dery",
        "kf",
        "lirf",
        "haba",
        "repfusion",
        "spectral-diffusion",
    }
    assert set(registry.commands()) == commands
    assert "xia2024tleg" in registry.citation("TLEG") and registry.citation("no such method") == ""
    exported = ("TLEGConfig", "TLEGModel", "VGGForImageClassification", "ProxyTunedForCausalLM", "LearngeneModel",
                "DPCForImageClassification")  # fmt: skip
    for name in exported:
        assert getattr(hf_methods, name) is registry.exports()[name] and name in hf_methods.__all__


def test_a_conflicting_declaration_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        registry.register_method("TLEG", command="tleg", recipe="elsewhere")
    with pytest.raises(ValueError, match="already belongs"):
        registry.register_method("Other", command="tleg", recipe="x")
    with pytest.raises(ValueError, match="no `recipe`"):
        registry.register_method("Other", command="other")


def test_a_new_method_registers_itself_and_is_found_by_automodel_the_cli_cards_and_push(
    toy_method, tmp_path, fake_hub, capsys
):
    config = transformers.AutoConfig.for_model("hf_methods_toy")
    model = transformers.AutoModelForImageClassification.from_config(config)
    assert type(model).__name__ == "ToyForImageClassification"
    assert registry.exports()["ToyConfig"] is type(config)

    assert cli(["--help"]) == 0
    assert "toy" in capsys.readouterr().out
    out = tmp_path / "run"
    assert cli(["toy", "--output_dir", str(out)]) == 0
    assert json.loads((out / "report.json").read_text())["method"] == "Toy"
    assert type(transformers.AutoModel.from_pretrained(out / "model")).__name__ == "ToyForImageClassification"
    assert (out / "model" / "hf_methods_learngene.py").is_file()  # the HfMethodsModel stub came with the base

    assert cli(["push", str(out), "--repo-id", "tester/toy"]) == 0
    assert "model -> tester/toy" in capsys.readouterr().out
    files = fake_hub.files("tester/toy")
    assert {"config.json", "model.safetensors", "README.md"} <= set(files)
    assert "@misc{toy" in files["README.md"].decode()  # its card, citing what it declared


def test_push_names_the_methods_it_can_lay_out(tmp_path):
    (tmp_path / "report.json").write_text(json.dumps({"method": "Unknown"}))
    with pytest.raises(ValueError, match="cannot lay out"):
        push_run(tmp_path, "tester/x")
