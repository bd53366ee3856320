"""The traffic forecaster: a ConvLSTM encoder-forecaster with linear attention over grid cells.

One module, read top to bottom:

1. **Inputs** ``x`` ``(B, T_in, F, H, W)``, ``F = 2C + K``, built by
   ``traffic.forecast.features.build_inputs``: raw values (0 where missing), the observation
   masks and K calendar features broadcast over cells (time of day/week, weekend, and the
   public-holiday flags of the bin and of the local days after the last context bin, from which
   the module reads its target bins' flags, whatever the horizon). Nothing else is needed at
   inference.
2. **Normalisation and seasonal prior** live inside the module as buffers fitted on the
   training window: per-channel mean/std (masked), and a per-cell seasonal profile
   ``(P, C, H, W)`` (time-of-week or time-of-day mean, see ``traffic.forecast.baselines``).
   The bin of the week of every context and target bin is decoded from the calendar
   features of the last context bin, so the module needs no side input. With a weekly
   profile a public holiday reads the Sunday at the same time of day.
3. **Modality fusion.** Input channels are grouped by feed (channel names ``<feed>.<channel>``),
   plus ``"calendar"`` and ``"prior"`` (the seasonal prior and the anomaly of each
   observation against it). Each group has its own 1x1 embedding and enters through a
   learned scalar gate ``sigmoid(g_m)``; :meth:`Forecaster.modality_weights` returns them.
4. **Encoder**: stacked recurrent cells (ConvLSTM, or ConvGRU with ``cell="convgru"``) read
   the context. **Attention**: one linear-attention block mixes the top encoder state across
   all cells. **Decoder**: with ``decoder="parallel"`` (the default) the per-cell head reads the
   attended encoder state once per target bin, together with what is known about that bin
   (its calendar and lead, seasonal prior, the linear base and its features): all ``H_out``
   bins in one batch, so a 96-bin day-ahead horizon costs one head pass, not 96 recurrent
   steps. ``decoder="direct"`` unrolls a second recurrent stack over the target bins from
   known inputs only; ``decoder="autoregressive"`` also feeds each step its previous step's
   prediction. ``bench/bench_model_accuracy.py`` compares the decoders and the cells on both
   cities. The network runs on the grid's active box only (the cells observed in training
   plus a margin), which saves the convolutions over empty outskirts.
5. **Output**, per target bin ``j``, channel and cell, in normalised units::

       base_j = b0 * prior_j + b1 * level * prior_j + b2 * anomaly_last + b3 * anomaly_mean
                + b4 * value_last + b5
       pred_j = base_j + delta_j * anomaly_last + residual_j

   ``level * prior_j`` is the multiplicative term: ``level = r - 1`` with ``r`` the ratio of
   the observed sum to the prior's sum over the context (per cell and channel, clipped to
   ``[0, 3]``; 0 where the prior's sum is not positive): a day running at 60 % of its usual
   volume keeps running at 60 %, which an additive anomaly cannot express.

   ``base`` is a linear blend of :data:`BASE_FEATURES` with coefficients per horizon and
   channel (a buffer), fitted by least squares (:mod:`traffic.linear_base`). The network adds a
   per-cell correction ``delta`` of the anomaly's weight and a ``residual``. Its output layers
   start small but not zero (:data:`OUT_INIT_STD`), so every path gets gradient from the first
   step; outside the active box (cells never observed in training) the forecast is the base
   alone. :meth:`Forecaster.set_paths` switches the network off (``"base"``) or runs the head
   with a zero hidden state (``"base_head"``): the ablations on every model card. The output is
   mapped back to original units ``(B, H_out, C, H, W)``. The loss lives in
   ``traffic.forecast.metrics`` and the training in ``traffic.forecast.train``.
6. **Where the network serves.** Training fits the network on the first target bins only (where
   recent data carry signal); the head's weights it moves are shared by every bin, so further out
   the full model would drift from the head as it was pre-fitted. With ``network_steps`` set
   (:meth:`Forecaster.keep_head`) the full model serves its first ``network_steps`` bins from the
   network and every later bin from the pre-fitted head with a zero hidden state (a frozen copy,
   ``kept_*`` buffers): beyond the trained bins the full model *is* base + head.

Why linear attention (Katharopoulos et al., 2020, feature map ``elu(x) + 1``) rather than
softmax attention or CBAM: detectors on the same corridor are correlated over distances far
beyond a 3x3 convolution's reach, so every cell should be able to read every other cell,
by content. Softmax attention needs an ``(HW x HW)`` matrix; the kernelised form computes
``phi(Q) (phi(K)^T V)``: the cells are summed into a ``(heads, d, d)`` summary first, so
no tensor is larger than ``(heads, d, H*W)`` and time and memory grow linearly with the
number of cells (grids can be hundreds of cells a side). CBAM would be linear too, but its spatial map only re-weights cells locally and
cannot move information between distant cells.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from traffic.channels import RESERVED_FEEDS, feed_of
from traffic.forecast.features import HOLIDAY, HOLIDAY_AHEAD, N_CALENDAR, N_PERIODIC, n_features
from traffic.timebins import MINUTES_PER_DAY, MINUTES_PER_WEEK, bins_per_day

#: Features of the linear base, per target bin, cell and channel (normalised units): the seasonal
#: prior of the target bin, the prior scaled by the context's level, the last observed anomaly,
#: the mean anomaly over the context, the last observed value itself, and a constant.
BASE_FEATURES = ("prior", "prior_level", "anomaly_last", "anomaly_mean", "value_last", "one")
#: The first two depend on the target bin; the rest are per sample.
N_TARGET_BASE = 2
#: Bounds of the context's level ratio ``r`` (observed / prior).
LEVEL_RATIO_MAX = 3.0
CELLS = ("convlstm", "convgru")
#: What :meth:`Forecaster.forward` runs (:meth:`Forecaster.set_paths`): the whole network; the
#: linear base and the per-cell head with a zero hidden state (no recurrent or attention path);
#: the linear base alone. The last two are the ablations on every model card.
PATHS = ("full", "base_head", "base")
DECODERS = ("parallel", "direct", "autoregressive")
#: Standard deviation of the initial weights of the output layers (the head's last layer and the
#: attention's output projection): small, so an untrained module forecasts close to the linear
#: base, but not zero, so every path (encoder, attention, head) gets gradient from the first step.
OUT_INIT_STD = 1e-2
N_BASE = len(BASE_FEATURES)
#: The modules of the per-cell head: what training pre-fits with a zero hidden state, and what
#: :meth:`Forecaster.keep_head` freezes a copy of for the target bins the network does not serve.
HEAD_MODULES = ("head_hidden_in", "head_sample_in", "head_step_in", "head_time_in", "head")
#: Features of a horizon's lead that the head reads (:func:`lead_features`); independent of the
#: horizon count, so a 96-step day-ahead head costs what a 3-step one does per horizon.
N_LEAD = 6


def lead_features(n_out: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``(H_out, N_LEAD)`` encoding of horizons ``1 .. H_out``: share of the horizon, its square root, and
    two sine/cosine pairs over the horizon (smooth in the lead, so neighbouring horizons share weights)."""
    j = torch.arange(1, n_out + 1, device=device, dtype=torch.float32) / n_out  # (H_out,) in (0, 1]
    two_pi = 2.0 * math.pi
    cols = [
        j,
        j.sqrt(),
        torch.sin(two_pi * j),
        torch.cos(two_pi * j),
        torch.sin(2 * two_pi * j),
        torch.cos(2 * two_pi * j),
    ]
    return torch.stack(cols, dim=1).to(dtype)  # (H_out, N_LEAD)


#: Modalities after the feeds: calendar features, and the seasonal prior with each observation's anomaly
#: (the feed names the channel vocabulary reserves, :data:`traffic.channels.RESERVED_FEEDS`).
EXTRA_MODALITIES = RESERVED_FEEDS


@dataclass
class ForecasterConfig:
    """Shape of the data and the network. Data fields are set by training from the grid."""

    # --- the data (fixed by the city's grid and the forecast settings) ---
    # model channels in grid order, "<feed>.<channel>"; the feed prefix defines the modalities
    channels: tuple[str, ...] = ("sensor.speed_kmh",)
    # (H, W) of the city grid: the seasonal-prior buffer is per cell
    grid_shape: tuple[int, int] = (8, 8)
    # bins of context the forecaster is trained with (the encoder accepts any length)
    context_steps: int = 12
    # bins predicted, H_out
    horizon: int = 3
    # length of one bin in minutes (decodes the bin of the week from calendar features)
    bin_minutes: int = 60
    # bins in one period of the seasonal prior: bins per week (time-of-week), per two days (day type:
    # weekdays; weekends and holidays) or per day (time-of-day); see traffic.forecast.baselines.time_positions
    profile_period: int = 24 * 7
    # minutes local time is ahead of UTC: the seasonal prior is looked up in local time
    utc_offset_minutes: int = 0
    # --- the network (defaults sized for 2 CPU cores and ~1 minute of training) ---
    # width of every modality embedding and of the fused encoder/forecaster input
    embed_dim: int = 8
    # hidden channels of each stacked recurrent layer (encoder; the forecaster mirrors it); 8 keeps
    # one training step of 16 samples on a ~30x35 box near 0.3-0.5 s on 2 CPU cores
    hidden_dims: tuple[int, ...] = (8,)
    # spatial kernel of the gate convolution: 3 = a cell sees its 8 neighbours per step
    kernel_size: int = 3
    # recurrent cell: "convlstm" (Shi et al., 2015) or "convgru" (Ballas et al., 2016; 3 gates, no
    # cell memory: ~25 % fewer gate channels)
    cell: str = "convlstm"
    # ConvLSTM peepholes (the gates also read the cell memory); off = the common modern variant
    peephole: bool = False
    # "parallel": the attended encoder state is read by the per-cell head once per target bin, all target
    # bins in one batch (no recurrence over the horizon: a 96-bin day-ahead costs one head pass);
    # "direct": a recurrent forecaster stack unrolled over the target bins from known inputs only;
    # "autoregressive": the recurrent forecaster also fed each step's previous prediction
    decoder: str = "parallel"
    # the linear-attention block after the encoder (False = the plain encoder-forecaster)
    attention: bool = True
    # width of the per-cell MLP head that reads each step's hidden state together with the cell's own
    # context anomalies and target-bin features (a skip path: local non-linear effects need not pass
    # through the recurrent bottleneck); 0 = a linear 1x1 head on the hidden state alone
    head_hidden: int = 32
    # space-to-depth packing of the recurrent stacks: p x p cells share one position of the encoder and
    # forecaster (their inputs stacked into channels, as OpenSTL's ConvLSTM patch_size), so the 3x3 gate
    # convolutions, which dominate the cost, run on p^2 times fewer positions; a 1x1 convolution unpacks
    # each step's hidden state back to every cell before the per-cell head. 1 = no packing.
    patch: int = 1
    # linear-attention heads and the width of each (cost per cell ~ heads * head_dim^2)
    attn_heads: int = 2
    attn_head_dim: int = 8
    # initial forget-gate bias: 1.0 lets memory flow at the start of training (Jozefowicz et al., 2015)
    forget_bias: float = 1.0
    # share of the last anomaly kept at every horizon by the linear base before it is fitted
    init_anomaly_share: float = 0.7
    # (row0, row1, col0, col1), half-open: the network runs on this box of the grid only (the cells
    # observed in training plus a margin); outside it the forecast is the linear base alone.
    # None = the whole grid.
    active_box: tuple[int, int, int, int] | None = None
    # flat indices (row-major inside the active box) of the cells the per-cell head runs on: the cells
    # observed in training. Elsewhere the forecast is the linear base (nothing there to learn from).
    # None = every cell of the box.
    head_cells: tuple[int, ...] | None = None
    # target bins the network serves (the first ones: those it was trained on); every later bin is
    # base + the pre-fitted head with a zero hidden state (Forecaster.keep_head). 0 = every bin.
    network_steps: int = 0

    def __post_init__(self) -> None:
        self.channels = tuple(self.channels)
        self.grid_shape = tuple(int(v) for v in self.grid_shape)  # type: ignore[assignment]
        self.hidden_dims = tuple(int(v) for v in self.hidden_dims)
        if self.active_box is not None:
            r0, r1, c0, c1 = (int(v) for v in self.active_box)
            if not (0 <= r0 < r1 <= self.grid_shape[0] and 0 <= c0 < c1 <= self.grid_shape[1]):
                raise ValueError(
                    f"active_box {self.active_box} must be (row0, row1, col0, col1) inside {self.grid_shape}"
                )
            self.active_box = (r0, r1, c0, c1)
        if self.head_cells is not None:
            r0, r1, c0, c1 = self.active_box or (0, self.grid_shape[0], 0, self.grid_shape[1])
            cells = tuple(int(v) for v in self.head_cells)
            if not cells or min(cells) < 0 or max(cells) >= (r1 - r0) * (c1 - c0) or len(set(cells)) != len(cells):
                raise ValueError(
                    f"head_cells must be distinct flat indices inside the {r1 - r0} x {c1 - c0} active box, "
                    f"got {len(cells)} from {min(cells, default=None)} to {max(cells, default=None)}"
                )
            self.head_cells = tuple(sorted(cells))
        if self.cell not in CELLS:
            raise ValueError(f"cell {self.cell!r} not in {CELLS}")
        if not 0 <= self.network_steps <= self.horizon:
            raise ValueError(
                f"network_steps {self.network_steps} must be in [0, horizon={self.horizon}] (0 = every bin)"
            )
        if self.patch < 1:
            raise ValueError(f"patch {self.patch} must be >= 1")
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder {self.decoder!r} not in {DECODERS}")
        bad = [c for c in self.channels if "." not in c]
        if bad:
            raise ValueError(f"channels {bad} must be named '<feed>.<channel>'")
        clash = set(self.feeds) & set(EXTRA_MODALITIES)
        if clash:
            raise ValueError(f"feed names {sorted(clash)} are reserved for modalities {EXTRA_MODALITIES}")
        per_day = bins_per_day(self.bin_minutes)
        if self.profile_period not in (per_day, 2 * per_day, 7 * per_day):
            raise ValueError(
                f"profile_period {self.profile_period} must be bins per day ({per_day}), per two days or per week "
                f"({7 * per_day}) for bin_minutes={self.bin_minutes}"
            )

    @property
    def n_channels(self) -> int:
        return len(self.channels)

    @property
    def n_features(self) -> int:
        return n_features(self.n_channels)

    @property
    def feeds(self) -> tuple[str, ...]:
        """Feed names in order of first appearance among the channels."""
        return tuple(dict.fromkeys(feed_of(c) for c in self.channels))

    @property
    def modalities(self) -> tuple[str, ...]:
        """Input groups, each with its own embedding and gate: the feeds, then calendar and prior."""
        return (*self.feeds, *EXTRA_MODALITIES)

    def to_dict(self) -> dict:
        return asdict(self)


State = tuple[torch.Tensor, ...]


class ConvLSTMCell(nn.Module):
    """ConvLSTM cell (Shi et al., 2015): all four gates from ONE convolution over ``[x_t, h_{t-1}]``.

    With ``*`` a 2-D convolution, ``o`` the element-wise product and ``p_*`` the optional
    peephole weights (one per hidden channel, so the cell fits any grid size)::

        i_t = sigmoid(W_i * [x_t, h_{t-1}] + p_i o c_{t-1} + b_i)     input gate
        f_t = sigmoid(W_f * [x_t, h_{t-1}] + p_f o c_{t-1} + b_f)     forget gate
        g_t = tanh   (W_g * [x_t, h_{t-1}] + b_g)                     candidate cell
        c_t = f_t o c_{t-1} + i_t o g_t
        o_t = sigmoid(W_o * [x_t, h_{t-1}] + p_o o c_t + b_o)         output gate
        h_t = o_t o tanh(c_t)

    State ``(h, c)``; :meth:`forward` returns ``(h_t, (h_t, c_t))``.
    """

    def __init__(
        self, in_dim: int, hidden_dim: int, kernel_size: int, forget_bias: float, peephole: bool = False
    ) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.conv = nn.Conv2d(in_dim + hidden_dim, 4 * hidden_dim, kernel_size, padding=kernel_size // 2)
        bias = self.conv.bias
        assert bias is not None
        with torch.no_grad():
            bias.zero_()
            bias[hidden_dim : 2 * hidden_dim].fill_(forget_bias)
        self.peephole = nn.Parameter(torch.zeros(3, hidden_dim, 1, 1)) if peephole else None  # (3, hid, 1, 1)

    def init_state(self, ref: torch.Tensor, h: int, w: int) -> State:
        z = ref.new_zeros(ref.shape[0], self.hidden_dim, h, w)  # (B, hid, H, W)
        return z, torch.zeros_like(z)

    def forward(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        h, c = state  # (B, hid, H, W) each
        gates = self.conv(torch.cat([x, h], dim=1))  # (B, 4*hid, H, W)
        i, f, o, g = gates.chunk(4, dim=1)  # 4 x (B, hid, H, W)
        if self.peephole is not None:
            i, f = i + self.peephole[0] * c, f + self.peephole[1] * c
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        if self.peephole is not None:
            o = o + self.peephole[2] * c
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)


class ConvGRUCell(nn.Module):
    """ConvGRU cell (Ballas et al., 2016): update and reset gates from ONE convolution.

    ::

        z_t = sigmoid(W_z * [x_t, h_{t-1}] + b_z)            update gate
        r_t = sigmoid(W_r * [x_t, h_{t-1}] + b_r)            reset gate
        n_t = tanh   (W_n * [x_t, r_t o h_{t-1}] + b_n)      candidate
        h_t = (1 - z_t) o h_{t-1} + z_t o n_t

    Three gate maps instead of four and no cell memory. ``forget_bias`` is applied as a
    negative bias of ``z`` (keep the old state at the start), the GRU analogue of the LSTM's.
    State ``(h,)``; :meth:`forward` returns ``(h_t, (h_t,))``.
    """

    def __init__(
        self, in_dim: int, hidden_dim: int, kernel_size: int, forget_bias: float, peephole: bool = False
    ) -> None:
        super().__init__()
        if peephole:
            raise ValueError("peepholes exist for ConvLSTM cells only (cell='convlstm')")
        self.hidden_dim = hidden_dim
        pad = kernel_size // 2
        self.gates = nn.Conv2d(in_dim + hidden_dim, 2 * hidden_dim, kernel_size, padding=pad)
        self.cand = nn.Conv2d(in_dim + hidden_dim, hidden_dim, kernel_size, padding=pad)
        bias = self.gates.bias
        assert bias is not None
        with torch.no_grad():
            bias.zero_()
            bias[:hidden_dim].fill_(-forget_bias)

    def init_state(self, ref: torch.Tensor, h: int, w: int) -> State:
        return (ref.new_zeros(ref.shape[0], self.hidden_dim, h, w),)  # (B, hid, H, W)

    def forward(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        (h,) = state  # (B, hid, H, W)
        z, r = torch.sigmoid(self.gates(torch.cat([x, h], dim=1))).chunk(2, dim=1)  # 2 x (B, hid, H, W)
        n = torch.tanh(self.cand(torch.cat([x, r * h], dim=1)))  # (B, hid, H, W)
        h = (1 - z) * h + z * n
        return h, (h,)


CELL_TYPES: dict[str, type[nn.Module]] = {"convlstm": ConvLSTMCell, "convgru": ConvGRUCell}


class LinearAttention(nn.Module):
    """Multi-head linear attention over the cells of a feature map, with a residual connection.

    ``out_i = sum_j phi(q_i)^T phi(k_j) v_j / sum_j phi(q_i)^T phi(k_j)``, ``phi(x) = elu(x) + 1``,
    computed as ``phi(Q) (phi(K)^T V)``: the ``(d, d)`` summary is built once, never ``(HW, HW)``.
    The output projection starts small (:data:`OUT_INIT_STD`), so the block starts close to the
    identity while its queries, keys and values already get gradient.
    """

    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.norm = nn.GroupNorm(1, dim)
        self.qkv = nn.Conv2d(dim, 3 * heads * head_dim, 1)
        self.proj = nn.Conv2d(heads * head_dim, dim, 1)
        nn.init.normal_(self.proj.weight, std=OUT_INIT_STD)
        nn.init.zeros_(self.proj.bias)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape  # (B, D, H, W)
        n, nh, d = h * w, self.heads, self.head_dim
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, nh, d, n).unbind(1)  # 3 x (B, nh, d, N)
        q, k = F.elu(q) + 1, F.elu(k) + 1  # positive features
        kv = torch.einsum("bhdn,bhen->bhde", k, v)  # (B, nh, d, d): sum over cells of k v^T
        z = 1.0 / (torch.einsum("bhdn,bhd->bhn", q, k.sum(-1)) + 1e-6)  # (B, nh, N) normaliser
        out = torch.einsum("bhdn,bhde->bhen", q, kv) * z.unsqueeze(2)  # (B, nh, d, N)
        return x + self.proj(out.reshape(b, nh * d, h, w))  # (B, D, H, W)


class ModalityFusion(nn.Module):
    """Embeds each modality with a 1x1 convolution and sums them through learned scalar gates.

    ``fused = sum_m sigmoid(g_m) * E_m(x_m)``. The gates start at ``sigmoid(0) = 0.5``.
    """

    def __init__(self, in_dims: dict[str, int], out_dim: int) -> None:
        super().__init__()
        self.names = tuple(in_dims)
        self.embed = nn.ModuleDict({m: nn.Conv2d(d, out_dim, 1) for m, d in in_dims.items()})
        self.gate_logits = nn.Parameter(torch.zeros(len(self.names)))

    def weights(self) -> torch.Tensor:
        return torch.sigmoid(self.gate_logits)  # (M,)

    def forward(self, parts: dict[str, torch.Tensor]) -> torch.Tensor:
        g = self.weights()
        out = None
        for i, m in enumerate(self.names):
            e = g[i] * self.embed[m](parts[m])  # (N, E, H, W)
            out = e if out is None else out + e
        assert out is not None
        return out


class Terms(NamedTuple):
    """What the module derives from the raw inputs before any learned layer (normalised units)."""

    vn: torch.Tensor  # (B, T, C, H, W) observations, 0 where missing
    mask: torch.Tensor  # (B, T, C, H, W) 1.0 observed
    prior_n: torch.Tensor  # (B, T + H_out, C, H, W) seasonal prior of the context and target bins
    anomaly: torch.Tensor  # (B, T, C, H, W) observation minus prior, 0 where missing
    base_features: torch.Tensor  # (B, C, N_BASE - N_TARGET_BASE, H, W) per-sample base features
    has_last: torch.Tensor  # (B, C, H, W) 1.0 if anything was observed in the context
    age: torch.Tensor  # (B, C, H, W) bins since the last observation over T (1 when none)
    level: torch.Tensor  # (B, C, H, W) observed / prior over the context, minus 1 (0 when unknown)
    prior_level: torch.Tensor  # (B, H_out, C, H, W) level * prior of the target bins in raw units / std


class HeadInputs(NamedTuple):
    """The head's skip features at the head cells, broadcastable against ``(B, H_out, N, .)``."""

    sample: torch.Tensor  # (B, 1, N, 2 T C + 2C) context anomalies and masks, has/age
    step: torch.Tensor  # (B, H_out, N, 3C) target prior, base, prior_level
    time: torch.Tensor  # (B, H_out, 1, N_PERIODIC + 1 + N_LEAD) target calendar and lead


class Forecaster(nn.Module):
    """Recurrent encoder-forecaster with linear attention; raw inputs in, raw-unit forecasts out.

    Parameters
    ----------
    config : ForecasterConfig
    """

    mean: torch.Tensor
    std: torch.Tensor
    profile: torch.Tensor
    base_coef: torch.Tensor
    head_index: torch.Tensor

    def __init__(self, config: ForecasterConfig) -> None:
        super().__init__()
        self.config = cfg = config
        c, e, k = cfg.n_channels, cfg.embed_dim, cfg.kernel_size
        h, w = cfg.grid_shape
        # statistics fitted on the training window (see set_statistics / set_base)
        self.register_buffer("mean", torch.zeros(c))  # (C,)
        self.register_buffer("std", torch.ones(c))  # (C,)
        self.register_buffer("profile", torch.zeros(cfg.profile_period, c, h, w))  # (P, C, H, W) raw units
        base = torch.zeros(cfg.horizon, c, N_BASE)  # (H_out, C, N_BASE): damped anomaly persistence to start
        base[:, :, 0] = 1.0
        base[:, :, BASE_FEATURES.index("anomaly_last")] = cfg.init_anomaly_share
        self.register_buffer("base_coef", base)
        self.feed_index = {f: [i for i, ch in enumerate(cfg.channels) if ch.split(".", 1)[0] == f] for f in cfg.feeds}
        # encoder input: per feed [values, masks]; calendar; prior = [prior, anomaly]
        p2 = cfg.patch**2  # cells per packed position: spatially varying inputs have p^2 times the channels
        enc_dims = {f: 2 * len(ix) * p2 for f, ix in self.feed_index.items()}
        enc_dims.update(calendar=N_CALENDAR, prior=2 * c * p2)
        self.fusion = ModalityFusion(enc_dims, e)
        # forecaster input: calendar of the target bin (periodic + holiday flag);
        # prior = [prior, base forecast, prior_level, 3 per-sample base features, has, age]
        dims = cfg.hidden_dims
        cell_type = CELL_TYPES[cfg.cell]
        self.encoder = nn.ModuleList(
            cell_type(e if i == 0 else dims[i - 1], d, k, cfg.forget_bias, cfg.peephole) for i, d in enumerate(dims)
        )
        self.attention = LinearAttention(dims[-1], cfg.attn_heads, cfg.attn_head_dim) if cfg.attention else None
        self.recurrent_decoder = cfg.decoder != "parallel"
        self.fc_calendar: nn.Conv2d | None = None
        self.fc_prior: nn.Conv2d | None = None
        self.horizon_embed: nn.Parameter | None = None
        self.ar_embed: nn.Conv2d | None = None
        self.forecaster: nn.ModuleList | None = None
        if self.recurrent_decoder:
            self.fc_calendar = nn.Conv2d(N_PERIODIC + 1, e, 1)
            self.fc_prior = nn.Conv2d((N_BASE + 2) * c * p2, e, 1)
            self.horizon_embed = nn.Parameter(torch.zeros(cfg.horizon, e, 1, 1))  # (H_out, E, 1, 1)
            # autoregressive decoder: each step also reads the previous step's prediction (normalised)
            self.ar_embed = nn.Conv2d(c * p2, e, 1) if cfg.decoder == "autoregressive" else None
            self.forecaster = nn.ModuleList(
                cell_type(e if i == 0 else dims[i - 1], d, k, cfg.forget_bias, cfg.peephole) for i, d in enumerate(dims)
            )
        # head: per target bin and head cell, a residual (C) and a per-cell correction of the last anomaly's
        # coefficient (C), from the hidden state and the cell's skip features: per sample its context
        # anomalies and masks (2 T C) and has/age (2C); per target bin its prior, base and prior_level (3C);
        # per target bin for every cell its calendar (N_PERIODIC + 1) and lead (N_LEAD). The first layer is
        # a sum of one linear map per group, so nothing (B, H_out, S, cells) is ever materialised.
        # packed stacks: each position's hidden state -> p^2 cells' hidden states
        self.unpack = nn.Conv2d(dims[-1], dims[-1] * p2, 1) if cfg.patch > 1 else None
        hh = cfg.head_hidden
        self.head_hidden_in: nn.Linear | None = None
        self.head_sample_in: nn.Linear | None = None
        self.head_step_in: nn.Linear | None = None
        self.head_time_in: nn.Linear | None = None
        if hh > 0:
            self.head_hidden_in = nn.Linear(dims[-1], hh)
            # ReZero-style entry of the recurrent path into the pre-fitted head: zero weights, so that at
            # step 0 the full model is exactly base + head (the head is pre-fitted with hidden state 0);
            # the first step gives these weights gradient, and from the second the encoder, attention
            # and decoder get theirs through them
            nn.init.zeros_(self.head_hidden_in.weight)
            self.head_sample_in = nn.Linear(2 * cfg.context_steps * c + 2 * c, hh, bias=False)
            self.head_step_in = nn.Linear(3 * c, hh, bias=False)
            self.head_time_in = nn.Linear(N_PERIODIC + 1 + N_LEAD, hh, bias=False)
        self.head = nn.Linear(hh or dims[-1], 2 * c)
        nn.init.normal_(self.head.weight, std=OUT_INIT_STD)  # small, not zero: gradient reaches every path
        nn.init.zeros_(self.head.bias)
        r0, r1, c0, c1 = cfg.active_box or (0, h, 0, w)
        cells = torch.tensor(cfg.head_cells if cfg.head_cells is not None else range((r1 - r0) * (c1 - c0)))
        self.register_buffer("head_index", cells.long(), persistent=False)  # (N,) from the config
        self.paths = "full"  # not saved: every loaded module runs the full network
        if self.kept_bins:  # a saved module that serves its later bins from the pre-fitted head
            self._register_kept({n: torch.zeros_like(p) for n, p in self._head_parameters().items()})

    # ------------------------------------------------------------------------ the kept head
    @property
    def kept_bins(self) -> bool:
        """True when the target bins from ``network_steps`` on are served by the kept (pre-fitted) head."""
        return 0 < self.config.network_steps < self.config.horizon

    def _head_parameters(self) -> dict[str, torch.Tensor]:
        """The head's parameters by state-dict name (``head.weight``, ``head_sample_in.weight``, ...)."""
        return {n: p for n, p in self.named_parameters() if n.split(".", 1)[0] in HEAD_MODULES}

    def _register_kept(self, head: dict[str, torch.Tensor]) -> None:
        for name, p in self._head_parameters().items():
            self.register_buffer(_kept(name), head[name].detach().to(p).clone())

    def keep_head(self, network_steps: int, head: dict[str, torch.Tensor]) -> Forecaster:
        """Serve the first ``network_steps`` target bins from the network, the rest from ``head``.

        ``head`` is a state dict holding the head's parameters as pre-fitted (hidden state 0: the
        ``base_head`` ablation's); a frozen copy is kept as buffers (saved with the module, never
        trained), so from bin ``network_steps`` on the full model equals that ablation exactly.
        ``network_steps`` 0 or the whole horizon: every bin from the network (nothing kept).
        """
        missing = sorted(set(self._head_parameters()) - set(head))
        if missing:
            raise ValueError(f"the kept head needs the head's parameters; missing {missing}")
        self.config = replace(self.config, network_steps=int(network_steps))  # validated by the config
        if self.kept_bins:
            self._register_kept(head)
        return self

    def set_paths(self, paths: str) -> Forecaster:
        """Run ``"full"``, ``"base_head"`` (hidden state 0: no encoder, attention or decoder) or ``"base"``."""
        if paths not in PATHS:
            raise ValueError(f"paths {paths!r} not in {PATHS}")
        self.paths = paths
        return self

    # ----------------------------------------------------------------------------------- stats
    def set_statistics(self, mean, std, profile) -> None:
        """Install the training-window statistics: channel ``mean``/``std`` ``(C,)``, ``profile`` ``(P, C, H, W)``."""
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.std.copy_(torch.as_tensor(std, dtype=torch.float32).clamp_min(1e-6))
        self.profile.copy_(torch.as_tensor(profile, dtype=torch.float32))

    def set_base(self, coef) -> None:
        """Install the linear base ``(H_out, C, N_BASE)``: coefficients of :data:`BASE_FEATURES` per horizon and channel."""
        self.base_coef.copy_(torch.as_tensor(coef, dtype=torch.float32).view_as(self.base_coef))

    def normalise(self, y: torch.Tensor, channel_dim: int = 2) -> torch.Tensor:
        """Raw units to normalised units along ``channel_dim``."""
        shape = [1] * y.ndim
        shape[channel_dim] = -1
        return (y - self.mean.view(shape)) / self.std.view(shape)

    def modality_weights(self) -> dict[str, float]:
        """The learned gate of each modality, ``sigmoid(g_m)`` in (0, 1), by modality name."""
        return {m: float(v) for m, v in zip(self.fusion.names, self.fusion.weights().detach().cpu(), strict=True)}

    # ------------------------------------------------------------------------------ positions
    def bin_of_week(self, calendar_last: torch.Tensor) -> torch.Tensor:
        """Decode the bin of the week ``(B,)`` (long) from the calendar features ``(B, K)`` of one bin."""
        phase = torch.atan2(calendar_last[:, 2].double(), calendar_last[:, 3].double()) / (2 * math.pi)
        per_week = 7 * bins_per_day(self.config.bin_minutes)
        return torch.round(torch.remainder(phase, 1.0) * per_week).long() % per_week

    def calendar_at(self, week_bin: torch.Tensor) -> torch.Tensor:
        """Periodic calendar features ``(..., N_PERIODIC)`` of bins of the week (inverse of :meth:`bin_of_week`)."""
        minutes = (week_bin * self.config.bin_minutes).double()
        tod = 2 * math.pi * torch.remainder(minutes, MINUTES_PER_DAY) / MINUTES_PER_DAY
        tow = 2 * math.pi * minutes / MINUTES_PER_WEEK
        weekend = (minutes >= 5 * MINUTES_PER_DAY).double()
        return torch.stack([tod.sin(), tod.cos(), tow.sin(), tow.cos(), weekend], dim=-1).float()

    def target_holidays(self, calendar: torch.Tensor) -> torch.Tensor:
        """Holiday flags ``(B, H_out)`` of the target bins, read from the context's calendar ``(B, T_in, K)``.

        Target ``j`` (1-based) lies ``k = (m + j * bin) // 1440`` local days after the last context
        bin (``m``: its local minute of the day, at the profile's one UTC offset): ``k = 0`` reads
        that bin's own ``holiday``, ``k >= 1`` the ``holiday_ahead`` of context slot ``T_in - k``
        (``traffic.forecast.features``); beyond ``T_in`` days, the furthest day's flag.
        """
        cfg = self.config
        t_in, n_out = calendar.shape[1], cfg.horizon
        last = self.bin_of_week(calendar[:, -1])  # (B,) UTC bin of the week
        minute = torch.remainder(last * cfg.bin_minutes + cfg.utc_offset_minutes, MINUTES_PER_DAY)  # (B,) local
        steps = torch.arange(1, n_out + 1, device=calendar.device)  # (H_out,)
        k = torch.div(minute[:, None] + steps[None, :] * cfg.bin_minutes, MINUTES_PER_DAY, rounding_mode="floor")
        k = k.clamp(0, t_in)  # (B, H_out) local days after the last context bin
        ahead = calendar[:, :, HOLIDAY_AHEAD].gather(1, (t_in - k.clamp_min(1)).long())  # (B, H_out)
        own = calendar[:, -1:, HOLIDAY].expand_as(ahead)  # (B, H_out)
        return torch.where(k >= 1, ahead, own)

    def prior_for(self, x: torch.Tensor) -> torch.Tensor:
        """Seasonal prior in raw units for the context and target bins, ``(B, T_in + H_out, C, H, W)``."""
        cfg = self.config
        t_in = x.shape[1]
        c = cfg.n_channels
        calendar = x[:, :, 2 * c :, 0, 0].float()  # (B, T_in, K)
        last = self.bin_of_week(calendar[:, -1])  # (B,) UTC bin of the week of the last context bin
        steps = torch.arange(-t_in + 1, cfg.horizon + 1, device=x.device)  # (T_in + H_out,)
        bm, per_day = cfg.bin_minutes, bins_per_day(cfg.bin_minutes)
        utc_min = (last[:, None] + steps[None, :]) * bm  # (B, T_in + H_out) UTC minutes since Monday 00:00
        local = torch.remainder(utc_min + cfg.utc_offset_minutes, MINUTES_PER_WEEK)  # local minutes of the week
        week_bin = torch.div(local, bm, rounding_mode="floor")  # (B, T_in + H_out)
        tod = torch.remainder(week_bin, per_day)
        hol = torch.cat([calendar[:, :, HOLIDAY], self.target_holidays(calendar)], dim=1) > 0.5  # (B, T + H_out)
        # the same positions as traffic.forecast.baselines.time_positions
        if cfg.profile_period == 7 * per_day:  # a holiday reads the Sunday at the same time of day
            pos = torch.where(hol, 6 * per_day + tod, week_bin)
        elif cfg.profile_period == 2 * per_day:  # day type: weekends and holidays are the second day
            pos = tod + per_day * ((local >= 5 * MINUTES_PER_DAY) | hol).long()
        else:
            pos = tod
        return self.profile[pos]  # (B, T_in + H_out, C, H, W)

    # --------------------------------------------------------------------------- linear base
    def terms(self, x: torch.Tensor, prior: torch.Tensor | None = None) -> Terms:
        """Normalised observations, prior, anomalies and the features of the linear base.

        ``prior`` ``(B, T + H_out, C, H, W)`` in raw units replaces the module's own seasonal
        prior (training passes a leave-one-out prior).
        """
        t_in, c = x.shape[1], self.config.n_channels
        x = x.float()
        mask = x[:, :, c : 2 * c]  # (B, T, C, H, W)
        vn = self.normalise(x[:, :, :c]) * mask  # (B, T, C, H, W)
        if prior is None:
            prior = self.prior_for(x)  # (B, T + H_out, C, H, W) raw
        prior = prior.float()
        prior_n = self.normalise(prior)  # (B, T + H_out, C, H, W)
        anomaly = (vn - prior_n[:, :t_in]) * mask  # (B, T, C, H, W)
        steps = torch.arange(1, t_in + 1, device=x.device, dtype=x.dtype).view(1, t_in, 1, 1, 1)
        # index of the last observation (0 when none): the masks are 0 / 1, so the largest ``mask * step`` is the
        # last observed step (an amax: argmax over a non-last dimension was 28x slower on CPU)
        last_idx = (mask * steps).amax(dim=1, keepdim=True).long().sub(1).clamp_min(0)  # (B, 1, C, H, W)
        has_last = mask.amax(dim=1)  # (B, C, H, W)
        anomaly_last = anomaly.gather(1, last_idx).squeeze(1) * has_last  # (B, C, H, W)
        anomaly_mean = anomaly.sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)  # (B, C, H, W)
        value_last = vn.gather(1, last_idx).squeeze(1) * has_last  # (B, C, H, W)
        age = (t_in - 1 - last_idx.squeeze(1)).float() / t_in * has_last + (1 - has_last)  # (B, C, H, W)
        # level: observed over expected volume in the context (raw units), r - 1
        seen = (x[:, :, :c] * mask).sum(dim=1)  # (B, C, H, W)
        expected = (prior[:, :t_in] * mask).sum(dim=1)  # (B, C, H, W)
        ratio = (seen / expected.clamp_min(1e-6)).clamp(0.0, LEVEL_RATIO_MAX)
        level = torch.where(expected > 1e-6, ratio - 1.0, torch.zeros_like(ratio))  # (B, C, H, W)
        prior_level = level[:, None] * prior[:, t_in:] / self.std.view(1, 1, c, 1, 1)  # (B, H_out, C, H, W)
        ones = torch.ones_like(has_last)
        feats = torch.stack([anomaly_last, anomaly_mean, value_last, ones], dim=2)  # (B, C, 4, H, W)
        return Terms(vn, mask, prior_n, anomaly, feats, has_last, age, level, prior_level)

    def base_forecast(self, terms: Terms, coef: torch.Tensor | None = None) -> torch.Tensor:
        """The linear base in normalised units ``(B, H_out, C, H, W)``: ``sum_k coef[j, c, k] * feature_k``."""
        coef = self.base_coef if coef is None else coef  # (H_out, C, N_BASE)
        t_in = terms.vn.shape[1]
        prior_t = terms.prior_n[:, t_in:]  # (B, H_out, C, H, W)
        f = terms.base_features  # (B, C, N_BASE - N_TARGET_BASE, H, W)
        rest = torch.einsum("bckhw,jck->bjchw", f, coef[:, :, N_TARGET_BASE:])  # (B, H_out, C, H, W)
        return coef[None, :, :, 0, None, None] * prior_t + coef[None, :, :, 1, None, None] * terms.prior_level + rest

    # ---------------------------------------------------------------------------------- head
    def target_calendar(self, calendar: torch.Tensor) -> torch.Tensor:
        """Calendar of the target bins ``(B, H_out, N_PERIODIC + 1)`` (periodic features and holiday flag)."""
        n_out = self.config.horizon
        week_bin = self.bin_of_week(calendar[:, -1])  # (B,)
        tgt_bins = week_bin[:, None] + torch.arange(1, n_out + 1, device=calendar.device)[None, :]  # (B, H_out)
        return torch.cat([self.calendar_at(tgt_bins), self.target_holidays(calendar)[..., None]], dim=-1)

    @property
    def has_head_mlp(self) -> bool:
        return self.head_hidden_in is not None

    def head_inputs(
        self, t: Terms, base: torch.Tensor, tgt_cal: torch.Tensor, horizons: torch.Tensor | None = None
    ) -> HeadInputs:
        """What the head reads about each head cell besides the hidden state (:class:`HeadInputs`).

        ``t`` and ``base`` are cropped to the active box. Per cell: its context anomalies and masks
        (``context_steps`` long: shorter contexts are zero-padded at the start, longer ones cut),
        whether and how long ago it was observed; per target bin its prior, linear base and level
        term; per target bin for all cells its calendar and lead (:func:`lead_features`).
        ``horizons`` (0-based, ``(K,)``) keeps those target bins only (``base`` holds just them).
        """
        b, t_in, c, h, w = t.vn.shape  # (B, T, C, h, w)
        idx = self.head_index

        def cells(z: torch.Tensor) -> torch.Tensor:  # (..., h, w) -> (..., N) the head cells
            return z.flatten(-2).index_select(-1, idx)

        k_ctx = self.config.context_steps
        lags = torch.cat([t.anomaly, t.mask], dim=2)[:, -k_ctx:].flatten(1, 2)  # (B, <=2 T C, h, w)
        lags = F.pad(lags, (0, 0, 0, 0, 2 * k_ctx * c - lags.shape[1], 0))  # (B, 2 T C, h, w)
        sample = cells(torch.cat([lags, t.has_last, t.age], dim=1)).transpose(1, 2)  # (B, N, 2 T C + 2C)
        prior_t, prior_level = t.prior_n[:, t_in:], t.prior_level  # (B, H_out, C, h, w) each
        lead = lead_features(self.config.horizon, base.device, base.dtype)  # (H_out, N_LEAD)
        if horizons is not None:  # (B, K, ...) the chosen target bins only
            prior_t, prior_level, lead, tgt_cal = (
                prior_t[:, horizons],
                prior_level[:, horizons],
                lead[horizons],
                tgt_cal[:, horizons],
            )
        step = cells(torch.cat([prior_t, base, prior_level], dim=2)).transpose(2, 3)  # (B, H, N, 3C)
        lead = lead[None].expand(b, -1, -1)  # (B, H_out, N_LEAD)
        time = torch.cat([tgt_cal.to(base.dtype), lead], dim=-1)[:, :, None]  # (B, H_out, 1, N_PERIODIC + 1 + N_LEAD)
        return HeadInputs(sample[:, None], step, time)

    def _linear(self, name: str, x: torch.Tensor, kept: bool) -> torch.Tensor:
        """The head layer ``name`` on ``x``: the trained one, or (``kept``) its frozen pre-fitted copy."""
        if not kept:
            return getattr(self, name)(x)
        bias = getattr(self, _kept(f"{name}.bias"), None)
        return F.linear(x, getattr(self, _kept(f"{name}.weight")), bias)

    def head_out(self, hidden: torch.Tensor | None, inp: HeadInputs | None, kept: bool = False) -> torch.Tensor:
        """The head ``(..., 2C)`` (residual, coefficient correction) on broadcastable ``(..., features)`` inputs.

        ``hidden`` ``(..., hid)`` is the decoder's hidden state at the head cells (None = zero, the
        base + head ablation); ``inp`` the :meth:`head_inputs` (None without an MLP head); ``kept``
        runs the frozen pre-fitted copy (:meth:`keep_head`, hidden state 0 only).
        ``h1 = gelu(W_h hidden + W_s sample + W_p step + W_t time + b)``, ``out = W_o h1 + b_o``.
        """
        if self.head_hidden_in is None:
            if hidden is None:
                raise ValueError("a linear head (head_hidden = 0) needs the hidden state")
            return self.head(hidden)
        assert inp is not None and not (kept and hidden is not None)
        z = (
            self._linear("head_sample_in", inp.sample, kept)
            + self._linear("head_step_in", inp.step, kept)
            + self._linear("head_time_in", inp.time, kept)
        )
        if hidden is not None:
            z = z + self.head_hidden_in(hidden)
        else:  # a zero hidden state: the entry layer's bias alone
            z = z + (getattr(self, _kept("head_hidden_in.bias")) if kept else self.head_hidden_in.bias)
        return self._linear("head", F.gelu(z), kept)  # (..., 2C)

    def _scatter(self, out: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Head output at the head cells ``(B, H_out, N, 2C)`` -> residual and correction ``(B, H_out, C, h, w)``."""
        b, n_out, _, c2 = out.shape
        full = out.new_zeros(b, n_out, c2, h * w)  # (B, H_out, 2C, h*w): 0 off the head cells (the base alone)
        full = full.index_copy(3, self.head_index, out.transpose(2, 3))
        full = full.view(b, n_out, 2, c2 // 2, h, w)  # (B, H_out, 2, C, h, w)
        return full[:, :, 0], full[:, :, 1]

    def _head_only(
        self,
        t: Terms,
        calendar: torch.Tensor,
        base: torch.Tensor,
        horizons: torch.Tensor | None = None,
        kept: bool = False,
    ):
        """The head with a zero hidden state on a (cropped) grid: the base + head ablation (``kept``: its frozen copy)."""
        h, w = t.vn.shape[-2:]
        if not self.has_head_mlp:  # a linear head on a zero hidden state: its bias alone
            bias = getattr(self, _kept("head.bias")) if kept else self.head.bias
            out = bias.expand(base.shape[0], base.shape[1], len(self.head_index), -1)
            return self._scatter(out, h, w)
        inp = self.head_inputs(t, base, self.target_calendar(calendar), horizons)
        return self._scatter(self.head_out(None, inp, kept), h, w)  # (B, H, C, h, w) each

    def _served(self, t: Terms, calendar: torch.Tensor, base: torch.Tensor, horizons: torch.Tensor | None = None):
        """The full model with a kept head: the network's first ``network_steps`` bins, the kept head's later ones."""
        nb, n_out = self.config.network_steps, self.config.horizon
        if horizons is not None:  # a chosen subset: each bin from the part that serves it
            res, fix = self._network(t, calendar, base, horizons)
            res_k, fix_k = self._head_only(t, calendar, base, horizons, kept=True)
            late = (horizons >= nb).view(1, -1, 1, 1, 1)  # (1, K, 1, 1, 1)
            return torch.where(late, res_k, res), torch.where(late, fix_k, fix)
        if self.recurrent_decoder:  # the unroll runs over every bin; its later ones are replaced
            res, fix = self._network(t, calendar, base)
            res, fix = res[:, :nb], fix[:, :nb]
        else:  # the parallel decoder computes only the bins it serves
            res, fix = self._network(t, calendar, base[:, :nb], torch.arange(nb, device=base.device))
        res, fix = res.expand(-1, nb, -1, -1, -1), fix.expand(-1, nb, -1, -1, -1)  # a linear head: one bin for all
        later = torch.arange(nb, n_out, device=base.device)
        res_k, fix_k = self._head_only(t, calendar, base[:, nb:], later, kept=True)
        return torch.cat([res, res_k], dim=1), torch.cat([fix, fix_k], dim=1)  # (B, H_out, C, h, w) each

    # ------------------------------------------------------------------------------- network
    def _network(self, t: Terms, calendar: torch.Tensor, base: torch.Tensor, horizons: torch.Tensor | None = None):
        """Encoder, attention, forecaster and head on a (cropped) grid; returns residual and coefficient correction.

        ``t`` holds cropped :class:`Terms` ``(..., h, w)``; ``calendar`` ``(B, T, K)``; ``base`` ``(B, H_out, C, h, w)``.
        """
        cfg = self.config
        b, t_in, c, h, w = t.vn.shape  # (B, T, C, h, w)
        n_out = cfg.horizon
        p = cfg.patch
        hp, wp = -(-h // p), -(-w // p)  # packed grid of the recurrent stacks

        def pack(z: torch.Tensor) -> torch.Tensor:  # (N, ch, h, w) -> (N, ch p^2, hp, wp), zero-padded
            return F.pixel_unshuffle(F.pad(z, (0, wp * p - w, 0, hp * p - h)), p) if p > 1 else z

        # encoder inputs, all T bins at once: one (B*T, ., h, w) batch per modality
        parts = {
            feed: pack(torch.cat([t.vn[:, :, ix], t.mask[:, :, ix]], dim=2).flatten(0, 1))  # (B*T, 2c_f p^2, hp, wp)
            for feed, ix in self.feed_index.items()
        }
        parts["calendar"] = calendar.reshape(b * t_in, N_CALENDAR, 1, 1).expand(-1, -1, hp, wp)  # (B*T, K, hp, wp)
        parts["prior"] = pack(torch.cat([t.prior_n[:, :t_in], t.anomaly], dim=2).flatten(0, 1))  # (B*T, 2C p^2, ..)
        enc_in = self.fusion(parts).view(b, t_in, cfg.embed_dim, hp, wp)  # (B, T, E, hp, wp)

        states: list[State] = []
        seq = enc_in
        for cell in self.encoder:
            state = cell.init_state(seq, hp, wp)  # type: ignore[operator]
            outs = []
            for i in range(t_in):
                out, state = cell(seq[:, i], state)
                outs.append(out)
            seq = torch.stack(outs, dim=1)  # (B, T, hid, h, w)
            states.append(state)
        if self.attention is not None:  # global context across all cells, on the top layer's hidden state
            states[-1] = (self.attention(states[-1][0]), *states[-1][1:])

        tgt_cal = self.target_calendar(calendar)  # (B, H_out, N_PERIODIC + 1)
        head_in = self.head_inputs(t, base, tgt_cal, horizons) if self.has_head_mlp else None

        def at_cells(z: torch.Tensor) -> torch.Tensor:  # hidden (B, hid, hp, wp) -> (B, 1, N, hid) at the head cells
            if self.unpack is not None:
                z = F.pixel_shuffle(self.unpack(z), p)[..., :h, :w]  # (B, hid, h, w): every cell again
            return z.flatten(-2).index_select(-1, self.head_index).transpose(1, 2)[:, None]

        if not self.recurrent_decoder:
            # parallel decoder: every target bin reads the attended encoder state through the head,
            # all H_out bins in one batch (broadcast over the target bins, never copied)
            out = self.head_out(at_cells(states[-1][0]), head_in)  # (B, H_out, N, 2C)
            return self._scatter(out, h, w)
        # recurrent decoders: unroll a forecaster stack over the target bins with what is known about them
        if horizons is not None:
            raise ValueError(f"decoder {cfg.decoder!r} unrolls every target bin: horizons must be None")
        assert self.fc_calendar is not None and self.fc_prior is not None and self.forecaster is not None
        gates = self.fusion.weights()
        g_cal, g_prior = gates[self.fusion.names.index("calendar")], gates[self.fusion.names.index("prior")]
        fc_cal = self.fc_calendar(tgt_cal.reshape(b * n_out, N_PERIODIC + 1, 1, 1)).view(b, n_out, -1, 1, 1)
        known = torch.cat([t.base_features[:, :, :-1].flatten(1, 2), t.has_last, t.age], dim=1)  # (B, 5C, h, w)
        fc_prior = self.fc_prior(
            pack(
                torch.cat(
                    [t.prior_n[:, t_in:], base, t.prior_level, known[:, None].expand(-1, n_out, -1, -1, -1)], dim=2
                ).flatten(0, 1)
            )  # (B*H_out, (N_BASE + 2) C p^2, hp, wp)
        ).view(b, n_out, -1, hp, wp)  # (B, H_out, E, hp, wp)
        fc_in = g_cal * fc_cal + g_prior * fc_prior + self.horizon_embed  # (B, H_out, E, hp, wp)

        anomaly_last = t.base_features[:, :, 0]  # (B, C, h, w)
        prev = t.base_features[:, :, 2]  # (B, C, h, w) the last observed value: the first step's "previous"
        residuals, fixes = [], []
        for j in range(n_out):
            inp = fc_in[:, j]  # (B, E, h, w)
            if self.ar_embed is not None:
                inp = inp + self.ar_embed(pack(prev))
            for li, cell in enumerate(self.forecaster):
                inp, states[li] = cell(inp, states[li])
            step_in = (
                None if head_in is None else HeadInputs(*(v[:, j : j + 1] if v.shape[1] > 1 else v for v in head_in))
            )
            res, fix = self._scatter(self.head_out(at_cells(inp), step_in), h, w)  # (B, 1, C, h, w) each
            residuals.append(res[:, 0])
            fixes.append(fix[:, 0])
            if self.ar_embed is not None:
                prev = base[:, j] + fix[:, 0] * anomaly_last + res[:, 0]  # this step's prediction, normalised
        return torch.stack(residuals, dim=1), torch.stack(fixes, dim=1)  # (B, H_out, C, h, w) each

    # -------------------------------------------------------------------------------- forward
    def forward(
        self, x: torch.Tensor, prior: torch.Tensor | None = None, horizons: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Forecast the next ``H_out`` bins.

        Parameters
        ----------
        x : torch.Tensor
            ``(B, T_in, F, H, W)`` float32 from ``build_inputs``.
        prior : torch.Tensor, optional
            ``(B, T_in + H_out, C, H, W)`` seasonal prior in raw units, replacing the module's
            own (training passes a leave-one-out prior so a target never sees itself).
        horizons : torch.Tensor, optional
            ``(K,)`` 0-based target bins to forecast (parallel decoder only): training draws a
            subset each step, an unbiased estimate of the loss over every horizon at ``K / H_out``
            of the head's cost. Default: all ``H_out``.

        Returns
        -------
        torch.Tensor
            ``(B, H_out, C, H, W)`` (``(B, K, C, H, W)`` with ``horizons``) in original units.
        """
        cfg = self.config
        b, t_in, f, h, w = x.shape  # (B, T, F, H, W)
        c = cfg.n_channels
        if f != cfg.n_features or (h, w) != tuple(cfg.grid_shape):
            raise ValueError(
                f"input (B, T, F, H, W) = {tuple(x.shape)} does not fit the model: expected F={cfg.n_features} "
                f"({c} channels {cfg.channels}) on a {cfg.grid_shape} grid"
            )
        terms = self.terms(x, prior)
        base = self.base_forecast(terms)  # (B, H_out, C, H, W)
        if horizons is not None:
            base = base[:, horizons]  # (B, K, C, H, W)
        if self.paths == "base":
            return base * self.std.view(1, 1, c, 1, 1) + self.mean.view(1, 1, c, 1, 1)

        # the network sees the active box only; (r0, r1, c0, c1) crops every (..., H, W) tensor
        r0, r1, c0, c1 = cfg.active_box or (0, h, 0, w)
        crop = Terms(*(v[..., r0:r1, c0:c1] for v in terms))
        calendar = x[:, :, 2 * c :, 0, 0].float()  # (B, T, K)
        if self.paths == "base_head":
            residual, coef_fix = self._head_only(crop, calendar, base[..., r0:r1, c0:c1], horizons)
        elif self.kept_bins:  # the network's bins, then base + the pre-fitted head
            residual, coef_fix = self._served(crop, calendar, base[..., r0:r1, c0:c1], horizons)
        else:
            residual, coef_fix = self._network(crop, calendar, base[..., r0:r1, c0:c1], horizons)
        pad = (c0, w - c1, r0, h - r1)  # zero outside the box: the linear base alone
        residual, coef_fix = F.pad(residual, pad), F.pad(coef_fix, pad)  # (B, H_out, C, H, W)
        anomaly_last = terms.base_features[:, None, :, 0]  # (B, 1, C, H, W)
        pred_n = base + coef_fix * anomaly_last + residual  # (B, H_out, C, H, W)
        return pred_n * self.std.view(1, 1, c, 1, 1) + self.mean.view(1, 1, c, 1, 1)


def _kept(name: str) -> str:
    """The buffer holding the kept (pre-fitted) copy of head parameter ``name``: ``head.weight`` -> ``kept_head_weight``."""
    return "kept_" + name.replace(".", "_")
