"""Learngene Pool: small distilled instances stitched into a pool of variable-sized networks. Declares the method (see
`hf_methods.registry`)."""

from hf_methods.registry import register_method

register_method(
    "Learngene Pool",
    command="pool",
    recipe="hf_methods.recipes.learngene_pool.pipeline",
    summary="Learngene Pool end to end: teacher -> instances -> stitched pool -> every network scored",
    push="hf_methods.recipes.learngene_pool.pipeline:push_pool_run",
    citation="""@inproceedings{shi2024learngenepool,
  title     = {Building Variable-sized Models via Learngene Pool},
  author    = {Shi, Boyu and Xia, Shiyu and Yang, Xu and Chen, Haokun and Kou, Zhiqiang and Geng, Xin},
  booktitle = {Proceedings of the AAAI Conference on Artificial Intelligence}, year = {2024}
}""",
)
