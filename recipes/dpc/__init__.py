"""DPC, Dirichlet-based Prediction Calibration for learning with noisy labels. Declares the method (see
`hf_methods.registry`)."""

from hf_methods.registry import register_method

register_method(
    "DPC",
    command="dpc",
    recipe="hf_methods.recipes.dpc.pipeline",
    summary="DPC on digits with noisy labels: cross-entropy vs small-loss selection vs DPC -> accuracy and ROC-AUC "
    "over seeds",
    citation="""@inproceedings{zong2024dpc,
  title     = {Dirichlet-Based Prediction Calibration for Learning with Noisy Labels},
  author    = {Zong, Chen-Chen and Cao, Ye-Wen and Xie, Ming-Kun and Huang, Sheng-Jun},
  booktitle = {Proceedings of the AAAI Conference on Artificial Intelligence}, year = {2024}
}""",
    push="hf_methods.recipes.dpc.pipeline:push_dpc_run",
)
