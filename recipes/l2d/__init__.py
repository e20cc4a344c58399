"""L2D multi-label distillation. Declares the method (see `hf_methods.registry`)."""

from hf_methods.registry import register_method

register_method(
    "L2D",
    command="l2d",
    recipe="hf_methods.recipes.l2d.pipeline",
    summary="L2D multi-label distillation: multi-digit images -> teacher -> student with BCE / softmax KD / L2D -> "
            "mAP report",
    push="hf_methods.recipes.l2d.pipeline:push_l2d_run",
)
