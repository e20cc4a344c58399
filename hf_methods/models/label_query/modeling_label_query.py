"""A multi-label classifier with one query per class (ML-Decoder style, Ridnik et al. 2023), on any backbone.

Each class c has a query vector q_c. A small transformer decoder lets every query cross-attend to the backbone's
token features (ViT patches + CLS, BERT tokens, or a CNN feature map flattened to tokens); the decoder output h_c is
the class's *label-wise embedding*, and a per-class linear map ("group FC") gives its logit: z_c = <w_c, h_c> + b_c.
L2D (Yang et al., ICCV 2023) distills the geometry of these embeddings, so the model returns them.

As in ML-Decoder, the decoder has no self-attention between queries (classes are independent binary problems, and
the cost stays linear in the number of classes), and the queries are fixed random vectors unless
`learnable_queries=True`. Written from the papers' description; names and layout are our own.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import MODEL_MAPPING, AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from ...modeling import HfMethodsModel
from .configuration_label_query import LabelQueryConfig


@dataclass
class MultiLabelOutput(ModelOutput):
    """Output of a multi-label classifier.

    Args:
        loss: binary cross-entropy on `labels` (multi-hot floats), when they are given.
        logits: one logit per class, (batch, num_labels).
        label_embeddings: the decoder output per class, (batch, num_labels, d_model): what L2D distills.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    label_embeddings: torch.Tensor | None = None


class LabelQueryCrossAttention(nn.Module):
    """Multi-head attention of the class queries over the token features (no self-attention)."""

    def __init__(self, d_model: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, d_model // num_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def forward(self, queries: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None) -> torch.Tensor:
        batch, num_queries, _ = queries.shape

        def heads(x):
            return x.view(batch, -1, self.num_heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(self.q_proj(queries)), heads(self.k_proj(memory)), heads(self.v_proj(memory))
        mask = None if memory_mask is None else memory_mask[:, None, None, :].to(torch.bool)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(batch, num_queries, -1))


class LabelQueryDecoderLayer(nn.Module):
    """Queries normalized, then cross-attention and a ReLU feed-forward block, each with residual and post-norm."""

    def __init__(self, config: LabelQueryConfig):
        super().__init__()
        d = config.d_model
        self.query_norm = nn.LayerNorm(d)
        self.cross_attention = LabelQueryCrossAttention(d, config.num_attention_heads, config.decoder_dropout)
        self.attention_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, config.dim_feedforward)
        self.fc2 = nn.Linear(config.dim_feedforward, d)
        self.ffn_norm = nn.LayerNorm(d)
        self.dropout = nn.Dropout(config.decoder_dropout)

    def forward(self, queries, memory, memory_mask=None):
        h = self.query_norm(queries)
        h = self.attention_norm(h + self.dropout(self.cross_attention(h, memory, memory_mask)))
        ffn = self.fc2(self.dropout(F.relu(self.fc1(h))))
        return self.ffn_norm(h + self.dropout(ffn))


class LabelQueryHead(nn.Module):
    """Token features -> label-wise embeddings (batch, C, d_model) -> logits (batch, C)."""

    def __init__(self, config: LabelQueryConfig):
        super().__init__()
        d, num_classes = config.d_model, config.num_labels
        self.input_proj = nn.Linear(config.token_feature_size, d)
        queries = torch.empty(num_classes, d)
        if config.learnable_queries:
            self.query_embed = nn.Parameter(queries)
        else:  # a saved buffer: fixed, but part of the checkpoint so a reload predicts the same
            self.register_buffer("query_embed", queries, persistent=True)
        self.layers = nn.ModuleList(LabelQueryDecoderLayer(config) for _ in range(config.num_decoder_layers))
        self.class_weight = nn.Parameter(torch.empty(num_classes, d))  # the group FC: one weight row per class
        self.class_bias = nn.Parameter(torch.empty(num_classes))

    def forward(self, tokens: torch.Tensor, token_mask: torch.Tensor | None = None):
        memory = F.relu(self.input_proj(tokens))
        h = self.query_embed.to(memory.dtype).unsqueeze(0).expand(tokens.shape[0], -1, -1)
        for layer in self.layers:
            h = layer(h, memory, token_mask)
        logits = (h * self.class_weight.to(h.dtype)).sum(-1) + self.class_bias.to(h.dtype)
        return logits, h


def _backbone_kwargs(backbone_config) -> dict:
    """Build the backbone without its pooler when it has one: the head reads tokens, and an unused pooler would
    get no gradient (DDP then needs `find_unused_parameters`)."""
    model_cls = MODEL_MAPPING.get(type(backbone_config), None)
    if model_cls is not None and "add_pooling_layer" in inspect.signature(model_cls.__init__).parameters:
        return {"add_pooling_layer": False}
    return {}


class LabelQueryForMultiLabelClassification(HfMethodsModel, PreTrainedModel):
    """Backbone (`AutoModel.from_config(config.backbone_config)`) + label-query head.

    `forward(pixel_values=... | input_ids=..., attention_mask=None, labels=None)` returns a `MultiLabelOutput` with
    `logits` (batch, C), `label_embeddings` (batch, C, d_model), and `loss` = BCE with logits (`config.loss_reduction`,
    mean by default) when multi-hot `labels` (batch, C) are given. A text backbone's `attention_mask` also masks the
    padded tokens out of the head's cross-attention. Other keyword arguments go to the backbone.
    """

    config_class = LabelQueryConfig
    method_name = "L2D label-query"
    # Not "backbone": transformers scopes a sub-model's checkpoint renamings (e.g. ViT's `layers.N` <-> saved
    # `encoder.layer.N`) by its path minus this prefix, so "backbone" would let them rename the head's keys too.
    base_model_prefix = "label_query"
    main_input_name = "pixel_values"
    accepts_loss_kwargs = False  # the loss is a plain BCE; the Trainer passes no num_items_in_batch
    supports_gradient_checkpointing = True  # the backbone's layers checkpoint; the head is one small layer

    def __init__(self, config: LabelQueryConfig):
        super().__init__(config)
        backbone_config = config.get_backbone_config()
        self.backbone = AutoModel.from_config(backbone_config, **_backbone_kwargs(backbone_config))
        self.main_input_name = getattr(self.backbone, "main_input_name", "pixel_values")
        self.head = LabelQueryHead(config)
        self.post_init()

    @property
    def label_embedding_dim(self) -> int:
        """Width of `label_embeddings`: what a distillation trainer needs to know before the first batch."""
        return self.config.d_model

    @torch.no_grad()
    def _init_weights(self, module):
        """Head init as ML-Decoder's PyTorch layers: Xavier-uniform linear weights, zero biases, unit norms, Xavier-
        normal group FC, N(0, 1) queries (an `nn.Embedding`'s init, so fixed queries are well spread). A 0.02-std init
        would leave the cross-attention path near zero and slow tiny heads down. The backbone initializes itself."""
        if isinstance(module, nn.Linear):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, LabelQueryHead):
            init.normal_(module.query_embed, mean=0.0, std=1.0)
            init.xavier_normal_(module.class_weight)
            init.zeros_(module.class_bias)

    def get_input_embeddings(self):
        return self.backbone.get_input_embeddings()

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> MultiLabelOutput:
        given = {
            "pixel_values": pixel_values,
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "token_type_ids": token_type_ids,
            "position_ids": position_ids,
            "inputs_embeds": inputs_embeds,
        }
        inputs = {k: v for k, v in given.items() if v is not None}
        if not inputs.keys() - {"attention_mask", "token_type_ids", "position_ids"}:
            raise ValueError(
                "LabelQueryForMultiLabelClassification.forward needs pixel_values, input_ids or inputs_embeds."
            )
        outputs = self.backbone(**inputs, **kwargs)
        tokens = outputs.last_hidden_state if hasattr(outputs, "last_hidden_state") else outputs[0]
        if tokens.dim() == 4:  # a CNN feature map (batch, channels, h, w) -> (batch, h*w, channels)
            tokens = tokens.flatten(2).transpose(1, 2)
        if tokens.dim() != 3:
            raise ValueError(
                f"The backbone's last_hidden_state has shape {tuple(tokens.shape)}; the label-query "
                "head needs token features (batch, tokens, hidden) or a feature map (batch, C, h, w)."
            )
        token_mask = None
        if attention_mask is not None and attention_mask.shape == tokens.shape[:2]:
            token_mask = attention_mask
        logits, embeddings = self.head(tokens, token_mask)

        loss = None
        if labels is not None:
            if labels.shape != logits.shape:
                raise ValueError(
                    f"labels have shape {tuple(labels.shape)} but the logits {tuple(logits.shape)}: give multi-hot "
                    "labels of shape (batch, num_labels), 1.0 where a class is present."
                )
            loss = F.binary_cross_entropy_with_logits(
                logits.float(), labels.to(logits.device).float(), reduction=self.config.loss_reduction
            )
        return MultiLabelOutput(loss=loss, logits=logits, label_embeddings=embeddings)
