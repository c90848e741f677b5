"""Imports every built-in layer module so that their specs register themselves."""

from . import (  # noqa: F401
    activations,
    conv,
    data,
    eltwise,
    embed,
    inner_product,
    normalization,
    pooling,
    reduce,
    resize,
    scale,
    shape_ops,
    ssd,
    upsample,
)
