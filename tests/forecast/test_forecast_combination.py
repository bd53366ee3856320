"""The per-horizon combination: NNLS weights per group and channel, cross-fitted over the backtest folds."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import nnls

from traffic.forecast.backtest import Backtest, DailyErrors, backtest_metrics, day_index, fold_plan
from traffic.forecast.combination import (
    COMBINATION,
    WITHOUT_NETWORK,
    Combination,
    HoldoutPredictions,
    RecordingErrors,
    combine,
    dumps,
    loads,
    nightly_origins,
    nnls_gram,
)
from traffic.grid.tensor import GridTensor

H_OUT = 6  # 1 h bins: groups h01, h02-03, h04-06


def _grid(days: int, seed: int = 0) -> GridTensor:
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2024-12-01 00:00").tz_localize("Europe/Berlin").tz_convert("UTC")
    t = days * 24
    times = pd.date_range(start, periods=t, freq="1h")
    v = rng.normal(10.0, 3.0, size=(t, 2, 2, 2)).astype(np.float32)
    mask = rng.random(v.shape) > 0.1
    return GridTensor(
        v, mask, np.ones_like(v, np.int32), times, ("a.x", "a.y"), np.arange(4).reshape(2, 2), "Europe/Berlin", ()
    )


def _backtest(grid: GridTensor, start: int, folds: int, members, seed: int = 1):
    """Members scored on every origin from ``start``: ``model`` is exact at short steps, ``gbm`` noisy everywhere."""
    rng = np.random.default_rng(seed)
    day_of_bin, days = day_index(grid, start)
    store = HoldoutPredictions(day_of_bin)
    bt = Backtest(
        days=days,
        folds=fold_plan(days, folds),
        bin_seconds=3600,
        errors={m: RecordingErrors(day_of_bin, len(days), H_OUT, store, m) for m in members},
        channels=tuple(grid.channels),
    )
    origins = np.arange(start - 1, grid.shape[0] - H_OUT)
    for s in range(0, len(origins), 16):
        te = origins[s : s + 16]
        tidx = te[:, None] + np.arange(1, H_OUT + 1)[None, :]
        y, m = grid.values[tidx], grid.mask[tidx]
        step = np.arange(H_OUT)[None, :, None, None, None]
        preds = {
            "model": y + np.where(step < 1, 0.1, 6.0) * rng.normal(size=y.shape),  # good in the first hour only
            "base_head": y + 2.0 * rng.normal(size=y.shape),
            "gbm": y + 1.5 * rng.normal(size=y.shape),
        }
        for name in members:
            bt.errors[name].update(preds[name].astype(np.float32), y, m, tidx)
    return store, bt


def test_nnls_from_the_gram_matrix_equals_nnls_on_the_rows():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 4))
    y = x @ np.array([0.5, -0.3, 0.8, 0.0]) + 0.1 * rng.normal(size=500)
    w_rows, _ = nnls(x, y)
    w_gram = nnls_gram(x.T @ x, x.T @ y, simplex=False)
    assert (w_gram >= 0).all()
    np.testing.assert_allclose(w_gram, w_rows, atol=1e-5)


def test_weights_follow_each_member_where_it_is_good_and_never_lose_to_the_best_member():
    g = _grid(days=8)
    store, bt = _backtest(g, 24 * 4, folds=4, members=("model", "base_head", "gbm"))
    combos = {c.name: c for c in combine(store, bt, members=("model", "base_head", "gbm"))}
    comb, without = combos[COMBINATION], combos[WITHOUT_NETWORK]
    assert comb.members == ("model", "base_head", "gbm") and without.members == ("base_head", "gbm")
    tags = [t for t, _, _ in comb.groups]
    assert tags == ["h01", "h02-03", "h04-06"]
    # the first hour: the network carries the combination; later it is (almost) dropped
    assert (comb.weights[0, :, :, 0] > 0.9).all()  # no stale points here: both regimes take the pooled fit
    assert (comb.weights[2, :, :, 0] < 0.1).all()
    assert (comb.weights >= 0).all()
    # cross-fitted: the combination is at least as good as the best member in every group
    for tag, steps in bt.groups()[:-1]:
        best = min(bt.group_rmse(m, steps) for m in ("model", "base_head", "gbm"))
        assert bt.group_rmse(COMBINATION, steps) <= best * 1.02, tag
    m = backtest_metrics(bt)
    assert m["backtest.combination.vs_combination_without_network.h01.hi"] < 0  # what the network adds, there
    assert m["backtest.combination.rmse.h01"] < m["backtest.combination_without_network.rmse.h01"]


def test_a_fold_is_never_forecast_with_weights_fitted_on_it():
    g = _grid(days=8)
    members = ("model", "base_head", "gbm")
    store, bt = _backtest(g, 24 * 4, folds=4, members=members)
    before = combine(store, bt, members=members)[0]
    # the last fold's targets change: the weights it is forecast with do not, the other folds' do
    g2 = GridTensor(g.values.copy(), g.mask, g.coverage, g.times, g.channels, g.cell_ids, g.timezone, g.holidays)
    g2.values[24 * 7 :] *= 3.0
    store2, bt2 = _backtest(g2, 24 * 4, folds=4, members=members)
    after = combine(store2, bt2, members=members)[0]
    np.testing.assert_allclose(after.fold_weights[3], before.fold_weights[3])
    assert not np.allclose(after.fold_weights[0], before.fold_weights[0])


def test_the_served_spec_round_trips_and_applies_group_weights_per_step():
    w = np.zeros((2, 1, 2))
    w[0, 0] = [1.0, 0.0]
    w[1, 0] = [0.25, 0.75]
    c = Combination("combination", ("model", "gbm"), (("h01", 0, 1), ("h02-03", 1, 3)), ("a.x",), w, np.zeros(0))
    back = loads(dumps([c]))["combination"]
    np.testing.assert_allclose(back.weights, np.stack([w, w], axis=2))  # weights without regimes: both alike
    a, b = np.full((3, 1, 2, 2), 4.0), np.full((3, 1, 2, 2), 8.0)
    out = back.apply({"model": a, "gbm": b})
    np.testing.assert_allclose(out[0], 4.0)
    np.testing.assert_allclose(out[1:], 7.0)
    assert "| h02-03 | a.x | fresh | 0.25 | 0.75 |" in back.weights_table()
    # a cell that did not see its channel in the origin's bin takes the stale regime's weights
    w4 = np.stack([w, w], axis=2)  # (G, C, 2, K)
    assert (
        loads(dumps([Combination("c", ("model", "gbm"), c.groups, ("a.x",), w4, np.zeros(0))]))["c"].weights.shape
        == w4.shape
    )
    w4[:, :, 0] = [0.0, 1.0]  # stale: gbm alone
    c4 = Combination("combination", ("model", "gbm"), c.groups, ("a.x",), w4, np.zeros(0))
    fresh = np.array([[[True, False], [True, True]]])  # (C, H, W)
    out = c4.apply({"model": a, "gbm": b}, fresh)
    np.testing.assert_allclose(out[:, 0, 0, 1], 8.0)
    np.testing.assert_allclose(out[0, 0, 0, 0], 4.0)


def test_point_errors_count_like_batch_errors():
    g = _grid(days=3)
    day_of_bin, days = day_index(g, 24)
    a, b = DailyErrors(day_of_bin, len(days), H_OUT), DailyErrors(day_of_bin, len(days), H_OUT)
    store = HoldoutPredictions(day_of_bin)
    te = np.arange(23, 60)
    tidx = te[:, None] + np.arange(1, H_OUT + 1)[None, :]
    pred = g.values[tidx] + 1.5
    a.update(pred, g.values[tidx], g.mask[tidx], tidx)
    store.add("x", pred, g.values[tidx], g.mask[tidx], tidx)
    pts = store.points()
    b.add_points(store.matrix(["x"])[:, 0] - pts.y, pts.day, pts.step, pts.channel, 2)
    np.testing.assert_allclose(a.sse, b.sse, rtol=1e-5)
    np.testing.assert_array_equal(a.n, b.n)
    np.testing.assert_allclose(a.sse_c, b.sse_c, rtol=1e-5)


def test_a_single_fold_is_forecast_with_the_plain_average_not_with_weights_fitted_on_itself():
    g = _grid(days=3)
    members = ("model", "base_head", "gbm")
    store, bt = _backtest(g, 24 * 2, folds=1, members=members)
    comb = combine(store, bt, members=members)[0]
    np.testing.assert_allclose(comb.fold_weights[0], 1.0 / 3)
    assert not np.allclose(comb.weights, 1.0 / 3)  # the serving weights are fitted on the whole holdout


def _scored_by_regime(g, seed, network_noise, seen=None, nightly=None):
    """Members scored on every origin of the last 4 days; the network's noise depends on the origin bin."""
    members = ("model", "base_head", "gbm")
    rng = np.random.default_rng(seed)
    day_of_bin, days = day_index(g, 24 * 4)
    store = HoldoutPredictions(day_of_bin, seen, nightly)
    bt = Backtest(
        days,
        fold_plan(days, 4),
        3600,
        {m: RecordingErrors(day_of_bin, len(days), H_OUT, store, m) for m in members},
        tuple(g.channels),
    )
    for te in np.arange(24 * 4 - 1, g.shape[0] - H_OUT)[:, None]:
        tidx = te[:, None] + np.arange(1, H_OUT + 1)[None, :]
        y, m = g.values[tidx], g.mask[tidx]
        preds = {
            "model": y + network_noise(int(te[0])) * rng.normal(size=y.shape),
            "base_head": y + 2.0 * rng.normal(size=y.shape),
            "gbm": y + 1.5 * rng.normal(size=y.shape),
        }
        for name in members:
            bt.errors[name].update(preds[name].astype(np.float32), y, m, tidx)
    return store, bt, members


def test_weights_are_fitted_apart_for_cells_whose_last_value_is_stale():
    """After a gap the network's short-horizon edge is gone: the stale regime leans on the other members."""
    g = _grid(days=8)
    seen = np.ones(g.mask.shape, dtype=bool)
    seen[::2] = False  # every other origin bin unobserved: half the points are stale
    # the network is good only after a fresh value
    store, bt, members = _scored_by_regime(g, 3, lambda t: 0.1 if seen[t, 0, 0, 0] else 6.0, seen=seen)
    comb = combine(store, bt, members=members)[0]
    assert (comb.weights[0, :, 1, 0] > 0.9).all()  # fresh: the network
    assert (comb.weights[0, :, 0, 0] < 0.2).all()  # stale: hardly


def test_forecasts_issued_at_the_nightly_origin_get_weights_fitted_on_the_nightly_origins():
    """A member that is good by day and bad at midnight: the all-origin weights trust it, the nightly ones do not."""
    g = _grid(days=8)
    night = nightly_origins(g.times, g.timezone)
    assert night.sum() == 8 and night[0]  # local midnight, every day (the grid starts at Berlin midnight)
    # the network fails only from the nightly origin (the first target bin at local midnight)
    store, bt, members = _scored_by_regime(g, 5, lambda t: 3.0 if night[t + 1] else 0.1, nightly=night)
    comb = combine(store, bt, members=members)[0]
    assert (comb.weights[:, :, 1, 0] > 0.7).all()  # every origin: the network
    assert comb.nightly_weights is not None
    assert (comb.nightly_weights[:, :, 1, 0] < 0.3).all()  # the nightly origin: hardly
    # the backtest scored the nightly forecasts with the nightly fold weights: far better than the network there
    pts = store.points()
    err = combine(store, bt, members=members)[0].predict_points(store.matrix(list(members)), pts) - pts.y
    net = store.matrix(["model"])[:, 0] - pts.y
    assert np.sqrt(np.mean(err[pts.nightly] ** 2)) < 0.5 * np.sqrt(np.mean(net[pts.nightly] ** 2))
    # served: the nightly weights round-trip and apply only when the forecast is issued at midnight
    back = loads(dumps([comb]))[COMBINATION]
    assert back.nightly_weights is not None
    np.testing.assert_allclose(back.nightly_weights, comb.nightly_weights, atol=1e-6)
    a, b, c = (np.full((H_OUT, 2, 2, 2), v) for v in (0.0, 10.0, 10.0))
    assert float(back.apply({"model": a, "base_head": b, "gbm": c}).mean()) < 3.0
    assert float(back.apply({"model": a, "base_head": b, "gbm": c}, nightly=True).mean()) > 7.0
    assert "at the nightly origin" not in back.weights_table()  # one table each; the card names them
    assert back.weights_table(nightly=True) != back.weights_table()


def test_a_regime_never_scored_at_midnight_takes_the_midnight_fit_not_the_all_origin_weights():
    """Daylight cameras are never fresh-and-observed at 1 am: the stale regime follows the hour's own fit."""
    from traffic.forecast.combination import _fit_weights

    k = 2
    gram = np.zeros((1, 2, 1, 2, k, k))  # (day, group, channel, regime, K, K)
    xty = np.zeros((1, 2, 1, 2, k))
    gram[0, 0, 0, 1] = np.eye(k)  # group 0: only fresh rows at midnight, where member 1 is right
    xty[0, 0, 0, 1] = [0.0, 1.0]
    otherwise = np.zeros((2, 1, 2, k))
    otherwise[..., 0] = 1.0  # the all-origin weights trust member 0
    w = _fit_weights(gram, xty, np.array([0]), otherwise=otherwise)
    np.testing.assert_allclose(w[0, 0, 1], [0.0, 1.0], atol=1e-3)  # fitted
    np.testing.assert_allclose(w[0, 0, 0], [0.0, 1.0], atol=1e-3)  # stale: the midnight fit of both regimes
    np.testing.assert_allclose(w[1, 0], otherwise[1, 0])  # group 1 never scored at midnight: all-origin weights
