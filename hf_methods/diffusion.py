"""What the diffusion-distillation methods share (RepFusion, Spectral Diffusion): the DDPM epsilon loss and a Trainer
for it, sampling (DDPM, or a shorter DDIM schedule made from the same scheduler config), sample grids, diffusers-style
model cards, and the sample-quality figure of their reports: a Fréchet distance on the penultimate features of a
small digits classifier (`DigitsFeatureNet`) that the recipe trains.

diffusers is imported inside the functions that need it (`require_diffusers`), so `import hf_methods` works without
the `[diffusion]` extra; what needs it says `pip install 'hf-methods[diffusion]'`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

DIFFUSERS_MISSING = "this needs diffusers: pip install 'hf-methods[diffusion]'"
DIFFUSERS_TAGS = ("diffusers", "unconditional-image-generation")


def require_diffusers():
    """The diffusers module, or an ImportError saying how to install it."""
    try:
        import diffusers
    except ImportError as err:  # pragma: no cover - the test extra installs it
        raise ImportError(DIFFUSERS_MISSING) from err
    return diffusers


# --- the DDPM loss --------------------------------------------------------------------------------------------------
def add_noise(scheduler, x0: torch.Tensor, generator: torch.Generator | None = None):
    """(x_t, t, epsilon): one uniform timestep per image and Gaussian noise, x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps
    (the scheduler's `add_noise`)."""
    steps = scheduler.config.num_train_timesteps
    t = torch.randint(0, steps, (x0.shape[0],), generator=generator, device="cpu").to(x0.device)
    noise = torch.randn(x0.shape, generator=generator, device="cpu", dtype=x0.dtype).to(x0.device)
    return scheduler.add_noise(x0, noise, t), t, noise


def unet_output(output) -> torch.Tensor:
    """The predicted tensor of a diffusers UNet's output (`.sample`), a tuple's first item, or a tensor."""
    if torch.is_tensor(output):
        return output
    return output.sample if hasattr(output, "sample") else output[0]


def ddpm_loss(unet, scheduler, x0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The standard epsilon-prediction DDPM loss, MSE(eps_theta(x_t, t), eps) averaged over pixels and images."""
    noisy, t, noise = add_noise(scheduler, x0, generator)
    return F.mse_loss(unet_output(unet(noisy, t)).float(), noise.float())


def unique_state_dict(state_dict: dict) -> dict:
    """`state_dict` without the second name of a tensor registered twice (diffusers' `Downsample2D` keeps its
    convolution as `conv` and `Conv2d_0`), which safetensors refuses to save; loading the first name (non-strict, as
    Trainer resumes) fills both, since they are one tensor."""
    seen, out = set(), {}
    for key, value in state_dict.items():
        ident = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape), value.dtype)
        if ident not in seen:
            seen.add(ident)
            out[key] = value
    return out


def _resumable_trainer():
    from .trainers.resumable import ResumableTrainer

    class UNetCheckpointTrainer(ResumableTrainer):
        """Checkpoints of a diffusers model: one name per tensor (`unique_state_dict`)."""

        def _save(self, output_dir=None, state_dict=None):
            if state_dict is None:
                state_dict = unique_state_dict(self.accelerator.unwrap_model(self.model).state_dict())
            super()._save(output_dir, state_dict)

    return UNetCheckpointTrainer


def ddpm_trainer_class():
    """`DDPMTrainer`: a `ResumableTrainer` whose loss is `ddpm_loss` on the batch's `pixel_values` (labels unused).
    Built on first use so that this module imports no Trainer machinery at import time."""
    global _DDPM_TRAINER
    if _DDPM_TRAINER is None:

        class DDPMTrainer(_resumable_trainer()):
            """Trains a diffusers UNet with the DDPM epsilon loss. `scheduler` is the noise schedule (a
            `DDPMScheduler`); give `TrainingArguments(remove_unused_columns=False)` (the UNet's forward takes no
            `pixel_values`)."""

            def __init__(self, *args, scheduler=None, **kwargs):
                if scheduler is None:
                    raise ValueError("DDPMTrainer needs `scheduler` (a diffusers DDPMScheduler).")
                super().__init__(*args, **kwargs)
                self.noise_scheduler = scheduler
                self.model_accepts_loss_kwargs = False  # the loss is a per-batch mean

            def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
                loss = ddpm_loss(model, self.noise_scheduler, inputs["pixel_values"])
                return (loss, None) if return_outputs else loss

        _DDPM_TRAINER = DDPMTrainer
    return _DDPM_TRAINER


_DDPM_TRAINER = None


# --- sampling ---------------------------------------------------------------------------------------------------------
def sampling_scheduler(scheduler, num_inference_steps: int | None):
    """The scheduler that samples in `num_inference_steps`: a copy of `scheduler` (DDPM, every training step) when it
    is None or the number of training timesteps, else a DDIM scheduler (eta 0) made from the same config."""
    diffusers = require_diffusers()
    steps = scheduler.config.num_train_timesteps
    if num_inference_steps is None or num_inference_steps >= steps:
        found = type(scheduler).from_config(scheduler.config)
        found.set_timesteps(steps)
        return found
    if num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be a positive integer, got {num_inference_steps}.")
    found = diffusers.DDIMScheduler.from_config(scheduler.config)
    found.set_timesteps(num_inference_steps)
    return found


@torch.no_grad()
def sample_images(
    unet,
    scheduler,
    num_images: int,
    *,
    num_inference_steps: int | None = 50,
    seed: int = 0,
    batch_size: int = 512,
) -> torch.Tensor:
    """`num_images` samples of `unet` in [-1, 1], shape (N, C, H, W) on the CPU, reproducible from `seed`.

    `num_inference_steps` DDIM steps (eta 0) from the training scheduler's config, or the full DDPM chain when None.
    The model's own `sample_size` and `in_channels` (diffusers config names) give the shape."""
    was_training = unet.training
    unet.eval()
    device = next(unet.parameters()).device
    size = unet.config.sample_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    generator = torch.Generator().manual_seed(seed)
    out = []
    try:
        for start in range(0, num_images, batch_size):
            n = min(batch_size, num_images - start)
            sched = sampling_scheduler(scheduler, num_inference_steps)
            x = torch.randn((n, unet.config.in_channels, *size), generator=generator).to(device)
            for t in sched.timesteps:
                eps = unet_output(unet(x, t.to(device)))
                kwargs = {"generator": generator} if "DDPM" in type(sched).__name__ else {}
                x = sched.step(eps.cpu(), t, x.cpu(), **kwargs).prev_sample.to(device)
            out.append(x.clamp(-1, 1).cpu())
    finally:
        unet.train(was_training)
    return torch.cat(out)


def image_grid(images: torch.Tensor, nrow: int | None = None, scale: int = 4, padding: int = 1):
    """A grayscale PIL image of `images` ((N, 1, H, W) in [-1, 1]) tiled `nrow` per row (default: square), each
    pixel `scale` x `scale`, with `padding` black pixels between tiles."""
    from PIL import Image

    images = images.detach().float().cpu()
    n, _, h, w = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    canvas = torch.zeros(rows * (h + padding) + padding, nrow * (w + padding) + padding)
    for i in range(n):
        r, c = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + c * (w + padding)
        canvas[y : y + h, x : x + w] = (images[i, 0] + 1) / 2
    canvas = canvas.clamp(0, 1).repeat_interleave(scale, 0).repeat_interleave(scale, 1)
    return Image.fromarray((canvas * 255).round().to(torch.uint8).numpy(), mode="L")


# --- sample quality: a Fréchet distance on a digits classifier's features --------------------------------------------
class DigitsFeatureNet(nn.Module):
    """A small CNN classifier of digits whose penultimate layer (`features`, `feature_dim` values after a ReLU) is the
    feature space of `frechet_distance` in the diffusion reports (an Inception network would need a download and
    knows nothing of 8x8 digits). Works at any image size (adaptive pooling to 4x4)."""

    def __init__(self, channels: int = 32, feature_dim: int = 32, num_classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, channels // 2, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels // 2, channels, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(channels * 16, feature_dim),
            nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def train_digits_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    steps: int = 400,
    batch_size: int = 64,
    learning_rate: float = 3e-3,
    seed: int = 0,
) -> DigitsFeatureNet:
    """A `DigitsFeatureNet` trained `steps` Adam steps on (images in [-1, 1], labels); returned in eval mode. A plain
    loop: it takes a few seconds and is reproducible from `seed`, so a resumed run retrains it identically."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = DigitsFeatureNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    labels = torch.as_tensor(labels)
    for _ in range(steps):
        idx = torch.randint(0, len(images), (batch_size,), generator=generator)
        loss = F.cross_entropy(model(images[idx]), labels[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval().requires_grad_(False)


@torch.no_grad()
def classifier_features(model: DigitsFeatureNet, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    return torch.cat([model.features(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def gaussian_frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """Fréchet (2-Wasserstein squared) distance between N(mu1, cov1) and N(mu2, cov2):
    ||mu1 - mu2||^2 + tr(cov1) + tr(cov2) - 2 tr((cov1^1/2 cov2 cov1^1/2)^1/2), in float64 (symmetric
    eigendecompositions, so it is exact for positive semi-definite covariances and never complex)."""
    mu1, mu2, cov1, cov2 = (torch.as_tensor(v, dtype=torch.float64) for v in (mu1, mu2, cov1, cov2))
    root1 = _psd_sqrt(cov1)
    middle = root1 @ cov2 @ root1
    cross = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    value = (mu1 - mu2).pow(2).sum() + cov1.trace() + cov2.trace() - 2 * cross
    return max(float(value), 0.0)


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """The Fréchet distance between two sets of feature vectors (rows), each summarized by its mean and covariance
    (unbiased, N - 1), as FID does with Inception features. 0 for identical sets."""
    stats = []
    for features in (features_a, features_b):
        features = torch.as_tensor(features, dtype=torch.float64)
        if features.dim() != 2 or features.shape[0] < 2:
            raise ValueError(f"frechet_distance needs two (N >= 2, D) feature matrices, got {tuple(features.shape)}.")
        stats += [features.mean(0), torch.cov(features.T).reshape(features.shape[1], features.shape[1])]
    if stats[0].shape != stats[2].shape:
        raise ValueError(f"feature sizes differ: {stats[0].shape[0]} vs {stats[2].shape[0]}.")
    return gaussian_frechet_distance(*stats)


# --- cards ------------------------------------------------------------------------------------------------------------
def diffusers_card(
    repo_or_path,
    *,
    title: str,
    description: str,
    usage: str,
    tags=(),
    base_model: str | None = None,
    training_setup: str | None = None,
    metrics: dict | None = None,
    citation: str = "",
):
    """A model card with diffusers' conventions (`library_name: diffusers`, tags `diffusers`,
    `unconditional-image-generation`, pipeline tag `unconditional-image-generation`) for a UNet or pipeline a recipe
    trained: what it is, how to load it (`usage`, a Python snippet), the training setup, metrics and citation."""
    from huggingface_hub import ModelCard, ModelCardData

    from .cards import hub_id

    data = ModelCardData(
        library_name="diffusers",
        pipeline_tag="unconditional-image-generation",
        tags=list(dict.fromkeys([*DIFFUSERS_TAGS, "hf-methods", *tags])),
        base_model=hub_id(base_model) if base_model else None,
        datasets=["sklearn-digits"],
        license="apache-2.0",
    )
    lines = [f"# {title}", "", description, "", "## Usage", "", "```python", usage.strip(), "```", ""]
    if training_setup:
        lines += ["## Training", "", training_setup, ""]
    if metrics:
        lines += ["## Results", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()]
        lines.append("")
    if citation:
        lines += ["## Citation", "", "```bibtex", citation.strip(), "```", ""]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))
