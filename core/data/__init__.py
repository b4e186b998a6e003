"""Datasets: readers for metadata.csv datasets (Waterbirds' format), CelebA-style attribute tables, the
Backgrounds Challenge, ImageFolder trees (with an attributes CSV) and caption files, all read into one
`ImageDataset`; captioned images in Hugging Face Parquet or WebDataset shards (core.data.caption_shards); safe
image decoding (core.data.images); the ImageNet-9 benchmark's classes (core.data.imagenet9).

    from core.data import open_dataset
    ds = open_dataset("path/to/waterbird_complete95_forest2water2")
    test = ds.split("test"); image = test.load_image(test.records[0])
"""
from core.data.caption_shards import read_parquet_captions, read_webdataset_captions
from core.data.description import Attribute, attach_attributes, group_names_for, read_attribute_table, read_metadata_csv
from core.data.images import load_rgb
from core.data.readers import (open_dataset, read_backgrounds_challenge, read_caption_csv, read_coco_captions,
                               read_image_folder, read_waterbirds)
from core.data.records import ImageDataset, ImageRecord
from core.errors import DatasetError

__all__ = [
    "Attribute", "DatasetError", "ImageDataset", "ImageRecord", "attach_attributes", "group_names_for", "load_rgb",
    "open_dataset", "read_attribute_table", "read_backgrounds_challenge", "read_caption_csv", "read_coco_captions",
    "read_image_folder", "read_metadata_csv", "read_parquet_captions", "read_waterbirds", "read_webdataset_captions",
]
