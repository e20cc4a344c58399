"""Config of an SWS learngene (Xia et al., "Exploring Learngene via Stage-wise Weight Sharing for Initializing
Variable-sized Models", IJCAI 2024, arXiv 2404.16897)."""

from ...engine.learngene import MAX_NUM_LAYERS, LearngeneConfig


class SWSConfig(LearngeneConfig):
    r"""SWS learngene: the auxiliary network of `sum(stage_sizes)` layers is cut into stages, and every layer of
    stage s runs the same layer of weights theta_s. The learngene stores one layer per stage.

    Args:
        stage_sizes: layers per stage (n_1 .. n_S) of the auxiliary network, a list adding up to at most
            `MAX_NUM_LAYERS` (1024). Default (3, 3, 4, 3, 3): the released 16-layer configuration
            (`aux_deit_*_L16_33433`).
        use_published_presets: (bool) expand with the paper's published `layers_source` where one exists for the
            depth (D=12 with stages 3,3,4,3,3: 0,0,0,1,1,1,2,2,3,3,4,4) instead of the default rule.
        aux_num_layers: must equal `sum(stage_sizes)`; left out, it is derived from them.
        base_model_class, base_config: see `LearngeneConfig`.
    """

    model_type = "hf_methods_sws"
    stage_sizes: list[int] | None = None
    use_published_presets: bool = True
    aux_num_layers: int | None = None

    def validate_learngene(self):
        if self.stage_sizes is None:
            self.stage_sizes = [3, 3, 4, 3, 3]
        sizes = self.stage_sizes
        if (
            not isinstance(sizes, (list, tuple))
            or not sizes
            or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in sizes)
        ):
            raise ValueError(f"stage_sizes must be a non-empty list of positive integers, got {sizes!r}.")
        self.stage_sizes = list(sizes)
        if sum(sizes) > MAX_NUM_LAYERS:
            raise ValueError(
                f"stage_sizes={list(sizes)} add up to {sum(sizes)} layers, more than MAX_NUM_LAYERS={MAX_NUM_LAYERS}; "
                "give stages that add up to at most that depth."
            )
        if not isinstance(self.use_published_presets, bool):
            raise ValueError(
                f"use_published_presets must be True or False, got {self.use_published_presets!r}; pass a bool "
                "(a string such as 'no' would count as true)."
            )
        if self.aux_num_layers is None:
            self.aux_num_layers = sum(sizes)
        if self.aux_num_layers != sum(sizes):
            raise ValueError(
                f"aux_num_layers={self.aux_num_layers} but stage_sizes={sizes} add up to {sum(sizes)}; "
                "leave aux_num_layers out (it is derived) or make them agree."
            )
        super().validate_learngene()
