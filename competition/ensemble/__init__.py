"""Ensembles: soft voting of trained runs' stored probabilities (weights fitted out of fold), or hard voting
of submission CSVs.
"""

from competition.ensemble.members import Member, read_oof
from competition.ensemble.postfit import fit_post, run_post
from competition.ensemble.select import select_members
from competition.ensemble.soft import ensemble_runs
from competition.ensemble.vote import vote_csvs

__all__ = [
    "Member",
    "read_oof",
    "fit_post",
    "run_post",
    "ensemble_runs",
    "select_members",
    "vote_csvs",
]
