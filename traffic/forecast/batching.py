"""Training batches gathered on the training device from sample indices.

The grid's values, masks, calendar features and the leave-one-out seasonal prior (each computed
once for every bin) are copied to the device once; a batch is then a handful of index
gathers there, so a GPU worker never waits on the host for inputs and nothing is
pre-materialised per sample. The inputs are exactly those of
:func:`traffic.forecast.features.build_inputs` (what serving feeds the module); a test holds
the two equal.

During training the seasonal prior of an observed bin inside the fit window is taken
leave-one-out, so that no target (nor context value) sees its own value through the prior.
"""

from __future__ import annotations

import numpy as np
import torch

from traffic.forecast.baselines import SeasonalProfile
from traffic.forecast.features import HOLIDAY_AHEAD, N_CALENDAR, grid_calendar, holiday_table
from traffic.grid.tensor import GridTensor

#: Bins per chunk of the leave-one-out prior's one-off computation (:class:`Batcher`).
LOO_CHUNK = 256


def masked_channel_stats(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masked per-channel mean and std of ``(T, C, H, W)`` arrays (0 / 1 for a channel never observed)."""
    m = mask.astype(bool)
    n = m.sum(axis=(0, 2, 3)).astype(np.float64)
    v = np.where(m, values, 0.0).astype(np.float64)
    mean = v.sum(axis=(0, 2, 3)) / np.maximum(n, 1)
    var = (np.where(m, v - mean[None, :, None, None], 0.0) ** 2).sum(axis=(0, 2, 3)) / np.maximum(n, 1)
    std = np.sqrt(var)
    std = np.where((n > 1) & (std > 1e-6), std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)


class Batcher:
    """Builds batches ``(x, prior, y, mask)`` for samples ``t_end`` on ``device``.

    Parameters
    ----------
    grid : GridTensor
    context_steps, horizon : int
    profile : SeasonalProfile
        Fitted on bins ``[fit_start, fit_end)``.
    positions : np.ndarray
        ``(T,)`` position in the profile's period of every grid bin.
    fit_start, fit_end : int
        The profile's fit window: priors of observed bins inside it are leave-one-out.
    device : torch.device
    """

    def __init__(
        self,
        grid: GridTensor,
        context_steps: int,
        horizon: int,
        profile: SeasonalProfile,
        positions: np.ndarray,
        fit_start: int,
        fit_end: int,
        device: torch.device,
    ) -> None:
        self.context_steps, self.horizon, self.device = context_steps, horizon, device
        n_t = grid.shape[0]
        mask = np.asarray(grid.mask, dtype=bool)

        def put(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).to(device)

        self.values = put(np.where(mask, grid.values, 0.0).astype(np.float32))  # (T, C, H, W), 0 where missing
        self.mask = put(mask)  # (T, C, H, W) bool
        self.calendar = put(grid_calendar(grid, horizon))  # (T, K): computed once
        days, flags, self._day0 = holiday_table(grid, context_steps)
        self.days = put(days)  # (T,) local day of every bin
        self.holiday_flags = put(flags)  # (D,) holiday flag per local day (holiday_ahead)
        self._ahead = torch.arange(context_steps, 0, -1, device=device)  # slot p -> local day + (T_in - p)
        # the leave-one-out prior of every bin, once: it depends on the bin alone (not on the sample that
        # reads it), so a batch's prior is one gather; computed in chunks of bins (no temporary larger than
        # a chunk), then the profile's tensors are dropped
        pos_all = put(np.asarray(positions, dtype=np.int64))  # (T,)
        profile_t = put(profile.profile.astype(np.float32))  # (P, C, H, W)
        sums = put(profile.sums.astype(np.float32))  # (P, C, H, W)
        counts = put(profile.counts.astype(np.float32))  # (P, C, H, W)
        cell_mean = put(profile.cell_mean.astype(np.float32))  # (C, H, W)
        t = np.arange(n_t)
        in_window = put((t >= fit_start) & (t < fit_end))  # (T,) bool
        self.loo = torch.empty_like(self.values)  # (T, C, H, W)
        for lo in range(0, n_t, LOO_CHUNK):
            sl = slice(lo, min(n_t, lo + LOO_CHUNK))
            pos = pos_all[sl]  # (t,)
            prior = profile_t[pos]  # (t, C, H, W)
            own = self.mask[sl] & in_window[sl][:, None, None, None]  # (t, C, H, W) observed in the fit window
            n = counts[pos]  # (t, C, H, W)
            loo = (sums[pos] - torch.where(own, self.values[sl], 0.0)) / (n - 1).clamp_min(1.0)
            prior = torch.where(own & (n > 1), loo, prior)
            self.loo[sl] = torch.where(own & (n == 1), cell_mean.expand_as(prior), prior)
        self._ctx = torch.arange(-context_steps + 1, 1, device=device)  # (T_in,)
        self._tgt = torch.arange(1, horizon + 1, device=device)  # (H_out,)
        self._all = torch.arange(-context_steps + 1, horizon + 1, device=device)  # (T_in + H_out,)

    def _index(self, t_end: np.ndarray | torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(np.asarray(t_end, dtype=np.int64) if not torch.is_tensor(t_end) else t_end).to(
            self.device
        )

    def inputs(self, t_end: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``(B, T_in, F, H, W)`` model inputs, equal to ``build_inputs(grid, t_end, ...)``."""
        te = self._index(t_end)
        idx = te[:, None] + self._ctx[None, :]  # (B, T_in)
        v, m = self.values[idx], self.mask[idx]  # (B, T_in, C, H, W)
        b, t_in, _, h, w = v.shape
        cal = self.calendar[idx].clone()  # (B, T_in, K)
        cal[:, :, HOLIDAY_AHEAD] = self.holiday_flags[self.days[te][:, None] + self._ahead[None, :] - self._day0]
        cal = cal[..., None, None].expand(b, t_in, N_CALENDAR, h, w)  # (B, T_in, K, H, W)
        return torch.cat([v, m.to(v.dtype), cal], dim=2)  # (B, T_in, F, H, W)

    def loo_prior(self, t_end: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Leave-one-out seasonal prior ``(B, T_in + H_out, C, H, W)`` for the bins of samples ``t_end``."""
        te = self._index(t_end)
        return self.loo[te[:, None] + self._all[None, :]]  # (B, T_in + H_out, C, H, W)

    def targets(self, t_end: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Targets ``(B, H_out, C, H, W)`` (0 where missing) and their mask (bool)."""
        te = self._index(t_end)
        idx = te[:, None] + self._tgt[None, :]  # (B, H_out)
        return self.values[idx], self.mask[idx]

    def __call__(self, t_end: np.ndarray | torch.Tensor, loo: bool = True):
        """``x``, prior (leave-one-out, or None for the module's own), target (0 where missing) and mask."""
        te = self._index(t_end)
        y, m = self.targets(te)
        return self.inputs(te), self.loo_prior(te) if loo else None, y, m
