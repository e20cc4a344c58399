"""DN-ILDL, inaccurate label distribution learning with dependent noise. Declares the method (see
`hf_methods.registry`)."""

from hf_methods.registry import register_method

register_method(
    "DN-ILDL",
    command="dn-ildl",
    recipe="hf_methods.recipes.dn_ildl.pipeline",
    summary="DN-ILDL on backbone features of blended digits with noisy label distributions: least squares vs DN-ILDL "
    "vs the noiseless fit -> six LDL metrics over seeds",
    citation="""@article{kou2024dnildl,
  title   = {Inaccurate Label Distribution Learning with Dependence Noise},
  author  = {Kou, Zhiqiang and Wang, Jing and Jia, Yuheng and Geng, Xin},
  journal = {arXiv preprint arXiv:2405.16474}, year = {2024},
  note    = {title as described, see the arXiv entry for the exact one}
}""",
    push="hf_methods.recipes.dn_ildl.pipeline:push_dn_ildl_run",
)
