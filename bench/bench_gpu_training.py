"""Training throughput of the nightly configuration on a CUDA GPU worker, both shipped cities (<= 5 min).

For each city the nightly window is loaded from the lake (ingested and rasterized first if
missing) and ``train_forecaster`` runs on ``cuda`` with the city's step budget cut to
``--steps`` optimiser steps, once eager (bf16 autocast, channels_last, batches gathered on
the device) and once with ``compile = true`` (``torch.compile`` of the training forward),
interleaved city by city. Recorded per run: optimiser steps, loop seconds, seconds per step,
training samples/s, peak GPU memory (``torch.cuda.max_memory_allocated``) and the holdout
RMSE, with the device name. Writes section ``gpu`` of ``bench/RESULTS.md``.

    python bench/bench_gpu_training.py              # both cities, 200 steps per run
    python bench/bench_gpu_training.py --steps 400 --batch-size 64

Without a CUDA device it writes nothing and exits 2, saying so (the CPU figures are in the
``accuracy`` and ``speed`` sections).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench_model_accuracy import load_grid  # noqa: E402
from results import machine, replace_block, today  # noqa: E402


def run(city_name: str, steps: int, compile_: bool, batch_size: int | None) -> dict:
    import torch

    from traffic.forecast.train import train_forecaster

    city, grid = load_grid(city_name)
    fc = city.forecast
    over: dict[str, object] = {"compile": compile_, "patience": 10_000}  # no early stop: time every step
    if batch_size:
        over["batch_size"] = batch_size
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    res = train_forecaster(
        grid,
        context_steps=fc.context_steps,
        horizon_steps=fc.horizon_steps,
        holdout_days=fc.holdout_days,
        train_days=fc.train_days,
        budget_s=240.0,
        device="cuda",
        max_steps=steps,
        model_overrides=over,
    )
    total = time.perf_counter() - t0
    n = int(res.extra["steps"])
    bs = int(res.params["batch_size"])
    return {
        "city": city_name,
        "compile": compile_,
        "grid": "x".join(str(v) for v in grid.shape),
        "steps": n,
        "loop_s": res.train_seconds,
        "s_per_step": res.train_seconds / max(n, 1),
        "samples_per_s": n * bs / max(res.train_seconds, 1e-9),
        "batch_size": bs,
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
        "rmse": res.metrics["model"].rmse_mean,
        "gbm": res.metrics["gbm"].rmse_mean,
        "total_s": total,
        "stopped": res.stopped_reason,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cities", default="berlin,los_angeles")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=0, help="0 = the model spec's batch size")
    args = ap.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("bench_gpu_training: no CUDA device on this machine; nothing measured, RESULTS.md unchanged")
        return 2
    device = torch.cuda.get_device_name(0)
    rows = []
    for city in args.cities.split(","):
        for compile_ in (False, True):  # interleaved: eager then compiled, city by city
            r = run(city, args.steps, compile_, args.batch_size or None)
            print(r, flush=True)
            rows.append(r)
    lines = [
        "## GPU training throughput (nightly configuration, CUDA)",
        "",
        f"Measured {today()} on **{device}** (torch {torch.__version__}, CUDA {torch.version.cuda}); host: "
        f"{machine()}. `python bench/bench_gpu_training.py --steps {args.steps}`: bf16 autocast, channels_last, "
        "batches gathered on the device, one host sync per validation; eager vs `torch.compile`.",
        "",
        "| city | grid (T×C×H×W) | compile | steps | batch | s/step | samples/s | peak GPU mem (GiB) | "
        "holdout RMSE | gbm | stopped |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['city']} | {r['grid']} | {'yes' if r['compile'] else 'no'} | {r['steps']} | {r['batch_size']} | "
            f"{r['s_per_step']:.4f} | {r['samples_per_s']:.0f} | {r['peak_mem_gib']:.2f} | {r['rmse']:.3f} | "
            f"{r['gbm']:.3f} | {r['stopped']} |"
        )
    replace_block("gpu", "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
