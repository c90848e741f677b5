"""Pooled sizes, shared by shape inference (which imports no torch) and the pooling modules
of :mod:`caffe_ops`; the source back end copies them into generated files like the modules."""

from typing import List


def caffe_pool_out(size: int, kernel: int, stride: int, pad: int, ceil: bool) -> int:
    """Caffe's pooled size: ceil (or floor) of the window count, minus a last window that would start in the padding."""
    span = size + 2 * pad - kernel
    out = (span + stride - 1) // stride + 1 if ceil else span // stride + 1
    if pad > 0 and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def c3d_pool_sizes(size: List[int], kernel: List[int], stride: List[int], pad: int) -> List[int]:
    """C3D's pooled (L, H, W): ceil-mode windows, spatial padding only, no window dropped."""
    out = [(size[0] - kernel[0] + stride[0] - 1) // stride[0] + 1]
    for i in [1, 2]:
        out.append((size[i] + 2 * pad - kernel[i] + stride[i] - 1) // stride[i] + 1)
    return out
