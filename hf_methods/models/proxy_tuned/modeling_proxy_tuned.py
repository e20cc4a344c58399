"""Proxy-tuned models: a frozen large model L steered by a tuned small proxy θ and its frozen untuned base S,
`z = z_L + alpha_test * (z_θ - z_S)` (Proxy-tuning, Liu et al., arXiv 2401.08565; trained consistently by CPT,
He et al., arXiv 2407.01155, see `ConsistentProxyTuningTrainer`).

Saved by reference: a checkpoint holds the config (Hub ids / folders of L and S), `generation_config.json` and the
tuned proxy as a plain transformers model in `proxy/`; L's and S's weights are loaded from their own repositories and
never copied. Generation carries one KV cache per model (`ProxyTunedCache`), so decoding costs what running the three
models with their own caches costs.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import logging
import os

import torch
import torch.nn.functional as F
import transformers
from torch import nn
from transformers import GenerationConfig, GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache
from transformers.utils import ModelOutput

from ...compat import CACHE_NAME, causal_lm_loss, output_cache, pop_cache_argument
from ...modeling import HfMethodsModel, check_loaded_values
from .configuration_proxy_tuned import ProxyTunedConfig, check_alpha

logger = logging.getLogger(__name__)

PROXY_FOLDER = "proxy"

# Keyword arguments of `from_pretrained` that name the checkpoint itself, not the large and small models it refers to.
_CHECKPOINT_ONLY = {"revision", "subfolder", "adapter_kwargs", "trust_remote_code", "code_revision"}
_SHARED_HUB = {"cache_dir", "force_download", "local_files_only", "proxies", "token"}
_AUTO_CLASSES = {"causal-lm": "AutoModelForCausalLM", "sequence-classification": "AutoModelForSequenceClassification"}


# --- logit arithmetic -----------------------------------------------------------------------------------------------
def combine_logits(large: torch.Tensor, small: torch.Tensor, proxy: torch.Tensor, alpha: float) -> torch.Tensor:
    """`large + alpha * (proxy - small)` in float32, on the large model's device.

    The offset is formed first, so a proxy identical to the small model gives exactly the large model's logits.
    """
    if not (large.shape == small.shape == proxy.shape):
        raise ValueError(
            f"logits of the large {tuple(large.shape)}, small {tuple(small.shape)} and proxy {tuple(proxy.shape)} "
            "models differ in shape; the three models must share the vocabulary (or label set) and see the same tokens."
        )
    offset = proxy.float() - small.float().to(proxy.device)
    return large.float() + alpha * offset.to(large.device)


def output_size(model: nn.Module) -> int | None:
    """Size of the model's logits' last dimension: output-embedding rows (LMs), else `config.num_labels`."""
    get_emb = getattr(model, "get_output_embeddings", None)
    emb = get_emb() if callable(get_emb) else None
    if emb is not None and getattr(emb, "weight", None) is not None:
        return emb.weight.shape[0]
    return getattr(getattr(model, "config", None), "num_labels", None)


def check_shared_output_space(models: dict[str, nn.Module | None], tokenizer=None) -> int | None:
    """The common output size of `models` ({name: model}); a clear error when they differ, or when `tokenizer` has
    more tokens than that vocabulary."""
    sizes = {name: output_size(m) for name, m in models.items() if m is not None}
    known = {name: size for name, size in sizes.items() if size is not None}
    if len(set(known.values())) > 1:
        listed = ", ".join(f"{name} {size}" for name, size in known.items())
        raise ValueError(
            f"the models do not share an output space ({listed}): proxy tuning adds logits position by position, so "
            "the large, small and proxy models need the same tokenizer / vocabulary (or the same label set)."
        )
    size = next(iter(known.values()), None)
    if tokenizer is not None and size is not None and hasattr(tokenizer, "__len__") and len(tokenizer) > size:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens but the models' vocabulary has {size} rows; tokenize with the "
            "tokenizer the three models share."
        )
    return size


def proxy_from_small(small: PreTrainedModel) -> PreTrainedModel:
    """The proxy at initialization: a trainable copy of the small base model (CPT and Proxy-tuning start θ at S), so
    that the proxy-tuned model starts as the large model exactly."""
    if getattr(small, "hf_device_map", None) and len(set(small.hf_device_map.values())) > 1:
        raise ValueError(
            "proxy_from_small needs the small model on one device (it is copied); load it without a "
            "multi-device device_map."
        )
    proxy = copy.deepcopy(small)
    proxy.requires_grad_(True)
    return proxy.train()


def freeze(model: nn.Module) -> nn.Module:
    model.requires_grad_(False)
    return model.eval()


def _architecture(model: PreTrainedModel) -> dict:
    """The proxy's config as recorded in the proxy-tuned config: what it is, not where it was loaded from."""
    return {k: v for k, v in model.config.to_dict().items() if k not in ("_name_or_path", "transformers_version")}


def _model_device(model: nn.Module) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(model.parameters()).device


def _accepts(model: nn.Module, name: str) -> bool:
    params = inspect.signature(model.forward).parameters
    return name in params


# --- cache and outputs ----------------------------------------------------------------------------------------------
class ProxyTunedCache(Cache):
    """The KV caches of the three models during generation: `large`, `small` and `proxy`, each the stock cache its
    model created. Beam search and cropping act on all three."""

    def __init__(self, large: Cache | None = None, small: Cache | None = None, proxy: Cache | None = None):
        # Not Cache.__init__: this holds caches, not layers (as transformers' EncoderDecoderCache).
        self.large, self.small, self.proxy = large, small, proxy

    def _caches(self):
        return [c for c in (self.large, self.small, self.proxy) if c is not None]

    def __repr__(self):
        return f"ProxyTunedCache(large={self.large!r}, small={self.small!r}, proxy={self.proxy!r})"

    def __len__(self):
        return len(self.large) if self.large is not None else 0

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.large.get_seq_length(layer_idx) if self.large is not None else 0

    def reset(self):
        for cache in self._caches():
            cache.reset()

    def reorder_cache(self, beam_idx: torch.LongTensor):
        for cache in self._caches():
            cache.reorder_cache(beam_idx)

    def crop(self, tokens_to_remove: int) -> None:
        for cache in self._caches():
            cache.crop(tokens_to_remove)

    def batch_repeat_interleave(self, repeats: int):
        for cache in self._caches():
            cache.batch_repeat_interleave(repeats)

    def batch_select_indices(self, indices: torch.Tensor):
        for cache in self._caches():
            cache.batch_select_indices(indices)

    @property
    def is_compileable(self) -> bool:
        return False  # three caches of possibly different kinds: never auto-compiled

    @property
    def is_croppable(self) -> bool:
        return all(c.is_croppable for c in self._caches())


def _output_fields():
    types = {
        "loss": torch.Tensor,
        "logits": torch.Tensor,
        CACHE_NAME: ProxyTunedCache,
        "large_logits": torch.Tensor,
        "small_logits": torch.Tensor,
        "proxy_logits": torch.Tensor,
    }
    return [(name, kind | None, dataclasses.field(default=None)) for name, kind in types.items()]


# The cache field is named as the installed transformers names it (`cache` from 5.24, `past_key_values` before,
# `hf_methods.compat.CACHE_NAME`): generation reads the cache back from that field.
ProxyTunedOutput = dataclasses.make_dataclass(
    "ProxyTunedOutput",
    _output_fields(),
    bases=(ModelOutput,),
    namespace={
        "__module__": __name__,
        "__doc__": "`logits` = `large_logits + alpha_test * (proxy_logits - small_logits)` (float32); the KV cache "
        "(`output.cache`, or `output.past_key_values` before transformers 5.24) is a `ProxyTunedCache` when "
        "`use_cache=True`.",
    },
)


# --- references -----------------------------------------------------------------------------------------------------
def _reference_for_save(ref: str | None, save_directory: str) -> str | None:
    """A local folder is written relative to the checkpoint (the tree moves as one) unless the two share no parent
    but the filesystem root; Hub ids are kept."""
    if ref is None or not os.path.isdir(ref):
        return ref
    ref_abs, save_abs = os.path.abspath(ref), os.path.abspath(save_directory)
    common = os.path.commonpath([ref_abs, save_abs])
    if common == os.path.dirname(common):  # only the root in common
        return ref_abs
    return os.path.relpath(ref_abs, save_abs)


def _resolve_reference(ref: str, checkpoint: str | os.PathLike | None, field: str) -> str:
    """A reference as written by `save_pretrained`: relative to the checkpoint folder when it is a local folder
    there, else as given (a Hub id, or a folder relative to the working directory)."""
    if checkpoint is not None and os.path.isdir(checkpoint) and not os.path.isabs(ref):
        candidate = os.path.normpath(os.path.join(os.fspath(checkpoint), ref))
        if os.path.isdir(candidate):
            return candidate
    if not os.path.isdir(ref) and (ref.startswith((".", os.sep)) or os.path.isabs(ref)):
        raise FileNotFoundError(
            f"`{field}` is the local folder {ref!r}, which exists neither relative to the checkpoint "
            f"({os.fspath(checkpoint) if checkpoint is not None else '-'}) nor relative to the working directory. "
            f"Pass the model with `{field.split('_model')[0]}_model=` or fix `{field}` in config.json."
        )
    return ref


# --- the models -----------------------------------------------------------------------------------------------------
class ProxyTunedPreTrainedModel(HfMethodsModel, PreTrainedModel):
    """Shared machinery of the proxy-tuned models: three submodels (`large`, `small` frozen; `proxy` trainable),
    saving by reference, strict loading, the hf-methods card."""

    config_class = ProxyTunedConfig
    base_model_prefix = "proxy_tuned"
    method_name = "Proxy-tuning"
    task = "causal-lm"
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def __init__(
        self,
        config: ProxyTunedConfig,
        large_model: PreTrainedModel | None = None,
        small_model: PreTrainedModel | None = None,
        proxy_model: PreTrainedModel | None = None,
    ):
        super().__init__(config)
        if config.task != self.task:
            raise ValueError(
                f"this config has task={config.task!r}; load it with "
                f"{_CLASS_FOR_TASK[config.task]} instead of {type(self).__name__}."
            )
        self.large = freeze(large_model if large_model is not None else self._load_reference("large"))
        self.small = freeze(small_model if small_model is not None else self._load_reference("small"))
        if proxy_model is None:
            # A fresh proxy-tuned model (e.g. `from_config`): the proxy starts as the small model, z = z_L exactly.
            proxy_model = proxy_from_small(self.small)
        self.proxy = proxy_model
        size = check_shared_output_space({"large": self.large, "small": self.small, "proxy": self.proxy})
        if config.vocab_size is not None and size is not None and size != config.vocab_size:
            raise ValueError(
                f"config.vocab_size={config.vocab_size} but the models' output size is {size}; the "
                "referenced large/small models are not the ones this proxy was tuned with."
            )
        config.vocab_size = size
        config.proxy_config = _architecture(self.proxy)
        if self.can_generate() and getattr(self.large, "generation_config", None) is not None:
            self.generation_config = copy.deepcopy(self.large.generation_config)
        self.post_init()

    def _load_reference(self, which: str) -> PreTrainedModel:
        ref = getattr(self.config, f"{which}_model_name_or_path")
        if ref is None:
            raise ValueError(
                f"config.{which}_model_name_or_path is not set: pass `{which}_model=` or name the "
                f"{which} model (Hub id or folder) in the config."
            )
        revision = getattr(self.config, f"{which}_model_revision")
        auto = getattr(transformers, _AUTO_CLASSES[self.task])
        return auto.from_pretrained(ref, trust_remote_code=False, **({"revision": revision} if revision else {}))

    def init_weights(self):
        """Nothing to initialize or tie: the three submodels are complete models, initialized (or trained) already."""

    def _init_weights(self, module):
        """See `init_weights`."""

    def train(self, mode: bool = True):
        """Only the proxy ever trains; the large and small models stay in eval mode (no dropout in the offset)."""
        super().train(mode)
        self.large.eval()
        self.small.eval()
        return self

    # --- construction -----------------------------------------------------------------------------------------------
    @classmethod
    def from_models(
        cls,
        large_model: PreTrainedModel,
        small_model: PreTrainedModel,
        proxy_model: PreTrainedModel | None = None,
        alpha_test: float = 1.0,
        *,
        large_model_name_or_path: str | None = None,
        small_model_name_or_path: str | None = None,
        large_model_revision: str | None = None,
        small_model_revision: str | None = None,
    ):
        """A proxy-tuned model from loaded models (frozen in place: `requires_grad=False`, eval mode). `proxy_model`
        defaults to a copy of `small_model` (the untuned start). The large and small models are saved by reference:
        their `name_or_path` (the Hub id or folder they were loaded from), or the names given here."""
        refs = {}
        for which, model, given in (
            ("large", large_model, large_model_name_or_path),
            ("small", small_model, small_model_name_or_path),
        ):
            ref = given or getattr(model, "name_or_path", None) or None
            if not ref:
                raise ValueError(
                    f"the {which} model has no name_or_path, and a proxy-tuned model saves it by reference: save it "
                    f"first ({which}_model.save_pretrained(folder), or push it to the Hub) and load it from there, or "
                    f"pass {which}_model_name_or_path= naming where it is stored."
                )
            refs[which] = str(ref)
        config = ProxyTunedConfig(
            task=cls.task,
            large_model_name_or_path=refs["large"],
            small_model_name_or_path=refs["small"],
            large_model_revision=large_model_revision,
            small_model_revision=small_model_revision,
            alpha_test=check_alpha(alpha_test, "alpha_test"),
        )
        return cls(config, large_model=large_model, small_model=small_model, proxy_model=proxy_model)

    # --- saving by reference ----------------------------------------------------------------------------------------
    def stub_auto_map(self) -> dict[str, str]:
        """The task's Auto class instead of AutoModel: AutoModel cannot tell a causal-LM from a classification
        checkpoint of the same config, so it is not mapped."""
        auto = super().stub_auto_map()
        auto[_AUTO_CLASSES[self.task]] = auto.pop("AutoModel")
        return auto

    def save_pretrained(
        self,
        save_directory,
        is_main_process: bool = True,
        state_dict: dict | None = None,
        push_to_hub: bool = False,
        max_shard_size: int | str = "50GB",
        **kwargs,
    ):
        """Write `config.json` (the large and small models by reference), `generation_config.json` and the proxy in
        `proxy/` as a plain transformers model. The large and small models' weights are never written.

        `state_dict` (as the Trainer passes it) may hold the whole model: only its `proxy.*` entries are saved."""
        if os.path.isfile(save_directory):
            raise ValueError(f"save_directory {save_directory!r} is a file; give a folder.")
        save_directory = os.fspath(save_directory)
        proxy_state = None
        if state_dict is not None:
            prefix = "proxy."
            proxy_state = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
        if is_main_process:
            os.makedirs(save_directory, exist_ok=True)
            config = copy.deepcopy(self.config)
            config.large_model_name_or_path = _reference_for_save(config.large_model_name_or_path, save_directory)
            config.small_model_name_or_path = _reference_for_save(config.small_model_name_or_path, save_directory)
            config.proxy_config = _architecture(self.proxy)
            config.architectures = [type(self).__name__]
            config.auto_map = self.config.auto_map = self.stub_auto_map()
            config.save_pretrained(save_directory)
            self.write_stub(save_directory)
            if self.can_generate() and self.generation_config is not None:
                self.generation_config.save_pretrained(save_directory)
        push = {k: kwargs.pop(k) for k in ("repo_id", "commit_message", "private", "token") if k in kwargs}
        self.proxy.save_pretrained(
            os.path.join(save_directory, PROXY_FOLDER),
            is_main_process=is_main_process,
            state_dict=proxy_state,
            max_shard_size=max_shard_size,
            **kwargs,
        )
        if push_to_hub:
            repo_id = push.pop("repo_id", None) or os.path.basename(os.path.normpath(save_directory))
            self.push_to_hub(repo_id, **push)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path,
        *model_args,
        config: ProxyTunedConfig | None = None,
        large_model: PreTrainedModel | None = None,
        small_model: PreTrainedModel | None = None,
        large_model_kwargs: dict | None = None,
        small_model_kwargs: dict | None = None,
        proxy_model_kwargs: dict | None = None,
        allow_non_finite: bool = False,
        **kwargs,
    ):
        """Load a proxy-tuned checkpoint: the large and small models from their references (or `large_model=` /
        `small_model=` already loaded), the proxy from `proxy/`, strictly: safetensors weights only, no missing,
        unexpected or misshaped proxy tensor, no integer or bool tensor stored for a floating one, and no NaN or inf in
        any model loaded here unless `allow_non_finite=True` (`hf_methods.modeling.check_loaded_values`).

        Loading settings (`dtype`, `device_map`, `attn_implementation`, ...) and Hub settings (`token`,
        `cache_dir`, `local_files_only`, ...) apply to all three models; `large_model_kwargs`, `small_model_kwargs` and
        `proxy_model_kwargs` override them per model. `revision` and `subfolder` are the checkpoint's own.
        """
        if model_args:
            raise TypeError(f"{cls.__name__}.from_pretrained takes no positional model arguments.")
        want_info = kwargs.pop("output_loading_info", False)
        own = {k: kwargs.pop(k) for k in list(kwargs) if k in _CHECKPOINT_ONLY or k.startswith("_")}
        hub = {k: kwargs.pop(k) for k in list(kwargs) if k in _SHARED_HUB}
        shared = {"trust_remote_code": False, "use_safetensors": True, **kwargs}  # dtype, device_map, ...
        revision, subfolder = own.get("revision"), own.get("subfolder") or ""
        if config is None:
            config = ProxyTunedConfig.from_pretrained(
                pretrained_model_name_or_path, revision=revision, subfolder=subfolder, **hub
            )
        if not isinstance(config, ProxyTunedConfig):
            raise ValueError(
                f"{pretrained_model_name_or_path!r} is not a proxy-tuned checkpoint (its config is a "
                f"{type(config).__name__})."
            )
        if config.task != cls.task:
            raise ValueError(
                f"{pretrained_model_name_or_path!r} is a {config.task!r} proxy-tuned model; load it with "
                f"{_CLASS_FOR_TASK[config.task]}."
            )
        checkpoint = os.path.join(os.fspath(pretrained_model_name_or_path), subfolder)
        auto = getattr(transformers, _AUTO_CLASSES[cls.task])
        loaded = {}
        for which, given, extra in (
            ("large", large_model, large_model_kwargs),
            ("small", small_model, small_model_kwargs),
        ):
            field = f"{which}_model_name_or_path"
            ref = getattr(config, field)
            if given is not None:
                loaded[which] = given
                ref = ref or given.name_or_path
            else:
                if not ref:
                    raise ValueError(f"config.{field} is empty; pass `{which}_model=`.")
                ref = _resolve_reference(ref, checkpoint, field)
                pinned = getattr(config, f"{which}_model_revision")
                load_kwargs = {**hub, **shared, **({"revision": pinned} if pinned else {}), **(extra or {})}
                loaded[which] = auto.from_pretrained(ref, **load_kwargs)
                check_loaded_values(loaded[which], ref, load_kwargs, allow_non_finite, f"the {which} model of")
            setattr(config, field, ref)
        proxy_kwargs = {**hub, **shared, **(proxy_model_kwargs or {})}
        proxy_sub = f"{subfolder}/{PROXY_FOLDER}" if subfolder else PROXY_FOLDER
        try:
            proxy, info = auto.from_pretrained(
                pretrained_model_name_or_path,
                subfolder=proxy_sub,
                revision=revision,
                output_loading_info=True,
                **proxy_kwargs,
            )
        except OSError as err:
            raise OSError(
                f"{pretrained_model_name_or_path!r} has no readable proxy in {proxy_sub}/ ({err}); it is not "
                "a complete proxy-tuned checkpoint."
            ) from err
        problems = {
            k: sorted(v) for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v
        }
        if problems:
            raise ValueError(f"the proxy in {pretrained_model_name_or_path!r} does not match its config: {problems}")
        checked = {**proxy_kwargs, "subfolder": proxy_sub, "revision": revision}
        check_loaded_values(proxy, pretrained_model_name_or_path, checked, allow_non_finite, "the proxy of")
        model = cls(config, large_model=loaded["large"], small_model=loaded["small"], proxy_model=proxy)
        model.name_or_path = os.fspath(pretrained_model_name_or_path)
        if model.can_generate():
            try:
                model.generation_config = GenerationConfig.from_pretrained(
                    pretrained_model_name_or_path, subfolder=subfolder, revision=revision, **hub
                )
            except OSError:
                pass  # no generation_config.json: keep the large model's
        model.eval()
        return (model, info) if want_info else model

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        revision: str | None = None,
        card=None,
        results: dict | None = None,
        **_,
    ):
        """Push config, generation config, the proxy and the hf-methods card in one commit. The large and small models
        must be Hub ids (what the checkpoint refers to must be downloadable); their weights are not uploaded."""
        from ...cards import hub_id

        for which in ("large", "small"):
            ref = getattr(self.config, f"{which}_model_name_or_path")
            if not hub_id(ref):
                raise ValueError(
                    f"the {which} model is referenced as {ref!r}, which is not a Hub id: a pushed proxy-tuned model "
                    f"could not load it. Push the {which} model first and build this model from the Hub copy (or "
                    f"set config.{which}_model_name_or_path to its Hub id)."
                )
        return super().push_to_hub(
            repo_id,
            commit_message=commit_message,
            private=private,
            token=token,
            revision=revision,
            card=card,
            results=results,
        )

    def model_card(self, repo_or_path, results: dict | None = None):
        return proxy_tuned_card(self, repo_or_path, results)

    # --- running the three models -----------------------------------------------------------------------------------
    def _run(self, model: nn.Module, inputs: dict, cache, use_cache: bool, logits_to_keep):
        device = _model_device(model)
        kwargs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items() if v is not None}
        if use_cache or cache is not None:
            kwargs[CACHE_NAME] = cache
            kwargs["use_cache"] = use_cache
        keep_here = bool(logits_to_keep) and not _accepts(model, "logits_to_keep")
        if logits_to_keep and not keep_here:
            kwargs["logits_to_keep"] = logits_to_keep
        out = model(**kwargs, return_dict=True)
        logits = out.logits
        if keep_here:
            logits = logits[:, -logits_to_keep:] if isinstance(logits_to_keep, int) else logits[:, logits_to_keep]
        return logits, output_cache(out)

    def _components(self, inputs: dict, past_key_values, use_cache: bool, logits_to_keep=0):
        if past_key_values is not None and not isinstance(past_key_values, ProxyTunedCache):
            raise TypeError(
                f"the KV cache ({CACHE_NAME}) must be the ProxyTunedCache this model returned, got "
                f"{type(past_key_values).__name__}."
            )
        caches = past_key_values or ProxyTunedCache()
        with torch.no_grad():
            z_large, c_large = self._run(self.large, inputs, caches.large, use_cache, logits_to_keep)
            z_small, c_small = self._run(self.small, inputs, caches.small, use_cache, logits_to_keep)
        z_proxy, c_proxy = self._run(self.proxy, inputs, caches.proxy, use_cache, logits_to_keep)
        cache = ProxyTunedCache(c_large, c_small, c_proxy) if use_cache else None
        if use_cache and None in (c_large, c_small, c_proxy):
            raise ValueError("one of the three models returned no KV cache; generate with use_cache=False.")
        return z_large, z_small, z_proxy, cache


_CLASS_FOR_TASK = {
    "causal-lm": "ProxyTunedForCausalLM",
    "sequence-classification": "ProxyTunedForSequenceClassification",
}


class ProxyTunedForCausalLM(ProxyTunedPreTrainedModel, GenerationMixin):
    """A frozen large causal LM decoded through a tuned small proxy: next-token logits
    `z_L + alpha_test * (z_θ - z_S)`. `generate()` works with every decoding mode (greedy, sampling, beam search),
    keeping one KV cache per model; `use_cache=False` re-runs the three models on the whole prefix each step.

    With `labels`, the loss is the causal-LM cross-entropy of the combined logits (shifted, -100 ignored), which is
    CPT's objective with alpha_train = alpha_test: gradients reach only the proxy.
    """

    method_name = "Proxy-tuning"
    task = "causal-lm"

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # the forward creates a ProxyTunedCache of the three models' own caches

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> ProxyTunedOutput:
        """The KV cache comes as `cache=` (transformers >= 5.24) or `past_key_values=` (before); either is taken."""
        if inputs_embeds is not None:
            raise ValueError(
                "ProxyTunedForCausalLM needs input_ids: the three models embed tokens in different "
                "spaces, so one inputs_embeds cannot feed them all."
            )
        if input_ids is None:
            raise ValueError("ProxyTunedForCausalLM.forward needs input_ids.")
        num_items_in_batch = kwargs.pop("num_items_in_batch", None)
        kwargs.pop("return_dict", None)
        past_key_values = pop_cache_argument(kwargs)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids, **kwargs}
        z_large, z_small, z_proxy, cache = self._components(inputs, past_key_values, bool(use_cache), logits_to_keep)
        logits = combine_logits(z_large, z_small, z_proxy, self.config.alpha_test)
        loss = None
        if labels is not None:
            loss = causal_lm_loss(
                logits, labels.to(logits.device), vocab_size=logits.shape[-1], num_items_in_batch=num_items_in_batch
            )
        return ProxyTunedOutput(
            loss=loss,
            logits=logits,
            large_logits=z_large,
            small_logits=z_small,
            proxy_logits=z_proxy,
            **{CACHE_NAME: cache},
        )


class ProxyTunedForSequenceClassification(ProxyTunedPreTrainedModel):
    """A frozen large classifier steered by a tuned small proxy classifier: `z_L + alpha_test * (z_θ - z_S)` over the
    shared label set. With `labels`: cross-entropy (MSE for one label, BCE for multi-label, as the large model's
    `problem_type`) of the combined logits."""

    method_name = "Proxy-tuning"
    task = "sequence-classification"

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs,
    ) -> ProxyTunedOutput:
        if inputs_embeds is not None:
            raise ValueError(
                "ProxyTunedForSequenceClassification needs input_ids (or the models' own input, e.g. "
                "pixel_values), not inputs_embeds: the three models embed in different spaces."
            )
        kwargs.pop("num_items_in_batch", None)
        kwargs.pop("return_dict", None)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, **kwargs}
        z_large, z_small, z_proxy, _ = self._components(inputs, None, False)
        logits = combine_logits(z_large, z_small, z_proxy, self.config.alpha_test)
        loss = None
        if labels is not None:
            labels = labels.to(logits.device)
            problem = getattr(self.large.config, "problem_type", None)
            if logits.shape[-1] == 1 or problem == "regression":
                loss = F.mse_loss(
                    logits.squeeze(-1), labels.float().view(-1) if logits.shape[-1] == 1 else labels.float()
                )
            elif problem == "multi_label_classification":
                loss = F.binary_cross_entropy_with_logits(logits, labels.float())
            else:
                loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1))
        return ProxyTunedOutput(
            loss=loss, logits=logits, large_logits=z_large, small_logits=z_small, proxy_logits=z_proxy
        )


# --- card -----------------------------------------------------------------------------------------------------------
def proxy_tuned_card(model: ProxyTunedPreTrainedModel, repo_or_path, results: dict | None = None):
    """Card of a proxy-tuned model: what it refers to (large, small), how the proxy was tuned, and `results` (a
    recipe's report) when given."""
    from ...cards import _data, hub_id, link, usage_ref
    from ...registry import citation
    from ...report import fmt_params

    results = results or {}
    config = model.config
    large_ref, small_ref = config.large_model_name_or_path, config.small_model_name_or_path
    cls_name = type(model).__name__
    tags = ["proxy-tuning", "consistent-proxy-tuning", "black-box-tuning"]
    data = _data(os.path.basename(str(repo_or_path).rstrip("/")), tags, cls_name, base_model=hub_id(large_ref))
    metrics = [
        (k, f"{v:.4g}") for k, v in sorted((results.get("metrics") or {}).items()) if isinstance(v, (int, float))
    ]
    from ...cards import render_card

    return render_card(
        "proxy_tuned",
        data,
        title=f"Proxy-tuned {type(model.large).__name__}",
        cls_name=cls_name,
        auto_class=_AUTO_CLASSES[config.task],
        alpha_test=config.alpha_test,
        large_link=link(large_ref),
        small_link=link(small_ref),
        large_params=fmt_params(sum(p.numel() for p in model.large.parameters())),
        small_params=fmt_params(sum(p.numel() for p in model.small.parameters())),
        proxy_class=type(model.proxy).__name__,
        repo_or_path=usage_ref(repo_or_path),
        training_setup=results.get("training_setup"),
        metrics=metrics,
        citation=citation("CPT"),
    )
