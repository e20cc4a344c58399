"""Sharing on the Hub, through the real huggingface_hub / transformers clients against the loopback fake Hub."""

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import transformers as T
import yaml
from huggingface_hub import ModelCard, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError
from safetensors.torch import load_file

import hf_methods  # noqa: F401
from hf_methods import TLEGConfig, TLEGModel
from hf_methods.trainers import DistillationConfig, DistillationTrainer

sys.path.insert(0, str(Path(__file__).parent / "models"))
from tiny import vit_config  # noqa: E402

BLOCK_HF_METHODS = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "hf_methods" or name.startswith("hf_methods."):
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, Block())
"""


def learngene():
    model = TLEGModel(TLEGConfig.from_base(vit_config(), "ViTForImageClassification", aux_num_layers=4))
    with torch.no_grad():
        for p in model.gene.theta_b.parameters():
            p.normal_(0, 0.05)
    return model


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def run_without_hf_methods(hub, tmp_path, code):
    env = {
        **os.environ,
        "HF_ENDPOINT": hub.endpoint,
        "HF_TOKEN": "hf_test_token",
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_XET": "1",
        "HF_HOME": str(tmp_path / "subprocess_home"),
    }
    return subprocess.run(
        [sys.executable, "-c", BLOCK_HF_METHODS + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_learngene_push_and_load_bit_exact_with_our_card(fake_hub):
    gene = learngene()
    gene.push_to_hub("tester/tleg-gene", commit_message="first learngene")
    files = fake_hub.files("tester/tleg-gene")
    assert {"config.json", "model.safetensors", "README.md", "hf_methods_learngene.py"} <= set(files)
    assert not any(name.endswith((".bin", ".pt", ".pth")) for name in files)
    assert any("/info/lfs/objects/batch" in path for path in fake_hub.routes_used("POST"))  # weights went by LFS
    for loaded in (TLEGModel.from_pretrained("tester/tleg-gene"), T.AutoModel.from_pretrained("tester/tleg-gene")):
        assert type(loaded) is TLEGModel
        assert_same_weights(loaded, gene)
    card = ModelCard.load("tester/tleg-gene")
    assert card.data.library_name == "hf-methods"
    assert {"hf-methods", "learngene", "tleg"} <= set(card.data.tags)
    assert 'AutoModel.from_pretrained("tester/tleg-gene")' in card.text and "Model Card for Model ID" not in card.text


def test_descendant_records_the_hub_learngene_and_loads_without_hf_methods(fake_hub, tmp_path):
    learngene().push_to_hub("tester/gene")
    gene = T.AutoModel.from_pretrained("tester/gene")
    desc = gene.expand(3, num_labels=5)
    assert desc.config.learngene_ancestry["learngene"] == "tester/gene"
    desc.push_to_hub("tester/desc-3")  # expand() gives descendants a push_to_hub that keeps our card
    card = ModelCard.load("tester/desc-3")
    assert card.data.base_model == "tester/gene" and card.data.to_dict()["base_model_relation"] == "finetune"
    assert_same_weights(T.AutoModelForImageClassification.from_pretrained("tester/desc-3"), desc)

    proc = run_without_hf_methods(
        fake_hub,
        tmp_path,
        """
        import torch, transformers
        try:
            import hf_methods
            raise SystemExit("hf_methods should not be importable here")
        except ModuleNotFoundError:
            pass
        model = transformers.AutoModelForImageClassification.from_pretrained("tester/desc-3")
        print(type(model).__name__, model.config.num_hidden_layers, float(model.classifier.weight.sum()))
    """,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    name, depth, checksum = proc.stdout.split()
    assert (name, int(depth)) == ("ViTForImageClassification", 3)
    assert float(checksum) == pytest.approx(float(desc.classifier.weight.detach().sum()), abs=1e-6)


def test_learngene_without_hf_methods_says_pip_install(fake_hub, tmp_path):
    learngene().push_to_hub("tester/gene-noinstall")
    proc = run_without_hf_methods(
        fake_hub,
        tmp_path,
        """
        import transformers
        for trust in (True, None):
            try:
                transformers.AutoModel.from_pretrained("tester/gene-noinstall", trust_remote_code=trust)
            except Exception as err:
                print("RESULT", type(err).__name__, "|", str(err).replace(chr(10), " "))
    """,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    trusted, untrusted = [line.split("RESULT ", 1)[1] for line in proc.stdout.splitlines() if "RESULT " in line]
    assert trusted.startswith("ImportError") and "pip install hf-methods" in trusted
    assert "does not recognize this architecture" not in proc.stdout
    assert "custom code" in untrusted  # transformers' own refusal; the repo's stub and card say what to install


def test_push_to_a_revision_and_load_it(fake_hub):
    gene = learngene()
    gene.push_to_hub("tester/gene-rev")
    v1 = learngene()
    v1.push_to_hub("tester/gene-rev", revision="v1")
    assert_same_weights(TLEGModel.from_pretrained("tester/gene-rev", revision="v1"), v1)
    assert_same_weights(TLEGModel.from_pretrained("tester/gene-rev"), gene)


def test_private_repo_needs_the_token(fake_hub, monkeypatch, tmp_path):
    gene = learngene()
    gene.push_to_hub("tester/private-gene", private=True)
    assert fake_hub.repos["tester/private-gene"].private
    assert_same_weights(TLEGModel.from_pretrained("tester/private-gene"), gene)
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(OSError):
        hf_hub_download("tester/private-gene", "config.json", token=False, cache_dir=str(tmp_path / "anonymous"))


def test_unauthorized_push_says_the_token_is_missing_or_wrong(fake_hub):
    fake_hub.reject_all_with_401 = True
    with pytest.raises(PermissionError, match="token is missing or wrong"):
        learngene().push_to_hub("tester/denied")


def test_failed_commit_leaves_the_local_folder_untouched_and_a_retry_succeeds(fake_hub, tmp_path, monkeypatch):
    from hf_methods import hub
    from hf_methods.hub import push_folder

    monkeypatch.setattr(hub, "RETRY_BASE_DELAY", 0.0)
    folder = tmp_path / "gene"
    learngene().save_pretrained(folder)

    def snapshot():
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}

    before = snapshot()
    fake_hub.fail_next_commits = hub.HUB_TRIES  # every try of the push fails (tests/test_hub_faults.py: the rest)
    with pytest.raises(HfHubHTTPError, match="500"):
        push_folder(folder, "tester/flaky")
    assert snapshot() == before
    assert "tester/flaky" not in fake_hub.repos  # the repo it had created, still empty, is gone again
    push_folder(folder, "tester/flaky")
    assert snapshot() == before
    assert fake_hub.files("tester/flaky")["config.json"] == (folder / "config.json").read_bytes()
    assert_same_weights(TLEGModel.from_pretrained("tester/flaky"), TLEGModel.from_pretrained(folder))


def test_distillation_trainer_pushes_the_student_only(fake_hub, tmp_path):
    wide = T.ViTForImageClassification(
        T.ViTConfig(**{**vit_config().to_dict(), "hidden_size": 48, "intermediate_size": 96})
    )
    wide.push_to_hub("tester/teacher")
    student = T.ViTForImageClassification(vit_config())
    rows = [{"pixel_values": torch.randn(1, 16, 16), "labels": torch.tensor(i % 10)} for i in range(8)]
    args = DistillationConfig(
        output_dir=str(tmp_path / "student"),
        max_steps=2,
        per_device_train_batch_size=4,
        report_to="none",
        use_cpu=True,
        push_to_hub=True,
        hub_model_id="tester/student",
        save_strategy="no",
        alpha=0.7,
    )
    trainer = DistillationTrainer(
        model=student, args=args, train_dataset=rows, eval_dataset=rows, teacher_model="tester/teacher"
    )
    trainer.train()
    trainer.evaluate()
    trainer.push_to_hub()
    files = fake_hub.files("tester/student")
    weights = load_file(hf_hub_download("tester/student", "model.safetensors"))
    student.save_pretrained(tmp_path / "local_student")
    local = load_file(tmp_path / "local_student" / "model.safetensors")
    assert weights.keys() == local.keys()  # exactly the student's tensors ...
    assert all(weights[k].shape == v.shape for k, v in local.items())
    assert not any(48 in t.shape or 96 in t.shape for t in weights.values())  # ... and nothing teacher-sized
    assert yaml.safe_load(files["config.json"])["hidden_size"] == 32  # the student's config, not the teacher's
    assert not any("teacher" in name for name in files)
    card = ModelCard.load("tester/student")
    assert card.data.base_model == "tester/teacher"
    assert "distillation" in card.data.tags and card.data.library_name == "hf-methods"
    assert card.data.eval_results is None or all(r.metric_type == "accuracy" for r in card.data.eval_results)
    assert_same_weights(T.AutoModelForImageClassification.from_pretrained("tester/student"), student)
