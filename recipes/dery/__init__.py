"""DeRy, Deep Model Reassembly. Declares the method (see `hf_methods.registry`)."""

from hf_methods.registry import register_method

register_method(
    "DeRy",
    command="dery",
    recipe="hf_methods.recipes.dery.pipeline",
    summary="DeRy on digits: a zoo of 6 VGG / ResNet-12 / ViT models, CKA, partition into K blocks, reassembly under "
    "two parameter budgets (NASWOT) -> fine-tuned vs the same network from scratch over seeds",
    citation="""@inproceedings{yang2022dery,
  title     = {Deep Model Reassembly},
  author    = {Yang, Xingyi and Zhou, Daquan and Liu, Songhua and Ye, Jingwen and Wang, Xinchao},
  booktitle = {Advances in Neural Information Processing Systems}, year = {2022}
}""",
    push="hf_methods.recipes.dery.pipeline:push_dery_run",
)
