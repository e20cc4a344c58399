"""DeRy (Deep Model Reassembly): node features and their similarity (linear CKA, RBF-CKA, LR), the zoo partition into
K functionally equivalent blocks, NASWOT and the budgeted reassembly search, and the reassembled model itself
(`DeRyConfig`, `DeRyModel`, `DeRyForImageClassification`)."""

from ...registry import register_models
from .configuration_dery import DeRyConfig
from .modeling_dery import (
    DeRyForImageClassification,
    DeRyModel,
    DeRyPreTrainedModel,
    reassembly_num_parameters,
)
from .partition import Block, BlockSimilarity, ZooPartition, partition_zoo
from .search import Reassembly, naswot_score, search_reassembly
from .similarity import (
    SIMILARITY_MEASURES,
    block_nodes,
    collect_node_features,
    linear_cka,
    lr_similarity,
    rbf_cka,
    similarity,
    similarity_matrix,
    source_nodes,
    zoo_similarities,
)

__all__ = [
    "SIMILARITY_MEASURES",
    "Block",
    "BlockSimilarity",
    "DeRyConfig",
    "DeRyForImageClassification",
    "DeRyModel",
    "DeRyPreTrainedModel",
    "Reassembly",
    "ZooPartition",
    "block_nodes",
    "collect_node_features",
    "linear_cka",
    "lr_similarity",
    "naswot_score",
    "partition_zoo",
    "rbf_cka",
    "reassembly_num_parameters",
    "search_reassembly",
    "similarity",
    "similarity_matrix",
    "source_nodes",
    "zoo_similarities",
]

register_models(DeRyConfig, DeRyModel, auto=("AutoModel",))
register_models(DeRyConfig, DeRyForImageClassification, auto=("AutoModelForImageClassification",))
