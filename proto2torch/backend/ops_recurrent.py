"""Recurrent layers (copied into generated files): BVLC's LSTM and RNN, and the ``Lstm``
layer of Junhyuk Oh's fork (used by caffe_ocr).

Sequences are (T, N, ...) — time first.  BVLC's layers take a "continuation" blob
``cont`` (T, N): where it is 0 a new sequence starts (the previous hidden state is
multiplied by it, and the LSTM's forget gate is zeroed).  Gates are ordered input,
forget, output, candidate in the 4H-row weight matrices, as in Caffe.
"""

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def lstm_unit(c_prev: Tensor, x: Tensor, cont: Tensor) -> Tuple[Tensor, Tensor]:
    """One LSTM step (Caffe's LSTMUnit): gates i, f, o, g from ``x`` (1, N, 4H); the forget
    gate is cont * sigmoid(f), exactly 0 where cont is 0.  Returns (c, h)."""
    hidden = c_prev.shape[2]
    i = torch.sigmoid(x[:, :, :hidden])
    f = torch.sigmoid(x[:, :, hidden : 2 * hidden])
    o = torch.sigmoid(x[:, :, 2 * hidden : 3 * hidden])
    g = torch.tanh(x[:, :, 3 * hidden :])
    flag = cont.reshape(1, -1, 1).to(x.dtype)
    f = torch.where(flag == 0, torch.zeros_like(f), flag * f)
    c = f * c_prev + i * g
    return c, o * torch.tanh(c)


class CaffeLSTM(nn.Module):
    """BVLC LSTM: returns the hidden states (T, N, H) and the last hidden and cell states (1, N, H)."""

    def __init__(self, input_size: int, hidden: int, static_size: int = 0):
        super().__init__()
        self.hidden = hidden
        self.w_xc = nn.Parameter(torch.zeros(4 * hidden, input_size))
        self.b_c = nn.Parameter(torch.zeros(4 * hidden))
        self.w_xc_static = nn.Parameter(torch.zeros(4 * hidden, static_size)) if static_size > 0 else None
        self.w_hc = nn.Parameter(torch.zeros(4 * hidden, hidden))

    def forward(
        self, x: Tensor, cont: Tensor, x_static: Optional[Tensor] = None, h0: Optional[Tensor] = None, c0: Optional[Tensor] = None
    ) -> Tuple[Tensor, Tensor, Tensor]:
        steps, n, hd = x.shape[0], x.shape[1], self.hidden
        gates_x = F.linear(x.reshape(steps, n, -1), self.w_xc, self.b_c)
        if self.w_xc_static is not None and x_static is not None:
            gates_x = gates_x + F.linear(x_static.reshape(n, -1), self.w_xc_static).unsqueeze(0)
        h = torch.zeros(n, hd, dtype=x.dtype, device=x.device) if h0 is None else h0.reshape(n, hd)
        c = torch.zeros(n, hd, dtype=x.dtype, device=x.device) if c0 is None else c0.reshape(n, hd)
        outputs: List[Tensor] = []
        for t in range(steps):
            keep = cont[t].reshape(n, 1).to(x.dtype)
            gates = F.linear(h * keep, self.w_hc) + gates_x[t]
            i = torch.sigmoid(gates[:, :hd])
            f = torch.where(keep == 0.0, torch.zeros_like(keep), keep * torch.sigmoid(gates[:, hd : 2 * hd]))
            o = torch.sigmoid(gates[:, 2 * hd : 3 * hd])
            g = torch.tanh(gates[:, 3 * hd :])
            c = f * c + i * g
            h = o * torch.tanh(c)
            outputs.append(h)
        return torch.stack(outputs, 0), h.unsqueeze(0), c.unsqueeze(0)


class CaffeRNN(nn.Module):
    """BVLC RNN: h_t = tanh(W_hh (cont_t h_{t-1}) + W_xh x_t + b_h), o_t = tanh(W_ho h_t + b_o).

    Returns the outputs (T, N, O) and the last hidden state (1, N, H).
    """

    def __init__(self, input_size: int, hidden: int, static_size: int = 0):
        super().__init__()
        self.hidden = hidden
        self.w_xh = nn.Parameter(torch.zeros(hidden, input_size))
        self.b_h = nn.Parameter(torch.zeros(hidden))
        self.w_xh_static = nn.Parameter(torch.zeros(hidden, static_size)) if static_size > 0 else None
        self.w_hh = nn.Parameter(torch.zeros(hidden, hidden))
        self.w_ho = nn.Parameter(torch.zeros(hidden, hidden))
        self.b_o = nn.Parameter(torch.zeros(hidden))

    def forward(self, x: Tensor, cont: Tensor, x_static: Optional[Tensor] = None, h0: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        steps, n = x.shape[0], x.shape[1]
        pre_x = F.linear(x.reshape(steps, n, -1), self.w_xh, self.b_h)
        if self.w_xh_static is not None and x_static is not None:
            pre_x = pre_x + F.linear(x_static.reshape(n, -1), self.w_xh_static).unsqueeze(0)
        h = torch.zeros(n, self.hidden, dtype=x.dtype, device=x.device) if h0 is None else h0.reshape(n, self.hidden)
        outputs: List[Tensor] = []
        for t in range(steps):
            keep = cont[t].reshape(n, 1).to(x.dtype)
            h = torch.tanh(F.linear(h * keep, self.w_hh) + pre_x[t])
            outputs.append(torch.tanh(F.linear(h, self.w_ho, self.b_o)))
        return torch.stack(outputs, 0), h.unsqueeze(0)


class JunhyukLstm(nn.Module):
    """The ``Lstm`` layer of Junhyuk Oh's fork: x (T, N, I) → hidden states (T, N, H), or with
    ``batch`` > 0 rows (T x batch, ...) → (T x batch, H).

    Without a clip input a sequence starts at t = 0; with one, a 0 in clip[t, n] starts a
    new sequence for stream n (the state carried over from a previous forward call in
    Caffe is taken as zero).
    """

    def __init__(self, input_size: int, hidden: int, batch: int = 0):
        super().__init__()
        self.hidden = hidden
        self.batch = batch
        self.weight_i = nn.Parameter(torch.zeros(4 * hidden, input_size))
        self.weight_h = nn.Parameter(torch.zeros(4 * hidden, hidden))
        self.bias = nn.Parameter(torch.zeros(4 * hidden))

    def forward(self, x: Tensor, clip: Optional[Tensor] = None) -> Tensor:
        if self.batch > 0:
            steps, n = x.shape[0] // self.batch, self.batch
        else:
            steps, n = x.shape[0], x.shape[1]
        hd = self.hidden
        pre = F.linear(x.reshape(steps, n, -1), self.weight_i, self.bias)
        h = torch.zeros(n, hd, dtype=x.dtype, device=x.device)
        c = torch.zeros(n, hd, dtype=x.dtype, device=x.device)
        outputs: List[Tensor] = []
        for t in range(steps):
            if clip is None:
                keep = torch.full([n, 1], t > 0, dtype=torch.bool, device=x.device)
            else:
                keep = clip.reshape(steps, n)[t].reshape(n, 1) != 0
            gates = torch.where(keep, pre[t] + F.linear(h, self.weight_h), pre[t])
            i = torch.sigmoid(gates[:, :hd])
            f = torch.where(keep, torch.sigmoid(gates[:, hd : 2 * hd]), torch.zeros_like(c))
            o = torch.sigmoid(gates[:, 2 * hd : 3 * hd])
            g = torch.tanh(gates[:, 3 * hd :])
            c = f * c + i * g
            h = o * torch.tanh(c)
            outputs.append(h)
        out = torch.stack(outputs, 0)
        return out.reshape(steps * n, hd) if self.batch > 0 else out
