"""HaBa (dataset factorization into hallucinators and bases): the factorized synthetic set as a model that generates a
training set, exports it as a `datasets.Dataset` and pushes it as a Hub dataset repo. The distillation loop that
learns it is `hf_methods.trainers.haba_distiller.HaBaDistiller`."""

from ...registry import register_models
from .configuration_haba import HaBaConfig
from .modeling_haba import HaBaDataset, HaBaOutput, HaBaTorchDataset, Hallucinator

__all__ = ["HaBaConfig", "HaBaDataset", "HaBaOutput", "HaBaTorchDataset", "Hallucinator"]

register_models(HaBaConfig, HaBaDataset)
