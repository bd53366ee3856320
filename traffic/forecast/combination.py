"""The published combination: candidates weighted per horizon group and channel, judged on folds it was not fitted on.

What it is
    A forecast ``sum_k w[g, c, k] * forecast_k`` of the candidates :data:`MEMBERS` (the network, its
    ablations ``base_head`` and ``base``, the baselines), with non-negative weights ``w`` per horizon
    group ``g`` (``h01``, ``h02-03``, ...: :func:`traffic.forecast.horizons.horizon_groups`) and
    channel ``c``, fitted by non-negative least squares on observed targets. Each member is best
    somewhere (the network at short horizons where recent data carry signal, GBM or the seasonal
    average further out); the weights let the data say where.

Where the weights are fitted, and why not on the validation days
    Every member is fitted on the training *and* validation days (the baselines, the network with
    ``fit_on_validation``): their residuals there are in-sample, too small, and in-sample most for
    the most flexible member (GBM, the network). Weights fitted there would trust what overfits.
    The holdout's forecasts are the only out-of-sample forecasts of every member, so the weights
    are **cross-fitted over the backtest folds**: the combination's forecasts of fold ``k`` use
    weights fitted on the other folds only (never on the fold that judges them), and the backtest
    scores those forecasts like any other candidate's (``backtest.combination.*``). The weights
    that serve are fitted on every fold of the holdout (:attr:`Combination.weights`); they are
    part of the served spec (the run's ``combination/weights.json``) and on the card.

Fresh and stale contexts
    What a member is worth at a horizon depends on whether the cell saw the channel in the origin's
    bin: with a fresh last value persistence, the network and the lag models carry the first hours;
    after a gap (a camera that counts only in daylight, forecast from midnight) they carry nothing
    and the seasonal members should. The weights are therefore fitted per horizon group, channel
    and **regime** (``fresh``: observed in the origin's bin, else ``stale``); a regime without a
    scored target takes the weights fitted on both regimes.

The nightly origin
    The day-ahead forecast is issued once a day, at local midnight (the nightly origin), where
    traffic is at its lowest and a daylight camera's last value is hours old; the backtest (and the
    hourly refresh) forecasts from every bin. Weights fitted over every origin are what the refresh
    needs but not what the nightly forecast does: a member that is good by day can be the worst at
    night. A second set of weights, :attr:`Combination.nightly_weights`, is fitted on the nightly
    origins alone (cross-fitted the same way; a regime without a scored target from a nightly origin
    takes that of both regimes there, a group and channel without any the all-origin weights), and
    the backtest scores every nightly
    origin's forecast with them: ``backtest.combination`` is the combination exactly as it serves.

The network's marginal contribution
    :data:`WITHOUT_NETWORK` is the same combination refitted without the full model
    (``combination_without_network``, which keeps ``base_head``: the pre-fitted head without the
    recurrent path). ``combination`` against it, per horizon group, with its paired interval
    (:meth:`traffic.forecast.backtest.Backtest.compare`), is what the ConvLSTM adds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from traffic.forecast.backtest import Backtest, DailyErrors
from traffic.forecast.metrics import observed_points

__all__ = [
    "COMBINATION",
    "COMBINATIONS",
    "MEMBERS",
    "NETWORK",
    "WITHOUT_NETWORK",
    "Combination",
    "HoldoutPredictions",
    "Points",
    "RecordingErrors",
    "combine",
    "fill_missing",
    "nightly_origins",
    "nnls_gram",
]

#: The candidate that combines every member, and the one without the network.
COMBINATION = "combination"
WITHOUT_NETWORK = "combination_without_network"
COMBINATIONS = (COMBINATION, WITHOUT_NETWORK)
#: The member that is the network (left out of :data:`WITHOUT_NETWORK`).
NETWORK = "model"
#: Members of the combination, in weight order.
MEMBERS = ("model", "base_head", "base", "gbm", "seasonal_average", "ridge", "persistence")
#: Ridge added to the Gram matrix's diagonal, relative to its mean diagonal (collinear members).
RIDGE = 1e-6
#: Weights on the simplex (non-negative, summing to one) rather than any non-negative weights.
SIMPLEX = True
#: Weight of the sum-to-one row relative to the Gram matrix's mean diagonal (large: the constraint holds
#: to about 1e-4).
SIMPLEX_WEIGHT = 1e4


@dataclass(frozen=True)
class Points:
    """The holdout's observed targets, ``(N,)`` each: value, target day, horizon step, channel, fresh regime, and
    whether the forecast was issued at the nightly origin (local midnight)."""

    y: np.ndarray
    day: np.ndarray
    step: np.ndarray
    channel: np.ndarray
    fresh: np.ndarray
    nightly: np.ndarray


def nightly_origins(times: pd.DatetimeIndex, timezone: str) -> np.ndarray:
    """``(T,)`` bool: bin ``t`` starts at local midnight, i.e. a forecast whose first target is ``t`` is the nightly one.

    Parameters
    ----------
    times : pandas.DatetimeIndex
        The grid's bin starts (UTC).
    timezone : str
        The city's time zone (the nightly origin is its local midnight: :func:`traffic.pipeline.forecast_origin`).
    """
    local = pd.DatetimeIndex(times).tz_convert(timezone)
    return np.asarray((local.hour == 0) & (local.minute == 0) & (local.second == 0), dtype=bool)


class HoldoutPredictions:
    """Every member's forecasts at the holdout's observed targets, in one order shared by all members.

    Filled batch by batch through :class:`RecordingErrors`; every member must score the same
    origins in the same order (checked by :meth:`matrix`).

    Parameters
    ----------
    day_of_bin : np.ndarray
        ``(T,)`` target day of every bin (:func:`traffic.forecast.backtest.day_index`).
    seen : np.ndarray, optional
        ``(T, C, H, W)`` the grid's mask: a point's regime is fresh when its cell observed the
        channel in the origin's bin (default: every point fresh).
    nightly : np.ndarray, optional
        ``(T,)`` bool, :func:`nightly_origins`: a forecast whose first target bin is nightly was
        issued at the nightly origin (default: none is).
    """

    def __init__(
        self, day_of_bin: np.ndarray, seen: np.ndarray | None = None, nightly: np.ndarray | None = None
    ) -> None:
        self.day_of_bin = np.asarray(day_of_bin, dtype=np.int64)
        self.seen = seen
        self.nightly = None if nightly is None else np.asarray(nightly, dtype=bool)
        self.values: dict[str, list[np.ndarray]] = {}
        self.origins: dict[str, list[np.ndarray]] = {}
        # the targets' value, day, horizon step and channel: recorded once, by the first member
        self._first: str | None = None
        self._points: list[tuple[np.ndarray, ...]] = []

    def add(self, name: str, pred: np.ndarray, target: np.ndarray, mask: np.ndarray, tidx: np.ndarray) -> None:
        """Record a batch: ``pred``/``target``/``mask`` ``(B, H_out, C, H, W)``, ``tidx`` ``(B, H_out)``."""
        pts = observed_points(mask)  # the observed targets: flat indices and their axes
        day = self.day_of_bin[np.asarray(tidx)[pts.sample, pts.step]]
        keep = day >= 0
        idx, b, h, c, cell, day = (a[keep] for a in (pts.idx, pts.sample, pts.step, pts.channel, pts.cell, day))
        self.values.setdefault(name, []).append(np.asarray(pred).reshape(-1)[idx].astype(np.float32))
        self.origins.setdefault(name, []).append(np.asarray(tidx[:, 0], dtype=np.int64))
        if self._first is None:
            self._first = name
        if name == self._first:
            origin = tidx[:, 0] - 1  # (B,) the last context bin
            if self.seen is not None:
                fresh = self.seen.reshape(len(self.seen), mask.shape[2], -1)[origin[b], c, cell]
            else:
                fresh = np.ones(len(b), dtype=bool)
            nightly = self.nightly[tidx[b, 0]] if self.nightly is not None else np.zeros(len(b), dtype=bool)
            self._points.append(
                (
                    np.asarray(target).reshape(-1)[idx].astype(np.float32),
                    day,
                    h,
                    c,
                    np.asarray(fresh, dtype=bool),
                    np.asarray(nightly, dtype=bool),
                )
            )

    def points(self) -> Points:
        """Every recorded point's target, day, horizon step, channel, regime and nightly flag."""
        if not self._points:
            z = np.zeros(0, dtype=np.int64)
            return Points(z.astype(np.float32), z, z, z, z.astype(bool), z.astype(bool))
        y, d, h, c, f, n = (np.concatenate(p) for p in zip(*self._points, strict=True))
        return Points(y, d.astype(np.int64), h.astype(np.int64), c.astype(np.int64), f.astype(bool), n.astype(bool))

    def matrix(self, members: Sequence[str]) -> np.ndarray:
        """``(N, K)`` forecasts of ``members`` at the points (float64).

        Raises
        ------
        ValueError
            When a member was not recorded or scored other origins than the first member.
        """
        missing = [m for m in members if m not in self.values]
        if missing:
            raise ValueError(
                f"combination: members {missing} were not scored on the holdout; scored: {sorted(self.values)}"
            )
        ref = np.concatenate(self.origins[self._first]) if self._first else np.zeros(0, dtype=np.int64)
        cols = []
        for m in members:
            if not np.array_equal(np.concatenate(self.origins[m]), ref):
                raise ValueError(f"combination: member {m!r} scored other holdout origins than {self._first!r}")
            cols.append(np.concatenate(self.values[m]).astype(np.float64))
        return np.stack(cols, axis=1)


class RecordingErrors(DailyErrors):
    """:class:`~traffic.forecast.backtest.DailyErrors` that also records the forecasts for the combination."""

    def __init__(self, day_of_bin: np.ndarray, n_days: int, horizon: int, store: HoldoutPredictions, name: str) -> None:
        super().__init__(day_of_bin, n_days, horizon)
        self.store, self.name = store, name

    def update(self, pred: np.ndarray, target: np.ndarray, mask: np.ndarray, tidx: np.ndarray) -> None:
        super().update(pred, target, mask, tidx)
        self.store.add(self.name, pred, target, mask, tidx)


def nnls_gram(gram: np.ndarray, xty: np.ndarray, simplex: bool | None = None) -> np.ndarray:
    """Non-negative least squares from the normal equations: ``argmin_{w >= 0} |X w - y|^2`` given ``X'X`` and ``X'y``.

    With ``X'X = R'R`` (Cholesky, a small ridge on the diagonal) the problem equals
    ``argmin_{w >= 0} |R w - R'^{-1} X'y|^2``, which :func:`scipy.optimize.nnls` solves in ``K``
    dimensions whatever the number of rows.

    Parameters
    ----------
    gram : np.ndarray
        ``(K, K)`` ``X'X``.
    xty : np.ndarray
        ``(K,)`` ``X'y``.

    Returns
    -------
    np.ndarray
        ``(K,)`` non-negative weights; the plain average ``1 / K`` when there is nothing to fit on
        (no rows: e.g. a backtest of one fold, whose weights cannot come from another fold).
    """
    from scipy.linalg import cho_factor, solve_triangular
    from scipy.optimize import nnls

    k = len(xty)
    scale = float(np.trace(gram)) / max(k, 1)
    if not np.isfinite(scale) or scale <= 0:  # nothing to fit on (a single fold, a channel never observed)
        return np.full(k, 1.0 / max(k, 1))
    g = gram + RIDGE * scale * np.eye(k)
    if (
        SIMPLEX if simplex is None else simplex
    ):  # weights summing to one: a heavily weighted row 1'w = 1 (a combination, never a rescaling)
        g = g + SIMPLEX_WEIGHT * scale * np.ones((k, k))
        xty = xty + SIMPLEX_WEIGHT * scale * np.ones(k)
    r, _ = cho_factor(g, lower=False)
    r = np.triu(r)
    b = solve_triangular(r, xty, trans="T", lower=False)
    w, _ = nnls(r, b)
    return w


@dataclass(frozen=True)
class Combination:
    """Fitted weights of one combination.

    Attributes
    ----------
    name : str
        :data:`COMBINATION` or :data:`WITHOUT_NETWORK`.
    members : tuple of str
    groups : tuple of (str, int, int)
        ``(tag, first step, last step + 1)`` of every horizon group.
    channels : tuple of str
    weights : np.ndarray
        ``(G, C, 2, K)`` the serving weights per group, channel and regime (0 stale, 1 fresh),
        fitted on every fold.
    fold_weights : np.ndarray
        ``(F, G, C, 2, K)`` the weights each fold was forecast with (fitted on the other folds).
    nightly_weights : np.ndarray, optional
        ``(G, C, 2, K)`` the serving weights of a forecast issued at the nightly origin (fitted on
        the nightly origins; None: a run logged before them, the all-origin weights serve).
    nightly_fold_weights : np.ndarray, optional
        ``(F, G, C, 2, K)`` the nightly weights each fold was forecast with.
    """

    name: str
    members: tuple[str, ...]
    groups: tuple[tuple[str, int, int], ...]
    channels: tuple[str, ...]
    weights: np.ndarray
    fold_weights: np.ndarray
    nightly_weights: np.ndarray | None = None
    nightly_fold_weights: np.ndarray | None = None

    def step_weights(self, horizon: int, nightly: bool = False) -> np.ndarray:
        """``(H_out, C, 2, K)`` the weight of every member at every forecast step, per channel and regime.

        ``nightly``: the weights of a forecast issued at the nightly origin (where fitted).
        """
        weights = self.nightly_weights if nightly and self.nightly_weights is not None else self.weights
        out = np.zeros((horizon, *weights.shape[1:]))
        for gi, (_, lo, hi) in enumerate(self.groups):
            out[lo:hi] = weights[gi][None]
        return out

    def apply(
        self, forecasts: Mapping[str, np.ndarray], fresh: np.ndarray | None = None, nightly: bool = False
    ) -> np.ndarray:
        """The combined forecast of members' ``(H_out, C, H, W)`` forecasts (or bounds).

        ``fresh`` ``(C, H, W)``: the cell observed the channel in the origin's bin (the last bin
        of the context); default every cell fresh. ``nightly``: the forecast is issued at the
        nightly origin (local midnight: :attr:`nightly_weights`).
        """
        first = np.asarray(forecasts[self.members[0]])
        w = self.step_weights(first.shape[0], nightly)  # (H_out, C, 2, K)
        is_fresh = np.ones(first.shape[1:], dtype=bool) if fresh is None else np.asarray(fresh, dtype=bool)
        out = np.zeros(first.shape, dtype=np.float64)
        for k, m in enumerate(self.members):
            wk = np.where(is_fresh[None], w[:, :, 1, k, None, None], w[:, :, 0, k, None, None])  # (H_out, C, H, W)
            out += wk * np.asarray(forecasts[m], dtype=np.float64)
        return out.astype(np.float32)

    def predict_points(self, x: np.ndarray, pts: Points) -> np.ndarray:
        """The combination at points: ``x`` ``(N, K)`` members' forecasts (member order)."""
        horizon = self.groups[-1][2]
        w = self.step_weights(horizon)  # (H_out, C, 2, K)
        wn = self.step_weights(horizon, nightly=True)  # (H_out, C, 2, K)
        regime = pts.fresh.astype(np.int64)
        at = np.where(pts.nightly[:, None], wn[pts.step, pts.channel, regime], w[pts.step, pts.channel, regime])
        return np.einsum("nk,nk->n", fill_missing(x), at)

    def to_json(self) -> dict[str, object]:
        """The served spec: members, groups, channels and the weights (``weights[g][c][r][k]``; ``nightly_weights``)."""
        out: dict[str, object] = {
            "name": self.name,
            "members": list(self.members),
            "groups": [{"tag": t, "steps": [lo, hi]} for t, lo, hi in self.groups],
            "channels": list(self.channels),
            "weights": np.round(self.weights, 6).tolist(),
        }
        if self.nightly_weights is not None:
            out["nightly_weights"] = np.round(self.nightly_weights, 6).tolist()
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, object]) -> Combination:
        """Read back :meth:`to_json` (the fold weights are not served: empty; weights without regimes: both alike)."""
        groups = tuple((str(g["tag"]), int(g["steps"][0]), int(g["steps"][1])) for g in obj["groups"])  # type: ignore[index, union-attr, attr-defined]
        nightly = obj.get("nightly_weights")
        return cls(
            name=str(obj["name"]),
            members=tuple(str(m) for m in obj["members"]),  # type: ignore[union-attr, attr-defined]
            groups=groups,
            channels=tuple(str(c) for c in obj["channels"]),  # type: ignore[union-attr, attr-defined]
            weights=_with_regimes(np.asarray(obj["weights"], dtype=np.float64)),
            fold_weights=np.zeros((0,)),
            nightly_weights=None if nightly is None else _with_regimes(np.asarray(nightly, dtype=np.float64)),
        )

    def weights_table(self, nightly: bool = False) -> str:
        """Markdown: one row per horizon group, channel and regime, one column per member.

        ``nightly``: the weights of the nightly origin (the all-origin ones where none were fitted).
        """
        weights = self.nightly_weights if nightly and self.nightly_weights is not None else self.weights
        head = "| horizon | channel | last value | " + " | ".join(self.members) + " |"
        rows = [head, "|---|---|---|" + "---:|" * len(self.members)]
        for gi, (tag, _, _) in enumerate(self.groups):
            for ci, ch in enumerate(self.channels):
                for ri, regime in ((1, "fresh"), (0, "stale")):
                    cells = " | ".join(f"{w:.2f}" for w in weights[gi, ci, ri])
                    rows.append(f"| {tag} | {ch} | {regime} | {cells} |")
        return "\n".join(rows)


def _with_regimes(w: np.ndarray) -> np.ndarray:
    """``(G, C, K)`` weights without regimes as ``(G, C, 2, K)``: both regimes alike."""
    return np.repeat(w[:, :, None, :], 2, axis=2) if w.ndim == 3 else w


def dumps(combos: Sequence[Combination]) -> str:
    """The run's ``combination/weights.json``: every fitted combination by name."""
    return json.dumps({c.name: c.to_json() for c in combos}, indent=1, sort_keys=True)


def loads(text: str) -> dict[str, Combination]:
    """Read back :func:`dumps`."""
    return {name: Combination.from_json(obj) for name, obj in json.loads(text).items()}


def fill_missing(x: np.ndarray) -> np.ndarray:
    """A member with no finite forecast at a point takes the mean of the finite ones there."""
    bad = ~np.isfinite(x)
    if not bad.any():
        return x
    with np.errstate(invalid="ignore"):
        row = np.nanmean(np.where(bad, np.nan, x), axis=1)
    return np.where(bad, np.nan_to_num(row)[:, None], x)


def _fit_weights(
    gram: np.ndarray, xty: np.ndarray, days: np.ndarray, otherwise: np.ndarray | None = None
) -> np.ndarray:
    """``(G, C, 2, K)`` weights from the per-day sums of ``days``; a regime without rows takes both regimes' fit.

    ``gram`` ``(D, G, C, 2, K, K)`` and ``xty`` ``(D, G, C, 2, K)``: per day, group, channel, regime.
    ``otherwise`` ``(G, C, 2, K)``: the weights of a (group, channel) without any rows instead (the
    nightly origins' fit falls back on the all-origin weights only where no forecast from midnight
    was scored; a regime without rows takes the other regime's, as in the all-origin fit: at
    midnight the hour, not the regime, is what the all-origin weights miss).
    """
    gs, vs = gram[days].sum(axis=0), xty[days].sum(axis=0)  # (G, C, 2, K, K), (G, C, 2, K)
    n_g, n_ch, _, k = vs.shape
    w = np.zeros((n_g, n_ch, 2, k))
    for gi in range(n_g):
        for ci in range(n_ch):
            both = gs[gi, ci].sum(axis=0)
            pooled = nnls_gram(both, vs[gi, ci].sum(axis=0))
            for ri in range(2):
                if np.trace(gs[gi, ci, ri]) > 0:
                    w[gi, ci, ri] = nnls_gram(gs[gi, ci, ri], vs[gi, ci, ri])
                elif np.trace(both) > 0 or otherwise is None:
                    w[gi, ci, ri] = pooled  # the other regime's rows (of these origins) decide
                else:
                    w[gi, ci, ri] = otherwise[gi, ci, ri]
    return w


def _day_sums(
    xs: np.ndarray, y: np.ndarray, cell: np.ndarray, shape: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Per (day, group, channel, regime) ``X'X`` ``(D, G, C, 2, K, K)`` and ``X'y`` ``(D, G, C, 2, K)`` of rows ``cell``."""
    n_days, n_g, n_ch = shape
    k = xs.shape[1]
    n_cells = n_days * n_g * n_ch * 2
    flat_gram = np.zeros((n_cells, k, k))
    flat_xty = np.zeros((n_cells, k))
    for i in range(k):
        flat_xty[:, i] = np.bincount(cell, weights=xs[:, i] * y, minlength=n_cells)
        for j in range(i, k):
            both = np.bincount(cell, weights=xs[:, i] * xs[:, j], minlength=n_cells)
            flat_gram[:, i, j] = flat_gram[:, j, i] = both
    gram = flat_gram.reshape(n_days, n_g, n_ch, 2, k, k)  # (day, group, channel, regime, K, K)
    xty = flat_xty.reshape(n_days, n_g, n_ch, 2, k)  # (day, group, channel, regime, K)
    return gram, xty


def combine(store: HoldoutPredictions, bt: Backtest, members: Sequence[str] = MEMBERS) -> list[Combination]:
    """Fit :data:`COMBINATION` and :data:`WITHOUT_NETWORK` and add their cross-fitted errors to ``bt``.

    For every horizon group ``g`` (:meth:`Backtest.groups`, without ``all``), channel ``c`` and regime (fresh or stale),
    the per-day Gram matrices ``X_d'X_d`` and ``X_d'y_d`` of the members' forecasts ``X`` and the
    targets ``y`` are summed over the days of every fold but one (:func:`nnls_gram`): the
    weights fold ``k`` is forecast with. The serving weights sum every day. The same again over
    the forecasts issued at the nightly origin alone gives the nightly weights, with which those
    forecasts are scored.

    Parameters
    ----------
    store : HoldoutPredictions
        The members' holdout forecasts.
    bt : Backtest
        Receives ``errors[COMBINATION]`` and ``errors[WITHOUT_NETWORK]``.
    members : sequence of str
        The members (those not recorded are left out, e.g. a network that was not scored).

    Returns
    -------
    list of Combination
    """
    present = [m for m in members if m in store.values]
    pts = store.points()
    x = fill_missing(store.matrix(present))  # (N, K)
    groups = [(tag, s.start or 0, s.stop if s.stop is not None else bt.horizon) for tag, s in bt.groups()[:-1]]
    n_days, n_g = len(bt.days), len(groups)
    n_ch = max(len(bt.channels), int(pts.channel.max()) + 1 if len(pts.channel) else 1)
    group_of_step = np.zeros(bt.horizon, dtype=np.int64)
    for gi, (_, lo, hi) in enumerate(groups):
        group_of_step[lo:hi] = gi
    g = group_of_step[pts.step]
    regime = pts.fresh.astype(np.int64)
    fold_of_day = np.zeros(n_days, dtype=np.int64)
    for fi, f in enumerate(bt.folds):
        fold_of_day[bt.fold_days(f)] = fi
    out = []
    night = pts.nightly
    for name in COMBINATIONS:
        cols = [i for i, m in enumerate(present) if name == COMBINATION or m != NETWORK]
        xs, y = x[:, cols], pts.y.astype(np.float64)
        # per (day, group, channel, regime): X'X and X'y, over every origin and over the nightly ones
        cell = ((pts.day * n_g + g) * n_ch + pts.channel) * 2 + regime
        gram, xty = _day_sums(xs, y, cell, (n_days, n_g, n_ch))
        n_gram, n_xty = _day_sums(xs[night], y[night], cell[night], (n_days, n_g, n_ch))

        every = np.arange(n_days)
        weights = _fit_weights(gram, xty, every)
        nightly_w = _fit_weights(n_gram, n_xty, every, otherwise=weights)
        fold_w = np.stack([_fit_weights(gram, xty, np.flatnonzero(fold_of_day != fi)) for fi in range(len(bt.folds))])
        nightly_fold_w = np.stack(
            [
                _fit_weights(n_gram, n_xty, np.flatnonzero(fold_of_day != fi), otherwise=fold_w[fi])
                for fi in range(len(bt.folds))
            ]
        )
        fi_of = fold_of_day[pts.day]
        at = np.where(
            night[:, None], nightly_fold_w[fi_of, g, pts.channel, regime], fold_w[fi_of, g, pts.channel, regime]
        )  # (N, K) the weights each point was forecast with
        pred = np.einsum("nk,nk->n", xs, at)
        errors = DailyErrors(store.day_of_bin, n_days, bt.horizon)
        errors.add_points(pred - y, pts.day, pts.step, pts.channel, n_ch)
        bt.errors[name] = errors
        out.append(
            Combination(
                name=name,
                members=tuple(present[i] for i in cols),
                groups=tuple(groups),
                channels=tuple(bt.channels) or tuple(str(i) for i in range(n_ch)),
                weights=weights,
                fold_weights=fold_w,
                nightly_weights=nightly_w,
                nightly_fold_weights=nightly_fold_w,
            )
        )
    return out
