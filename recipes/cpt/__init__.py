"""Consistent Proxy Tuning (CPT) of a black-box model. Declares the method (see `hf_methods.registry`)."""

from hf_methods.registry import register_method

CITATION = """@article{he2024cpt,
  title   = {CPT: Consistent Proxy Tuning for Black-box Optimization},
  author  = {He, Yuanyang and Huang, Zitong and Xu, Xinxing and Goh, Rick Siow Mong and Khan, Salman and Zuo, Wangmeng
             and Liu, Yong and Feng, Chun-Mei},
  journal = {arXiv preprint arXiv:2407.01155}, year = {2024}
}
@inproceedings{liu2024proxytuning,
  title     = {Tuning Language Models by Proxy},
  author    = {Liu, Alisa and Han, Xiaochuang and Wang, Yizhong and Tsvetkov, Yulia and Choi, Yejin and Smith, Noah A.},
  booktitle = {Conference on Language Modeling (COLM)}, year = {2024}
}"""


register_method(
    "CPT",
    command="cpt",
    recipe="hf_methods.recipes.cpt.pipeline",
    summary="Consistent Proxy Tuning: large + small GPT-2 -> proxy tuned with CPT vs plain Proxy-tuning -> report",
    push="hf_methods.recipes.cpt.pipeline:push_cpt_run",
    citation=CITATION,
)
