"""Per-document metrics and bootstrap standard errors for corpus-level scores."""

from lmm_lightning.metrics.bootstrap import (
    Estimate,
    bootstrap,
    bootstrap_mean,
    bootstrap_mean_statistics,
    bootstrap_statistics,
    mean_stderr,
    percentile_ci,
    resample_indices,
)
from lmm_lightning.metrics.sample import acc, acc_norm, exact_match

__all__ = [
    "Estimate",
    "acc",
    "acc_norm",
    "bootstrap",
    "bootstrap_mean",
    "bootstrap_mean_statistics",
    "bootstrap_statistics",
    "exact_match",
    "mean_stderr",
    "percentile_ci",
    "resample_indices",
]
