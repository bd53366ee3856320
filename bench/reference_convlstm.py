"""A naive reference ConvLSTM encoder-forecaster (Shi et al., 2015), written plainly for the speed benchmark.

Naive on purpose: every gate has its own convolution of the input AND its own convolution of
the hidden state (8 convolutions per cell step), the peepholes are Hadamard products with
per-cell weights, and time is a Python loop. With ``*`` a 2-D convolution and ``o`` the
element-wise product (Shi et al., 2015, eq. 3)::

    i_t = sigmoid(W_xi * x_t + W_hi * h_{t-1} + W_ci o c_{t-1} + b_i)
    f_t = sigmoid(W_xf * x_t + W_hf * h_{t-1} + W_cf o c_{t-1} + b_f)
    c_t = f_t o c_{t-1} + i_t o tanh(W_xc * x_t + W_hc * h_{t-1} + b_c)
    o_t = sigmoid(W_xo * x_t + W_ho * h_{t-1} + W_co o c_t + b_o)
    h_t = o_t o tanh(c_t)

The encoder-forecaster reads the context with an encoder stack; a forecaster stack of the same
sizes starts from the encoder's final states and is unrolled ``horizon`` steps, fed with its
own previous prediction (the last observed values for the first step) or with zeros; a 1x1
convolution of the top forecaster layer's hidden state gives each step's ``C`` channels.

It works in normalised units: the caller feeds ``x`` ``(B, T, F, H, W)`` whose first ``C``
features are the normalised observations (0 where missing), as ``build_inputs`` lays them out.
"""

from __future__ import annotations

import torch
from torch import nn

GATES = ("i", "f", "c", "o")


class NaiveConvLSTMCell(nn.Module):
    """One ConvLSTM cell with one convolution per gate and per input, and per-cell peepholes.

    Parameters
    ----------
    in_dim, hidden_dim : int
        Channels of ``x_t`` and of ``h_t``.
    grid_shape : tuple of int
        ``(H, W)``: the peephole weights ``W_ci, W_cf, W_co`` are ``(hidden_dim, H, W)``.
    kernel_size : int
        Spatial kernel of all eight convolutions.
    forget_bias : float
        Initial ``b_f``.
    """

    def __init__(
        self, in_dim: int, hidden_dim: int, grid_shape: tuple[int, int], kernel_size: int = 3, forget_bias: float = 1.0
    ) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        pad = kernel_size // 2
        # W_x* carry the gate biases b_*; W_h* have none
        self.w_xi = nn.Conv2d(in_dim, hidden_dim, kernel_size, padding=pad)
        self.w_hi = nn.Conv2d(hidden_dim, hidden_dim, kernel_size, padding=pad, bias=False)
        self.w_xf = nn.Conv2d(in_dim, hidden_dim, kernel_size, padding=pad)
        self.w_hf = nn.Conv2d(hidden_dim, hidden_dim, kernel_size, padding=pad, bias=False)
        self.w_xc = nn.Conv2d(in_dim, hidden_dim, kernel_size, padding=pad)
        self.w_hc = nn.Conv2d(hidden_dim, hidden_dim, kernel_size, padding=pad, bias=False)
        self.w_xo = nn.Conv2d(in_dim, hidden_dim, kernel_size, padding=pad)
        self.w_ho = nn.Conv2d(hidden_dim, hidden_dim, kernel_size, padding=pad, bias=False)
        h, w = grid_shape
        self.w_ci = nn.Parameter(torch.zeros(hidden_dim, h, w))  # (hid, H, W)
        self.w_cf = nn.Parameter(torch.zeros(hidden_dim, h, w))  # (hid, H, W)
        self.w_co = nn.Parameter(torch.zeros(hidden_dim, h, w))  # (hid, H, W)
        bias = self.w_xf.bias
        assert bias is not None
        with torch.no_grad():
            bias.fill_(forget_bias)

    def init_state(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero ``(h, c)``, each ``(B, hid, H, W)``, for an input ``x`` ``(B, ., H, W)``."""
        z = x.new_zeros(x.shape[0], self.hidden_dim, x.shape[2], x.shape[3])  # (B, hid, H, W)
        return z, z.clone()

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: ``x`` ``(B, in, H, W)``, state ``(h, c)`` -> new ``(h, c)``."""
        h, c = state  # (B, hid, H, W) each
        i = torch.sigmoid(self.w_xi(x) + self.w_hi(h) + self.w_ci * c)
        f = torch.sigmoid(self.w_xf(x) + self.w_hf(h) + self.w_cf * c)
        c = f * c + i * torch.tanh(self.w_xc(x) + self.w_hc(h))
        o = torch.sigmoid(self.w_xo(x) + self.w_ho(h) + self.w_co * c)
        h = o * torch.tanh(c)
        return h, c


class NaiveEncoderForecaster(nn.Module):
    """Stacked naive ConvLSTM encoder and forecaster, a 1x1 head, a Python loop over time.

    Parameters
    ----------
    in_dim : int
        Input features ``F`` per step; the first ``out_dim`` are the normalised observations.
    out_dim : int
        Channels ``C`` predicted per step.
    grid_shape : tuple of int
        ``(H, W)`` (the peepholes are per cell).
    hidden_dims : tuple of int
        Hidden channels of each layer, encoder and forecaster alike.
    horizon : int
        Steps predicted.
    kernel_size : int
        Spatial kernel of every gate convolution.
    feed_prediction : bool
        True: each forecaster step reads the previous step's prediction (the last observed
        values for the first); False: it reads zeros (Shi et al.'s forecaster has no input).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        grid_shape: tuple[int, int],
        hidden_dims: tuple[int, ...] = (64, 64),
        horizon: int = 12,
        kernel_size: int = 3,
        feed_prediction: bool = True,
    ) -> None:
        super().__init__()
        if out_dim > in_dim:
            raise ValueError(f"out_dim {out_dim} > in_dim {in_dim}: the first out_dim input features are the values")
        self.out_dim, self.horizon, self.feed_prediction = out_dim, horizon, feed_prediction
        self.hidden_dims = dims = tuple(hidden_dims)
        self.encoder = nn.ModuleList(
            NaiveConvLSTMCell(in_dim if i == 0 else dims[i - 1], d, grid_shape, kernel_size) for i, d in enumerate(dims)
        )
        self.forecaster = nn.ModuleList(
            NaiveConvLSTMCell(out_dim if i == 0 else dims[i - 1], d, grid_shape, kernel_size)
            for i, d in enumerate(dims)
        )
        self.head = nn.Conv2d(dims[-1], out_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, T, F, H, W)`` normalised -> forecast ``(B, horizon, C, H, W)`` normalised."""
        b, _, _, h, w = x.shape  # (B, T, F, H, W)
        states = [(x.new_zeros(b, d, h, w), x.new_zeros(b, d, h, w)) for d in self.hidden_dims]  # (h, c) per layer
        for t in range(x.shape[1]):
            inp = x[:, t]  # (B, F, H, W)
            for li, cell in enumerate(self.encoder):
                states[li] = cell(inp, states[li])
                inp = states[li][0]
        prev = x[:, -1, : self.out_dim]  # (B, C, H, W) the last observed values
        outs = []
        for _ in range(self.horizon):
            inp = prev if self.feed_prediction else torch.zeros_like(prev)
            for li, cell in enumerate(self.forecaster):
                states[li] = cell(inp, states[li])
                inp = states[li][0]
            prev = self.head(inp)  # (B, C, H, W)
            outs.append(prev)
        return torch.stack(outs, dim=1)  # (B, horizon, C, H, W)
