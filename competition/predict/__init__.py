"""Prediction: a model's softmax probabilities with test-time augmentation, stored probability files (uint8),
their weighted averages and argmax, and `predict RUN` (every fold of a run on test.json -> probabilities and
a submission), and `export RUN` (its folds as one ONNX or TorchScript graph).
"""

from competition.core.lazy import public_face

# public name -> its module, imported on first use (core/lazy.py)
__getattr__, __dir__, __all__ = public_face(
    __name__,
    {
        "competition.core.tta": ("View", "parse_tta"),
        ".blend": ("BLOCK", "blended_masks", "coefficients", "mix"),
        ".crf": (
            "CRF_GRID=GRID",
            "CRF_INSTALL=INSTALL",
            "CrfParams",
            "grid_images",
            "crf_available=available",
            "crf_confusions=confusions",
            "parse_crf=parse_params",
            "crf_processes=processes",
        ),
        ".decide": ("EPS", "FILE", "Decision", "cleanup", "read_decision", "write_decision"),
        ".export": ("FORMATS", "FoldMean", "export_run"),
        ".inference": (
            "amp_dtype",
            "autocast",
            "compiled",
            "describe_views",
            "loader_workers",
            "pick_device",
            "predict_probs",
        ),
        ".probs": ("LEVELS", "ProbsWriter", "StoredProbs", "argmax", "quantise", "read_probs", "write_probs"),
        ".pseudo_labels": ("pseudo_label",),
        ".run": ("fold_checkpoints", "load_fold_model", "predict_run", "run_classes"),
    },
)
