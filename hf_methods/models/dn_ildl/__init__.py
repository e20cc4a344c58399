"""DN-ILDL (inaccurate label distribution learning with dependent noise): the ADMM solver. In progress (issue 17):
the `PreTrainedModel` wrapper that saves and pushes a fitted solver is not built yet."""

from .solver import DNILDL, knn_laplacian, row_shrink, singular_value_threshold

__all__ = ["DNILDL", "knn_laplacian", "row_shrink", "singular_value_threshold"]
