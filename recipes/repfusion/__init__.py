"""RepFusion: distill a diffusion model's representation at RL-chosen timesteps. Declares the method (see
`hf_methods.registry`)."""

from hf_methods.registry import register_method

register_method(
    "RepFusion",
    command="repfusion",
    recipe="hf_methods.recipes.repfusion.pipeline",
    summary="RepFusion on digits: a DDPM teacher, then per seed a small VGG pre-trained on its features at "
    "policy-chosen timesteps (vs a fixed timestep, vs no pre-training), fine-tuned on a few labels -> accuracy",
    citation="""@inproceedings{yang2023repfusion,
  title     = {Diffusion Model as Representation Learner},
  author    = {Yang, Xingyi and Wang, Xinchao},
  booktitle = {Proceedings of the IEEE/CVF International Conference on Computer Vision (ICCV)},
  year      = {2023}
}""",
    push="hf_methods.recipes.repfusion.pipeline:push_repfusion_run",
)
