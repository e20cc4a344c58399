from ...registry import register_models
from .configuration_label_query import LabelQueryConfig
from .modeling_label_query import (
    LabelQueryForMultiLabelClassification,
    MultiLabelOutput,
)

__all__ = ["LabelQueryConfig", "LabelQueryForMultiLabelClassification", "MultiLabelOutput"]

register_models(LabelQueryConfig, LabelQueryForMultiLabelClassification)
