"""Analyses of the QuCNN layer that answer questions about the paper (``qucnn analyze ...``).

Public API:
    plateau_study          gradient and fidelity variance over random angles and MNIST patches
    plot_plateau           its figure (needs matplotlib: ``pip install qucnn[plots]``)
    measure_cell           exact F and dF/dtheta (first, last parameter) for a batch of samples
    sample_patches, sample_angles, kernel_for, cell_generator
    variance_with_stderr, fit_decay
    haar_fidelity_mean, haar_fidelity_variance, haar_grad_variance_first, haar_grad_variance_last,
    shot_noise_variance    closed-form references

Example:
    >>> from qucnn.analysis import haar_fidelity_variance
    >>> haar_fidelity_variance(2)
    0.08333333333333333
"""

from .plateau import (
                      PARAMS,
                      SHOT_BUDGETS,
                      Cell,
                      cell_generator,
                      fit_decay,
                      haar_fidelity_mean,
                      haar_fidelity_variance,
                      haar_grad_variance_first,
                      haar_grad_variance_last,
                      kernel_for,
                      last_generator_overlap,
                      measure_cell,
                      parse_int_list,
                      plateau_study,
                      sample_angles,
                      sample_patches,
                      shot_noise_variance,
                      variance_with_stderr,
)
from .plateau_plot import plot_plateau

__all__ = ["PARAMS", "SHOT_BUDGETS", "Cell", "cell_generator", "fit_decay", "haar_fidelity_mean",
           "haar_fidelity_variance", "haar_grad_variance_first", "haar_grad_variance_last", "kernel_for",
           "last_generator_overlap", "measure_cell", "parse_int_list", "plateau_study", "plot_plateau",
           "sample_angles", "sample_patches", "shot_noise_variance", "variance_with_stderr"]
