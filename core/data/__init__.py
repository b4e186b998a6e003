"""Datasets: readers for metadata.csv datasets (Waterbirds' format), CelebA-style attribute tables, the
Backgrounds Challenge, ImageFolder trees (with an attributes CSV) and caption files,
and the builder of the demo world (a mini-Waterbirds made from photos that ship in Debian packages).

    from core.data import open_dataset
    ds = open_dataset("path/to/waterbird_complete95_forest2water2")
    test = ds.split("test"); image = test.load_image(test.records[0])
"""
from core.data.demo import DemoWorldError, build_demo_world, demo_class_names
from core.data.description import (Attribute, attach_attributes, group_names_for, read_attribute_table,
                                   read_metadata_csv)
from core.data.readers import (
    DatasetError,
    ImageDataset,
    ImageRecord,
    load_rgb,
    open_dataset,
    read_backgrounds_challenge,
    read_caption_csv,
    read_coco_captions,
    read_image_folder,
    read_waterbirds,
)


__all__ = [
    "Attribute", "attach_attributes", "group_names_for", "read_attribute_table", "read_metadata_csv",
    "DatasetError", "DemoWorldError", "ImageDataset", "ImageRecord", "build_demo_world", "demo_class_names", "load_rgb",
    "open_dataset", "read_backgrounds_challenge", "read_caption_csv", "read_coco_captions",
    "read_image_folder", "read_waterbirds",
]
