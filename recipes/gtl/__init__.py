"""Genetic Transfer Learning (GTL): a learngene evolved in a population of CNNs. Declares the method (see
`hf_methods.registry`)."""

from hf_methods.registry import register_method

register_method(
    "GTL",
    command="gtl",
    recipe="hf_methods.recipes.gtl.pipeline",
    summary="GTL end to end: evolve a learngene in a population of CNNs -> descendants on held-out classes vs scratch "
    "vs random gene -> report",
    push="hf_methods.recipes.gtl.pipeline:push_gtl_run",
    citation="""@article{feng2024gtl,
  title   = {Transferring Core Knowledge via Learngenes},
  author  = {Feng, Fu and Wang, Jing and Geng, Xin},
  journal = {arXiv preprint arXiv:2401.08139}, year = {2024}
}""",
)
