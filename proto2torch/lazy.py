"""Modules imported on first use.

Reading a prototxt, inferring shapes and listing layers need no torch; only lowering a net
to a module does.  The layer modules refer to ``torch``, ``torch.nn`` and the backend's
``caffe_ops`` through these stand-ins, so that ``inspect``, ``draw``, ``passes`` and
``layers`` start without importing torch (a test holds this)."""

from __future__ import annotations

import importlib
from types import ModuleType


class LazyModule:
    """Stands in for the module ``name`` and imports it on the first attribute read."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> object:
        if attr.startswith("__"):
            raise AttributeError(attr)
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"


torch = LazyModule("torch")
nn = LazyModule("torch.nn")
caffe_ops = LazyModule("proto2torch.backend.caffe_ops")
ops_detection = LazyModule("proto2torch.backend.ops_detection")
ops_loss = LazyModule("proto2torch.backend.ops_loss")
ops_recurrent = LazyModule("proto2torch.backend.ops_recurrent")
ops_spatial = LazyModule("proto2torch.backend.ops_spatial")
