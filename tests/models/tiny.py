"""Tiny stock configs of every architecture the engine supports, with inputs to run them."""

import torch
import transformers as T


def _no_dropout(config):
    for attr in ("hidden_dropout_prob", "attention_probs_dropout_prob", "resid_pdrop", "embd_pdrop", "attn_pdrop"):
        if hasattr(config, attr):
            setattr(config, attr, 0.0)
    return config


def vit_config(num_labels=10):
    return _no_dropout(
        T.ViTConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            image_size=16,
            patch_size=4,
            num_channels=1,
            num_labels=num_labels,
        )
    )


def bert_config(num_labels=3):
    return _no_dropout(
        T.BertConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            vocab_size=100,
            max_position_embeddings=64,
            num_labels=num_labels,
        )
    )


def gpt2_config():
    return _no_dropout(
        T.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100, n_positions=64, bos_token_id=0, eos_token_id=0)
    )


def llama_config():
    return T.LlamaConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=64,
        vocab_size=100,
        bos_token_id=0,
        eos_token_id=0,
    )


def _image(n=3):
    return {"pixel_values": torch.randn(n, 1, 16, 16), "labels": torch.arange(n) % 10}


def _text_cls(n=3):
    mask = torch.ones(n, 10, dtype=torch.long)
    mask[0, 7:] = 0
    return {"input_ids": torch.randint(0, 100, (n, 10)), "attention_mask": mask, "labels": torch.arange(n) % 3}


def _text_lm(n=3):
    return {"input_ids": torch.randint(0, 100, (n, 10)), "labels": torch.randint(0, 100, (n, 10))}


ARCHS = {
    "vit": (vit_config, "ViTForImageClassification", _image),
    "bert": (bert_config, "BertForSequenceClassification", _text_cls),
    "gpt2": (gpt2_config, "GPT2LMHeadModel", _text_lm),
    "llama": (llama_config, "LlamaForCausalLM", _text_lm),
}


def stock_model(arch, num_layers, std=0.1, **config_kw):
    """A stock model of `arch` with `num_layers` layers and every parameter drawn from N(0, std) (so that layers,
    norms and biases all differ: copies and fits are then checked on real values, not on the stock init)."""
    from hf_methods.engine.architectures import spec_for

    config_fn, cls, _ = ARCHS[arch]
    config = config_fn(**config_kw)
    setattr(config, spec_for(config.model_type).depth_attr, num_layers)
    model = getattr(T, cls)(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, std)
    return model.eval()
