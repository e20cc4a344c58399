"""Knowledge Factorization (KF): a multi-task teacher factorized into a common-knowledge network and one
task-specific network per task. Declares the method (see `hf_methods.registry`)."""

from hf_methods.registry import register_method

register_method(
    "KF",
    command="kf",
    recipe="hf_methods.recipes.knowledge_factor.pipeline",
    summary="Knowledge Factorization on two-task digits (digit + rotation): multi-task teacher -> KF vs a same-size KD "
    "student vs from scratch -> accuracy per task and of each factor network over seeds",
    citation="""@inproceedings{yang2022factorizing,
  title     = {Factorizing Knowledge in Neural Networks},
  author    = {Yang, Xingyi and Ye, Jingwen and Wang, Xinchao},
  booktitle = {European Conference on Computer Vision (ECCV)}, year = {2022}
}""",
    push="hf_methods.recipes.knowledge_factor.pipeline:push_kf_run",
)
