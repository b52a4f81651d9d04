"""Evaluating generated images against a labelled data source: classifier adherence and feature FID."""

from libcem.generative.evaluation.classifier import Classifier, load_or_train_classifier
from libcem.generative.evaluation.fid import frechet_distance
from libcem.generative.evaluation.report import (
    eval_labels,
    evaluate_prior,
    format_report,
)

__all__ = ["Classifier", "load_or_train_classifier", "frechet_distance", "evaluate_prior", "eval_labels", "format_report"]
