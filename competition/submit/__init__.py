"""Submissions: the exact metric, the CSV format (write, parse), the rules' checker, the scorer, and publishing
`submissions/<name>.csv`, and the leaderboard scores submissions got (lb).
"""

from competition.submit.check import check_submission, iter_submission, read_submission
from competition.submit.encoding import HEADER, encode_mask, parse_prediction, write_submission
from competition.submit.lb_scores import LB_FILE, find_origin, read_lb, record_lb, scored_runs
from competition.submit.metric import (
    MeanIoU,
    Scores,
    confusion_matrix,
    image_values,
    iou_from_confusion,
    leave_one_out,
    per_image_confusion,
    ranking_miou,
    ranking_value,
)
from competition.submit.save import SUBMISSIONS, check_name, save_submission, submission_values
from competition.submit.score import score_submission

__all__ = [
    "check_submission",
    "iter_submission",
    "read_submission",
    "HEADER",
    "encode_mask",
    "parse_prediction",
    "write_submission",
    "MeanIoU",
    "Scores",
    "confusion_matrix",
    "image_values",
    "iou_from_confusion",
    "leave_one_out",
    "per_image_confusion",
    "ranking_miou",
    "ranking_value",
    "LB_FILE",
    "find_origin",
    "read_lb",
    "record_lb",
    "scored_runs",
    "SUBMISSIONS",
    "check_name",
    "save_submission",
    "submission_values",
    "score_submission",
]
