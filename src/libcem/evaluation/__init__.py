"""Evaluating generated images against a labelled data source: classifier adherence and feature FID."""

from libcem.evaluation.classifier import Classifier, load_or_train_classifier
from libcem.evaluation.fid import frechet_distance
from libcem.evaluation.report import evaluate_prior, eval_labels, format_report

__all__ = ["Classifier", "load_or_train_classifier", "frechet_distance", "evaluate_prior", "eval_labels", "format_report"]
