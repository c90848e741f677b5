"""Caffe's input side: Datums and mean files, the DataTransformer, data layers as batch streams."""

from .datum import Datum, decode_image, load_mean, parse_datum, write_mean
from .layers import NetFeed, batches
from .transform import DataTransformer, TransformParams

__all__ = ["DataTransformer", "Datum", "NetFeed", "TransformParams", "batches", "decode_image", "load_mean", "parse_datum", "write_mean"]
