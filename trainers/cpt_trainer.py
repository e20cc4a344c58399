"""Consistent Proxy Tuning (CPT, He et al., arXiv 2407.01155) as a `transformers.Trainer` subclass.

Proxy-tuning (Liu et al., arXiv 2401.08565) steers a frozen large model L at inference with the logit offset of a tuned
small proxy θ over its untuned base S: `z = z_L + alpha * (z_θ - z_S)`. It trains θ alone, so the objective θ is
trained on is not the model that is deployed. CPT trains θ through the deployed combination: L and S are frozen and
inside the loss, `CE(z_L + alpha_train * (z_θ - z_S), y)`, and gradients reach θ only. No official code exists; this
follows the paper's formulas (alpha_train / alpha_test, consistent when equal).
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from torch import nn
from transformers import AutoConfig, PreTrainedModel

from ..compat import add_signature_columns, auto_class_name_for
from ..models.proxy_tuned.modeling_proxy_tuned import (
    ProxyTunedForCausalLM,
    ProxyTunedForSequenceClassification,
    ProxyTunedOutput,
    check_shared_output_space,
    combine_logits,
    proxy_from_small,
)
from .cpt_config import ConsistentProxyTuningConfig
from .frozen_models import (
    FrozenModelsTrainer,
    _is_causal_lm,
    _logits,
    _unwrap,
    cast_floating,
    detach_from_checkpoint,
    frozen_init_kwargs,
)


def proxy_tuning_loss(
    proxy_logits: torch.Tensor,
    labels: torch.Tensor,
    large_logits: torch.Tensor | None = None,
    small_logits: torch.Tensor | None = None,
    *,
    alpha: float = 1.0,
    plain: bool = False,
    shift_labels: bool = False,
    num_items_in_batch: torch.Tensor | int | None = None,
    label_smoothing: float = 0.0,
    ignore_index: int = -100,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`CE(z_L + alpha * (z_θ - z_S), y)` (CPT), or `CE(z_θ, y)` with `plain=True` (Proxy-tuning's training),
    in float32. Returns `(loss, logits)` with the logits the cross-entropy was taken of.

    The cross-entropy is summed over valid items (samples, or tokens whose label is not `ignore_index`) and divided by
    `num_items_in_batch` when given (the count over a whole accumulated batch), else by the valid items here.
    `shift_labels=True` (causal LMs): position i predicts label i + 1.
    """
    if labels is None:
        raise ValueError("proxy tuning trains on labels: the batch has no `labels`.")
    if plain:
        logits = proxy_logits.float()
    else:
        if large_logits is None or small_logits is None:
            raise ValueError("CPT needs the large and the small model's logits (or plain=True for Proxy-tuning).")
        logits = combine_logits(large_logits, small_logits, proxy_logits, alpha)
    z, y = logits, labels.to(logits.device)
    if shift_labels:
        z, y = z[..., :-1, :], y[..., 1:]
    z = z.reshape(-1, z.shape[-1])
    y = y.reshape(-1)
    n = num_items_in_batch if num_items_in_batch is not None else (y != ignore_index).sum().clamp(min=1)
    if torch.is_tensor(n):
        n = n.to(z.device)
    loss = F.cross_entropy(z, y, ignore_index=ignore_index, reduction="sum", label_smoothing=label_smoothing) / n
    return loss, logits


# --- cached logits --------------------------------------------------------------------------------------------------
_PADDED_COLUMNS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
_LABEL_COLUMNS = ("labels", "label", "label_ids")


def _model_batch(rows: dict, names: list[str], pad_id: int) -> tuple[dict, list[int] | None]:
    """Tensors for the model from a dict of columns; sequences of unequal length are right-padded (with an attention
    mask). Returns the batch and each row's length (None when rows have no sequence dimension)."""
    batch, lengths = {}, None
    for name in names:
        values = rows[name]
        if name in _PADDED_COLUMNS:
            seqs = [torch.as_tensor(v) for v in values]
            lengths = [len(s) for s in seqs]
            width = max(lengths)
            fill = pad_id if name == "input_ids" else 0
            batch[name] = torch.stack([F.pad(s, (0, width - len(s)), value=fill) for s in seqs])
        else:
            batch[name] = torch.stack([torch.as_tensor(np.asarray(v)) for v in values])
    if lengths is not None and len(set(lengths)) > 1 and "attention_mask" not in batch:
        batch["attention_mask"] = torch.stack([(torch.arange(max(lengths)) < n).long() for n in lengths])
    return batch, lengths


def cache_logits(
    dataset,
    model: nn.Module,
    column: str,
    batch_size: int = 8,
    dtype: str = "float32",
    input_columns: list[str] | None = None,
):
    """`dataset` with a new column `column` holding `model`'s logits for every example, computed once (eval mode,
    no gradients), for `large_logits_column` / `small_logits_column` of `ConsistentProxyTuningConfig`.

    A row is the example's logits: (its sequence length x vocabulary) for token-level models, or (num_labels,). Store
    them in `dtype="float16"` to halve the size (they are read back as float32); full-vocabulary rows are large (see
    `ConsistentProxyTuningConfig`). `input_columns` default: the columns `model.forward` accepts, labels excluded.
    """
    import datasets

    if not isinstance(dataset, datasets.Dataset):
        raise TypeError(f"cache_logits needs a datasets.Dataset, got {type(dataset).__name__}.")
    if column in dataset.column_names:
        raise ValueError(f"the dataset already has a column {column!r}; remove it or pick another name.")
    if dtype not in ("float32", "float16"):
        raise ValueError(f"`dtype` must be 'float32' or 'float16', got {dtype!r}.")
    if input_columns is None:
        import inspect

        accepted = set(inspect.signature(model.forward).parameters)
        input_columns = [c for c in dataset.column_names if c in accepted and c not in _LABEL_COLUMNS]
    if not input_columns:
        raise ValueError(
            f"none of the dataset's columns {dataset.column_names} is an input of "
            f"{type(model).__name__}.forward; pass input_columns=."
        )
    device = next(model.parameters()).device
    pad_id = getattr(getattr(model, "config", None), "pad_token_id", None)
    # A classifier that finds its last token through pad_token_id cannot run padded rows without one: run them alone.
    one_by_one = pad_id is None and not _is_causal_lm(model)
    np_dtype = np.float16 if dtype == "float16" else np.float32
    was_training = model.training
    model.eval()

    def run(rows: dict) -> list[np.ndarray]:
        batch, lengths = _model_batch(rows, input_columns, pad_id if pad_id is not None else 0)
        with torch.no_grad():
            logits = _logits(model(**{k: v.to(device) for k, v in batch.items()})).float().cpu()
        if logits.dim() == 3 and lengths is not None:
            return [logits[i, :n].numpy().astype(np_dtype) for i, n in enumerate(lengths)]
        return [row.numpy().astype(np_dtype) for row in logits]

    def add_column(rows: dict) -> dict:
        count = len(rows[input_columns[0]])
        if one_by_one:
            out = [run({k: [v[i]] for k, v in rows.items()})[0] for i in range(count)]
        else:
            out = run(rows)
        return {column: out}

    try:
        return dataset.map(
            add_column,
            batched=True,
            batch_size=batch_size,
            load_from_cache_file=False,
            new_fingerprint=f"{dataset._fingerprint}-cached-logits-{column}",
            desc=f"caching {column}",
        )
    finally:
        model.train(was_training)


class CachedLogitsCollator:
    """Collates cached-logits columns next to the inputs: each row is padded (zeros) to the batch's sequence length on
    the tokenizer's padding side, since padded positions carry label -100 and never count."""

    def __init__(self, data_collator, columns: list[str], padding_side: str = "right"):
        self.data_collator = data_collator
        self.columns = columns
        self.padding_side = padding_side

    def __call__(self, features):
        features = [dict(f) for f in features]
        cached = {}
        for column in self.columns:
            present = [column in f for f in features]
            if not any(present):
                continue
            if not all(present):
                raise ValueError(f"some examples of the batch lack the cached-logits column {column!r}.")
            cached[column] = [torch.as_tensor(np.asarray(f.pop(column)), dtype=torch.float32) for f in features]
        batch = self.data_collator(features)
        for column, rows in cached.items():
            if rows[0].dim() == 1:
                batch[column] = torch.stack(rows)
                continue
            width = batch["input_ids"].shape[1] if "input_ids" in batch else max(r.shape[0] for r in rows)
            padded = []
            for r in rows:
                gap = width - r.shape[0]
                if gap < 0:
                    raise ValueError(
                        f"cached logits in {column!r} have {r.shape[0]} positions but the collated batch has {width}: "
                        "the column must come from the same tokenization (no truncation after caching)."
                    )
                pad = (0, 0, gap, 0) if self.padding_side == "left" else (0, 0, 0, gap)
                padded.append(F.pad(r, pad))
            batch[column] = torch.stack(padded)
        return batch


# --- the trainer ----------------------------------------------------------------------------------------------------
class ConsistentProxyTuningTrainer(FrozenModelsTrainer):
    """Trains a proxy θ (`model`, a copy of the small model S at the start; `model=None` makes one with
    `proxy_from_small`) through `z_L + alpha_train * (z_θ - z_S)` with the frozen large model L and S: CPT. With
    `plain_proxy_tuning=True`, θ alone (`CE(z_θ, y)`): the Proxy-tuning baseline on the same data and budget.

    L and S are frozen models of `FrozenModelsTrainer`, as a teacher is: trainer attributes (`self.large_model`,
    `self.small_model`), frozen, in eval mode, run under `torch.no_grad()`, prepared for evaluation only, never saved.
    Each is a `PreTrainedModel` or a Hub id / folder (default `args.large_model_name_or_path` / `small_...`), or
    replaced by a cached-logits dataset column (`args.large_logits_column`, filled by `cache_logits`) so the black box
    is queried once per example.

    Evaluation scores the deployed model, `z_L + alpha_test * (z_θ - z_S)`: `eval_loss` is its cross-entropy and
    `compute_metrics` sees its logits (θ alone in plain mode when L and S are absent). `proxy_tuned_model()` returns it
    as a `ProxyTunedForCausalLM` / `ProxyTunedForSequenceClassification` to save by reference and `generate()` with.
    """

    config_class = ConsistentProxyTuningConfig

    def __init__(
        self,
        model: PreTrainedModel | nn.Module | None = None,
        args: ConsistentProxyTuningConfig | None = None,
        data_collator=None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        model_init=None,
        compute_loss_func=None,
        compute_metrics=None,
        callbacks=None,
        optimizers=(None, None),
        optimizer_cls_and_kwargs=None,
        preprocess_logits_for_metrics=None,
        large_model: PreTrainedModel | nn.Module | str | None = None,
        small_model: PreTrainedModel | nn.Module | str | None = None,
    ):
        # checked here too (FrozenModelsTrainer checks it again): the models are loaded before the Trainer exists
        if args is None:
            args = ConsistentProxyTuningConfig()
        elif not isinstance(args, ConsistentProxyTuningConfig):
            raise TypeError(f"`args` must be a ConsistentProxyTuningConfig, got {type(args).__name__}.")
        large = large_model if large_model is not None else args.large_model_name_or_path
        small = small_model if small_model is not None else args.small_model_name_or_path
        self.large_ref = large if isinstance(large, str) else getattr(large, "name_or_path", None) or None
        self.small_ref = small if isinstance(small, str) else getattr(small, "name_or_path", None) or None
        if not args.plain_proxy_tuning:
            if large is None and args.large_logits_column is None:
                raise ValueError(
                    "CPT needs the frozen large model: pass `large_model=`, set `large_model_name_or_path`"
                    ", or give cached logits with `large_logits_column` (see cache_logits)."
                )
            if small is None and args.small_logits_column is None:
                raise ValueError(
                    "CPT needs the frozen small base model: pass `small_model=`, set "
                    "`small_model_name_or_path`, or give cached logits with `small_logits_column`."
                )
        if isinstance(small, str):
            small = _load_frozen(small, model, args.small_model_init_kwargs, args.small_dtype)
        if model is None and model_init is None:
            if not isinstance(small, nn.Module):
                raise ValueError(
                    "pass the proxy as `model=` (a copy of the small model, see proxy_from_small), or give "
                    "the small model so the trainer can copy it."
                )
            model = proxy_from_small(small)
        if isinstance(large, str):
            large = _load_frozen(
                large, model if model is not None else small, args.large_model_init_kwargs, args.large_dtype
            )
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            model_init=model_init,
            compute_metrics=compute_metrics,
            callbacks=callbacks,
            optimizers=optimizers,
            optimizer_cls_and_kwargs=optimizer_cls_and_kwargs,
            preprocess_logits_for_metrics=preprocess_logits_for_metrics,
            compute_loss_func=compute_loss_func,
        )
        tokenizer = getattr(processing_class, "tokenizer", processing_class)
        if not hasattr(tokenizer, "convert_tokens_to_ids"):
            tokenizer = None
        check_shared_output_space({"large": large, "small": small, "proxy": self.model}, tokenizer)
        if small is not None and large is not None and small is large:
            raise ValueError("`large_model` and `small_model` are the same object; CPT needs two different models.")
        self._refuse_shared_parameters(large, "large_model", trained="proxy")
        self._refuse_shared_parameters(small, "small_model", trained="proxy")
        self.large_model = self._prepare_frozen(large, args.large_dtype)
        self.small_model = self._prepare_frozen(small, args.small_dtype)
        columns = [c for c in (args.large_logits_column, args.small_logits_column) if c]
        if columns:
            padding_side = getattr(tokenizer, "padding_side", "right") if tokenizer is not None else "right"
            self.data_collator = CachedLogitsCollator(self.data_collator, columns, padding_side)

    def _set_signature_columns_if_needed(self):
        """Keep the cached-logits columns: they are not arguments of the proxy's forward."""
        super()._set_signature_columns_if_needed()
        add_signature_columns(self, (self.args.large_logits_column, self.args.small_logits_column))

    def _frozen_logits(self, which: str, inputs: dict, cached: torch.Tensor | None) -> torch.Tensor:
        if cached is not None:
            return cached
        model = self.large_model if which == "large" else self.small_model
        if model is None:
            column = getattr(self.args, f"{which}_logits_column")
            raise ValueError(
                f"no {which} model and no cached {which}-model logits in this batch (column {column!r}): pass "
                f"`{which}_model=` / set `{which}_model_name_or_path`, or add the column to this dataset with "
                "cache_logits."
            )
        inputs = cast_floating(inputs, getattr(self.args, f"{which}_dtype"))
        model.eval()
        with torch.no_grad():
            return _logits(model(**inputs))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        args = self.args
        inputs = dict(inputs)
        labels = inputs.pop("labels", None)
        cached = {
            which: inputs.pop(getattr(args, f"{which}_logits_column"), None)
            if getattr(args, f"{which}_logits_column")
            else None
            for which in ("large", "small")
        }
        if labels is None:
            raise ValueError(
                "ConsistentProxyTuningTrainer trains on labels, and this batch has none; add `labels` "
                "(causal LMs: usually a copy of input_ids, -100 where no loss is wanted)."
            )
        z_proxy = _logits(model(**inputs))
        training = model.training
        # Evaluation scores the deployed combination (alpha_test); plain training is the proxy alone.
        have_frozen = all(self._has(which, cached) for which in ("large", "small"))
        plain = args.plain_proxy_tuning and (training or not have_frozen)
        z_large = z_small = None
        if not plain:
            for which in ("large", "small"):
                z = self._frozen_logits(which, inputs, cached[which])
                if z.shape != z_proxy.shape:
                    raise ValueError(
                        f"the {which} model's logits {'(cached) ' if cached[which] is not None else ''}have shape "
                        f"{tuple(z.shape)} but the proxy's have {tuple(z_proxy.shape)}: the models must share the "
                        "vocabulary (or label set) and the cached logits must come from the same tokenization."
                    )
                if which == "large":
                    z_large = z
                else:
                    z_small = z
        if torch.is_tensor(num_items_in_batch) and num_items_in_batch.numel() > 1:
            num_items_in_batch = num_items_in_batch.reshape(-1)[0]  # DataParallel hands one copy per GPU
        loss, logits = proxy_tuning_loss(
            z_proxy,
            labels,
            z_large,
            z_small,
            alpha=args.alpha_train if training else args.alpha_test,
            plain=plain,
            shift_labels=self.shift_labels,
            num_items_in_batch=num_items_in_batch,
            label_smoothing=args.label_smoothing_factor,
        )
        loss = self._scale_and_record(model, loss, {}, num_items_in_batch)
        return (loss, ProxyTunedOutput(logits=logits)) if return_outputs else loss

    def _has(self, which: str, cached: dict) -> bool:
        return cached[which] is not None or (self.large_model if which == "large" else self.small_model) is not None

    def proxy_tuned_model(self) -> ProxyTunedForCausalLM | ProxyTunedForSequenceClassification:
        """The deployed model: `ProxyTunedForCausalLM` (or `...ForSequenceClassification`) holding the large, small
        and the trained proxy, with `alpha_test`; saved by reference (the large and small models need a Hub id or
        folder: their `name_or_path`, or `large_model_name_or_path` / `small_model_name_or_path`)."""
        large, small = self.large_model, self.small_model
        if large is None or small is None:
            raise ValueError(
                "proxy_tuned_model() needs the large and small models themselves, not only cached logits: "
                "pass large_model= and small_model= to the trainer."
            )
        proxy = self.accelerator.unwrap_model(self.model)
        cls = ProxyTunedForCausalLM if self.shift_labels else ProxyTunedForSequenceClassification
        return cls.from_models(
            self.accelerator.unwrap_model(large),
            self.accelerator.unwrap_model(small),
            proxy,
            alpha_test=self.args.alpha_test,
            large_model_name_or_path=self.args.large_model_name_or_path or self.large_ref,
            small_model_name_or_path=self.args.small_model_name_or_path or self.small_ref,
        )

    def create_model_card(self, model_name: str | None = None, dataset_name: str | None = None, **_) -> None:
        """Write the hf-methods card of the trained proxy (`Trainer.push_to_hub` uploads it): which large and small
        models it steers, the objective (CPT or plain Proxy-tuning) and the last evaluation metrics."""
        if not self.is_world_process_zero():
            return
        metrics = next((e for e in reversed(self.state.log_history) if any(k.startswith("eval_") for k in e)), {})
        repo = self.hub_model_id if self.args.push_to_hub and self.hub_model_id else model_name or self.args.output_dir
        card = proxy_card(
            self.accelerator.unwrap_model(self.model),
            self.large_ref,
            self.small_ref,
            self.args,
            repo,
            metrics,
            dataset=dataset_name,
        )
        card.save(os.path.join(self.args.output_dir, "README.md"))


def proxy_card(
    proxy, large_ref, small_ref, args: ConsistentProxyTuningConfig, repo_or_path, metrics=None, dataset=None
):
    """Card of a proxy trained by `ConsistentProxyTuningTrainer`: a plain transformers model meant to be combined."""
    from ..cards import _auto_class, _data, hub_id, link, render_card
    from ..registry import citation
    from ..report import fmt_params

    model_class = type(proxy).__name__
    objective = (
        "Proxy-tuning (the proxy trained alone, CE(z_proxy, y))"
        if args.plain_proxy_tuning
        else f"Consistent Proxy Tuning, CE(z_large + {args.alpha_train:g} * (z_proxy - z_small), y)"
    )
    setup = (
        f"`ConsistentProxyTuningTrainer`: {objective}; deploy with alpha_test={args.alpha_test:g}. "
        f"{args.num_train_epochs:g} epochs (max_steps {args.max_steps}), learning rate {args.learning_rate}, batch "
        f"{args.per_device_train_batch_size} per device x {args.gradient_accumulation_steps} accumulation steps."
    )
    data = _data(
        os.path.basename(str(repo_or_path).rstrip("/")),
        ["proxy-tuning", "consistent-proxy-tuning"],
        model_class,
        base_model=hub_id(small_ref),
        relation="finetune" if hub_id(small_ref) else None,
        dataset=dataset,
    )
    metrics = [(k, f"{v:.4g}") for k, v in sorted((metrics or {}).items()) if isinstance(v, (int, float))]
    return render_card(
        "proxy_tuned",
        data,
        title=f"{model_class} proxy for {large_ref or 'a large model'}",
        proxy_only=True,
        cls_name=model_class,
        proxy_class=model_class,
        auto_class=_auto_class(model_class),
        alpha_test=args.alpha_test,
        large_link=link(large_ref) or "a large model",
        small_link=link(small_ref) or "its small base model",
        large_params=None,
        small_params=None,
        params=fmt_params(sum(p.numel() for p in proxy.parameters())),
        repo_or_path=str(repo_or_path),
        training_setup=setup,
        metrics=metrics,
        citation=citation("CPT"),
    )


def _load_frozen(
    name_or_path: str, reference: nn.Module | None, init_kwargs: dict | None, dtype: str
) -> PreTrainedModel:
    """Load a large or small model by name with the Auto class that lists the proxy's class (or, without a proxy,
    the class its config names)."""
    kwargs = frozen_init_kwargs(init_kwargs, dtype)
    if reference is not None:
        auto_name = auto_class_name_for(type(_unwrap(reference)).__name__)
        if auto_name is not None:
            return detach_from_checkpoint(getattr(transformers, auto_name).from_pretrained(name_or_path, **kwargs))
    config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=kwargs["trust_remote_code"])
    architectures = getattr(config, "architectures", None) or []
    cls = getattr(transformers, architectures[0], None) if architectures else None
    if cls is None:
        raise ValueError(
            f"cannot tell which class loads {name_or_path!r}; pass it loaded (large_model= / small_model=)."
        )
    return detach_from_checkpoint(cls.from_pretrained(name_or_path, **kwargs))
