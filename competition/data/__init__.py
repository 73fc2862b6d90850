"""Data: a dataset root in the competition layout, its COCO files, class table, cached masks, cached decoded
images, folds, the training dataset and transforms (uint8, normalised per batch on the device), and the
synthetic sample dataset.
"""

from competition.data.classes import ClassTable, build_class_table
from competition.data.coco import CocoFile, ImageInfo, load_coco, read_image
from competition.data.colour import ColourJitter, normalise
from competition.data.dataset import MEAN, STD, SegmentationDataset, eval_transform, train_transform
from competition.data.folds import Folds, make_folds
from competition.data.images import DecodeEachTime, ImageStore, image_store
from competition.data.info import describe_dataset
from competition.data.masks import MaskStore, cache_root, mask_store
from competition.data.pseudo_set import PseudoLabels, pseudo_dir
from competition.data.rare import CopyPaste, balanced_weights
from competition.data.root import SPLITS, DataRoot, is_sample, resolve_data_root, sample_root
from competition.data.sample import write_sample_dataset

__all__ = [
    "SPLITS",
    "DataRoot",
    "is_sample",
    "resolve_data_root",
    "sample_root",
    "ClassTable",
    "build_class_table",
    "CocoFile",
    "ImageInfo",
    "load_coco",
    "read_image",
    "MaskStore",
    "cache_root",
    "mask_store",
    "DecodeEachTime",
    "ImageStore",
    "image_store",
    "ColourJitter",
    "normalise",
    "MEAN",
    "STD",
    "SegmentationDataset",
    "eval_transform",
    "train_transform",
    "Folds",
    "make_folds",
    "PseudoLabels",
    "pseudo_dir",
    "CopyPaste",
    "balanced_weights",
    "describe_dataset",
    "write_sample_dataset",
]
