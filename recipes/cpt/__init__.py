"""Consistent Proxy Tuning (CPT) of a black-box model. Declares the method (see `hf_methods.registry`)."""

from hf_methods.models.proxy_tuned.modeling_proxy_tuned import CITATION
from hf_methods.registry import register_method

register_method(
    "CPT",
    command="cpt",
    recipe="hf_methods.recipes.cpt.pipeline",
    summary="Consistent Proxy Tuning: large + small GPT-2 -> proxy tuned with CPT vs plain Proxy-tuning -> report",
    push="hf_methods.recipes.cpt.pipeline:push_cpt_run",
    citation=CITATION,
)
