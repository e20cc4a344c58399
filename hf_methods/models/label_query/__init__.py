from .configuration_label_query import LabelQueryConfig
from .modeling_label_query import (
    LabelQueryForMultiLabelClassification,
    MultiLabelOutput,
)

__all__ = ["LabelQueryConfig", "LabelQueryForMultiLabelClassification", "MultiLabelOutput"]
