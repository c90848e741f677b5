"""Caffe's solvers as a ``torch.optim.Optimizer`` and its lr policies as a scheduler.

One step is Caffe's ``ApplyUpdate``, in its order: clip the accumulated gradients to
``clip_gradients`` (one L2 norm over every learned blob), divide by ``iter_size``, add the
regularisation (L2: ``decay * w``; L1: ``decay * sign(w)``, with ``decay = weight_decay *
decay_mult``), then the solver's update with ``local_rate = rate * lr_mult``:

* SGD: ``h = local_rate * g + momentum * h``; ``w -= h``.  (The rate is folded into the
  history, so a rate change does not rescale the momentum already gathered, unlike
  ``torch.optim.SGD``.)
* Nesterov: ``h' = momentum * h + local_rate * g``; ``w -= (1 + momentum) * h' - momentum * h``.
* AdaGrad: ``s += g^2``; ``w -= local_rate * g / (sqrt(s) + delta)``.
* RMSProp: ``s = rms_decay * s + (1 - rms_decay) * g^2``; ``w -= local_rate * g / (sqrt(s) + delta)``.
* AdaDelta: ``s = m * s + (1 - m) g^2``; ``u = g * sqrt((d + delta) / (s + delta))``;
  ``d = m * d + (1 - m) u^2``; ``w -= local_rate * u``.
* Adam: ``m = b1 m + (1 - b1) g``; ``v = b2 v + (1 - b2) g^2``;
  ``w -= local_rate * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + delta)``, t = iteration + 1.

Each parameter group carries ``lr_mult`` and ``decay_mult``; ``lr`` is the solver's global
rate, set by :class:`CaffeLR` from the lr policy.  The history tensors are Caffe's
``history_`` blobs, in its order, so they round-trip through a ``.solverstate``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from ..errors import SolverError
from .solver import SolverConfig

HISTORY_SLOTS = {"SGD": 1, "Nesterov": 1, "AdaGrad": 1, "RMSProp": 1, "AdaDelta": 2, "Adam": 2}
"""How many history blobs per learned blob each solver keeps (Caffe stores slot 2 after all slot-1 blobs)."""


class CaffeSolver(Optimizer):
    """Caffe's solver update for the given parameter groups (each may set ``lr_mult``, ``decay_mult``)."""

    def __init__(self, params: Iterable[Any], config: SolverConfig):
        defaults = {"lr": config.base_lr, "lr_mult": 1.0, "decay_mult": 1.0}
        super().__init__(params, defaults)
        self.config = config
        self.iteration = 0
        """Caffe's ``iter_``: updates done so far (Adam's bias correction uses it)."""

    # --- state that is not per parameter ----------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["caffe_iteration"] = self.iteration
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        self.iteration = int(state_dict.pop("caffe_iteration", 0))
        super().load_state_dict(state_dict)

    def parameters_in_order(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def history(self, p: torch.Tensor) -> list[torch.Tensor]:
        """The history blobs of ``p`` (created as zeros on first use)."""
        state = self.state[p]
        if "history" not in state:
            state["history"] = [torch.zeros_like(p, memory_format=torch.preserve_format) for _ in range(HISTORY_SLOTS[self.config.type])]
        return state["history"]

    # --- the update -------------------------------------------------------------------------
    @torch.no_grad()
    def clip_gradients(self) -> float:
        """Scale every gradient so that their joint L2 norm is at most ``clip_gradients``; the norm before."""
        grads = [p.grad for p in self.parameters_in_order() if p.grad is not None]
        if not grads:
            return 0.0
        norm = float(torch.sqrt(sum(torch.sum(g * g) for g in grads)))  # type: ignore[arg-type]
        clip = self.config.clip_gradients
        if clip >= 0 and norm > clip:
            scale = clip / norm
            for g in grads:
                g.mul_(scale)
        return norm

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # noqa: ANN401
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        config = self.config
        if config.clip_gradients >= 0:
            self.clip_gradients()
        for group in self.param_groups:
            local_rate = group["lr"] * group["lr_mult"]
            local_decay = config.weight_decay * group["decay_mult"]
            for p in group["params"]:
                g = torch.zeros_like(p) if p.grad is None else p.grad
                if config.iter_size > 1:
                    g = g * (1.0 / config.iter_size)
                if local_decay:
                    if config.regularization_type == "L2":
                        g = g + local_decay * p
                    else:
                        g = g + local_decay * torch.sign(p)
                p.sub_(self._update(p, g, local_rate))
        self.iteration += 1
        return loss

    def _update(self, p: torch.Tensor, g: torch.Tensor, local_rate: float) -> torch.Tensor:
        c = self.config
        h = self.history(p)
        kind = c.type
        if kind == "SGD":
            h[0].mul_(c.momentum).add_(g, alpha=local_rate)
            return h[0]
        if kind == "Nesterov":
            previous = h[0].clone()
            h[0].mul_(c.momentum).add_(g, alpha=local_rate)
            return (1.0 + c.momentum) * h[0] - c.momentum * previous
        if kind == "AdaGrad":
            h[0].add_(g * g)
            return local_rate * (g / (torch.sqrt(h[0]) + c.delta))
        if kind == "RMSProp":
            h[0].mul_(c.rms_decay).add_(g * g, alpha=1.0 - c.rms_decay)
            return local_rate * (g / (torch.sqrt(h[0]) + c.delta))
        if kind == "AdaDelta":
            h[0].mul_(c.momentum).add_(g * g, alpha=1.0 - c.momentum)
            update = g * torch.sqrt((h[1] + c.delta) / (h[0] + c.delta))
            h[1].mul_(c.momentum).add_(update * update, alpha=1.0 - c.momentum)
            return local_rate * update
        if kind == "Adam":
            t = self.iteration + 1
            b1, b2 = c.momentum, c.momentum2
            correction = (1.0 - b2**t) ** 0.5 / (1.0 - b1**t)
            h[0].mul_(b1).add_(g, alpha=1.0 - b1)
            h[1].mul_(b2).add_(g * g, alpha=1.0 - b2)
            return (local_rate * correction) * (h[0] / (torch.sqrt(h[1]) + c.delta))
        raise SolverError(f"unknown solver type {kind!r}")


class CaffeLR(LRScheduler):
    """The solver's lr policy: after ``k`` calls of ``step()`` every group's ``lr`` is Caffe's rate at iteration ``k``."""

    def __init__(self, optimizer: CaffeSolver, config: SolverConfig, last_epoch: int = -1):
        self.config = config
        self.current_step = 0
        """multistep's counter (Caffe's ``current_step_``, kept in a solverstate)."""
        self._advanced_at = -1
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        iteration = self.last_epoch
        if iteration != self._advanced_at:
            self.current_step = self.config.advance_step(iteration, self.current_step)
            self._advanced_at = iteration
        rate = self.config.learning_rate(iteration, self.current_step)
        return [rate for _ in self.optimizer.param_groups]

    def resume(self, iteration: int, current_step: int) -> None:
        """Continue at ``iteration`` (multistep's counter at ``current_step``), as a solverstate says."""
        self.current_step = current_step
        self._advanced_at = iteration - 1
        self.last_epoch = iteration
        rates = self.get_lr()
        for group, rate in zip(self.optimizer.param_groups, rates):
            group["lr"] = rate
        self._last_lr = rates
