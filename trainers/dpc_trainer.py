"""DPC-lite: the single-network variant of DPC ("Dirichlet-based Prediction Calibration for Learning with Noisy
Labels", AAAI 2024; the pieces and their provenance are in `dpc_losses.py`).

The full method trains two networks with two heads and MixMatch on the split (co-divide, label refinement,
co-guessing). DPC-lite keeps what makes DPC's selection work: the evidential loss from the start, then at every epoch
after the warm-up the large-margin scores of the whole training set, a 2-component Gaussian mixture, and training on the
examples whose posterior of being clean exceeds `p_threshold`. The unlabeled part (the noisy examples' images) is not
used. This is the "DPC-lite" the brief offers for users who do not want co-training; it is not the paper's method and
is not compared with the paper's figures.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset
from transformers import TrainerCallback

from .dpc_config import DPCConfig
from .dpc_losses import evidential_loss, fit_clean_posterior, large_margin_scores
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
    """`Trainer` with DPC's evidential loss and, after `warmup_epochs`, large-margin clean-sample selection
    (see the module docstring and `DPCConfig`).

    After training: `clean_posterior` (the last selection's posterior per training example) and `selection_history`
    (per selection: epoch, selected share). `margin_scores()` scores any moment's model.
    """

    def __init__(self, model=None, args: DPCConfig | None = None, train_dataset=None, **kwargs):
        if not isinstance(args, DPCConfig):
            raise TypeError(f"DPCLiteTrainer takes a DPCConfig, got {type(args).__name__}.")
        if train_dataset is None:
            raise ValueError("DPCLiteTrainer needs a train_dataset (its examples are scored and selected).")
        self.plain_train_dataset = train_dataset
        super().__init__(model=model, args=args, train_dataset=IndexedDataset(train_dataset), **kwargs)
        self.model_accepts_loss_kwargs = False  # per-batch means: the Trainer divides by the accumulation steps
        self.clean_posterior: torch.Tensor | None = None
        self.selection_history: list[dict] = []
        self.add_callback(_Selection(self))

    @torch.no_grad()
    def margin_scores(self, batch_size: int = 256) -> torch.Tensor:
        """`o_y - max_{j != y} o_j` of the current model on every training example (eval mode, no augmentation)."""
        model, data = self.model, self.plain_train_dataset
        was_training = model.training
        model.eval()
        scores = []
        try:
            for start in range(0, len(data), batch_size):
                batch = self.data_collator([data[i] for i in range(start, min(start + batch_size, len(data)))])
                labels = batch.pop("labels").to(self.args.device)
                batch = {k: v.to(self.args.device) if torch.is_tensor(v) else v for k, v in batch.items()}
                scores.append(large_margin_scores(_logits(model(**batch)), labels).cpu())
        finally:
            model.train(was_training)
        return torch.cat(scores)

    def select(self, epoch) -> None:
        posterior = fit_clean_posterior(self.margin_scores(), seed=self.args.seed)
        self.clean_posterior = torch.as_tensor(posterior, dtype=torch.float32)
        share = float((self.clean_posterior > self.args.p_threshold).float().mean())
        self.selection_history.append({"epoch": epoch, "selected_share": share})

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        index = inputs.pop("sample_index", None)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        nll, kl = evidential_loss(_logits(outputs), labels, gamma=self.args.gamma, kl_weight=self.args.kl_weight)
        per_example = nll + kl
        if self.clean_posterior is not None and index is not None and model.training:
            keep = (self.clean_posterior.to(per_example.device)[index] > self.args.p_threshold).float()
            loss = (per_example * keep).sum() / keep.sum().clamp(min=1.0)
        else:
            loss = per_example.mean()
        return (loss, outputs) if return_outputs else loss


def _logits(outputs) -> torch.Tensor:
    return outputs.logits if hasattr(outputs, "logits") else outputs["logits"]
