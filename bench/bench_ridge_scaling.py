"""The Ridge baseline on raw vs standardised lag features: holdout RMSE and fit time, both cities.

``traffic.forecast.baselines.RidgeLagBaseline`` fits ``StandardScaler -> Ridge`` per (horizon,
channel). This bench refits it with the former plain ``Ridge`` (same alpha, same rows, same
seed) on the nightly window of each shipped city (``bench_model_accuracy.load_grid``: the same
grid, split and holdout as the accuracy bench) and scores both on the holdout with the masked
metrics. The two are fitted alternately ``--repeat`` times in one run (interleaved, so machine
load hits both alike); the table gives the best fit time and the holdout RMSE per group of
hours ahead. Writes the ``ridge_scaling`` section of ``bench/RESULTS.md``.

    python bench/bench_ridge_scaling.py                       # both cities
    python bench/bench_ridge_scaling.py --cities los_angeles --repeat 1 --no-write
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench_model_accuracy import load_grid  # noqa: E402
from results import load_average, machine, replace_block, today  # noqa: E402

from traffic.forecast.baselines import RidgeLagBaseline, window_profile  # noqa: E402
from traffic.forecast.metrics import MetricAccumulator  # noqa: E402
from traffic.forecast.split import make_split  # noqa: E402
from traffic.forecast.train import load_model_spec  # noqa: E402
from traffic.timebins import bin_minutes  # noqa: E402

GROUPS_H = ((1, 1), (2, 3), (4, 6), (7, 12), (13, 24))


class RawRidgeLagBaseline(RidgeLagBaseline):
    """The Ridge baseline as it was: plain ``Ridge`` on the raw features."""

    def regressor(self):
        from sklearn.linear_model import Ridge

        return Ridge(alpha=self.alpha)


def measure(city_name: str, repeat: int, seed: int) -> dict:
    city, grid = load_grid(city_name)
    fc = city.forecast
    tr = load_model_spec()["training"]
    lags = int(tr["ridge_lags"])
    split = make_split(
        grid,
        context_steps=fc.context_steps,
        horizon_steps=fc.horizon_steps,
        holdout_days=fc.holdout_days,
        train_days=fc.train_days,
        val_fraction=float(tr["val_fraction"]),
    )
    bm = bin_minutes(grid.times)
    prof = window_profile(grid, split.fit_start, split.fit_end)
    train_t_end = np.concatenate([split.train, split.val])
    kinds = {"raw Ridge (before)": RawRidgeLagBaseline, "StandardScaler -> Ridge (now)": RidgeLagBaseline}
    fit_s: dict[str, list[float]] = {k: [] for k in kinds}
    fitted: dict[str, RidgeLagBaseline] = {}
    for _ in range(repeat):
        for name, cls in kinds.items():  # interleaved
            t0 = time.perf_counter()
            fitted[name] = cls(lags, fc.context_steps, fc.horizon_steps, seed=seed).fit(
                grid, train_t_end, prof.cell_mean
            )
            fit_s[name].append(time.perf_counter() - t0)
    out = {}
    for name, model in fitted.items():
        acc = MetricAccumulator(fc.horizon_steps)
        for s in range(0, len(split.holdout), 64):
            te = split.holdout[s : s + 64]
            tidx = te[:, None] + np.arange(1, fc.horizon_steps + 1)[None, :]
            target, mask = grid.values[tidx], grid.mask[tidx]
            acc.update(model.predict(grid, te, where=mask), target, mask)
        m = acc.result()
        out[name] = {
            "rmse": np.asarray(m.rmse, dtype=float),
            "rmse_mean": float(m.rmse_mean),
            "fit_s": min(fit_s[name]),
        }
    return {"city": city_name, "bin_minutes": bm, "grid": list(grid.shape), "n_train": len(train_t_end), "rows": out}


def table(res: dict) -> str:
    bm = res["bin_minutes"]
    names = list(res["rows"])
    head = "| hours ahead | " + " | ".join(names) + " |\n|---|" + "---:|" * len(names) + "\n"
    lines = []
    for lo, hi in GROUPS_H:
        sl = slice((lo * 60) // bm - 1, (hi * 60) // bm)
        label = f"{lo} h" if lo == hi else f"{lo}–{hi} h"
        lines.append(f"| {label} | " + " | ".join(f"{res['rows'][n]['rmse'][sl].mean():.2f}" for n in names) + " |")
    lines.append("| **all (mean)** | " + " | ".join(f"**{res['rows'][n]['rmse_mean']:.2f}**" for n in names) + " |")
    lines.append("| fit time (best, s) | " + " | ".join(f"{res['rows'][n]['fit_s']:.1f}" for n in names) + " |")
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cities", default="berlin,los_angeles")
    ap.add_argument("--repeat", type=int, default=2, help="interleaved fits of each variant (best time reported)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    args = ap.parse_args(argv)
    parts = [
        "## Ridge baseline: raw vs standardised features",
        "",
        f"- Machine: {machine()}; load average at the end {{load}}",
        f"- Date: {today()}; command: `python bench/bench_ridge_scaling.py --repeat {args.repeat}`; seed {args.seed}",
        "- Same grid, split and holdout as the accuracy bench; masked holdout RMSE in original units; fits "
        "interleaved in one run.",
        "",
    ]
    for city in args.cities.split(","):
        res = measure(city, args.repeat, args.seed)
        parts += [f"### {city}: grid {res['grid']}, {res['n_train']} training samples", "", table(res)]
        print(parts[-1], flush=True)
    body = "\n".join(parts).replace("{load}", load_average())
    if not args.no_write:
        replace_block("ridge_scaling", body)


if __name__ == "__main__":
    main()
