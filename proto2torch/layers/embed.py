"""Embed: a lookup table indexed by (float-stored) integer ids, plus an optional bias."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..backend.lowering import ModuleOp
from ..lazy import caffe_ops
from .common import plain
from .registry import LayerSpec, ParseContext, Shape, register


@dataclass(frozen=True)
class EmbedParams:
    num_output: int
    input_dim: int
    bias_term: bool = True


@register
class Embed(LayerSpec):
    type = "Embed"
    fillers = ("embed_param", ("weight_filler", "bias_filler"))
    description = "output shape = input shape + (num_output,); weights (input_dim, num_output)"

    def parse(self, ctx: ParseContext) -> EmbedParams:
        ep = ctx.param("embed_param")
        for name in ("num_output", "input_dim"):
            if not ep.has(name) or int(plain(ctx, ep, name)) <= 0:
                raise ctx.error(f"embed_param.{name} must be given and positive", name if ep.has(name) else "embed_param", ep)
        return EmbedParams(int(ep.get("num_output")), int(ep.get("input_dim")), bool(ep.get("bias_term")))

    def infer(self, p: EmbedParams, shapes: list[Shape]) -> list[Shape]:
        return [(*shapes[0], p.num_output)]

    def weight_shapes(self, p: EmbedParams, shapes: list[Shape]) -> list[Shape]:
        weight = (p.input_dim, p.num_output)
        return [weight, (p.num_output,)] if p.bias_term else [weight]

    def lower(self, p: EmbedParams, shapes: list[Shape], blobs: Sequence[np.ndarray]) -> ModuleOp:
        state = {"weight": blobs[0]}
        kwargs = {}
        if p.bias_term:
            state["bias"] = blobs[1]
        else:
            kwargs["bias"] = False
        return ModuleOp(caffe_ops.Embed, (p.input_dim, p.num_output), kwargs, state, ("weight", "bias")[: len(blobs)])
