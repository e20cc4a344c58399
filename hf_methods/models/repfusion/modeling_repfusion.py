"""RepFusion's distiller (arXiv 2308.10916, official code Adamdad/Repfusion): a recognition student regresses the
features of a frozen diffusion UNet fed the clean image at a timestep t that a policy network picks per image;
REINFORCE trains the policy with the reward -CE of a light head that classifies the label from the teacher feature at
that t. After pre-training, `export_student_backbone` gives the student as a classifier to fine-tune.

The teacher is a diffusers `UNet2DModel` (or any module called as `teacher(sample, timestep)`). It is attached with
`attach_teacher` and held outside the module tree: it is not in `state_dict`, never saved or pushed, never optimized.
`diffusers` itself is imported nowhere here (the teacher is passed in), so `import hf_methods` stays light.

Loss (every term a per-batch mean; mmcv sums the `loss_*` entries of the official code):
    kd_weight * MSE(GAP(P(h_S)), GAP(h_T))             -> student and projection P only (h_T has no gradient)
        (feature_loss="spatial": MSE(resize(P(h_S)), h_T) over the maps, the official dense variant)
    + CE(g(GAP(h_T)), y)                                -> reward head g only
    - mean_i log pi(t_i | x_i) * r_i,  r_i = -CE_i      -> policy only (reward detached; no baseline unless asked)
    - entropy_reg * mean_i H(pi(. | x_i))               -> policy only
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoModelForImageClassification, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from ...modeling import HfMethodsModel, with_card_push
from .configuration_repfusion import RepFusionConfig


@dataclass
class RepFusionOutput(ModelOutput):
    """`loss` (the sum the trainer backpropagates) and its parts; `timesteps` the t used per image; `policy_probs` the
    policy's distribution over its K actions (None in fixed-timestep mode)."""

    loss: torch.Tensor | None = None
    loss_feat: torch.Tensor | None = None
    loss_reward: torch.Tensor | None = None
    loss_policy: torch.Tensor | None = None
    loss_entropy: torch.Tensor | None = None
    mean_t: torch.Tensor | None = None
    timesteps: torch.Tensor | None = None
    policy_probs: torch.Tensor | None = None
    student_features: torch.Tensor | None = None
    teacher_features: torch.Tensor | None = None


class _StopAtHook(Exception):
    """Raised by the feature hook to end the teacher's forward once the feature exists."""


class PolicyNet(nn.Module):
    """The timestep policy pi(t | x): official `PolicyNet_Cov` (LeNet: conv 5x5 -> pool -> conv 5x5 -> pool -> fc ->
    fc -> K logits), with padded convs, ceil-mode pools and an adaptive average pool to at most 5x5 so that small
    images (8x8, 16x16) fit. The last layer starts at zero: the initial policy is uniform over the K actions."""

    def __init__(self, config: RepFusionConfig):
        super().__init__()
        layers, channels, size = [], config.num_channels, config.image_size
        for width in config.policy_channels:
            layers += [nn.Conv2d(channels, width, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True)]
            channels, size = width, math.ceil(size / 2)
        side = min(5, size)
        layers += [nn.AdaptiveAvgPool2d(side), nn.Flatten()]
        width = channels * side * side
        for hidden in config.policy_hidden_sizes:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        self.features = nn.Sequential(*layers)
        self.logits = nn.Linear(width, config.policy_num_timesteps)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.logits(self.features(pixel_values))


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def student_feature_size(student_config) -> int:
    """Width of the student's last feature map: `hidden_sizes[-1]` (the project's CNNs) or `hidden_size` (ViT)."""
    sizes = getattr(student_config, "hidden_sizes", None)
    return int(sizes[-1]) if sizes else int(student_config.hidden_size)


def hooked_module(teacher: nn.Module, name: str) -> nn.Module:
    """The teacher's module `name` (the distilled feature is its output), or a ValueError listing valid names."""
    modules = dict(teacher.named_modules())
    if name not in modules:
        convs = [n for n, m in modules.items() if isinstance(m, (nn.Conv2d, nn.Linear)) and n]
        mids = [n for n in convs if n.startswith("mid_block")] or convs
        raise ValueError(
            f"`teacher_hook` {name!r} is not a module of the teacher {type(teacher).__name__}. Valid modules include "
            f"{mids[-8:]} (all: `dict(unet.named_modules())`); set RepFusionConfig(teacher_hook=...) to one of them."
        )
    return modules[name]


def entropy_schedule(epoch: float, init_value: float, end_epoch: float) -> float:
    """The official `EntropyDecayHook`: init * (1 - epoch / end_epoch) until end_epoch, 0 after."""
    if end_epoch <= 0:
        return 0.0
    return init_value * max(0.0, 1.0 - epoch / end_epoch)


class RepFusionDistiller(HfMethodsModel, PreTrainedModel):
    """Student + projection + timestep policy + reward head, trained against a frozen diffusion teacher.

    Modules: `student` (a classifier built from `config.student`; its head is unused here), `projection` (1x1 conv
    for feature maps, linear for ViT tokens, to `teacher_hidden_size`), `policy` (`PolicyNet`; absent with
    `fixed_timestep`), `reward_head` (MLP). `attach_teacher(unet)` must be called before `forward`.
    `entropy_reg` is a plain attribute (`EntropyDecayCallback` changes it during training).
    """

    config_class = RepFusionConfig
    method_name = "RepFusion"
    base_model_prefix = "repfusion"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    accepts_loss_kwargs = False  # per-batch means

    def __init__(self, config: RepFusionConfig):
        super().__init__(config)
        self.student = AutoModelForImageClassification.from_config(config.student_config())
        width = student_feature_size(self.student.config)
        tokens = not getattr(self.student.config, "hidden_sizes", None)
        if tokens:
            self.projection = nn.Linear(width, config.teacher_hidden_size)
        else:
            self.projection = nn.Conv2d(width, config.teacher_hidden_size, 1)
        self.policy = PolicyNet(config) if config.fixed_timestep is None else None
        self.reward_head = _mlp([config.teacher_hidden_size, *config.reward_hidden_sizes, config.num_labels])
        self.register_buffer("action_timesteps", config.timesteps(), persistent=False)
        self.entropy_reg = float(config.entropy_reg)
        object.__setattr__(self, "_teacher", None)  # outside the module tree: never saved, moved or optimized
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module):
        """Projection and heads: PyTorch's default (Kaiming-uniform, a = sqrt(5)) initialization; the policy's last
        layer at zero (a uniform initial policy). The student keeps its own initialization."""
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            if self.policy is not None and module is self.policy.logits:
                init.zeros_(module.weight)
                init.zeros_(module.bias)
                return
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                fan_in = module.weight[0].numel()
                init.uniform_(module.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
        elif isinstance(module, RepFusionDistiller):
            module.action_timesteps.copy_(module.config.timesteps())

    # --- the teacher ------------------------------------------------------------------------------------------------
    @property
    def teacher(self) -> nn.Module | None:
        return self._teacher

    def attach_teacher(self, teacher: nn.Module, scheduler=None) -> RepFusionDistiller:
        """Hold `teacher` (a diffusers `UNet2DModel`, frozen here: no gradient, eval mode) for `forward`. Checks that
        `config.teacher_hook` names one of its modules, that its input channels are the images' and its feature width
        `teacher_hidden_size`, and, given its `scheduler`, that the policy's timesteps exist there. The teacher stays
        on its own device (`RepFusionTrainer` places it); inputs are moved there and features back."""
        module = hooked_module(teacher, self.config.teacher_hook)
        in_channels = getattr(getattr(teacher, "config", None), "in_channels", self.config.num_channels)
        if in_channels != self.config.num_channels:
            raise ValueError(
                f"the teacher reads {in_channels}-channel images but the distiller's `num_channels` is "
                f"{self.config.num_channels}; make them equal (or convert the images)."
            )
        out = getattr(module, "out_channels", getattr(module, "out_features", None))
        if out is not None and out != self.config.teacher_hidden_size:
            raise ValueError(
                f"teacher module {self.config.teacher_hook!r} gives {out} channels but `teacher_hidden_size` is "
                f"{self.config.teacher_hidden_size}; set teacher_hidden_size={out}."
            )
        steps = getattr(getattr(scheduler, "config", None), "num_train_timesteps", None)
        if steps is not None and steps < self.config.num_train_timesteps:
            raise ValueError(
                f"the teacher's scheduler has {steps} timesteps but the distiller's `num_train_timesteps` is "
                f"{self.config.num_train_timesteps} (the policy would pick timesteps the teacher never saw); set "
                f"num_train_timesteps={steps} (and policy_num_timesteps <= {steps})."
            )
        teacher.requires_grad_(False)
        teacher.eval()
        object.__setattr__(self, "_teacher", teacher)
        return self

    @torch.no_grad()
    def teacher_features(self, pixel_values: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The teacher's feature at `config.teacher_hook` for the clean images at `timesteps` (one forward, one hook
        call), in float32."""
        teacher = self._teacher
        if teacher is None:
            raise ValueError("RepFusionDistiller has no teacher: call attach_teacher(unet) (or use RepFusionTrainer).")
        found = []
        stop = self.config.teacher_stop_at_hook

        def hook(module, args, output):
            found.append(output)
            if stop:
                raise _StopAtHook

        handle = hooked_module(teacher, self.config.teacher_hook).register_forward_hook(hook)
        first = next(teacher.parameters())
        try:
            teacher(pixel_values.to(first.device, first.dtype), timesteps.to(first.device))
        except _StopAtHook:
            pass
        finally:
            handle.remove()
        if len(found) != 1:
            raise RuntimeError(f"teacher module {self.config.teacher_hook!r} ran {len(found)} times in one forward.")
        return found[0].float().to(pixel_values.device)

    # --- forward ----------------------------------------------------------------------------------------------------
    def student_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """P(h_S): the projected last feature map (B, C_T, h, w) or tokens (B, N, C_T) of the student."""
        outputs = self.student(pixel_values=pixel_values, output_hidden_states=True, return_dict=True)
        return self.projection(outputs.hidden_states[-1])

    def loss_terms(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
        """The terms of the loss, each still attached to its graph: `feat` (unweighted MSE), `reward`, `policy`,
        `entropy` (already -entropy_reg * H), plus `timesteps`, `probs`, `pooled_student`, `pooled_teacher`. A term
        that does not apply (no labels, no policy) is a zero without graph."""
        if pixel_values is None or pixel_values.dim() != 4 or pixel_values.shape[1] != self.config.num_channels:
            shape = None if pixel_values is None else tuple(pixel_values.shape)
            raise ValueError(
                f"pixel_values must have shape (batch, {self.config.num_channels}, height, width), got {shape}."
            )
        batch = pixel_values.shape[0]
        device = pixel_values.device
        probs = log_probs = None
        if self.policy is None:
            timesteps = torch.full((batch,), self.config.fixed_timestep, device=device, dtype=torch.long)
        else:
            log_probs = self.policy(pixel_values).float().log_softmax(-1)
            probs = log_probs.exp()
            actions = torch.multinomial(probs.detach(), 1).squeeze(1)
            timesteps = self.action_timesteps.to(device)[actions]
        h_t = self.teacher_features(pixel_values, timesteps)
        h_s = self.student_features(pixel_values).float()
        pooled_t = h_t.flatten(2).mean(-1)  # GAP over space: (B, C_T)
        pooled_s = h_s.flatten(2).mean(-1) if h_s.dim() == 4 else h_s.mean(1)
        zero = pooled_t.new_zeros(())
        if self.config.feature_loss == "spatial":
            size = h_t.shape[-2:]
            resized = h_s if h_s.shape[-2:] == size else F.interpolate(h_s, size=size, mode="bilinear")
            feat = F.mse_loss(resized, h_t)
        else:
            feat = F.mse_loss(pooled_s, pooled_t)
        terms = {"feat": feat, "reward": zero, "policy": zero, "entropy": zero}
        if labels is not None:
            labels = labels.to(device).long()
            labeled = labels != -100
            if bool(labeled.any()):
                ce = F.cross_entropy(self.reward_head(pooled_t), labels.clamp_min(0), reduction="none")[labeled]
                terms["reward"] = ce.mean()
                if log_probs is not None:
                    reward = -ce.detach()  # r_i = -CE_i, no gradient into the reward head
                    if self.config.reward_baseline == "batch_mean":
                        reward = reward - reward.mean()
                    chosen = log_probs[torch.arange(batch, device=device), actions][labeled]
                    terms["policy"] = -(chosen * reward).mean()
        if probs is not None:
            terms["entropy"] = -self.entropy_reg * (-(probs * log_probs).sum(-1)).mean()
        terms.update(timesteps=timesteps, probs=probs, pooled_student=pooled_s, pooled_teacher=pooled_t)
        return terms

    def forward(
        self, pixel_values: torch.Tensor | None = None, labels: torch.Tensor | None = None, **kwargs
    ) -> RepFusionOutput:
        """The RepFusion loss of a batch (see the module docstring). `labels` (B,) train the reward head and the
        policy; -100 marks an unlabeled image (it is distilled but gives no reward). Without any labels only the
        feature term (and the entropy bonus) is computed."""
        terms = self.loss_terms(pixel_values, labels)
        loss = self.config.kd_weight * terms["feat"] + terms["reward"] + terms["policy"] + terms["entropy"]
        probs = terms["probs"]
        return RepFusionOutput(
            loss=loss,
            loss_feat=terms["feat"].detach(),
            loss_reward=terms["reward"].detach(),
            loss_policy=terms["policy"].detach(),
            loss_entropy=terms["entropy"].detach(),
            mean_t=terms["timesteps"].float().mean(),
            timesteps=terms["timesteps"],
            policy_probs=None if probs is None else probs.detach(),
            student_features=terms["pooled_student"],
            teacher_features=terms["pooled_teacher"],
        )

    @torch.no_grad()
    def timestep_distribution(self, pixel_values: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """The policy's mean distribution over its K actions on `pixel_values` (fixed mode: all mass on t)."""
        if self.policy is None:
            out = torch.zeros(self.config.policy_num_timesteps)
            out[int(torch.searchsorted(self.action_timesteps.cpu(), torch.tensor(self.config.fixed_timestep)))] = 1
            return out
        was = self.training
        self.eval()
        total = 0
        for start in range(0, len(pixel_values), batch_size):
            chunk = pixel_values[start : start + batch_size].to(self.device)
            total = total + self.policy(chunk).float().softmax(-1).sum(0).cpu()
        self.train(was)
        return total / len(pixel_values)

    # --- stage 2 ----------------------------------------------------------------------------------------------------
    def export_student_backbone(self, id2label: dict | None = None, num_labels: int | None = None):
        """The distilled student as a plain classifier for fine-tuning: a copy of `student` with a freshly initialized
        head for the downstream labels (`id2label`, or `num_labels`; default the reward head's). It saves, loads and
        pushes like any model of its class; `push_to_hub` writes a RepFusion card."""
        if id2label is None:
            n = num_labels or self.config.num_labels
            id2label = self.config.id2label if n == self.config.num_labels else {i: str(i) for i in range(n)}
        id2label = {int(k): str(v) for k, v in id2label.items()}
        config = copy.deepcopy(self.student.config)
        config.id2label = id2label
        config.label2id = {v: k for k, v in id2label.items()}
        config.num_labels = len(id2label)
        model = type(self.student)(config)  # a fresh head under the caller's torch seed
        kept = {k: v for k, v in self.student.state_dict().items() if not _is_head(k)}
        missing, unexpected = model.load_state_dict(kept, strict=False)
        if unexpected or any(not _is_head(k) for k in missing):
            raise RuntimeError(f"export_student_backbone: missing {missing}, unexpected {unexpected}.")
        model.to(self.device)
        source = self

        def card(exported, repo_id):
            return backbone_card(exported, repo_id, distiller=source)

        return with_card_push(model, card)

    def model_card(self, repo_or_path, results: dict | None = None):
        from ...cards import run_model_card

        results = results or {}
        mode = (
            f"fixed timestep t = {self.config.fixed_timestep}"
            if self.config.fixed_timestep is not None
            else f"a policy over {self.config.policy_num_timesteps} timesteps trained with REINFORCE"
        )
        return run_model_card(
            self,
            repo_or_path,
            method="RepFusion",
            title=f"RepFusion distiller ({self.student.config.model_type} student)",
            description=(
                "RepFusion pre-training state: the student classifier, the projection to the diffusion teacher's "
                f"{self.config.teacher_hidden_size}-channel feature at `{self.config.teacher_hook}`, {mode}, and the "
                "reward head. The diffusion teacher is not part of this checkpoint: attach it with "
                "`attach_teacher(unet)`. For downstream use take `export_student_backbone()`."
            ),
            tags=["distillation", "diffusion-distillation", "repfusion"],
            ancestor=results.get("teacher"),
            training_setup=results.get("training_setup"),
            metrics={k: v for k, v in results.get("metrics", {}).items() if isinstance(v, (int, float))},
            dataset=results.get("dataset"),
            auto_class="AutoModel",
        )


def _is_head(key: str) -> bool:
    """Whether a state-dict key belongs to the classifier head (`classifier` in the project's CNNs and ViT)."""
    return key.split(".")[0] in ("classifier", "head")


def backbone_card(model, repo_or_path, distiller=None, results: dict | None = None):
    """Card of a student exported from a RepFusion distiller (`export_student_backbone`), fine-tuned or not."""
    from ...cards import run_model_card

    results = results or {}
    hook = distiller.config.teacher_hook if distiller is not None else results.get("teacher_hook", "the teacher")
    return run_model_card(
        model,
        repo_or_path,
        method="RepFusion",
        title=results.get("title") or f"RepFusion-pre-trained {model.config.model_type} classifier",
        description=results.get("description")
        or (
            "A classifier backbone pre-trained with RepFusion: it regressed the pooled feature of a frozen diffusion "
            f"UNet ({hook}) at timesteps chosen per image by a REINFORCE policy. The classification head is "
            f"{'fine-tuned' if results.get('fine_tuned') else 'freshly initialized: fine-tune it on your labels'}."
        ),
        tags=["distillation", "diffusion-distillation", "repfusion", "image-classification"],
        ancestor=results.get("teacher"),
        training_setup=results.get("training_setup"),
        metrics={k: v for k, v in results.get("metrics", {}).items() if isinstance(v, (int, float))},
        dataset=results.get("dataset"),
    )
