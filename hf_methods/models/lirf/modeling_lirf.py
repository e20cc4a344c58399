"""LIRF's models: deposit (a target network that forgot the deposit classes + a deposit module that keeps them) and
withdrawal (the recover network), after "Learning with Recoverable Forgetting" (Ye et al., ECCV 2022, arXiv
2207.08224; official code JngwenYe/LIRF, read, not copied).

The original classifier T0 = up0 . low0 is split (`split_model`). Deposit fine-tunes two copies of low0 on the deposit
set only: `lower_target` (low_T; the target network T = up0 . low_T) and `lower_deposit` (low_R; the deposit module),
under the frozen, shared up0 (`LIRFTrainer`). The target network is a plain classifier of the original architecture
(`export_target`): it can be deployed or published without the deposit knowledge. The deposit module is a model of
its own (`export_deposit`: own config, save, load, push), so its owner can keep it and hand it back; withdrawal
rebuilds the recover network from a target network and a deposit module (`LIRFRecoverModel.from_parts`).

Where this deviates from the official code (see also `LIRFConfig.recover_mode`): deposit classes are any label ids
(official: the first `dep_size` ids); the recover network applies one combination rule to every image (official
evaluation picks the rule by the test set an image comes from).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoModelForImageClassification, PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput, ImageClassifierOutput
from transformers.utils import ModelOutput

from ...modeling import HfMethodsModel, with_card_push
from .configuration_lirf import (
    RECOVER_MODES,
    LIRFConfig,
    LIRFDepositConfig,
    LIRFRecoverConfig,
    check_deposit_classes,
)
from .split import split_model, upper_fingerprint


@dataclass
class LIRFOutput(ModelOutput):
    """Output of `LIRFModel` (batch, num_labels) each.

    Args:
        loss: None: LIRF's objective needs the trainer's alpha and temperature (`LIRFTrainer`).
        logits: z_T = up0(low_T(x)), the target network's logits.
        deposit_logits: z_R = up0(low_R(x)).
        recover_logits: the recover network's logits (`config.recover_mode`).
        original_logits: z0 = up0(low0(x)) of the original network, without gradient.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    deposit_logits: torch.Tensor | None = None
    recover_logits: torch.Tensor | None = None
    original_logits: torch.Tensor | None = None


def combine_logits(target_logits, deposit_logits, deposit_classes, mode: str = "replace") -> torch.Tensor:
    """The recover network's logits from z_T and z_R: "replace" = z_comb (the deposit classes' columns of z_R, the
    others of z_T; what LIRF's deposit loss trains), "sum" = z_R + z_T."""
    if mode == "sum":
        return target_logits + deposit_logits
    if mode != "replace":
        raise ValueError(f"recover_mode must be one of {RECOVER_MODES}, got {mode!r}.")
    mask = torch.zeros(target_logits.shape[-1], dtype=torch.bool, device=target_logits.device)
    mask[list(deposit_classes)] = True
    return torch.where(mask, deposit_logits, target_logits)


def _architecture(config: LIRFConfig) -> dict:
    """The backbone config without `auto_map` (a stub pointer a saved hf-methods model carries, not architecture)."""
    return {k: v for k, v in (config.backbone_config or {}).items() if k != "auto_map"}


def _resolve_classes(classes, config: PreTrainedConfig) -> list[int]:
    """Label ids from ids or label names (`config.id2label`'s values)."""
    if not isinstance(classes, (list, tuple)):
        return classes  # check_deposit_classes names the problem
    label2id = {str(v): int(k) for k, v in (getattr(config, "id2label", None) or {}).items()}
    out = []
    for c in classes:
        if isinstance(c, str):
            if c not in label2id:
                raise ValueError(
                    f"`deposit_classes`: {c!r} is not a label of the original model (its labels: {sorted(label2id)}); "
                    "give label ids or names from its id2label."
                )
            c = label2id[c]
        out.append(c)
    return out


class LIRFPreTrainedModel(HfMethodsModel, PreTrainedModel):
    """What LIRF's three models share: building the original architecture from `config.backbone_config`, splitting
    it, and the logits of the parts they hold."""

    config_class = LIRFConfig
    method_name = "LIRF"
    base_model_prefix = "lirf"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    accepts_loss_kwargs = False

    def _split_backbone(self, config: LIRFConfig) -> tuple[nn.Module, nn.Module]:
        if config.backbone_config is None or config.split_module_name is None:
            raise ValueError(
                f"{type(self).__name__} needs backbone_config and split_module_name; build it with "
                "LIRFModel.from_original(model, split_module_name, deposit_classes)."
            )
        if config.deposit_classes is None:
            raise ValueError(f"{type(self).__name__} needs deposit_classes (label ids of the deposited classes).")
        return split_model(AutoModelForImageClassification.from_config(config.get_backbone_config()),
                           config.split_module_name)  # fmt: skip

    def _init_weights(self, module):
        """Nothing: the parts come from the original classifier (initialized by its own class, or loaded)."""

    def stock_classifier(self, lower: nn.Module, upper: nn.Module) -> PreTrainedModel:
        """A fresh classifier of the original architecture whose weights are `lower`'s and `upper`'s."""
        model = AutoModelForImageClassification.from_config(self.config.get_backbone_config())
        reference = next(self.parameters())
        model.to(device=reference.device, dtype=reference.dtype)
        new_lower, new_upper = split_model(model, self.config.split_module_name)
        new_lower.load_state_dict(lower.state_dict())
        new_upper.load_state_dict(upper.state_dict())
        return model.eval()

    def _combine(self, z_t, z_r, mode: str | None = None) -> torch.Tensor:
        return combine_logits(z_t, z_r, self.config.deposit_classes, mode or self.config.recover_mode)


class LIRFModel(LIRFPreTrainedModel):
    """The deposit stage of LIRF: `lower_target`, `lower_deposit` (trained), `upper` and `lower_original` (frozen, in
    eval mode whatever `train()` says, so their BatchNorm statistics never move).

    Build it with `LIRFModel.from_original(model, "stages.1", deposit_classes=[0, 1, 2])`, train it with
    `LIRFTrainer` on the deposit set, then `export_target()` (a stock classifier without the deposit knowledge),
    `export_deposit()` (the deposit module) and, to check withdrawal, `export_recover()`. `forward` returns every
    logit LIRF uses (`LIRFOutput`).
    """

    config_class = LIRFConfig

    def __init__(self, config: LIRFConfig):
        super().__init__(config)
        lower, self.upper = self._split_backbone(config)
        self.lower_target = lower
        self.lower_deposit = copy.deepcopy(lower)
        self.lower_original = copy.deepcopy(lower)
        self.post_init()
        self.train(self.training)

    @classmethod
    def from_original(
        cls, model: PreTrainedModel, split_module_name: str, deposit_classes, recover_mode: str = "replace"
    ) -> LIRFModel:
        """LIRF around a trained classifier: `lower_target`, `lower_deposit` and `lower_original` all start as its
        lower part (so at first z_T = z_R = z0), `upper` is its upper part. `deposit_classes`: label ids or names."""
        classes = check_deposit_classes(_resolve_classes(deposit_classes, model.config), model.config.num_labels)
        config = LIRFConfig(
            backbone_config=model.config.to_dict(),
            split_module_name=split_module_name,
            deposit_classes=classes,
            recover_mode=recover_mode,
            id2label=dict(model.config.id2label),
        )
        lower, upper = split_model(model, split_module_name)  # a bad split point fails here, before any work
        lirf = cls(config)
        reference = next(model.parameters())
        lirf.to(device=reference.device, dtype=reference.dtype)
        with torch.no_grad():
            for part in (lirf.lower_target, lirf.lower_deposit, lirf.lower_original):
                part.load_state_dict(lower.state_dict())
            lirf.upper.load_state_dict(upper.state_dict())
        return lirf

    def train(self, mode: bool = True):
        """`nn.Module.train`, with `upper` and `lower_original` kept frozen and in eval mode (as the official code's
        t_up and t_low): re-applied here because loading a checkpoint replaces the parameters."""
        super().train(mode)
        for part in (self.upper, self.lower_original):
            part.eval()
            part.requires_grad_(False)
        return self

    def check_loaded(self, pretrained_model_name_or_path) -> None:
        self.train(self.training)  # loading replaced the parameters: freeze the frozen parts again

    def target_logits(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """z_T = up0(low_T(x))."""
        return self.upper(self.lower_target(pixel_values))

    def deposit_logits(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """z_R = up0(low_R(x))."""
        return self.upper(self.lower_deposit(pixel_values))

    @torch.no_grad()
    def original_logits(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """z0 = up0(low0(x)), the frozen original network (no gradient)."""
        return self.upper(self.lower_original(pixel_values))

    def recover_logits(self, pixel_values: torch.Tensor, mode: str | None = None) -> torch.Tensor:
        """The recover network's logits (`mode`, default `config.recover_mode`)."""
        return self._combine(self.target_logits(pixel_values), self.deposit_logits(pixel_values), mode)

    def forward(self, pixel_values: torch.Tensor | None = None, labels: torch.Tensor | None = None, **kwargs):
        """Every logit LIRF uses, in one call (one forward under DDP). `labels` are accepted and not used."""
        if pixel_values is None:
            raise ValueError("LIRFModel.forward needs pixel_values.")
        z_t = self.target_logits(pixel_values)
        z_r = self.deposit_logits(pixel_values)
        return LIRFOutput(
            logits=z_t,
            deposit_logits=z_r,
            recover_logits=self._combine(z_t, z_r),
            original_logits=self.original_logits(pixel_values),
        )

    def export_target(self) -> PreTrainedModel:
        """The target network as a stock classifier of the original architecture (up0 . low_T), without the deposit
        module or the original lower part; its `push_to_hub` writes an LIRF card (`target_card`)."""
        model = self.stock_classifier(self.lower_target, self.upper)
        deposit, preserved = self.config.deposit_classes, self.config.preserved_classes
        return with_card_push(model, lambda m, repo: target_card(m, repo, deposit_classes=deposit,
                                                                  preserved_classes=preserved))  # fmt: skip

    def export_original(self) -> PreTrainedModel:
        """The original network (up0 . low0) as a stock classifier (the reference of the metrics)."""
        return self.stock_classifier(self.lower_original, self.upper)

    def export_deposit(self) -> LIRFDepositModule:
        """The deposit module: low_R as a model of its own, with the fingerprint of up0 it works with."""
        config = LIRFDepositConfig(**self._part_config_kwargs(), upper_fingerprint=upper_fingerprint(self.upper))
        module = LIRFDepositModule(config)
        reference = next(self.parameters())
        module.to(device=reference.device, dtype=reference.dtype)
        module.lower_deposit.load_state_dict(self.lower_deposit.state_dict())
        return module.eval()

    def export_recover(self, recover_mode: str | None = None) -> LIRFRecoverModel:
        """The recover network of this deposit (what withdrawal with `export_target()` + `export_deposit()` gives)."""
        return LIRFRecoverModel.from_parts(self.export_target(), self.export_deposit(), recover_mode=recover_mode)

    def _part_config_kwargs(self) -> dict:
        c = self.config
        return dict(backbone_config=dict(c.backbone_config), backbone_model_type=c.backbone_model_type,
                    split_module_name=c.split_module_name, deposit_classes=list(c.deposit_classes),
                    recover_mode=c.recover_mode, id2label=dict(c.id2label))  # fmt: skip

    def model_card(self, repo_or_path, results: dict | None = None):
        return _card(self, repo_or_path, results, "LIRF deposit in progress",
                     "The training state of an LIRF deposit: the target network's and the deposit module's lower "
                     "parts, the shared upper part and the original lower part (the distillation teacher). Share "
                     "`export_target()` and keep `export_deposit()` instead: this folder still holds the original "
                     "network.")  # fmt: skip


class LIRFDepositModule(LIRFPreTrainedModel):
    """LIRF's deposit module: the lower part low_R that keeps the deposit classes' knowledge. On its own it maps
    images to features (`forward` -> `last_hidden_state`); with the target network it was made with, it rebuilds the
    recover network: `LIRFRecoverModel.from_parts(target, deposit)`. Saves, loads with `AutoModel` and pushes with a
    card, so an owner can keep it apart from the deployed target network and hand it back later."""

    config_class = LIRFDepositConfig

    def __init__(self, config: LIRFDepositConfig):
        super().__init__(config)
        self.lower_deposit, _ = self._split_backbone(config)
        self.post_init()

    def forward(self, pixel_values: torch.Tensor | None = None, **kwargs) -> BaseModelOutput:
        if pixel_values is None:
            raise ValueError("LIRFDepositModule.forward needs pixel_values.")
        return BaseModelOutput(last_hidden_state=self.lower_deposit(pixel_values))

    def model_card(self, repo_or_path, results: dict | None = None):
        """The deposit module's card; `results["target_ref"]` (the target network's Hub id or folder) goes into its
        withdrawal snippet and ancestry."""
        from ...cards import usage_ref

        results = dict(results or {})
        names = [self.config.id2label[c] for c in self.config.deposit_classes]
        target = results.pop("target_ref", None)
        if target is not None:
            results.setdefault("ancestor", target)
            results.setdefault("ancestor_role", "the target network it works with")
        target_ref = usage_ref(target) if target else "<the target network>"
        snippet = (
            "\n\nWithdrawal (the recover network, every class again):\n\n```python\nimport hf_methods\n"
            "from transformers import AutoModel, AutoModelForImageClassification\n"
            "from hf_methods.models.lirf import LIRFRecoverModel\n\n"
            f'target = AutoModelForImageClassification.from_pretrained("{target_ref}")\n'
            f'deposit = AutoModel.from_pretrained("{usage_ref(repo_or_path)}")\n'
            f'recover = LIRFRecoverModel.from_parts(target, deposit)  # recover_mode "{self.config.recover_mode}"\n```'
        )
        return _card(self, repo_or_path, results, f"LIRF deposit module (classes {', '.join(names)})",
                     f"The deposit module of an LIRF deposit: the lower part of the network "
                     f"({self.config.split_module_name!r} and below) that keeps the knowledge of the deposited "
                     f"classes {names}, which the target network forgot. Alone it maps images to features; withdraw "
                     "with the target network it was made with (a target whose upper part differs is refused: "
                     "`upper_fingerprint`)." + snippet,
                     auto_class="AutoModel", pipeline_tag="feature-extraction")  # fmt: skip


@dataclass
class LIRFRecoverOutput(ImageClassifierOutput):
    """`ImageClassifierOutput` of the recover network (`logits`, `loss` = their cross-entropy when `labels` are
    given), plus `target_logits` z_T and `deposit_logits` z_R."""

    target_logits: torch.Tensor | None = None
    deposit_logits: torch.Tensor | None = None


class LIRFRecoverModel(LIRFPreTrainedModel):
    """LIRF's recover network (withdrawal): the target network (`lower_target`, `upper`) plus the deposit module
    (`lower_deposit`), classifying every class again. Logits: `config.recover_mode` ("replace": z_comb; "sum": z_R +
    z_T). Build it with `from_parts(target, deposit)`; it saves, loads with `AutoModel` /
    `AutoModelForImageClassification` and pushes with a card."""

    config_class = LIRFRecoverConfig

    def __init__(self, config: LIRFRecoverConfig):
        super().__init__(config)
        self.lower_target, self.upper = self._split_backbone(config)
        self.lower_deposit = copy.deepcopy(self.lower_target)
        self.post_init()

    def stub_auto_map(self) -> dict[str, str]:
        auto = super().stub_auto_map()
        auto["AutoModelForImageClassification"] = auto["AutoModel"]
        return auto

    @classmethod
    def from_parts(
        cls, target: PreTrainedModel, deposit: LIRFDepositModule, recover_mode: str | None = None,
        check_upper: bool = True,
    ) -> LIRFRecoverModel:  # fmt: skip
        """Withdrawal: the recover network from a target network (the stock classifier `LIRFModel.export_target()`
        gave, e.g. loaded from the Hub) and the deposit module made with it. `recover_mode` defaults to the
        deposit's. `check_upper=False` skips the check that the target's upper part is the one the deposit module
        was made with (same weights, bit for bit)."""
        if not isinstance(deposit, LIRFDepositModule):
            raise TypeError(f"deposit must be an LIRFDepositModule, got {type(deposit).__name__}.")
        d = deposit.config
        lower, upper = split_model(target, d.split_module_name)
        ours = LIRFConfig(backbone_config=target.config.to_dict(), id2label=dict(target.config.id2label))
        if ours.backbone_model_type != d.backbone_model_type or _architecture(ours) != _architecture(d):
            raise ValueError(
                f"the target network ({type(target).__name__}, {ours.backbone_model_type}) is not the architecture "
                f"the deposit module was made with ({d.backbone_model_type}: {d.backbone_config}); give the target "
                "network exported with this deposit."
            )
        if dict(target.config.id2label) != dict(d.id2label):
            raise ValueError(
                f"the target network's labels {dict(target.config.id2label)} are not the deposit module's "
                f"{dict(d.id2label)}; give the target network exported with this deposit."
            )
        if check_upper and d.upper_fingerprint and upper_fingerprint(upper) != d.upper_fingerprint:
            raise ValueError(
                "the target network's upper part is not the one this deposit module was made with (its weights "
                "differ: another target, or one fine-tuned or cast since); give the target exported with this "
                "deposit, or pass check_upper=False to combine them anyway."
            )
        config = LIRFRecoverConfig(backbone_config=dict(d.backbone_config), backbone_model_type=d.backbone_model_type,
                                   split_module_name=d.split_module_name, deposit_classes=list(d.deposit_classes),
                                   recover_mode=recover_mode or d.recover_mode, id2label=dict(d.id2label))  # fmt: skip
        model = cls(config)
        reference = next(target.parameters())
        model.to(device=reference.device, dtype=reference.dtype)
        with torch.no_grad():
            model.lower_target.load_state_dict(lower.state_dict())
            model.upper.load_state_dict(upper.state_dict())
            model.lower_deposit.load_state_dict(deposit.lower_deposit.state_dict())
        return model.eval()

    def target_logits(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.upper(self.lower_target(pixel_values))

    def deposit_logits(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.upper(self.lower_deposit(pixel_values))

    def forward(
        self, pixel_values: torch.Tensor | None = None, labels: torch.Tensor | None = None, recover_mode=None, **kwargs
    ) -> LIRFRecoverOutput:
        if pixel_values is None:
            raise ValueError("LIRFRecoverModel.forward needs pixel_values.")
        z_t, z_r = self.target_logits(pixel_values), self.deposit_logits(pixel_values)
        logits = self._combine(z_t, z_r, recover_mode)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float(), labels.to(logits.device).view(-1))
        return LIRFRecoverOutput(loss=loss, logits=logits, target_logits=z_t, deposit_logits=z_r)

    def export_target(self) -> PreTrainedModel:
        """The target network again (up0 . low_T), as a stock classifier."""
        return self.stock_classifier(self.lower_target, self.upper)

    def model_card(self, repo_or_path, results: dict | None = None):
        names = [self.config.id2label[c] for c in self.config.deposit_classes]
        return _card(self, repo_or_path, results, f"LIRF recover network ({self.config.recover_mode})",
                     f"The recover network of an LIRF withdrawal: a target network that forgot the classes {names} "
                     "plus the deposit module that kept them, classifying every class again. Logits: "
                     + ("the deposited classes' from the deposit module, the others from the target network."
                        if self.config.recover_mode == "replace" else "the sum of both networks' logits."),
                     auto_class="AutoModelForImageClassification", pipeline_tag="image-classification")  # fmt: skip


def _card(model, repo_or_path, results, title, description, auto_class=None, pipeline_tag=None):
    from ...cards import run_model_card

    results = results or {}
    return run_model_card(
        model,
        repo_or_path,
        method="LIRF",
        title=title,
        description=description,
        tags=["lirf", "machine-unlearning", "recoverable-forgetting"],
        ancestor=results.get("ancestor"),
        ancestor_role=results.get("ancestor_role", "teacher"),
        training_setup=results.get("training_setup"),
        metrics={k: v for k, v in results.get("metrics", {}).items() if isinstance(v, (int, float))},
        dataset=results.get("dataset"),
        auto_class=auto_class,
        pipeline_tag=pipeline_tag,
        input_format=results.get("input_format"),
    )


def target_card(model, repo_or_path, results: dict | None = None, *, deposit_classes=(), preserved_classes=()):
    """Card of an exported LIRF target network (a stock classifier)."""
    names = {int(k): v for k, v in model.config.id2label.items()}
    return _card(model, repo_or_path, results, f"LIRF target network ({type(model).__name__})",
                 f"A {type(model).__name__} fine-tuned with LIRF (recoverable forgetting) to forget the classes "
                 f"{[names[c] for c in deposit_classes]} while keeping {[names[c] for c in preserved_classes]}. It "
                 "is a plain classifier of the original architecture (its output still has every class; the "
                 "forgotten ones are no longer recognized). The deposited knowledge is in a separate deposit module; "
                 "with it, `LIRFRecoverModel.from_parts(target, deposit)` recovers every class.",
                 auto_class="AutoModelForImageClassification", pipeline_tag="image-classification")  # fmt: skip
