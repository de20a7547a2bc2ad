"""Evaluation: IQA metrics (SRCC, KRCC, PLCC, logistic PLCC, RMSE), summaries over splits, plots."""

from .metrics import METRICS, MetricInfo, compute_metrics, fit_logistic, logistic4, summarize
from .plots import plot_scatter

__all__ = ["METRICS", "MetricInfo", "compute_metrics", "fit_logistic", "logistic4", "summarize", "plot_scatter"]
