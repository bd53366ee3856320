"""Warm start benchmark: a new city with 3 days of data, from scratch vs from another city's model.

Run from the project root (a few minutes on 2 CPU cores)::

    python bench/bench_warmstart.py                 # writes the ``warmstart`` section of bench/RESULTS.md
    python bench/bench_warmstart.py --no-write --steps 40 --source-budget-s 20   # a quick look

Data: the shipped, ingested grids (``traffic.pipeline._load_window``): Los Angeles (METR-LA,
one speed channel, 15-min bins) as of 2012-03-07 and Berlin (Telraam, four count channels,
hourly) as of 2024-12-31, with each city's forecast settings from ``cities/<city>.toml``
(context, horizon, holdout).

1. Source: each city's model trained on its normal window (``train_days`` of its config)
   for ``--source-budget-s`` seconds, as the nightly job would (the "champion").
2. Target: the other city with only ``--train-days`` (3) days of training data before its
   usual holdout, trained twice with the same seed and the same budget (``--steps``
   optimisation steps, a machine-independent budget, with early stopping as usual and the
   same wall-clock cap as a safety net): from scratch, and warm-started from the source
   (``train_forecaster(warm_start=source.module)``).

The shipped cities have different channels, feeds and horizons, so only the
channel-independent layers can transfer between them (ConvLSTM cells, attention, calendar
embeddings... when the hidden sizes match; a layer moves only as a whole). The issue's case
"channels match" is measured too, on the shipped data: the LA grid cut into a west and an
east half of its sensors (column ``LA_SPLIT_COL``), the west half as the source city and the
east half as the new one. Both arms are scored on the same holdout with the same masked
metrics; the best baseline of that holdout is shown for scale. "best step" is the step of
the returned (best validation) state: 0 means the network never beat its initial state,
whose output is exactly the fitted linear base (the head starts at zero).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from results import load_average, machine, replace_block, today  # noqa: E402

from traffic.config import load_city  # noqa: E402
from traffic.forecast.result import HorizonMetrics  # noqa: E402
from traffic.forecast.train import train_forecaster  # noqa: E402
from traffic.grid.tensor import GridTensor  # noqa: E402
from traffic.pipeline import _load_window  # noqa: E402

CITIES = {"los_angeles": "2012-03-07", "berlin": "2024-12-31"}
SECTION = "warmstart"
#: LA's grid column splitting its observed sensors into two halves (the same-channel case)
LA_SPLIT_COL = 24


@dataclass
class Domain:
    """A grid with the forecast settings of the city it comes from."""

    name: str
    city: str
    grid: GridTensor


def columns(grid: GridTensor, c0: int, c1: int) -> GridTensor:
    """Grid columns ``c0:c1`` (every bin and channel) as a grid of its own."""
    cut = (..., slice(None), slice(c0, c1))
    return dataclasses.replace(
        grid,
        values=grid.values[cut],
        mask=grid.mask[cut],
        coverage=grid.coverage[cut],
        cell_ids=grid.cell_ids[:, c0:c1],
    )


def train(d: Domain, *, train_days: float, budget_s: float, seed: int, steps: int, warm=None):
    fc = load_city(d.city).forecast
    t0 = time.perf_counter()
    r = train_forecaster(
        d.grid,
        context_steps=fc.context_steps,
        horizon_steps=fc.horizon_steps,
        holdout_days=fc.holdout_days,
        train_days=train_days,
        budget_s=budget_s,
        seed=seed,
        device="cpu",
        warm_start=warm,
        model_overrides={"max_steps": steps},
    )
    return r, time.perf_counter() - t0


def best_step(r: Any) -> int:
    """Step of the returned (best validation) state; 0 = the untrained network, i.e. the fitted linear base."""
    return int(min(r.learning_curve, key=lambda c: c["val_loss"])["step"])


def fmt_row(label: str, m: HorizonMetrics, run: Any = None, seconds: float = 0.0) -> str:
    """A table row: RMSE mean, MAE mean, RMSE per horizon, then steps / best step / stop reason / seconds."""
    per_h = " ".join(f"{v:.2f}" for v in m.rmse)
    tail = (
        f"{run.extra['steps']} | {best_step(run)} | {run.stopped_reason} | {seconds:.0f}"
        if run is not None
        else " | | | "
    )
    return f"| {label} | **{m.rmse_mean:.3f}** | {m.mae_mean:.3f} | {per_h} | {tail} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train-days", type=float, default=3.0, help="days of training data of the new city")
    ap.add_argument("--steps", type=int, default=100, help="optimisation steps of each few-shot run (same budget)")
    ap.add_argument("--budget-s", type=float, default=120.0, help="wall-clock cap of each few-shot run")
    ap.add_argument("--source-budget-s", type=float, default=60.0, help="training budget of each source model")
    ap.add_argument("--seeds", default="0,1", help="comma-separated seeds of the few-shot runs")
    ap.add_argument("--no-write", action="store_true", help="do not update bench/RESULTS.md")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    t_all = time.perf_counter()

    grids = {c: _load_window(load_city(c), as_of)[1] for c, as_of in CITIES.items()}
    la = grids["los_angeles"]
    domains = {
        "berlin": Domain("berlin", "berlin", grids["berlin"]),
        "los_angeles": Domain("los_angeles", "los_angeles", la),
        "LA west": Domain("LA west", "los_angeles", columns(la, 0, LA_SPLIT_COL)),
        "LA east": Domain("LA east", "los_angeles", columns(la, LA_SPLIT_COL, la.shape[3])),
    }
    # (new city with few days, source trained on its normal window)
    pairs = [("los_angeles", "berlin"), ("berlin", "los_angeles"), ("LA east", "LA west")]
    sources: dict[str, Any] = {}
    src_lines = []
    for name in dict.fromkeys(src for _, src in pairs):
        d = domains[name]
        days = load_city(d.city).forecast.train_days
        sources[name], secs = train(d, train_days=days, budget_s=args.source_budget_s, seed=0, steps=0)
        r = sources[name]
        src_lines.append(
            f"- Source {name} ({d.grid.channels[0].split('.')[0]}, {len(d.grid.channels)} channel(s), grid "
            f"{d.grid.shape[2]}x{d.grid.shape[3]}): its normal window ({days:g} days), {r.extra['steps']} steps in "
            f"{secs:.0f} s ({r.stopped_reason}), best validation at step {best_step(r)}, holdout RMSE mean "
            f"{r.metrics['model'].rmse_mean:.3f} (best baseline {r.best_baseline()[1].rmse_mean:.3f})"
        )
        print(src_lines[-1])

    sections = []
    summary = []
    for target, source in pairs:
        d = domains[target]
        rows = []
        means: dict[str, list[float]] = {"scratch": [], "warm": []}
        for seed in seeds:
            common = dict(train_days=args.train_days, budget_s=args.budget_s, seed=seed, steps=args.steps)
            scratch, s_secs = train(d, **common)
            warm, w_secs = train(d, warm=sources[source].module, **common)
            copied = warm.extra["warm_start"]
            means["scratch"].append(scratch.metrics["model"].rmse_mean)
            means["warm"].append(warm.metrics["model"].rmse_mean)
            rows.append(fmt_row(f"seed {seed}: from scratch", scratch.metrics["model"], scratch, s_secs))
            rows.append(fmt_row(f"seed {seed}: warm start from {source}", warm.metrics["model"], warm, w_secs))
            print(rows[-2], rows[-1], sep="\n")
        bname, best = scratch.best_baseline()
        rows.append(fmt_row(f"best baseline ({bname})", best))
        h = len(scratch.metrics["model"].rmse)
        n_params = len(copied["copied"]) + len(copied["skipped"])
        sc, wm = float(np.mean(means["scratch"])), float(np.mean(means["warm"]))
        same = "yes" if d.grid.channels == domains[source].grid.channels else "no"
        summary.append(
            f"| {target} ({args.train_days:g} days) | {source} | {same} | {len(copied['copied'])} / {n_params} | "
            f"{sc:.3f} | {wm:.3f} | {100 * (wm - sc) / sc:+.1f} % | {best.rmse_mean:.3f} |"
        )
        sections.append(
            "\n".join(
                [
                    f"### {target}, {args.train_days:g} days of training data, warm start from {source}",
                    "",
                    f"Channels {', '.join(d.grid.channels)}; grid {d.grid.shape[2]}x{d.grid.shape[3]}; holdout "
                    f"{scratch.holdout.start} .. {scratch.holdout.end} ({scratch.holdout.n_samples} samples, digest "
                    f"{scratch.holdout.digest[:12]}). Copied: {', '.join(f'`{n}`' for n in copied['copied'])}.",
                    "",
                    f"| run | RMSE mean | MAE mean | RMSE per horizon (h1..h{h}) | steps | best step | stopped | s |",
                    "|---|---:|---:|---|---:|---:|---|---:|",
                    *rows,
                ]
            )
        )
    total = time.perf_counter() - t_all
    body = "\n".join(
        [
            "## Warm start: a new city with 3 days of data, from scratch vs from another city's model",
            "",
            f"- Machine: {machine()}; load average {load_average()} at the end of the run (shared machine)",
            f"- Date: {today()}; command: `{' '.join(['python bench/bench_warmstart.py', *sys.argv[1:]])}`",
            f"- Same budget for both arms: {args.steps} optimisation steps (`max_steps`) with early stopping as "
            f"usual, wall-clock cap {args.budget_s:g} s; seeds {args.seeds}; total run time {total:.0f} s",
            "- LA west / LA east: the LA grid cut at column "
            f"{LA_SPLIT_COL} into two halves of sensors (the same channel: the case 'channels match')",
            *src_lines,
            "- Metrics: masked holdout RMSE/MAE in original units (LA km/h, Berlin counts per hour), unweighted "
            "mean over horizons; 'best step' 0 = the network never beat its initial state on validation, so the "
            "returned model is the fitted linear base alone",
            "",
            "| new city | warm start from | same channels | tensors copied | RMSE mean, scratch | RMSE mean, warm "
            "| change | best baseline |",
            "|---|---|---|---:|---:|---:|---:|---:|",
            *summary,
            "",
            *("\n\n".join(sections).splitlines()),
        ]
    )
    print(body)
    if not args.no_write:
        replace_block(SECTION, body)


if __name__ == "__main__":
    main()
