"""LayerMatch, "Do Pseudo-labels Benefit All Layers?" (arXiv 2406.14207; no official code), on a FixMatch base.

Pseudo-labels help the feature extractor cluster the data, but their noise hurts the linear classifier most. Grad-ReLU
keeps the unlabeled term's gradient out of the classifier; Avg-Clustering computes that term with an exponential moving
average of the classifier (stable cluster centres). Both are flags of `LayerMatchConfig`; with both off the trainer is
plain FixMatch.

Data: `SemiSupervisedDataset` pairs every labeled row with `unlabeled_ratio` unlabeled images, and
`WeakStrongCollator` turns those into a weak and a strong augmented view (`unlabeled_weak`, `unlabeled_strong`).
The features are the classifier's input, read with a forward pre-hook, so any model whose last layer is an `nn.Linear`
named `classifier_name` works (ViT, BERT, the project's CNNs) without a special forward.

Inferred (the paper's choices are not known to us): the primary reading of Avg-Clustering (an EMA of the classifier's
weight and bias, used for both the pseudo-labels and the strong-view logits), and the augmentations (weak: a random
shift; strong: the shift plus a cutout, noise and a contrast change; the paper uses RandAugment on natural images).
The centres are training state: they restart from the classifier when a run resumes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from transformers import Trainer, TrainerCallback
from transformers.data.data_collator import default_data_collator

from .layermatch_config import LayerMatchConfig


class SemiSupervisedDataset(Dataset):
    """Row `i`: labeled example `i mod L` (its columns) and `unlabeled_ratio` unlabeled images under `"unlabeled"`.

    Its length covers the unlabeled set once per epoch (`ceil(U / ratio)` rows, at least `L`), so the labeled
    examples repeat, as FixMatch draws labeled and unlabeled batches at a fixed ratio."""

    def __init__(self, labeled: Sequence[dict], unlabeled: Sequence, unlabeled_ratio: int = 7, key="pixel_values"):
        if isinstance(unlabeled_ratio, bool) or not isinstance(unlabeled_ratio, int) or unlabeled_ratio < 1:
            raise ValueError(f"unlabeled_ratio must be an integer >= 1, got {unlabeled_ratio!r}.")
        if len(labeled) == 0 or len(unlabeled) == 0:
            raise ValueError(f"need labeled and unlabeled examples, got {len(labeled)} and {len(unlabeled)}.")
        self.labeled, self.unlabeled, self.ratio, self.key = labeled, unlabeled, unlabeled_ratio, key

    def __len__(self):
        return max(len(self.labeled), math.ceil(len(self.unlabeled) / self.ratio))

    def _image(self, j):
        item = self.unlabeled[j % len(self.unlabeled)]
        return item[self.key] if isinstance(item, dict) else item

    def __getitem__(self, i):
        row = dict(self.labeled[i % len(self.labeled)])
        row["unlabeled"] = [self._image(i * self.ratio + k) for k in range(self.ratio)]
        return row


def weak_augment(images: torch.Tensor, max_shift: float = 0.125) -> torch.Tensor:
    """A random translation of each image by up to `max_shift` of its size (edge padding)."""
    n, _, h, w = images.shape
    pad_h, pad_w = max(1, round(h * max_shift)), max(1, round(w * max_shift))
    padded = F.pad(images, (pad_w, pad_w, pad_h, pad_h), mode="replicate")
    dy = torch.randint(0, 2 * pad_h + 1, (n,)).tolist()
    dx = torch.randint(0, 2 * pad_w + 1, (n,)).tolist()
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])


def strong_augment(images: torch.Tensor) -> torch.Tensor:
    """The weak shift, then a random contrast change, Gaussian noise and a cutout of a quarter of the side."""
    out = weak_augment(images)
    n, _, h, w = out.shape
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * torch.empty(n, 1, 1, 1).uniform_(0.5, 1.5) + mean
    out = out + 0.1 * out.std() * torch.randn_like(out)
    size_h, size_w = max(1, h // 4), max(1, w // 4)
    for i in range(n):
        y, x = int(torch.randint(0, h - size_h + 1, ())), int(torch.randint(0, w - size_w + 1, ()))
        out[i, :, y : y + size_h, x : x + size_w] = mean[i]
    return out


class WeakStrongCollator:
    """Collate `SemiSupervisedDataset` rows: the labeled columns as usual, the unlabeled images as `unlabeled_weak`
    and `unlabeled_strong` (`weak(images)`, `strong(images)`, each a batch of `B * ratio` images). With
    `num_weak_views=K > 1` (RankMatch), `unlabeled_weak` holds K independent weak views, (K, B * ratio, ...)."""

    def __init__(
        self,
        weak: Callable[[torch.Tensor], torch.Tensor] = weak_augment,
        strong: Callable[[torch.Tensor], torch.Tensor] = strong_augment,
        base: Callable = default_data_collator,
        num_weak_views: int = 1,
    ):
        if isinstance(num_weak_views, bool) or not isinstance(num_weak_views, int) or num_weak_views < 1:
            raise ValueError(f"num_weak_views must be an integer >= 1, got {num_weak_views!r}.")
        self.weak, self.strong, self.base, self.num_weak_views = weak, strong, base, num_weak_views

    def __call__(self, rows):
        images = torch.stack([torch.as_tensor(img) for row in rows for img in row["unlabeled"]])
        batch = self.base([{k: v for k, v in row.items() if k != "unlabeled"} for row in rows])
        if self.num_weak_views == 1:
            batch["unlabeled_weak"] = self.weak(images)
        else:
            batch["unlabeled_weak"] = torch.stack([self.weak(images) for _ in range(self.num_weak_views)])
        batch["unlabeled_strong"] = self.strong(images)
        return batch


class _CenterEMA(TrainerCallback):
    def __init__(self, trainer: LayerMatchTrainer):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer.reset_centers()

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer.update_centers()


class LayerMatchTrainer(Trainer):
    """FixMatch with LayerMatch's Grad-ReLU and Avg-Clustering (see the module docstring and `LayerMatchConfig`).

    Batches hold the labeled `pixel_values` and `labels` and the unlabeled views `unlabeled_weak` and
    `unlabeled_strong` (`WeakStrongCollator`, the default collator here). Logged beside the loss: `sup_loss`,
    `unsup_loss` and `mask_rate` (the share of unlabeled images whose pseudo-label passed the threshold).
    """

    def __init__(self, model=None, args: LayerMatchConfig | None = None, data_collator=None, **kwargs):
        if not isinstance(args, LayerMatchConfig):
            raise TypeError(f"LayerMatchTrainer takes a LayerMatchConfig, got {type(args).__name__}.")
        super().__init__(model=model, args=args, data_collator=data_collator or WeakStrongCollator(), **kwargs)
        self.classifier  # noqa: B018 - fail now, naming the field, if the model has no such layer
        self.centers: dict[str, torch.Tensor] | None = None
        self._parts: dict[str, float] = {}
        self.add_callback(_CenterEMA(self))

    @property
    def classifier(self) -> nn.Linear:
        model = self.accelerator.unwrap_model(self.model) if hasattr(self, "accelerator") else self.model
        name = self.args.classifier_name
        layer = dict(model.named_modules()).get(name)
        if not isinstance(layer, nn.Linear):
            found = "no such module" if layer is None else f"a {type(layer).__name__}"
            raise ValueError(
                f"classifier_name={name!r}: the model has {found}; LayerMatch needs the model's final nn.Linear "
                "(set classifier_name to its name in model.named_modules())."
            )
        return layer

    @torch.no_grad()
    def reset_centers(self) -> None:
        layer = self.classifier
        self.centers = {"weight": layer.weight.detach().clone(), "bias": _bias(layer).detach().clone()}

    @torch.no_grad()
    def update_centers(self) -> None:
        if self.centers is None:
            self.reset_centers()
            return
        mu, layer = self.args.center_momentum, self.classifier
        self.centers["weight"].mul_(mu).add_(layer.weight.detach(), alpha=1 - mu)
        self.centers["bias"].mul_(mu).add_(_bias(layer).detach(), alpha=1 - mu)

    def _unlabeled_head(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The weights the unlabeled term's logits use: the centres, the detached classifier or the live one."""
        layer = self.classifier
        if self.args.avg_clustering:
            if self.centers is None:
                self.reset_centers()
            return self.centers["weight"], self.centers["bias"]
        if self.args.grad_relu:
            return layer.weight.detach(), _bias(layer).detach()
        return layer.weight, _bias(layer)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        weak, strong = inputs.pop("unlabeled_weak"), inputs.pop("unlabeled_strong")
        labeled = inputs.pop("pixel_values")
        n, u = labeled.shape[0], weak.shape[0]
        features = []
        hook = self.classifier.register_forward_pre_hook(lambda module, args: features.append(args[0]))
        try:  # one forward over labeled, weak and strong images, as FixMatch does
            outputs = model(pixel_values=torch.cat([labeled, weak, strong]), **inputs)
        finally:
            hook.remove()
        logits = outputs.logits if hasattr(outputs, "logits") else outputs["logits"]
        sup_loss = F.cross_entropy(logits[:n].float(), labels)
        unsup_loss, mask_rate = self.unlabeled_loss(features[0][n : n + u], features[0][n + u :])
        loss = sup_loss + self.args.lambda_u * unsup_loss
        self._parts = {"sup_loss": sup_loss.detach(), "unsup_loss": unsup_loss.detach(), "mask_rate": mask_rate}
        return (loss, outputs) if return_outputs else loss

    def unlabeled_loss(self, weak_features: torch.Tensor, strong_features: torch.Tensor) -> tuple[torch.Tensor, float]:
        """FixMatch's unlabeled term on the classifier's inputs: pseudo-labels from the weak view (no gradient),
        cross-entropy of the strong view's logits under the confidence mask, through `_unlabeled_head()`."""
        weight, bias = self._unlabeled_head()
        with torch.no_grad():
            probs = F.softmax((weak_features.detach() @ weight.T + bias).float(), dim=-1)
            confidence, pseudo = probs.max(dim=-1)
            mask = (confidence >= self.args.threshold).float()
        strong_logits = (strong_features @ weight.T + bias).float()
        per_image = F.cross_entropy(strong_logits, pseudo, reduction="none")
        return (per_image * mask).mean(), float(mask.mean())

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs and self._parts:
            logs = {**logs, **{k: round(float(v), 4) for k, v in self._parts.items()}}  # the last batch's parts
        super().log(logs, *args, **kwargs)


def _bias(layer: nn.Linear) -> torch.Tensor:
    return layer.bias if layer.bias is not None else layer.weight.new_zeros(layer.out_features)
