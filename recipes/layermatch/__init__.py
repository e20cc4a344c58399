"""LayerMatch (Grad-ReLU + Avg-Clustering on FixMatch). Declares the method (see `hf_methods.registry`)."""

from hf_methods.registry import register_method

register_method(
    "LayerMatch",
    command="layermatch",
    recipe="hf_methods.recipes.layermatch.pipeline",
    summary="LayerMatch on digits with few labels: supervised only vs FixMatch vs LayerMatch -> accuracy over seeds",
    citation="""@article{layermatch2024,
  title   = {LayerMatch: Do Pseudo-labels Benefit All Layers?},
  journal = {arXiv preprint arXiv:2406.14207}, year = {2024}
}""",
    push="hf_methods.recipes.layermatch.pipeline:push_layermatch_run",
)
