"""RankMatch, semi-supervised label distribution learning. Declares the method (see `hf_methods.registry`)."""

from hf_methods.registry import register_method

register_method(
    "RankMatch",
    command="rankmatch",
    recipe="hf_methods.recipes.rankmatch.pipeline",
    summary="RankMatch on blended digits (label distributions) with few labels: supervised only vs KL consistency vs "
    "RankMatch -> six LDL metrics over seeds",
    citation="""@article{rankmatch2023,
  title   = {RankMatch: semi-supervised label distribution learning with pairwise relevance ranking},
  journal = {arXiv preprint arXiv:2312.06343}, year = {2023},
  note    = {title as described, see the arXiv entry for the exact one}
}""",
    push="hf_methods.recipes.rankmatch.pipeline:push_rankmatch_run",
)
