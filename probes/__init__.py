"""Probes on residual-stream activations: models, objectives, fitters, metrics with controls, files."""
from rsearch.probes.controls import length_control, shuffled_labels, with_controls
from rsearch.probes.data import ProbeData, column_stats
from rsearch.probes.fitters import FitConfig, fit_probe
from rsearch.probes.io import load_probe, save_probe
from rsearch.probes.metrics import auroc, evaluate, pairwise_accuracy, pearson, predict, spearman, wilson_interval
from rsearch.probes.models import KINDS, LinearProbe, MLPProbe, Probe, make_probe
from rsearch.probes.objectives import OBJECTIVES, PRIMARY_METRIC

__all__ = [
    "FitConfig", "KINDS", "LinearProbe", "MLPProbe", "OBJECTIVES", "PRIMARY_METRIC", "Probe", "ProbeData",
    "auroc", "column_stats", "evaluate", "fit_probe", "length_control", "load_probe", "make_probe",
    "pairwise_accuracy", "pearson", "predict", "save_probe", "shuffled_labels", "spearman", "with_controls",
    "wilson_interval",
]
