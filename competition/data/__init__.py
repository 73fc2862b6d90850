"""Data: a dataset root in the competition layout, its COCO files, class table, cached masks, cached decoded
images, folds, the training dataset and transforms (uint8, normalised per batch on the device), and the
synthetic sample dataset.
"""

from competition.core.lazy import public_face

# public name -> its module, imported on first use (core/lazy.py)
__getattr__, __dir__, __all__ = public_face(
    __name__,
    {
        ".classes": ("ClassTable", "build_class_table"),
        ".coco": ("CocoFile", "ImageInfo", "load_coco", "read_image"),
        ".colour": ("ColourJitter", "normalise"),
        ".dataset": ("MEAN", "STD", "SegmentationDataset", "eval_transform", "train_transform"),
        ".folds": ("Folds", "make_folds"),
        ".images": ("DecodeEachTime", "ImageStore", "image_store"),
        ".info": ("describe_dataset",),
        ".masks": ("MaskStore", "cache_root", "mask_store"),
        ".pseudo_set": ("PseudoLabels", "pseudo_dir"),
        ".rare": ("CopyPaste", "balanced_weights"),
        ".root": ("SPLITS", "DataRoot", "is_sample", "resolve_data_root", "sample_root"),
        ".sample": ("write_sample_dataset",),
    },
)
