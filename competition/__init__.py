"""Harness for COCO-format semantic-segmentation competitions.

Data flows one way: data (coco, masks, dataset) -> folds -> train -> search -> predict -> ensemble -> submission.
"""

from competition.core import imports

imports.install()  # before anything imports timm (core/imports.py says why)
