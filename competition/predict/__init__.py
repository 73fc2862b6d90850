"""Prediction: a model's softmax probabilities with test-time augmentation, stored probability files (uint8),
their weighted averages and argmax, and `predict RUN` (every fold of a run on test.json -> probabilities and
a submission), and `export RUN` (its folds as one ONNX or TorchScript graph).
"""

from competition.core.tta import View, parse_tta
from competition.predict.blend import BLOCK, blended_masks, coefficients, mix
from competition.predict.crf import GRID as CRF_GRID
from competition.predict.crf import INSTALL as CRF_INSTALL
from competition.predict.crf import CrfParams, grid_images
from competition.predict.crf import available as crf_available
from competition.predict.crf import confusions as crf_confusions
from competition.predict.crf import parse_params as parse_crf
from competition.predict.crf import processes as crf_processes
from competition.predict.decide import EPS, FILE, Decision, cleanup, read_decision, write_decision
from competition.predict.export import FORMATS, FoldMean, export_run
from competition.predict.inference import (
    amp_dtype,
    autocast,
    compiled,
    describe_views,
    loader_workers,
    pick_device,
    predict_probs,
)
from competition.predict.probs import LEVELS, ProbsWriter, StoredProbs, argmax, quantise, read_probs, write_probs
from competition.predict.pseudo_label import pseudo_label
from competition.predict.run import fold_checkpoints, load_fold_model, predict_run, run_classes

__all__ = [
    "BLOCK",
    "EPS",
    "FILE",
    "Decision",
    "CRF_GRID",
    "CRF_INSTALL",
    "CrfParams",
    "crf_available",
    "crf_confusions",
    "parse_crf",
    "crf_processes",
    "grid_images",
    "cleanup",
    "read_decision",
    "write_decision",
    "argmax",
    "blended_masks",
    "coefficients",
    "mix",
    "LEVELS",
    "StoredProbs",
    "quantise",
    "pseudo_label",
    "View",
    "amp_dtype",
    "autocast",
    "compiled",
    "describe_views",
    "parse_tta",
    "loader_workers",
    "pick_device",
    "predict_probs",
    "ProbsWriter",
    "read_probs",
    "write_probs",
    "fold_checkpoints",
    "load_fold_model",
    "predict_run",
    "run_classes",
    "FORMATS",
    "FoldMean",
    "export_run",
]
