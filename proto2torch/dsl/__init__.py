"""The caffe-tensorflow chained DSL: read it (without running it) and write it."""

from .lower import DIALECTS, load_dsl, net_from_dsl
from .weights import dsl_blobs, load_npy_weights

__all__ = ["DIALECTS", "dsl_blobs", "load_dsl", "load_npy_weights", "net_from_dsl"]
