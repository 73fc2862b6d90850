"""Submissions: the exact metric, the CSV format (write, parse), the rules' checker, the scorer, and publishing
`submissions/<name>.csv`, and the leaderboard scores submissions got (lb).
"""

from competition.core.lazy import public_face

# public name -> its module, imported on first use (core/lazy.py)
__getattr__, __dir__, __all__ = public_face(
    __name__,
    {
        ".check": ("check_submission", "iter_submission", "read_submission"),
        ".encoding": ("HEADER", "encode_mask", "parse_prediction", "write_submission"),
        ".lb_scores": ("LB_FILE", "find_origin", "read_lb", "record_lb", "scored_runs"),
        ".metric": (
            "MeanIoU",
            "Scores",
            "confusion_matrix",
            "image_values",
            "iou_from_confusion",
            "leave_one_out",
            "per_image_confusion",
            "ranking_miou",
            "ranking_value",
        ),
        ".save": ("SUBMISSIONS", "check_name", "save_submission", "submission_values"),
        ".score": ("score_submission",),
    },
)
