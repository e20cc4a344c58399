"""Trainers of hf_methods: `transformers.Trainer` subclasses with their `TrainingArguments` configs."""

from .cpt_config import ConsistentProxyTuningConfig
from .cpt_trainer import CachedLogitsCollator, ConsistentProxyTuningTrainer, cache_logits, proxy_tuning_loss
from .distillation_config import DistillationConfig
from .distillation_trainer import DistillationTrainer, distillation_loss, soft_target_loss
from .dpc_config import DPCConfig
from .dpc_losses import calibrated_softmax, evidential_loss, fit_clean_posterior, large_margin_scores
from .dpc_trainer import DPCLiteTrainer, DPCTrainer, IndexedDataset, sharpen
from .frozen_models import FrozenModelsTrainer, FrozenTeacherTrainer, StudentSideModule
from .frozen_models_config import FrozenModelsConfig, FrozenTeacherConfig
from .gtl_config import GTLEvolutionConfig
from .gtl_evolution import GTLEvolution, TaskSampler, tournament_selection
from .haba_config import HaBaDistillerConfig
from .haba_distiller import DistilledImages, HaBaDistiller, train_expert_trajectories
from .imwa_config import IMWAConfig
from .imwa_trainer import IMWATrainer, average_state_dicts
from .knowledge_factor_config import KnowledgeFactorTrainingConfig
from .knowledge_factor_losses import BatchInfoMinLoss, InfoMaxLoss, smoothed_cross_entropy, split_task_logits
from .knowledge_factor_trainer import KnowledgeFactorTrainer, MultiTaskDistillationTrainer
from .layermatch_config import LayerMatchConfig
from .layermatch_trainer import LayerMatchTrainer, SemiSupervisedDataset, WeakStrongCollator
from .ldl_losses import (
    check_label_distributions,
    compute_ldl_metrics,
    label_distribution_kl,
    ldl_metrics,
    pairwise_ranking_loss,
)
from .lirf_config import LIRFTrainingConfig
from .lirf_trainer import LIRFTrainer, check_deposit_labels, deposit_subset, lirf_loss
from .multilabel_kd_config import MultiLabelKDConfig
from .multilabel_kd_trainer import (
    MultiLabelKDTrainer,
    huber_distance,
    l2d_loss,
    labelwise_embedding_distillation,
    multilabel_logit_distillation,
)
from .optimum_shifting import OptimumShiftingCallback, hutchinson_trace, optimum_shift_
from .pool_distillation_config import PoolDistillationConfig
from .pool_distillation_trainer import (
    LearngenePoolDistillationTrainer,
    load_feature_projectors,
    matched_layers,
    pool_distillation_loss,
)
from .rankmatch_config import RankMatchConfig
from .rankmatch_trainer import RankMatchTrainer
from .rdd_config import RDDConfig
from .rdd_trainer import (
    RDDTrainer,
    difficulty_weights,
    ohem_hard_mask,
    pixel_kd_loss,
    rdd_task_loss,
    segmentation_forward,
)
from .repfusion_config import RepFusionTrainingConfig
from .repfusion_trainer import EntropyDecayCallback, RepFusionTrainer
from .resumable import ResumableTrainer
from .spectral_diffusion_config import SpectralDiffusionConfig
from .spectral_diffusion_trainer import SpectralDiffusionTrainer

__all__ = [
    "EntropyDecayCallback",
    "RepFusionTrainer",
    "RepFusionTrainingConfig",
    "SpectralDiffusionConfig",
    "SpectralDiffusionTrainer",
    "DistilledImages",
    "HaBaDistiller",
    "HaBaDistillerConfig",
    "train_expert_trajectories",
    "BatchInfoMinLoss",
    "InfoMaxLoss",
    "KnowledgeFactorTrainer",
    "KnowledgeFactorTrainingConfig",
    "MultiTaskDistillationTrainer",
    "smoothed_cross_entropy",
    "soft_target_loss",
    "split_task_logits",
    "LIRFTrainer",
    "LIRFTrainingConfig",
    "check_deposit_labels",
    "deposit_subset",
    "lirf_loss",
    "RankMatchConfig",
    "RankMatchTrainer",
    "check_label_distributions",
    "compute_ldl_metrics",
    "label_distribution_kl",
    "ldl_metrics",
    "pairwise_ranking_loss",
    "DPCConfig",
    "DPCLiteTrainer",
    "DPCTrainer",
    "sharpen",
    "IndexedDataset",
    "calibrated_softmax",
    "evidential_loss",
    "fit_clean_posterior",
    "large_margin_scores",
    "LayerMatchConfig",
    "LayerMatchTrainer",
    "SemiSupervisedDataset",
    "WeakStrongCollator",
    "IMWAConfig",
    "IMWATrainer",
    "average_state_dicts",
    "OptimumShiftingCallback",
    "hutchinson_trace",
    "optimum_shift_",
    "ResumableTrainer",
    "GTLEvolution",
    "GTLEvolutionConfig",
    "TaskSampler",
    "tournament_selection",
    "RDDConfig",
    "RDDTrainer",
    "difficulty_weights",
    "ohem_hard_mask",
    "pixel_kd_loss",
    "rdd_task_loss",
    "segmentation_forward",
    "CachedLogitsCollator",
    "ConsistentProxyTuningConfig",
    "ConsistentProxyTuningTrainer",
    "cache_logits",
    "proxy_tuning_loss",
    "DistillationConfig",
    "DistillationTrainer",
    "FrozenModelsConfig",
    "FrozenModelsTrainer",
    "FrozenTeacherConfig",
    "FrozenTeacherTrainer",
    "StudentSideModule",
    "LearngenePoolDistillationTrainer",
    "MultiLabelKDConfig",
    "MultiLabelKDTrainer",
    "PoolDistillationConfig",
    "distillation_loss",
    "huber_distance",
    "l2d_loss",
    "labelwise_embedding_distillation",
    "load_feature_projectors",
    "matched_layers",
    "multilabel_logit_distillation",
    "pool_distillation_loss",
]
