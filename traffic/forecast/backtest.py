"""Rolling-origin backtest: every candidate scored per target day on the holdout's folds, with paired intervals.

What a decision rests on
    The holdout is the last ``holdout_days`` of a nightly window (``[forecast] holdout_days``). It is
    split by the local date of the **target** bin into ``backtest_folds`` folds of equal whole days
    (:func:`fold_plan`). Every candidate (the network, its ablations ``base`` and ``base_head``, every
    baseline, the current champion) is fitted once on the days before the holdout and forecasts from
    every origin inside it (rolling origins, fixed fit: reusing one fit over the folds is honest
    because no fold's data reaches a fit). Each error of a (origin, horizon) pair counts in the day
    its target lies in (:class:`DailyErrors`), so the folds partition the scored errors and every
    candidate is scored on exactly the same targets.

Folds with public holidays
    A fold whose days include a public holiday (``GridTensor.holidays``) is a *holiday fold*: its
    figures are reported apart (``backtest.<candidate>.fold<k>.rmse_mean`` with the fold's tag
    ``holiday``, and ``backtest.<candidate>.rmse_mean_regular`` over the other folds). The
    decision uses every fold; a holdout whose every fold is a holiday fold is said so in the
    decision (never the only evidence without saying it).

Paired differences and their intervals (docs/backtests.md)
    For two candidates ``a`` and ``b`` and each target day ``t`` the daily relative difference is
    ``d_t = RMSE_a(t) / RMSE_b(t) - 1`` (RMSE pooled over the day's targets of a horizon group;
    negative = ``a`` is better). The estimate is the mean of ``d_t`` over the days and the 90 %
    interval is the Diebold–Mariano interval with the Harvey–Leybourne–Newbold small-sample
    correction (:func:`paired_interval`): Student's t with ``n - 1`` degrees of freedom, and the
    lag-1 autocovariance in the variance when there are at least :data:`MIN_DAYS_FOR_LAG` days
    (errors of consecutive days share origins). A block bootstrap was not chosen: with the two
    days a 7-day city holds it has only three distinct resamples and gives intervals far too
    narrow; the t-based interval widens as it should (t = 6.31 for two days).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from traffic.forecast.horizons import group_tag, horizon_groups
from traffic.forecast.metrics import observed_points
from traffic.grid.tensor import GridTensor

__all__ = [
    "CANDIDATES",
    "GROUP_PAIRS",
    "LEVEL",
    "Backtest",
    "Comparison",
    "DailyErrors",
    "Fold",
    "backtest_metrics",
    "day_index",
    "fold_plan",
    "paired_interval",
]

#: Nominal level of every paired interval.
LEVEL = 0.90
#: Days from which the variance of the mean difference includes the lag-1 autocovariance.
MIN_DAYS_FOR_LAG = 8
#: Quantile of a candidate's daily RMSE logged as what the backtest promises (``rmse.<group>.hi``).
DAILY_HI_QUANTILE = 0.95
#: The candidates a nightly run scores, in report order (the network, its ablations, the per-horizon
#: combinations of :mod:`traffic.forecast.combination`, the baselines).
CANDIDATES = (
    "model",
    "base",
    "base_head",
    "combination",
    "combination_without_network",
    "gbm",
    "seasonal_average",
    "ridge",
    "persistence",
)
#: Pairs also compared per horizon group (``backtest.<a>.vs_<b>.<group>.mean/.lo/.hi``): what the
#: network adds to the combination, the combination against the reference, the recurrent path.
GROUP_PAIRS = (
    ("combination", "combination_without_network"),
    ("combination", "gbm"),
    ("model", "base_head"),
)
#: The reference every candidate's relative difference is logged against (``backtest.<c>.vs_gbm.*``).
REFERENCE = "gbm"


@dataclass(frozen=True)
class Fold:
    """One fold of the backtest: consecutive local target days.

    Attributes
    ----------
    index : int
        1-based, in time order.
    days : tuple of str
        Local dates ``YYYY-MM-DD``.
    holidays : tuple of str
        Those of :attr:`days` that are public holidays.
    """

    index: int
    days: tuple[str, ...]
    holidays: tuple[str, ...] = ()

    @property
    def holiday(self) -> bool:
        return bool(self.holidays)

    @property
    def label(self) -> str:
        span = self.days[0] if len(self.days) == 1 else f"{self.days[0]}..{self.days[-1]}"
        return f"fold {self.index} ({span}{', holiday ' + ', '.join(self.holidays) if self.holidays else ''})"


def day_index(grid: GridTensor, start: int) -> tuple[np.ndarray, tuple[str, ...]]:
    """Local target day of every bin from ``start`` on: ``(T,)`` day numbers (-1 before ``start``) and the dates.

    Parameters
    ----------
    grid : GridTensor
        Its ``times`` (UTC) are read in ``grid.timezone``.
    start : int
        First holdout bin.

    Returns
    -------
    tuple
        ``day_of_bin`` (int64, -1 for bins before ``start``) and the local dates in order.
    """
    local = grid.times[start:].tz_convert(grid.timezone)
    dates = np.asarray(local.strftime("%Y-%m-%d"))
    days, codes = np.unique(dates, return_inverse=True)
    out = np.full(grid.shape[0], -1, dtype=np.int64)
    out[start:] = codes
    return out, tuple(str(d) for d in days)


def fold_plan(days: Sequence[str], folds: int, holidays: Sequence[str] = ()) -> tuple[Fold, ...]:
    """Split the holdout's target days into ``folds`` folds of equal length, in time order.

    Parameters
    ----------
    days : sequence of str
        The holdout's local target dates, ascending. A first day cut short by the holdout's
        start (DST, a partial day) still counts as a day.
    folds : int
        Number of folds, ``1 <= folds <= len(days)`` (:class:`traffic.config.ForecastConfig` checks
        that ``holdout_days`` is a multiple of it).
    holidays : sequence of str
        Public holidays (local dates).

    Returns
    -------
    tuple of Fold

    Raises
    ------
    ValueError
        When there are fewer days than folds.
    """
    n = len(days)
    if folds < 1 or folds > n:
        raise ValueError(
            f"the holdout's {n} target days cannot hold {folds} folds of at least one day "
            "([forecast] backtest_folds must be between 1 and holdout_days)"
        )
    hol = set(holidays)
    # equal folds of whole days; a holdout that starts inside a day (DST) gives its first fold the extra day
    parts = np.array_split(np.arange(n), folds)
    return tuple(
        Fold(k + 1, tuple(days[i] for i in part), tuple(days[i] for i in part if days[i] in hol))
        for k, part in enumerate(parts)
    )


class DailyErrors:
    """Squared and absolute error sums of one candidate per target day and horizon.

    Parameters
    ----------
    day_of_bin : np.ndarray
        ``(T,)`` target day of every bin (:func:`day_index`); -1 = not in the holdout.
    n_days, horizon : int
    """

    def __init__(self, day_of_bin: np.ndarray, n_days: int, horizon: int) -> None:
        self.day_of_bin = np.asarray(day_of_bin, dtype=np.int64)
        self.sse = np.zeros((n_days, horizon), dtype=np.float64)
        self.sae = np.zeros((n_days, horizon), dtype=np.float64)
        self.n = np.zeros((n_days, horizon), dtype=np.int64)
        # the same sums per channel (allocated at the first batch, when the channels are known)
        self.sse_c: np.ndarray | None = None
        self.n_c: np.ndarray | None = None

    def update(self, pred: np.ndarray, target: np.ndarray, mask: np.ndarray, tidx: np.ndarray) -> None:
        """Add a batch: ``pred``/``target``/``mask`` ``(B, H_out, C, H, W)``, ``tidx`` ``(B, H_out)`` target bins."""
        pts = observed_points(mask)  # the observed targets only
        err = np.asarray(pred).reshape(-1)[pts.idx].astype(np.float64) - np.asarray(target).reshape(-1)[pts.idx]
        day = self.day_of_bin[np.asarray(tidx)[pts.sample, pts.step]]
        self.add_points(err, day, pts.step, pts.channel, mask.shape[2])

    def add_points(
        self, err: np.ndarray, day: np.ndarray, step: np.ndarray, channel: np.ndarray, n_channels: int
    ) -> None:
        """Add errors given point by point: ``err``, target ``day``, horizon ``step`` and ``channel``, ``(N,)`` each."""
        err = np.asarray(err, dtype=np.float64)
        keep = day >= 0
        err, day, step, channel = err[keep], day[keep], step[keep], channel[keep]
        if self.sse_c is None or self.n_c is None:
            shape = (*self.sse.shape, n_channels)
            self.sse_c, self.n_c = np.zeros(shape, dtype=np.float64), np.zeros(shape, dtype=np.int64)
        sq = err**2
        at = day * self.sse.shape[1] + step  # flat (day, horizon)
        size = self.sse.size
        self.sse += np.bincount(at, weights=sq, minlength=size).reshape(self.sse.shape)
        self.sae += np.bincount(at, weights=np.abs(err), minlength=size).reshape(self.sse.shape)
        self.n += np.bincount(at, minlength=size).reshape(self.sse.shape)
        at_c = at * self.sse_c.shape[2] + channel  # flat (day, horizon, channel)
        self.sse_c += np.bincount(at_c, weights=sq, minlength=self.sse_c.size).reshape(self.sse_c.shape)
        self.n_c += np.bincount(at_c, minlength=self.n_c.size).reshape(self.n_c.shape)

    def channel_rmse_mean(self, channel: int) -> float:
        """Mean over horizons of one channel's per-horizon RMSE over every day (NaN when never scored)."""
        if self.sse_c is None or self.n_c is None:
            return math.nan
        s, n = self.sse_c[:, :, channel].sum(axis=0), self.n_c[:, :, channel].sum(axis=0)
        v = np.sqrt(s[n > 0] / n[n > 0])
        return float(v.mean()) if len(v) else math.nan

    def rmse(self, days: np.ndarray | None = None) -> np.ndarray:
        """Per-horizon RMSE pooled over ``days`` (default all): ``(H_out,)``, NaN where nothing was scored."""
        sl = slice(None) if days is None else days
        s, n = self.sse[sl].sum(axis=0), self.n[sl].sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, np.sqrt(s / np.maximum(n, 1)), np.nan)

    def daily_rmse(self, steps: slice = slice(None)) -> np.ndarray:
        """``(n_days,)`` RMSE of each day pooled over the horizons ``steps``; NaN for a day without targets."""
        s, n = self.sse[:, steps].sum(axis=1), self.n[:, steps].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, np.sqrt(s / np.maximum(n, 1)), np.nan)


@dataclass(frozen=True)
class Comparison:
    """Paired relative difference of candidate ``a`` against ``b`` (negative = ``a`` better).

    Attributes
    ----------
    mean, lo, hi : float
        Mean daily relative difference and its :data:`LEVEL` interval (NaN with fewer than two days).
    n_days : int
    """

    mean: float
    lo: float
    hi: float
    n_days: int

    @property
    def significant(self) -> bool:
        """The interval excludes zero."""
        return math.isfinite(self.lo) and math.isfinite(self.hi) and (self.hi < 0 or self.lo > 0)

    @property
    def better(self) -> bool:
        """``a`` is significantly better than ``b`` (the whole interval below zero)."""
        return math.isfinite(self.hi) and self.hi < 0

    def text(self) -> str:
        """``-3.1 % [-5.0, -1.2]`` (percent)."""
        if not math.isfinite(self.mean):
            return "n/a"
        iv = f"[{100 * self.lo:+.1f}, {100 * self.hi:+.1f}]" if math.isfinite(self.lo) else "[no interval: one day]"
        return f"{100 * self.mean:+.2f} % {iv}"


def paired_interval(d: np.ndarray, level: float = LEVEL) -> Comparison:
    """Mean of daily differences ``d`` and its Diebold–Mariano interval with the HLN small-sample correction.

    The variance of the mean is ``(gamma_0 + 2 gamma_1) / n`` (the lag-1 term only from
    :data:`MIN_DAYS_FOR_LAG` days, and only while the sum stays positive), divided by the
    Harvey–Leybourne–Newbold factor ``(n + 1 - 2h + h (h - 1) / n) / n`` with ``h`` = 1 + the
    lags used; the critical value is Student's t with ``n - 1`` degrees of freedom. With ``h = 1``
    this is the paired t-interval.

    Parameters
    ----------
    d : np.ndarray
        Daily differences; NaN days are dropped.
    level : float

    Returns
    -------
    Comparison
    """
    from scipy import stats

    d = np.asarray(d, dtype=np.float64)
    d = d[np.isfinite(d)]
    n = len(d)
    if n == 0:
        return Comparison(math.nan, math.nan, math.nan, 0)
    mean = float(d.mean())
    if n < 2:
        return Comparison(mean, math.nan, math.nan, n)
    e = d - mean
    g0 = float((e * e).mean())
    var, h = g0, 1
    if n >= MIN_DAYS_FOR_LAG:
        g1 = float((e[1:] * e[:-1]).sum() / n)
        if g0 + 2 * g1 > 0:
            var, h = g0 + 2 * g1, 2
    hln = (n + 1 - 2 * h + h * (h - 1) / n) / n
    se = math.sqrt(var / n / hln) if hln > 0 else math.inf
    q = float(stats.t.ppf(0.5 + level / 2, n - 1))
    return Comparison(mean, mean - q * se, mean + q * se, n)


@dataclass
class Backtest:
    """Every candidate's errors per target day over the holdout's folds.

    Attributes
    ----------
    days : tuple of str
        Local target dates of the holdout.
    folds : tuple of Fold
    bin_seconds : int
    errors : dict
        ``{candidate: DailyErrors}``; candidates named as :data:`CANDIDATES` (plus ``champion``).
    channels : tuple of str
        The grid's channels, in the order of the errors' channel axis (per-channel figures).
    """

    days: tuple[str, ...]
    folds: tuple[Fold, ...]
    bin_seconds: int
    errors: dict[str, DailyErrors] = field(default_factory=dict)
    channels: tuple[str, ...] = ()

    @property
    def horizon(self) -> int:
        return next(iter(self.errors.values())).sse.shape[1]

    def fold_days(self, fold: Fold) -> np.ndarray:
        idx = {d: i for i, d in enumerate(self.days)}
        return np.array([idx[d] for d in fold.days], dtype=np.int64)

    @property
    def regular_days(self) -> np.ndarray:
        """Day indices of the folds without a holiday."""
        parts = [self.fold_days(f) for f in self.folds if not f.holiday]
        return np.concatenate(parts) if parts else np.array([], dtype=np.int64)

    def groups(self) -> list[tuple[str, slice]]:
        """``(tag, steps)`` of every horizon group (``h01``, ``h02-03``, ...), then ``("all", all steps)``."""
        return [(group_tag(g.label), g.steps) for g in horizon_groups(self.bin_seconds, self.horizon)] + [
            ("all", slice(None))
        ]

    def rmse_mean(self, name: str, days: np.ndarray | None = None) -> float:
        """Mean over horizons of the per-horizon RMSE pooled over ``days`` (the figure promotion compares)."""
        v = self.errors[name].rmse(days)
        return float(np.nanmean(v)) if np.isfinite(v).any() else math.nan

    def group_rmse(self, name: str, steps: slice) -> float:
        """Mean over the group's horizons of the per-horizon RMSE over every day (as the card's tables)."""
        v = self.errors[name].rmse()[steps]
        v = v[np.isfinite(v)]
        return float(v.mean()) if len(v) else math.nan

    def daily_hi(self, name: str, steps: slice) -> float:
        """The :data:`DAILY_HI_QUANTILE` of the candidate's daily RMSE over the group: what one day may reach."""
        d = self.errors[name].daily_rmse(steps)
        d = d[np.isfinite(d)]
        return float(np.quantile(d, DAILY_HI_QUANTILE)) if len(d) else math.nan

    def compare(self, a: str, b: str, steps: slice = slice(None)) -> Comparison:
        """Paired relative difference of ``a`` against ``b`` over the days (:func:`paired_interval`)."""
        ra, rb = self.errors[a].daily_rmse(steps), self.errors[b].daily_rmse(steps)
        with np.errstate(invalid="ignore", divide="ignore"):
            d = np.where((rb > 0) & np.isfinite(ra) & np.isfinite(rb), ra / np.where(rb > 0, rb, 1.0) - 1.0, np.nan)
        return paired_interval(d)


def backtest_metrics(bt: Backtest, candidates: Sequence[str] | None = None) -> dict[str, float]:
    """The flat ``backtest.*`` metrics of a nightly run (logged on its MLflow run, shown on the card).

    ``backtest.folds``, ``backtest.days``, ``backtest.holiday_folds``; per candidate
    ``backtest.<c>.rmse_mean``, ``backtest.<c>.rmse_mean_regular`` (folds without a holiday),
    ``backtest.<c>.rmse.<group>`` and ``backtest.<c>.rmse.<group>.hi`` (:meth:`Backtest.daily_hi`),
    ``backtest.<c>.fold<k>.rmse_mean``, ``backtest.<c>.channel.<channel>.rmse_mean`` (every channel of
    the grid, each against the same baselines); and against every other candidate ``o``
    ``backtest.<c>.vs_<o>.mean`` / ``.lo`` / ``.hi`` (relative, negative = ``c`` better; ``vs_gbm``
    is the reference the issue of record names); for the :data:`GROUP_PAIRS` the same per horizon
    group, ``backtest.<a>.vs_<b>.<group>.mean`` / ``.lo`` / ``.hi``.
    """
    names = [c for c in (candidates or bt.errors) if c in bt.errors]
    out: dict[str, float] = {
        "backtest.folds": float(len(bt.folds)),
        "backtest.days": float(len(bt.days)),
        "backtest.holiday_folds": float(sum(f.holiday for f in bt.folds)),
    }
    regular = bt.regular_days
    for c in names:
        out[f"backtest.{c}.rmse_mean"] = bt.rmse_mean(c)
        out[f"backtest.{c}.rmse_mean_regular"] = bt.rmse_mean(c, regular) if len(regular) else math.nan
        for tag, steps in bt.groups()[:-1]:
            out[f"backtest.{c}.rmse.{tag}"] = bt.group_rmse(c, steps)
            out[f"backtest.{c}.rmse.{tag}.hi"] = bt.daily_hi(c, steps)
        for f in bt.folds:
            out[f"backtest.{c}.fold{f.index}.rmse_mean"] = bt.rmse_mean(c, bt.fold_days(f))
        for i, ch in enumerate(bt.channels):
            out[f"backtest.{c}.channel.{ch}.rmse_mean"] = bt.errors[c].channel_rmse_mean(i)
        for o in names:
            if o == c:
                continue
            cmp = bt.compare(c, o)
            out[f"backtest.{c}.vs_{o}.mean"] = cmp.mean
            out[f"backtest.{c}.vs_{o}.lo"] = cmp.lo
            out[f"backtest.{c}.vs_{o}.hi"] = cmp.hi
    for a, b in GROUP_PAIRS:
        if a not in names or b not in names:
            continue
        for tag, steps in bt.groups()[:-1]:
            cmp = bt.compare(a, b, steps)
            out[f"backtest.{a}.vs_{b}.{tag}.mean"] = cmp.mean
            out[f"backtest.{a}.vs_{b}.{tag}.lo"] = cmp.lo
            out[f"backtest.{a}.vs_{b}.{tag}.hi"] = cmp.hi
    return out


def comparisons_from_metrics(metrics: Mapping[str, float], names: Sequence[str]) -> dict[tuple[str, str], Comparison]:
    """The paired comparisons :func:`backtest_metrics` logged, read back: ``{(a, b): Comparison}``."""
    out = {}
    n_days = int(metrics.get("backtest.days", 0))
    for a in names:
        for b in names:
            key = f"backtest.{a}.vs_{b}"
            if a != b and f"{key}.mean" in metrics:
                out[(a, b)] = Comparison(
                    float(metrics[f"{key}.mean"]),
                    float(metrics.get(f"{key}.lo", math.nan)),
                    float(metrics.get(f"{key}.hi", math.nan)),
                    n_days,
                )
    return out
