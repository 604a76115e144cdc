"""Evaluation as the paper does it, plus the uncertainty it lacked.

``metrics`` (the six metrics, Youden's threshold, calibration), ``bootstrap`` (vectorised
stratified bootstrap), ``delong`` (paired AUROC test), ``predictions`` (the predictions
contract) and ``evaluate`` (everything for a set of models, written as CSVs).
"""
