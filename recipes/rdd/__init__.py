"""Relative Difficulty Distillation (RDD) for semantic segmentation: the main job and its embedded recipe."""
