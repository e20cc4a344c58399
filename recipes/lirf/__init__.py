"""LIRF, Learning with Recoverable Forgetting (knowledge deposit and withdrawal). Declares the method (see
`hf_methods.registry`)."""

from hf_methods.registry import register_method

register_method(
    "LIRF",
    command="lirf",
    recipe="hf_methods.recipes.lirf.pipeline",
    summary="LIRF on digits: deposit 3 of 10 classes (a target network that forgets them + a deposit module), "
    "withdraw (both recover modes) vs random-label fine-tuning -> Pre Acc, Dep Acc, F, H-mean, Avg Acc over seeds",
    citation="""@inproceedings{ye2022lirf,
  title     = {Learning with Recoverable Forgetting},
  author    = {Ye, Jingwen and Fu, Yifang and Song, Jie and Yang, Xingyi and Liu, Songhua and Jin, Xin and
               Song, Mingli and Wang, Xinchao},
  booktitle = {European Conference on Computer Vision (ECCV)},
  year      = {2022},
  note      = {arXiv:2207.08224}
}""",
    push="hf_methods.recipes.lirf.pipeline:push_lirf_run",
)
