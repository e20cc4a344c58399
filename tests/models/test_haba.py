"""HaBaDataset: a hallucinator's shape and parameter count, the generated set (length, order, every base x
hallucinator reachable through `to_torch_dataset`), gradients through generation, save/load bit-exact, push of the
model with its card and of the generated set as a Hub dataset repo with a dataset card, and bad inputs named."""

from pathlib import Path

import pytest
import torch

from hf_methods.models.haba import HaBaConfig, HaBaDataset, Hallucinator


def tiny(**overrides) -> HaBaDataset:
    values = dict(num_channels=1, image_size=6, images_per_class=2, num_hallucinators=3, num_labels=3,
                  id2label={0: "zero", 1: "one", 2: "two"})  # fmt: skip
    return HaBaDataset(HaBaConfig(**{**values, **overrides}))


def test_a_hallucinator_keeps_the_image_shape_and_has_the_briefs_parameter_count():
    h = Hallucinator(3, 3, 3, (32, 32), kernel_size=3)
    assert h(torch.randn(2, 3, 32, 32)).shape == (2, 3, 32, 32)
    assert h.scale.shape == h.shift.shape == (1, 3, 30, 30)
    assert sum(p.numel() for p in h.parameters()) == 2 * (3 * 3 * 9 + 3) + 2 * 3 * 30 * 30
    torch.testing.assert_close(h.scale, torch.ones_like(h.scale))
    # any size and channels: one-channel bases to colour images of 7 x 10 (the official --single_channel variant)
    model = HaBaDataset(HaBaConfig(num_channels=3, base_channels=1, image_size=[7, 10], num_labels=2))
    assert model.bases.shape == (2, 1, 1, 7, 10) and model.generate().pixel_values.shape == (2 * 5, 3, 7, 10)


def test_the_identity_init_copies_the_base_into_the_interior():
    model = tiny(hallucinator_init="identity", hallucinator_init_std=0.0, hallucinator_channels=4)
    out = model.generate().pixel_values.reshape(3, 2, 3, 1, 6, 6)
    bases = model.bases.detach()[:, :, None].expand_as(out)
    torch.testing.assert_close(out[..., 1:-1, 1:-1], bases[..., 1:-1, 1:-1])
    assert torch.equal(out[..., 0, :], torch.zeros_like(out[..., 0, :]))


def test_generate_covers_every_base_and_hallucinator_in_order_and_is_differentiable():
    model = tiny()
    out = model.generate()
    assert model.num_images == len(out.pixel_values) == 3 * 2 * 3
    assert out.labels.tolist() == [c for c in range(3) for _ in range(2 * 3)]
    assert out.base_ids.tolist() == [b for _ in range(3) for b in range(2) for _ in range(3)]
    assert out.hallucinator_ids.tolist() == [j for _ in range(6) for j in range(3)]
    torch.testing.assert_close(out.pixel_values[7], model.hallucinators[1](model.bases[1, 0][None])[0])
    sub = model.generate(class_ids=[2], hallucinator_ids=[0, 2])
    assert sub.labels.tolist() == [2] * 4 and sub.hallucinator_ids.tolist() == [0, 2, 0, 2]
    out.pixel_values.sum().backward()
    assert model.bases.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.hallucinators.parameters())
    assert model.stored_floats()["total"] == 3 * 2 * 36 + 3 * (9 + 1 + 2 * 16 + 9 + 1) + 1


def test_the_torch_dataset_draws_a_random_hallucinator_per_fetch_and_reaches_every_combination():
    model = tiny()
    dataset = model.to_torch_dataset(seed=0)
    assert len(dataset) == 3 * 2
    generated = model.generate()
    seen = set()
    for _ in range(40):
        for i in range(len(dataset)):
            item = dataset[i]
            assert item["labels"] == i // 2
            match = [k for k in range(len(generated.pixel_values))
                     if torch.equal(generated.pixel_values[k].detach(), item["pixel_values"])]  # fmt: skip
            (k,) = match
            assert generated.labels[k] == i // 2 and generated.base_ids[k] == i % 2
            seen.add((i, int(generated.hallucinator_ids[k])))
    assert seen == {(i, j) for i in range(6) for j in range(3)}  # all n * ipc images of every class


def test_init_bases_from_real_images_per_class():
    model = tiny()
    images, labels = torch.randn(12, 1, 6, 6), torch.tensor([0, 1, 2] * 4)
    chosen = model.init_bases_from(images, labels, torch.Generator().manual_seed(0))
    assert chosen.shape == (3, 2) and (labels[chosen] == torch.arange(3)[:, None]).all()
    assert torch.equal(model.bases.detach(), images[chosen.flatten()].reshape(3, 2, 1, 6, 6))


def test_saves_loads_bit_exact_and_pushes_with_a_card(tmp_path, fake_hub):
    import transformers as T
    from huggingface_hub import ModelCard

    model = tiny()
    with torch.no_grad():
        model.synthetic_lr.fill_(0.0123)
        model.hallucinators[1].shift.add_(0.5)
    model.save_pretrained(tmp_path)
    loaded = T.AutoModel.from_pretrained(tmp_path, trust_remote_code=False)
    assert type(loaded) is HaBaDataset
    state = model.state_dict()
    assert state.keys() == loaded.state_dict().keys()
    assert all(torch.equal(t, state[k]) for k, t in loaded.state_dict().items())
    assert torch.equal(loaded.generate().pixel_values, model.generate().pixel_values)
    model.push_to_hub("tester/haba", results={"metrics": {"accuracy": 0.9}})
    card = ModelCard.load("tester/haba")
    assert "haba" in card.data.tags and "| accuracy | 0.9 |" in card.text and card.data.pipeline_tag is None
    assert "Dataset Distillation via Factorization" in card.text


def test_the_generated_set_exports_and_pushes_as_a_dataset_repo(tmp_path, fake_hub, monkeypatch):
    from datasets import load_dataset, load_from_disk
    from fake_hub import datasets_endpoint_patches
    from huggingface_hub import DatasetCard, snapshot_download

    for obj, name, value in datasets_endpoint_patches(fake_hub.endpoint):
        monkeypatch.setattr(obj, name, value)
    model = tiny()
    exported = model.to_datasets()
    assert exported.features["labels"].names == ["zero", "one", "two"] and len(exported) == model.num_images
    assert exported.features["pixel_values"].shape == (1, 6, 6)
    model.save_generated_dataset(tmp_path / "generated")
    back = load_from_disk(str(tmp_path / "generated")).with_format("torch")
    torch.testing.assert_close(back[:]["pixel_values"], model.generate().pixel_values.detach())
    assert "load_from_disk" in (tmp_path / "generated" / "README.md").read_text()

    model.push_dataset_to_hub("tester/haba-images", results={"metrics": {"accuracy": 0.5}, "model_repo": "tester/haba"})
    card = DatasetCard.load("tester/haba-images", repo_type="dataset")
    assert card.data.task_categories == ["image-classification"] and "haba" in card.data.tags
    assert card.data.to_dict()["dataset_info"]["features"]  # what datasets wrote stays declared
    assert "[tester/haba](https://huggingface.co/tester/haba)" in card.text and "| accuracy | 0.5 |" in card.text
    hub = load_dataset("tester/haba-images", split="train", cache_dir=str(tmp_path / "cache")).with_format("torch")
    assert hub.features["labels"].names == ["zero", "one", "two"]
    torch.testing.assert_close(hub[:]["pixel_values"], back[:]["pixel_values"])
    assert hub[:]["hallucinator_id"].tolist() == back[:]["hallucinator_id"].tolist()
    files = snapshot_download("tester/haba-images", repo_type="dataset", cache_dir=str(tmp_path / "snap"))
    assert {"README.md", "data"} <= {p.name for p in Path(files).iterdir()}
    assert "tester/haba-images" in fake_hub.dataset_repos and "tester/haba-images" not in fake_hub.repos


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"images_per_class": 0}, "images_per_class.*>= 1"),
        ({"num_hallucinators": 0}, "num_hallucinators.*>= 1"),
        ({"image_size": 2}, "smaller than `kernel_size`"),
        ({"image_size": [8, 8, 8]}, "image_size"),
        ({"num_channels": 0}, "num_channels"),
        ({"hallucinator_init": "zeros"}, "hallucinator_init"),
        ({"initial_synthetic_lr": -1.0}, "initial_synthetic_lr"),
        ({"image_mean": [0.5, 0.5]}, "image_mean"),
        ({"bases_per_class": 2}, "unknown field"),
    ],  # fmt: skip
)
def test_bad_configs_are_named(overrides, match):
    with pytest.raises(ValueError, match=match):
        HaBaConfig(**{"num_labels": 3, "image_size": 8, **overrides})


def test_bad_calls_are_named():
    model = tiny()
    with pytest.raises(ValueError, match=r"hallucinator_ids.*\[0, 2\]"):
        model(class_ids=0, hallucinator_ids=3)
    with pytest.raises(ValueError, match="class_ids"):
        model.generate(class_ids=[5])
    with pytest.raises(ValueError, match="per image but the set makes"):
        model.init_bases_from(torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2] * 2))
    with pytest.raises(ValueError, match="fewer than images_per_class"):
        model.init_bases_from(torch.randn(4, 1, 6, 6), torch.tensor([0, 1, 2, 2]))
