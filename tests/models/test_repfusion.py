"""RepFusion's distiller: gradient isolation per loss term, the teacher never trained nor saved, REINFORCE moving the
policy's mass to the only timesteps where the teacher's feature tells the label, the feature hook firing once per
forward on a tiny diffusers UNet, save/load/push of the distiller and of the exported backbone, and bad inputs."""

import json

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors import safe_open
from torch import nn
from transformers import ViTConfig, ViTForImageClassification

from hf_methods.models.convnets import VGGConfig, VGGForImageClassification
from hf_methods.models.repfusion import RepFusionConfig, RepFusionDistiller

diffusers = pytest.importorskip("diffusers")


def tiny_unet(size=8, channels=(8, 16)):
    torch.manual_seed(0)
    return diffusers.UNet2DModel(
        sample_size=size, in_channels=1, out_channels=1, block_out_channels=channels, layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4,
    )  # fmt: skip


def tiny_config(**overrides):
    student = VGGConfig(num_channels=1, hidden_sizes=[4, 8], depths=[1, 1], id2label={i: str(i) for i in range(10)})
    values = dict(student=student.to_dict(), num_channels=1, image_size=8, teacher_hidden_size=16,
                  num_train_timesteps=100, policy_channels=[4], policy_hidden_sizes=[16], reward_hidden_sizes=[16],
                  id2label={i: str(i) for i in range(10)})  # fmt: skip
    return RepFusionConfig(**{**values, **overrides})


def batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_gradient_isolation_per_term_and_the_teacher_never_gets_gradients():
    torch.manual_seed(0)
    model = RepFusionDistiller(tiny_config()).attach_teacher(tiny_unet())
    x, y = batch()
    groups = {"student": ("student.", "projection."), "policy": ("policy.",), "reward": ("reward_head.",)}
    expected = {"feat": {"student"}, "reward": {"reward"}, "policy": {"policy"}, "entropy": {"policy"}}
    for term, owners in expected.items():
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        model.loss_terms(x, y)[term].backward()
        got = {g for g, prefixes in groups.items() for n, p in model.named_parameters()
               if n.startswith(prefixes) and p.grad is not None and p.grad.abs().sum() > 0}  # fmt: skip
        assert got == owners, term
        assert all(p.grad is None for p in model.teacher.parameters())
        assert not any(p.requires_grad for p in model.teacher.parameters())
    model.zero_grad(set_to_none=True)
    out = model(pixel_values=x, labels=y)
    out.loss.backward()
    total = out.loss_feat + out.loss_reward + out.loss_policy + out.loss_entropy
    torch.testing.assert_close(out.loss.detach(), total)
    assert 0 <= out.mean_t < 100 and all(p.grad is None for p in model.teacher.parameters())


class ToyTeacher(nn.Module):
    """teacher(x, t): in t = 400..449 the feature is the image's class code, elsewhere noise (hook `feature`)."""

    def __init__(self):
        super().__init__()
        self.feature = nn.Identity()
        self.weight = nn.Parameter(torch.zeros(1))  # a parameter, so that it has a dtype

    def forward(self, sample, timestep):
        code = sample.flatten(1)[:, :16]
        noise = torch.randn_like(code)
        band = ((timestep >= 400) & (timestep < 450)).float()[:, None]
        return self.feature((band * 3 * code + (1 - band) * noise)[:, :, None, None])


def test_reinforce_moves_the_policy_to_the_informative_band():
    torch.manual_seed(0)
    config = tiny_config(num_train_timesteps=1000, teacher_hook="feature", entropy_reg=0.0, kd_weight=0.0)
    model = RepFusionDistiller(config).attach_teacher(ToyTeacher())
    prototypes = torch.randn(10, 64).sign()
    optimizer = torch.optim.Adam([*model.policy.parameters(), *model.reward_head.parameters()], lr=1e-2)
    x_eval = prototypes.view(10, 1, 8, 8)
    initial = model.timestep_distribution(x_eval)[400:450].sum()
    for _ in range(200):
        y = torch.randint(0, 10, (32,))
        x = (prototypes[y] + 0.3 * torch.randn(32, 64)).view(32, 1, 8, 8)
        loss = model(pixel_values=x, labels=y).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    final = model.timestep_distribution(x_eval)[400:450].sum()
    assert abs(initial - 0.05) < 1e-6  # the initial policy is uniform
    assert final > 0.5, final  # from 5%


def test_tiny_unet_forward_hook_fires_once_and_five_steps_are_finite():
    torch.manual_seed(0)
    unet = tiny_unet(size=32)
    config = tiny_config(image_size=32, policy_num_timesteps=50)
    model = RepFusionDistiller(config).attach_teacher(unet, diffusers.DDPMScheduler(num_train_timesteps=100))
    calls = []
    unet.get_submodule("mid_block.resnets.1.conv2").register_forward_hook(lambda *a: calls.append(1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = torch.randn(4, 1, 32, 32), torch.randint(0, 10, (4,))
    for step in range(5):
        out = model(pixel_values=x, labels=y)
        assert len(calls) == step + 1 and torch.isfinite(out.loss)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    assert set(out.timesteps.tolist()) <= set(range(0, 100, 2))  # the coarse grid t_k = 2k
    # stopping at the hook gives the same feature as a full forward
    model.config.teacher_stop_at_hook = False
    full = model.teacher_features(x, out.timesteps)
    model.config.teacher_stop_at_hook = True
    torch.testing.assert_close(model.teacher_features(x, out.timesteps), full)


def test_fixed_timestep_mode_has_no_policy():
    model = RepFusionDistiller(tiny_config(fixed_timestep=0)).attach_teacher(tiny_unet())
    x, y = batch()
    out = model(pixel_values=x, labels=y)
    assert model.policy is None and out.mean_t == 0 and out.loss_policy == 0 and out.loss_entropy == 0
    assert not any(k.startswith("policy") for k in model.state_dict())


def test_spatial_feature_loss_and_a_vit_student():
    x, y = batch()
    spatial = RepFusionDistiller(tiny_config(feature_loss="spatial")).attach_teacher(tiny_unet())
    terms = spatial.loss_terms(x, y)
    resized = torch.nn.functional.interpolate(spatial.student_features(x).float(), size=(4, 4), mode="bilinear")
    assert terms["feat"].item() > 0 and resized.shape[1] == 16
    vit = ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=8, num_hidden_layers=1,
                    num_attention_heads=2, intermediate_size=16, num_labels=10)  # fmt: skip
    model = RepFusionDistiller(tiny_config(student=vit.to_dict())).attach_teacher(tiny_unet())
    assert isinstance(model.projection, nn.Linear) and torch.isfinite(model(pixel_values=x, labels=y).loss)
    assert isinstance(model.export_student_backbone(num_labels=3), ViTForImageClassification)
    with pytest.raises(ValueError, match="CNN student"):
        tiny_config(student=vit.to_dict(), feature_loss="spatial")


def test_save_load_push_of_the_distiller_and_the_exported_backbone(tmp_path, fake_hub):
    torch.manual_seed(0)
    model = RepFusionDistiller(tiny_config()).attach_teacher(tiny_unet())
    model.save_pretrained(tmp_path / "d")
    with safe_open(str(tmp_path / "d" / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
    assert keys == set(model.state_dict()) and not any("mid_block" in k or "teacher" in k for k in keys)
    loaded = RepFusionDistiller.from_pretrained(tmp_path / "d", trust_remote_code=False)
    assert loaded.teacher is None
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    model.push_to_hub("tester/repfusion-distiller")
    assert "repfusion" in ModelCard.load("tester/repfusion-distiller").data.tags

    backbone = model.export_student_backbone(id2label={0: "a", 1: "b", 2: "c"})
    assert isinstance(backbone, VGGForImageClassification) and backbone.config.num_labels == 3
    assert torch.equal(backbone.stages[0][0].conv.weight, model.student.stages[0][0].conv.weight)
    backbone.save_pretrained(tmp_path / "b")
    again = VGGForImageClassification.from_pretrained(tmp_path / "b", trust_remote_code=False)
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    backbone.push_to_hub("tester/repfusion-backbone")
    card = ModelCard.load("tester/repfusion-backbone")
    assert "repfusion" in card.data.tags and "mid_block.resnets.1.conv2" in card.text
    assert json.loads((tmp_path / "b" / "config.json").read_text())["id2label"]["2"] == "c"


def test_bad_inputs():
    model = RepFusionDistiller(tiny_config(teacher_hook="mid_block.resnets.7.conv2"))
    with pytest.raises(ValueError, match=r"teacher_hook.*mid_block.resnets.1.conv2"):
        model.attach_teacher(tiny_unet())
    with pytest.raises(ValueError, match="policy_num_timesteps"):
        tiny_config(policy_num_timesteps=200)
    with pytest.raises(ValueError, match="scheduler has 50 timesteps"):
        RepFusionDistiller(tiny_config()).attach_teacher(tiny_unet(), diffusers.DDPMScheduler(num_train_timesteps=50))
    with pytest.raises(ValueError, match="teacher_hidden_size=16"):
        RepFusionDistiller(tiny_config(teacher_hidden_size=32)).attach_teacher(tiny_unet())
    with pytest.raises(ValueError, match="fixed_timestep"):
        tiny_config(fixed_timestep=100)
    with pytest.raises(ValueError, match="reward_baseline"):
        tiny_config(reward_baseline="moving")
    with pytest.raises(ValueError, match="unknown field"):
        tiny_config(kd_wieght=1.0)
    with pytest.raises(ValueError, match="student"):
        tiny_config(student=None)
    with pytest.raises(ValueError, match="attach_teacher"):
        RepFusionDistiller(tiny_config())(pixel_values=batch()[0])
    with pytest.raises(ValueError, match="pixel_values must have shape"):
        RepFusionDistiller(tiny_config()).attach_teacher(tiny_unet())(pixel_values=torch.zeros(2, 3, 8, 8))
