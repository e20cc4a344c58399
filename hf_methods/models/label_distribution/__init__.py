from ...registry import register_models
from .configuration_label_distribution import LabelDistributionConfig
from .modeling_label_distribution import LabelDistributionModel, LabelDistributionOutput

__all__ = ["LabelDistributionConfig", "LabelDistributionModel", "LabelDistributionOutput"]

register_models(
    LabelDistributionConfig,
    LabelDistributionModel,
    auto=("AutoModel", "AutoModelForImageClassification", "AutoModelForSequenceClassification"),
)
