"""Transformer as Linear Expansion of Learngene (TLEG): a learngene of two layers expanded linearly into any depth.
Declares the method (see `hf_methods.registry`)."""

from hf_methods.registry import register_method

register_method(
    "TLEG",
    command="tleg",
    recipe="hf_methods.recipes.tleg.pipeline",
    summary="TLEG end to end: teacher -> learngene -> descendants -> report",
    push="hf_methods.recipes.learngene_pipeline:push_learngene_run",
    citation="""@inproceedings{xia2024tleg,
  title     = {Transformer as Linear Expansion of Learngene},
  author    = {Xia, Shiyu and Zhang, Miaosen and Yang, Xu and Chen, Ruiming and Chen, Haokun and Geng, Xin},
  booktitle = {Proceedings of the AAAI Conference on Artificial Intelligence},
  volume    = {38}, number = {14}, pages = {16014--16022}, year = {2024}
}""",
)
