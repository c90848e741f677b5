"""Swapping a module's layers for faster equivalents in a copy that shares its weights."""

from __future__ import annotations

import copy
from collections.abc import Callable

from torch import nn


def copy_sharing_weights(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` whose parameters and buffers are the original's own tensors (no weights copied)."""
    shared = {id(t): t for t in (*module.parameters(), *module.buffers())}
    return copy.deepcopy(module, shared)


def swap_each(root: nn.Module, wanted: Callable[[nn.Module], bool], make: Callable[[nn.Module], nn.Module]) -> int:
    """Replace, in place, each submodule of ``root`` that is ``wanted`` by ``make(it)``; how many were replaced."""
    found = [name for name, sub in root.named_modules() if name and wanted(sub)]
    for name in found:
        replace(root, name, make(root.get_submodule(name)))
    return len(found)


def replace(root: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` where ``root``'s submodule ``name`` (dotted) is."""
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent), leaf, new)
