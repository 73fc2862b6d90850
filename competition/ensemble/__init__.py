"""Ensembles: soft voting of trained runs' stored probabilities (weights fitted out of fold), or hard voting
of submission CSVs.
"""

from competition.core.lazy import public_face

# public name -> its module, imported on first use (core/lazy.py)
__getattr__, __dir__, __all__ = public_face(
    __name__,
    {
        ".members": ("Member", "read_oof"),
        ".postfit": ("fit_post", "run_post"),
        ".select": ("select_members",),
        ".soft": ("ensemble_runs",),
        ".vote": ("vote_csvs",),
    },
)
