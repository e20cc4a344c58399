"""Stochastic Optimum Shifting (SOS). Declares the method (see `hf_methods.registry`)."""

from hf_methods.registry import register_method

register_method(
    "Optimum Shifting",
    command="sos",
    recipe="hf_methods.recipes.optimum_shifting.pipeline",
    summary="Stochastic Optimum Shifting on digits: plain training vs SOS at each epoch end -> accuracy and Hessian "
    "trace over seeds",
    citation="""@inproceedings{optimumshifting2025,
  title     = {Optimum Shifting to Stabilize Training and Improve Generalization of Deep Neural Networks},
  booktitle = {Proceedings of the AAAI Conference on Artificial Intelligence},
  note      = {arXiv:2405.14111}, year = {2025}
}""",
    push="hf_methods.recipes.optimum_shifting.pipeline:push_sos_run",
)
