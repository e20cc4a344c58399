"""IMWA, Iterative Model Weight Averaging. Declares the method (see `hf_methods.registry`)."""

from hf_methods.registry import register_method

register_method(
    "IMWA",
    command="imwa",
    recipe="hf_methods.recipes.imwa.pipeline",
    summary="IMWA on long-tailed digits: one model vs vanilla weight averaging vs iterative averaging -> balanced "
    "accuracy report over seeds",
    citation="""@article{huang2024imwa,
  title   = {IMWA: Iterative Model Weight Averaging Benefits Class-Imbalanced Learning Tasks},
  author  = {Huang, Zitong and Chen, Ze and Dong, Bowen and Liang, Chaoqi and Zhou, Erjin and Zuo, Wangmeng},
  journal = {arXiv preprint arXiv:2404.16331}, year = {2024}
}""",
    push="hf_methods.recipes.imwa.pipeline:push_imwa_run",
)
