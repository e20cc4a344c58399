"""Stage-wise Weight Sharing (SWS): a learngene of one layer per stage, expanded into any depth. Declares the method
(see `hf_methods.registry`)."""

from hf_methods.registry import register_method

register_method(
    "SWS",
    command="sws",
    recipe="hf_methods.recipes.sws.pipeline",
    summary="SWS end to end: teacher -> stage-wise learngene -> descendants -> report",
    push="hf_methods.recipes.learngene_pipeline:push_learngene_run",
    citation="""@inproceedings{xia2024sws,
  title     = {Exploring Learngene via Stage-wise Weight Sharing for Initializing Variable-sized Models},
  author    = {Xia, Shi-Yu and Zhu, Wenxuan and Yang, Xu and Geng, Xin},
  booktitle = {Proceedings of the International Joint Conference on Artificial Intelligence (IJCAI)}, year = {2024}
}""",
)
