"""RankMatch: semi-supervised label distribution learning with pairwise relevance ranking (arXiv 2312.06343; no
official code, read from the paper's description and its reviews).

Few images have label distributions d; many have none. Labeled images train with KL(d || p). An unlabeled image's
pseudo distribution q is the mean prediction over K weak views (no gradient: averaging steadies it), and its strong view
must match q (KL). KL alone keeps distributions close overall but can scramble the *order* of the label degrees, so a
pairwise relevance ranking loss (`pairwise_ranking_loss`) asks the prediction to keep every pair the target orders: with
the target's gaps as margins on labeled data, the order only on pseudo-labels (their gaps are not trusted).

Inputs as LayerMatch's: `SemiSupervisedDataset(labeled rows with "pixel_values" and "label_distribution", unlabeled
images)` and `WeakStrongCollator(num_weak_views=K)` (the default collator). Any model whose output has `logits` works.
"""

from __future__ import annotations

import torch
from transformers import Trainer

from .layermatch_trainer import WeakStrongCollator
from .ldl_losses import check_label_distributions, label_distribution_kl, pairwise_ranking_loss
from .rankmatch_config import RankMatchConfig


class RankMatchTrainer(Trainer):
    """`Trainer` for RankMatch (see the module docstring and `RankMatchConfig`). Logs `sup_loss`, `unsup_loss` and
    `ranking_loss` beside the loss."""

    def __init__(self, model=None, args: RankMatchConfig | None = None, data_collator=None, **kwargs):
        if not isinstance(args, RankMatchConfig):
            raise TypeError(f"RankMatchTrainer takes a RankMatchConfig, got {type(args).__name__}.")
        data_collator = data_collator or WeakStrongCollator(num_weak_views=args.num_weak_views)
        super().__init__(model=model, args=args, data_collator=data_collator, **kwargs)
        self._parts: dict[str, float] = {}

    def pseudo_distribution(self, model, weak: torch.Tensor) -> torch.Tensor:
        """q: the mean softmax over the K weak views ((K, N, ...) or one view (N, ...)), without gradient."""
        views = weak if weak.dim() == 5 else weak[None]
        with torch.no_grad():
            logits = _logits(model(pixel_values=views.flatten(0, 1))).float()
            return torch.softmax(logits, -1).view(views.shape[0], views.shape[1], -1).mean(0)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        target = check_label_distributions(inputs.pop("label_distribution"))
        weak, strong = inputs.pop("unlabeled_weak"), inputs.pop("unlabeled_strong")
        labeled = inputs.pop("pixel_values")
        q = self.pseudo_distribution(model, weak)
        n = labeled.shape[0]
        outputs = model(pixel_values=torch.cat([labeled, strong]))
        logits = _logits(outputs).float()
        p_labeled, p_strong = torch.softmax(logits[:n], -1), torch.softmax(logits[n:], -1)
        sup = label_distribution_kl(logits[:n], target).mean()
        unsup = label_distribution_kl(logits[n:], q).mean()
        ranking = (
            pairwise_ranking_loss(p_labeled, target.float(), "gap").mean()
            + pairwise_ranking_loss(p_strong, q, "zero", self.args.ranking_delta).mean()
        )
        loss = sup + self.args.lambda_u * unsup + self.args.ranking_weight * ranking
        self._parts = {"sup_loss": sup.item(), "unsup_loss": unsup.item(), "ranking_loss": ranking.item()}
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs and self._parts:
            logs = {**logs, **{k: round(v, 4) for k, v in self._parts.items()}}
        super().log(logs, *args, **kwargs)


def _logits(outputs) -> torch.Tensor:
    return outputs.logits if hasattr(outputs, "logits") else outputs["logits"]
