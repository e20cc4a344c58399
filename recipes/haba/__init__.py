"""HaBa, dataset distillation via factorization into hallucinators and bases. Declares the method (see
`hf_methods.registry`)."""

from hf_methods.registry import register_method

register_method(
    "HaBa",
    command="haba",
    recipe="hf_methods.recipes.haba.pipeline",
    summary="HaBa on digits: bases + hallucinators distilled from expert trajectories at 1 and 10 bases per class vs "
    "random real images and plain trajectory matching (MTT) -> accuracy of a fresh ConvNet trained on each set",
    citation="""@inproceedings{liu2022haba,
  title     = {Dataset Distillation via Factorization},
  author    = {Liu, Songhua and Wang, Kai and Yang, Xingyi and Ye, Jingwen and Wang, Xinchao},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)}, year = {2022}
}""",
    push="hf_methods.recipes.haba.pipeline:push_haba_run",
)
