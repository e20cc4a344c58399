"""L2D multi-label distillation. Declares the method (see `hf_methods.registry`)."""

from hf_methods.registry import register_method

register_method(
    "L2D",
    command="l2d",
    recipe="hf_methods.recipes.l2d.pipeline",
    summary="L2D multi-label distillation: multi-digit images -> teacher -> student with BCE / softmax KD / L2D -> "
    "mAP report",
    citation="""@inproceedings{yang2023l2d,
  title     = {Multi-Label Knowledge Distillation},
  author    = {Yang, Penghui and Xie, Ming-Kun and Zong, Chen-Chen and Feng, Lei and Niu, Gang and Sugiyama, Masashi
               and Huang, Sheng-Jun},
  booktitle = {Proceedings of the IEEE/CVF International Conference on Computer Vision (ICCV)},
  pages     = {17271--17280}, year = {2023}
}""",
    push="hf_methods.recipes.l2d.pipeline:push_l2d_run",
)
