"""RepFusionTrainer: ten steps (two epochs) on a tiny diffusers UNet log the loss parts and leave the
teacher untouched and unsaved; the entropy weight follows the official decay (0.1, 0.05, 0, 0 at epochs
0, 50, 100, 150; end 100)."""

import pytest
import torch
from safetensors import safe_open
from transformers import TrainerControl, TrainerState

from hf_methods.models.convnets import VGGConfig
from hf_methods.models.repfusion import RepFusionConfig, RepFusionDistiller
from hf_methods.trainers.repfusion_config import RepFusionTrainingConfig
from hf_methods.trainers.repfusion_trainer import EntropyDecayCallback, RepFusionTrainer

diffusers = pytest.importorskip("diffusers")


def test_entropy_schedule_values():
    callback = EntropyDecayCallback(init=0.1, end_epoch=100)
    model = RepFusionDistiller.__new__(RepFusionDistiller)  # only the attribute matters
    values = []
    for epoch in (0, 50, 100, 150):
        state = TrainerState()
        state.epoch = float(epoch)
        callback.on_epoch_begin(None, state, TrainerControl(), model=model)
        values.append(model.entropy_reg)
    assert values == pytest.approx([0.1, 0.05, 0.0, 0.0])
    with pytest.raises(ValueError, match="entropy_end_epoch"):
        RepFusionTrainingConfig(output_dir="x", entropy_end_epoch=0)


def test_ten_steps_log_the_parts_and_never_touch_or_save_the_teacher(tmp_path):
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4,
    )  # fmt: skip
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    student = VGGConfig(num_channels=1, hidden_sizes=[4, 8], depths=[1, 1])
    config = RepFusionConfig(student=student.to_dict(), num_channels=1, image_size=8, teacher_hidden_size=16,
                             num_train_timesteps=100, policy_channels=[4], policy_hidden_sizes=[16],
                             reward_hidden_sizes=[16], num_labels=10)  # fmt: skip
    model = RepFusionDistiller(config)
    rows = [{"pixel_values": torch.randn(1, 8, 8), "labels": torch.tensor(i % 10)} for i in range(20)]
    args = RepFusionTrainingConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, max_steps=10,
                                   logging_steps=1, report_to="none", use_cpu=True, entropy_end_epoch=2,
                                   learning_rate=0.05, save_strategy="no", policy_learning_rate=0.5)  # fmt: skip
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=100)
    trainer = RepFusionTrainer(model=model, args=args, train_dataset=rows, teacher_model=unet,
                               teacher_scheduler=scheduler)  # fmt: skip
    trainer.train()
    logs = [e for e in trainer.state.log_history if "loss" in e]
    assert len(logs) == 10 and all(torch.isfinite(torch.tensor(e["loss"])) for e in logs)
    assert {"loss_feat", "loss_reward", "loss_policy", "loss_entropy", "mean_t"} <= set(logs[0])
    assert 0 <= logs[0]["mean_t"] < 100
    assert model.entropy_reg == pytest.approx(0.05)  # epoch 1 of 2: 0.1 * (1 - 1/2)
    assert logs[-1]["loss_entropy"] == pytest.approx(logs[0]["loss_entropy"] / 2, rel=0.05)  # near-uniform policy
    policy = {id(p) for p in model.policy.parameters()}
    groups = [{id(p) for p in g["params"]} for g in trainer.optimizer.param_groups]
    lrs = [g["initial_lr"] for g in trainer.optimizer.param_groups]
    assert all(lr == 0.5 for ids, lr in zip(groups, lrs) if ids & policy)
    assert all(lr == 0.05 and not ids & policy for ids, lr in zip(groups, lrs) if ids - policy)
    for key, value in unet.state_dict().items():
        assert torch.equal(value, before[key]), key
    trainer.save_model(str(tmp_path / "saved"))
    with safe_open(str(tmp_path / "saved" / "model.safetensors"), framework="pt") as f:
        assert not any("mid_block" in k or "teacher" in k for k in f.keys())
    with pytest.raises(TypeError, match="RepFusionDistiller"):
        RepFusionTrainer(model=torch.nn.Linear(2, 2), args=args)
