"""Relative Difficulty Distillation (RDD) for semantic segmentation: the main job and its embedded recipe. Declares
the method (see `hf_methods.registry`)."""

from hf_methods.registry import register_method

register_method(
    "RDD",
    command="rdd",
    recipe="hf_methods.recipes.rdd.pipeline",
    summary="RDD segmentation distillation: digit scenes -> UperNet teacher -> student alone / + KD / + RDD -> mIoU "
    "report",
    push="hf_methods.recipes.rdd.pipeline:push_rdd_run",
)
