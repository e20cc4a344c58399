"""DPC's trainers ("Dirichlet-based Prediction Calibration for Learning with Noisy Labels", AAAI 2024; the losses
and their provenance are in `dpc_losses.py`).

`DPCTrainer` is the paper's method on a two-network `DPCForImageClassification`. After a warm-up on every example
with the evidential loss, each epoch starts by scoring the training set with each network (large margins, eval mode,
no augmentation) and fitting a 2-component Gaussian mixture per network. Each step then splits the batch for network
k by the *other* network's clean posterior w (co-divide): clean rows get refined targets `sharpen(w y + (1 - w) p_x)`
(p_x: k's calibrated prediction averaged over two weak views), the others co-guessed targets (both networks, both
views, sharpened); MixMatch mixes inputs and targets; head 1 takes the evidential loss on the mixed clean rows (hard
labels, lambda-weighted), head 2 a squared error on the mixed unclean rows (`lambda_u`, ramped up), plus the
uniform-prior penalty on head 1.

`DPCLiteTrainer` is the single-network variant the brief offers: the same warm-up and selection, then the evidential
loss on the clean examples only; the unclean examples are not used. With `loss_type="cross_entropy"` and
`selection_score="small_loss"` it is the small-loss selection of DivideMix on one network, the baseline DPC is
compared with.

Deviations from the official code (`Train_cifar.py`), for a `Trainer` that steps both networks at once:
- Both networks train in the same step on the same batch, each on its own split of it (official: net 1 for an epoch
  over its labeled loader, then net 2). So a batch's clean/unclean shares follow the split rather than being 1:1.
- The refined and co-guessed targets use both networks in eval mode (official: the network being trained in train
  mode, the other in eval mode); one set of no-gradient forwards then serves both networks.
- The augmentation is `augment` (default: a random shift of up to 1/8 of the side, `weak_augment`), applied to each
  view in `compute_loss` (official: random crop and flip of CIFAR images in the loader).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F
from torch.utils.data import Dataset
from transformers import TrainerCallback, default_data_collator

from ..compat import add_signature_columns
from .dpc_config import DPCConfig
from .dpc_losses import calibrated_softmax, evidential_loss, fit_clean_posterior, large_margin_scores
from .layermatch_trainer import weak_augment
from .resumable import ResumableTrainer


class IndexedDataset(Dataset):
    """Each row of `dataset` with its position as `sample_index` (the selection is per training example)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        return {**self.dataset[i], "sample_index": i}


class _Selection(TrainerCallback):
    def __init__(self, trainer: DPCLiteTrainer):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        if (state.epoch or 0) >= args.warmup_epochs and state.global_step > 0:  # resumed past the warm-up
            self.trainer.select(state.epoch)

    def on_epoch_begin(self, args, state, control, **kwargs):
        epoch = round(state.epoch or 0)
        if epoch >= args.warmup_epochs:
            self.trainer.select(epoch)


class DPCLiteTrainer(ResumableTrainer):
    """`Trainer` with DPC's evidential loss and, after `warmup_epochs`, training on the examples a 2-component mixture
    of their scores calls clean (see the module docstring and `DPCConfig`).

    Args:
        augment: applied to `pixel_values` of every training batch (e.g. `weak_augment`); default none.

    After training: `clean_posterior` (the last selection's posterior per training example; one row per network for
    `DPCTrainer`), `selection_history` (per selection: epoch and selected share) and `score_history` (per selection:
    the scores the mixture was fitted to). `clean_scores()` scores any moment's model.
    """

    def __init__(
        self,
        model=None,
        args: DPCConfig | None = None,
        train_dataset=None,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        **kwargs,
    ):
        if not isinstance(args, DPCConfig):
            raise TypeError(f"{type(self).__name__} takes a DPCConfig, got {type(args).__name__}.")
        if train_dataset is None:
            raise ValueError(f"{type(self).__name__} needs a train_dataset (its examples are scored and selected).")
        self.plain_train_dataset = train_dataset
        self.augment = augment
        super().__init__(model=model, args=args, train_dataset=IndexedDataset(train_dataset), **kwargs)
        self.model_accepts_loss_kwargs = False  # per-batch means: the Trainer divides by the accumulation steps
        self.clean_posterior: torch.Tensor | None = None
        self.selection_history: list[dict] = []
        self.score_history: list[dict] = []
        self.add_callback(_Selection(self))

    @property
    def num_networks(self) -> int:
        return 1

    def _set_signature_columns_if_needed(self):
        """Keep `sample_index`, which no model's forward takes: the Trainer would drop it, and with it the selection."""
        super()._set_signature_columns_if_needed()
        add_signature_columns(self, ("sample_index",))

    def _example_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The per-example training loss (`loss_type`)."""
        if self.args.loss_type == "cross_entropy":
            return F.cross_entropy(logits.float(), labels.long(), reduction="none")
        nll, kl = evidential_loss(logits, labels, gamma=self.args.gamma, kl_weight=self.args.kl_weight)
        return nll + kl

    def _network_logits(self, model, batch: dict, network: int | None) -> torch.Tensor:
        if network is None:
            return _logits(model(**batch))
        return model(**batch, network=network).logits

    @torch.no_grad()
    def clean_scores(self, network: int | None = None, batch_size: int = 256) -> torch.Tensor:
        """The selection score (`selection_score`: the large margin, or minus the per-example loss; high = clean) of
        the current model (or of `networks[network]`) on every training example, in eval mode, without augmentation."""
        model, data = self.accelerator.unwrap_model(self.model), self.plain_train_dataset
        was_training = model.training
        model.eval()
        scores = []
        try:
            for start in range(0, len(data), batch_size):
                batch = default_data_collator([data[i] for i in range(start, min(start + batch_size, len(data)))])
                labels = batch.pop("labels").to(self.args.device)
                batch = {k: v.to(self.args.device) if torch.is_tensor(v) else v for k, v in batch.items()}
                logits = self._network_logits(model, batch, network)
                if self.args.selection_score == "margin":
                    scores.append(large_margin_scores(logits, labels).cpu())
                else:
                    scores.append(-self._example_loss(logits, labels).cpu())
        finally:
            model.train(was_training)
        return torch.cat(scores)

    def select(self, epoch) -> None:
        """Score the training set with every network and fit the mixture per network (`clean_posterior`)."""
        networks = [None] if self.num_networks == 1 else list(range(self.num_networks))
        scores = torch.stack([self.clean_scores(k) for k in networks])
        posterior = torch.stack(
            [torch.as_tensor(fit_clean_posterior(s, seed=self.args.seed), dtype=torch.float32) for s in scores]
        )
        self.clean_posterior = posterior[0] if self.num_networks == 1 else posterior
        shares = (posterior > self.args.p_threshold).float().mean(dim=1).tolist()
        self.selection_history.append({"epoch": epoch, "selected_share": shares[0] if len(shares) == 1 else shares})
        self.score_history.append({"epoch": epoch, "scores": scores[0] if len(scores) == 1 else scores})

    def _views(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.augment(pixel_values) if self.augment is not None else pixel_values

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        index = inputs.pop("sample_index", None)
        labels = inputs.pop("labels")
        if model.training and "pixel_values" in inputs:
            inputs["pixel_values"] = self._views(inputs["pixel_values"])
        outputs = model(**inputs)
        per_example = self._example_loss(_logits(outputs), labels)
        if self.clean_posterior is not None and model.training:
            _need_index(index)
            keep = (self.clean_posterior.to(per_example.device)[index] > self.args.p_threshold).float()
            loss = (per_example * keep).sum() / keep.sum().clamp(min=1.0)
        else:
            loss = per_example.mean()
            if model.training and self.args.confidence_penalty:
                loss = loss + self._negative_entropy(_logits(outputs))
        return (loss, outputs) if return_outputs else loss

    def _negative_entropy(self, logits: torch.Tensor) -> torch.Tensor:
        """`mean sum_c p_c log p_c` of the prediction (calibrated for the evidential loss, softmax for cross-entropy):
        the warm-up's confidence penalty (DPC's and DivideMix's code, for asymmetric noise)."""
        if self.args.loss_type == "cross_entropy":
            log_p = torch.log_softmax(logits.float(), dim=-1)
            return (log_p.exp() * log_p).sum(-1).mean()
        p = calibrated_softmax(logits, self.args.gamma)
        return (p * p.log()).sum(-1).mean()


def sharpen(p: torch.Tensor, temperature: float) -> torch.Tensor:
    """`p^(1/T)` renormalized over the last dimension."""
    p = p.pow(1.0 / temperature)
    return p / p.sum(dim=-1, keepdim=True)


class DPCTrainer(DPCLiteTrainer):
    """The paper's DPC: two networks, co-divide, label refinement, co-guessing and MixMatch (see the module docstring
    and `DPCConfig`). `model` is a `DPCForImageClassification` with `num_networks=2`; `augment` makes the weak views
    (default `weak_augment`). Predictions (`evaluate`, `predict`, pipelines) use the sum of both networks' head-1
    logits."""

    def __init__(self, model=None, args=None, train_dataset=None, augment=weak_augment, **kwargs):
        if getattr(getattr(model, "config", None), "num_networks", None) != 2:
            raise ValueError(
                f"DPCTrainer trains a DPCForImageClassification with num_networks=2, got {type(model).__name__}"
                + (
                    f" with num_networks={model.config.num_networks}"
                    if hasattr(model, "config") and hasattr(model.config, "num_networks")
                    else ""
                )
                + "; build one with DPCModelConfig(backbone_config=..., num_networks=2), or use DPCLiteTrainer."
            )
        if isinstance(args, DPCConfig) and args.loss_type != "evidential":
            raise ValueError(f"DPCTrainer trains with loss_type='evidential', got {args.loss_type!r}.")
        super().__init__(model=model, args=args, train_dataset=train_dataset, augment=augment, **kwargs)

    @property
    def num_networks(self) -> int:
        return 2

    def _network_logits(self, model, batch: dict, network: int | None) -> torch.Tensor:
        return model(**batch, network=network).logits

    def lambda_u(self) -> float:
        """`lambda_u` ramped linearly over `rampup_epochs` after the warm-up (the official `linear_rampup`)."""
        progress = ((self.state.epoch or 0.0) - self.args.warmup_epochs) / self.args.rampup_epochs
        return self.args.lambda_u * min(max(progress, 0.0), 1.0)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        index = inputs.pop("sample_index", None)
        labels = inputs.pop("labels")
        pixels = inputs.pop("pixel_values")
        if not model.training:  # evaluation: the ensemble's cross-entropy
            outputs = model(pixel_values=pixels, labels=labels, **inputs)
            return (outputs.loss, outputs) if return_outputs else outputs.loss
        _need_index(index)
        if self.clean_posterior is None:
            loss = self.warmup_loss(model, self._views(pixels), labels)
        else:
            loss = self.mixmatch_loss(model, self._views(pixels), self._views(pixels), labels, index)
        return (loss, None) if return_outputs else loss

    def warmup_loss(self, model, views: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Both networks' evidential loss on every example (+ the confidence penalty when set), summed."""
        logits = model(pixel_values=torch.stack([views, views]), per_network=True).logits
        loss = sum(self._example_loss(o, labels).mean() for o in logits)
        if self.args.confidence_penalty:
            loss = loss + sum(self._negative_entropy(o) for o in logits)
        return loss

    @torch.no_grad()
    def guesses(self, views_1: torch.Tensor, views_2: torch.Tensor) -> torch.Tensor:
        """Calibrated head-1 predictions of both networks on both views, (2 networks, 2 views, batch, C), eval mode."""
        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        try:
            both = torch.cat([views_1, views_2])
            logits = model(pixel_values=torch.stack([both, both]), per_network=True).logits
        finally:
            model.train(was_training)
        p = calibrated_softmax(logits, self.args.gamma)
        return p.view(2, 2, views_1.shape[0], -1)

    def mixmatch_loss(self, model, views_1, views_2, labels, index) -> torch.Tensor:
        """Co-divide, refine, co-guess, mix; the two networks' losses summed (see the module docstring)."""
        args = self.args
        guess = self.guesses(views_1, views_2)
        co_guess = sharpen(guess.mean(dim=(0, 1)), args.temperature)  # both networks, both views
        one_hot = F.one_hot(labels.long(), guess.shape[-1]).float()
        lam = torch.distributions.Beta(args.mixmatch_alpha, args.mixmatch_alpha).sample().item()
        lam = max(lam, 1.0 - lam)
        mixed_inputs, mixed_targets, hard_a, hard_b, n_clean = [], [], [], [], []
        for k in range(2):
            w = self.clean_posterior[1 - k].to(labels.device)[index]  # co-divide: the other network's split
            clean = w > args.p_threshold
            refined = sharpen(w[:, None] * one_hot + (1 - w[:, None]) * guess[k].mean(0), args.temperature)
            order, n = torch.cat([clean.nonzero().flatten(), (~clean).nonzero().flatten()]), int(clean.sum())
            targets = torch.where(clean[:, None], refined, co_guess)[order]
            x1, x2 = views_1[order], views_2[order]
            inputs = torch.cat([x1[:n], x2[:n], x1[n:], x2[n:]])  # clean rows first, as the official batches
            targets = torch.cat([targets[:n], targets[:n], targets[n:], targets[n:]])
            perm = torch.randperm(inputs.shape[0], device=inputs.device)
            mixed_inputs.append(lam * inputs + (1 - lam) * inputs[perm])
            mixed_targets.append(lam * targets + (1 - lam) * targets[perm])
            hard_a.append(targets.argmax(-1))
            hard_b.append(targets[perm].argmax(-1))
            n_clean.append(2 * n)
        outputs = model(pixel_values=torch.stack(mixed_inputs), per_network=True)
        loss = outputs.logits.new_zeros(())
        ramp = self.lambda_u()
        for k in range(2):
            head1, head2, n = outputs.logits[k], outputs.aux_logits[k], n_clean[k]
            if n:
                loss = (
                    loss
                    + (
                        lam * self._example_loss(head1[:n], hard_a[k][:n])
                        + (1 - lam) * self._example_loss(head1[:n], hard_b[k][:n])
                    ).mean()
                )
            if n < head2.shape[0] and ramp > 0:
                probs = calibrated_softmax(head2[n:], args.gamma)
                loss = loss + ramp * (probs - mixed_targets[k][n:]).pow(2).mean()
            if args.prior_penalty:
                prior = torch.full((head1.shape[-1],), 1.0 / head1.shape[-1], device=head1.device)
                mean = calibrated_softmax(head1, args.gamma).mean(0)
                loss = loss + (prior * (prior / mean).log()).sum()
        return loss


def _need_index(index) -> None:
    if index is None:
        raise ValueError(
            "the training batch has no sample_index: DPC's selection is per training example. Train on the "
            "trainer's own train_dataset (it adds the index) with a collator that keeps the sample_index key."
        )


def _logits(outputs) -> torch.Tensor:
    return outputs.logits if hasattr(outputs, "logits") else outputs["logits"]
