"""Forecaster speed: training and inference samples/s against a naive ConvLSTM, and scaling in grid cells.

Run from the project root::

    python bench/bench_model_speed.py                 # the issue's sizes; writes bench/RESULTS.md
    python bench/bench_model_speed.py --threads 1 --profile
    python bench/bench_model_speed.py --quick         # tiny sizes, a smoke run; writes nothing

**Speed** (one process, CPU): grid 32x32, 4 channels, hidden 64, 2 layers, 12 bins in -> 12
out, batch 8. One training step = forward + masked MSE (normalised units) + backward + AdamW
step. Compared in the same run, interleaved (A B C D E, A B C D E, ...) after a warm-up step
each: (a) the naive reference of ``bench/reference_convlstm.py`` (8 convolutions per cell
step, per-cell peepholes, Python loop), (b) ``Forecaster`` (ConvLSTM, linear attention, direct
decoder, the default parallel one), (c) the same without attention (the plain path), (d) ConvGRU cells, (e) the
autoregressive decoder. Reported per model: median samples/s and the spread (min-max) over
the repetitions, with the 1-minute load average sampled next to every measurement; the speed
ratio ours/reference and the time ratio attention/plain are taken per repetition from
neighbouring measurements (paired), median and min-max. Also forward-only (inference)
samples/s of (a) and (b), and the forward FLOPs per sample of each model
(``torch.utils.flop_counter``).

**Scaling**: ``Forecaster`` (b) on grids 32, 64, 128 and 256 cells a side, one fresh
subprocess per size (``--scaling-batch`` samples per step, the same for every size, 1 by
default: a training step at 256x256 holds ~14 GB of activations per sample). Each worker runs
a first training step under a dispatch mode that records the largest tensor any operator
produces (forward and backward), then times a second step. Peak memory is the worker's peak
RSS (``VmHWM``) minus that of an idle worker (same imports, nothing built). Time and
memory are divided by samples x cells and normalised to the smallest grid: ~1.0 everywhere
means linear in cells. A size is skipped (and says so) when the memory it would need by
linear extrapolation is not available.

**CUDA** (only when ``torch.cuda.is_available()``; untested on the 2-core CPU machine this was
written on): the same training and inference steps of (a) and (b) with bf16 autocast and
channels_last, and the GPU's name.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from reference_convlstm import NaiveEncoderForecaster  # noqa: E402
from results import load_average, machine, replace_block, today  # noqa: E402

from traffic.forecast.features import build_inputs  # noqa: E402
from traffic.forecast.metrics import masked_mse  # noqa: E402
from traffic.grid.tensor import GridTensor  # noqa: E402
from traffic.model import Forecaster, ForecasterConfig  # noqa: E402

MEAN, STD = 50.0, 10.0  # of the synthetic observations


@dataclass(frozen=True)
class Size:
    """Sizes of one benchmark setting."""

    grid: int = 32
    channels: int = 4
    hidden: tuple[int, ...] = (64, 64)
    context: int = 12
    horizon: int = 12
    batch: int = 8
    # our fused input width; the reference reads the F = 2C + 7 = 15 input features directly
    embed: int = 16


FULL = Size()
QUICK = Size(grid=8, hidden=(8, 8), context=4, horizon=3, batch=2, embed=4)
SCALING_GRIDS = (32, 64, 128, 256)
QUICK_SCALING_GRIDS = (8, 16)

#: name -> ForecasterConfig overrides (None = the naive reference)
VARIANTS: dict[str, dict[str, Any] | None] = {
    "reference": None,
    "ours": {},
    "ours_plain": {"attention": False},
    "ours_convgru": {"cell": "convgru"},
    "ours_autoregressive": {"decoder": "autoregressive"},
    "ours_direct": {"decoder": "direct"},
}
LABELS = {
    "reference": "(a) naive reference ConvLSTM (8 convs/step, peepholes)",
    "ours": "(b) Forecaster: ConvLSTM + linear attention, parallel decoder (the default)",
    "ours_plain": "(c) Forecaster, attention=False (plain path)",
    "ours_convgru": "(d) Forecaster, cell=convgru",
    "ours_autoregressive": "(e) Forecaster, decoder=autoregressive",
    "ours_direct": "(g) Forecaster, decoder=direct (a recurrent forecaster stack over the target bins)",
}
if "patch" in {f.name for f in fields(ForecasterConfig)}:  # space-to-depth packing, where the model has it
    VARIANTS["ours_patch2"] = {"patch": 2}
    LABELS["ours_patch2"] = "(f) Forecaster, patch=2 (recurrent stacks on 2x2-packed cells)"
INFERENCE = ("reference", "ours")


class Batch(NamedTuple):
    """One batch of synthetic data in the layouts both models read."""

    x: torch.Tensor  # (B, T_in, F, H, W) raw, from build_inputs (our Forecaster's input)
    x_ref: torch.Tensor  # (B, T_in, F, H, W) with the values normalised (the reference's input)
    y: torch.Tensor  # (B, H_out, C, H, W) raw targets, 0 where missing
    y_n: torch.Tensor  # (B, H_out, C, H, W) normalised targets
    mask: torch.Tensor  # (B, H_out, C, H, W) bool


# ------------------------------------------------------------------------------------ data, models
def synthetic_grid(size: Size, n_bins: int, seed: int = 0) -> GridTensor:
    """A random hourly grid ``(n_bins, C, n, n)`` starting on a Monday, ~70 % of the values observed."""
    rng = np.random.default_rng(seed)
    shape = (n_bins, size.channels, size.grid, size.grid)
    values = rng.normal(MEAN, STD, size=shape).astype(np.float32)
    mask = rng.random(shape) > 0.3
    times = pd.date_range("2024-03-04", periods=n_bins, freq="1h", tz="UTC")
    return GridTensor(
        np.where(mask, values, np.nan).astype(np.float32),
        mask,
        mask.astype(np.int32),
        times,
        channel_names(size.channels),
        np.arange(size.grid * size.grid, dtype=np.int32).reshape(size.grid, size.grid),
    )


def channel_names(c: int) -> tuple[str, ...]:
    """``("f.c0", "f.c1", ...)``: one feed of ``c`` channels."""
    return tuple(f"f.c{i}" for i in range(c))


def make_batch(size: Size, seed: int = 0) -> Batch:
    """Inputs via ``build_inputs`` (so the calendar part decodes) and masked targets, ``size.batch`` samples."""
    n_bins = size.context + size.horizon + size.batch
    grid = synthetic_grid(size, n_bins, seed)
    t_end = np.arange(size.batch) + size.context - 1  # (B,) last context bin of each sample
    x = torch.from_numpy(build_inputs(grid, t_end, size.context, size.horizon))  # (B, T_in, F, H, W)
    tidx = t_end[:, None] + np.arange(1, size.horizon + 1)[None, :]  # (B, H_out)
    mask = torch.from_numpy(grid.mask[tidx])  # (B, H_out, C, H, W)
    y = torch.from_numpy(np.nan_to_num(grid.values[tidx]))  # (B, H_out, C, H, W)
    c = size.channels
    x_ref = x.clone()
    x_ref[:, :, :c] = (x[:, :, :c] - MEAN) / STD * x[:, :, c : 2 * c]  # normalised, 0 where missing
    y_n = (y - MEAN) / STD * mask
    return Batch(x, x_ref, y, y_n, mask)


def forecaster_config(size: Size, **overrides: Any) -> ForecasterConfig:
    """``ForecasterConfig`` at ``size`` (time-of-day prior: a small buffer even on a 256x256 grid)."""
    return ForecasterConfig(
        channels=channel_names(size.channels),
        grid_shape=(size.grid, size.grid),
        context_steps=size.context,
        horizon=size.horizon,
        bin_minutes=60,
        profile_period=24,
        embed_dim=size.embed,
        hidden_dims=size.hidden,
        **overrides,
    )


def build_model(name: str, size: Size, seed: int = 0) -> nn.Module:
    """The model of variant ``name`` (see :data:`VARIANTS`), statistics installed."""
    torch.manual_seed(seed)
    overrides = VARIANTS[name]
    if overrides is None:
        return NaiveEncoderForecaster(
            2 * size.channels + 7, size.channels, (size.grid, size.grid), size.hidden, size.horizon
        )
    m = Forecaster(forecaster_config(size, **overrides))
    c, n = size.channels, size.grid
    profile = np.random.default_rng(seed).normal(MEAN, 1.0, size=(24, c, n, n)).astype(np.float32)  # (P, C, H, W)
    m.set_statistics(np.full(c, MEAN), np.full(c, STD), profile)
    return m


def loss_closure(name: str, model: nn.Module, batch: Batch) -> Callable[[], torch.Tensor]:
    """Forward + masked MSE in normalised units, as training computes it."""
    if VARIANTS[name] is None:
        return lambda: masked_mse(model(batch.x_ref), batch.y_n, batch.mask)
    assert isinstance(model, Forecaster)
    return lambda: masked_mse(model.normalise(model(batch.x)), model.normalise(batch.y), batch.mask)


def forward_closure(name: str, model: nn.Module, batch: Batch) -> Callable[[], torch.Tensor]:
    """Forward only (inference)."""
    x = batch.x_ref if VARIANTS[name] is None else batch.x
    return lambda: model(x)


def train_step(model: nn.Module, loss: Callable[[], torch.Tensor], autocast: Any = None) -> Callable[[], float]:
    """A closure running one AdamW training step; returns the loss."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ctx = autocast or nullcontext

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        with ctx():
            value = loss()
        value.backward()
        opt.step()
        return float(value.detach())

    return step


def infer_step(forward: Callable[[], torch.Tensor], autocast: Any = None) -> Callable[[], float]:
    """A closure running one forward pass without autograd."""
    ctx = autocast or nullcontext

    def step() -> float:
        with torch.inference_mode(), ctx():
            return float(forward().float().mean())

    return step


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def forward_gflops_per_sample(name: str, model: nn.Module, size: Size) -> float:
    """Forward FLOPs of one sample (``torch.utils.flop_counter``: convolutions and matmuls), in GFLOP."""
    one = make_batch(replace(size, batch=1))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        forward_closure(name, model, one)()
    return counter.get_total_flops() / 1e9


# ----------------------------------------------------------------------------------------- timing
class Measurement(NamedTuple):
    wall_s: float  # per step
    cpu_s: float  # process CPU time per step (all threads)
    load1: float  # 1-minute load average when the measurement started


def _load1() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def time_steps(step: Callable[[], float], n: int, sync: Callable[[], None] | None = None) -> Measurement:
    """Run ``step`` ``n`` times; wall and CPU seconds per step."""
    load = _load1()
    if sync:
        sync()
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        step()
    if sync:
        sync()
    return Measurement((time.perf_counter() - w0) / n, (time.process_time() - c0) / n, load)


def interleaved(
    steps: dict[str, Callable[[], float]],
    repeat: int,
    per_rep: int = 1,
    warmup: int = 1,
    sync: Callable[[], None] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, list[Measurement]]:
    """Warm each step up, then time them in turn ``repeat`` times (A B C, A B C, ...)."""
    for name, step in steps.items():
        for _ in range(warmup):
            step()
        log(f"  warmed up {name}")
    out: dict[str, list[Measurement]] = {k: [] for k in steps}
    for r in range(repeat):
        for name, step in steps.items():
            m = time_steps(step, per_rep, sync)
            out[name].append(m)
            log(f"  rep {r + 1}/{repeat} {name}: {m.wall_s:.2f} s/step wall, {m.cpu_s:.2f} s CPU, load {m.load1:.2f}")
    return out


def spread(values: list[float]) -> tuple[float, float, float]:
    """``(median, min, max)``."""
    return statistics.median(values), min(values), max(values)


def paired_ratios(num: list[Measurement], den: list[Measurement]) -> list[float]:
    """Per repetition ``num.wall_s / den.wall_s`` (neighbouring measurements of one repetition)."""
    return [a.wall_s / b.wall_s for a, b in zip(num, den, strict=True)]


def fmt_spread(values: list[float], digits: int = 2) -> str:
    med, lo, hi = spread(values)
    return f"{med:.{digits}f} [{lo:.{digits}f}-{hi:.{digits}f}]"


# --------------------------------------------------------------------------------------- scaling
class MaxNumel(TorchDispatchMode):
    """Records the largest tensor produced by any operator (forward and backward run inside it)."""

    def __init__(self) -> None:
        super().__init__()
        self.max_numel = 0
        self.max_shape: tuple[int, ...] = ()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor) and t.numel() > self.max_numel:
                self.max_numel, self.max_shape = t.numel(), tuple(t.shape)
        return out


def _proc_status_bytes(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return None


def _maxrss_bytes() -> int:
    """Peak RSS of this process since it started its program.

    ``VmHWM`` of the process's own memory map: unlike ``ru_maxrss``, which survives ``execve``
    and so starts a subprocess at its parent's peak, it begins afresh in every worker.
    """
    hwm = _proc_status_bytes("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def scaling_worker(grid: int, batch: int, size: Size = FULL) -> dict[str, Any]:
    """One size (run in a fresh process): first step recorded, second timed; ``grid=0`` = idle baseline."""
    if grid == 0:
        return {"grid": 0, "maxrss": _maxrss_bytes()}
    sz = replace(size, grid=grid, batch=batch)
    data = make_batch(sz)
    model = build_model("ours", sz)
    step = train_step(model, loss_closure("ours", model, data))
    rss_before = _proc_status_bytes("VmRSS") or _maxrss_bytes()
    rec = MaxNumel()
    t0 = time.perf_counter()
    with rec:
        step()
    first = time.perf_counter() - t0
    timed = time_steps(step, 1)
    return {
        "grid": grid,
        "batch": batch,
        "first_step_s": first,
        "step_s": timed.wall_s,
        "cpu_s": timed.cpu_s,
        "load1": timed.load1,
        "maxrss": _maxrss_bytes(),
        "rss_before_step": rss_before,
        "max_numel": rec.max_numel,
        "max_shape": list(rec.max_shape),
    }


def _run_worker(grid: int, batch: int, threads: int, quick: bool) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--scaling-worker", str(grid)]
    cmd += ["--scaling-batch", str(batch), "--threads", str(threads)] + (["--quick"] if quick else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"scaling worker for grid {grid} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def available_bytes() -> int | None:
    """Memory available to a new process (``MemAvailable``), or None when unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def normalise_scaling(rows: list[dict[str, Any]], idle: int) -> list[dict[str, Any]]:
    """Add per-cell-sample time and memory, normalised to the first (smallest) measured grid."""
    done = [r for r in rows if "step_s" in r]
    for r in done:
        unit = r["batch"] * r["grid"] ** 2  # samples x cells
        r["mem_delta"] = r["maxrss"] - idle
        r["time_per_unit"] = r["step_s"] / unit
        r["mem_per_unit"] = r["mem_delta"] / unit
        r["numel_per_unit"] = r["max_numel"] / unit
    if done:
        ref = done[0]
        for r in done:
            for key in ("time", "mem", "numel"):
                base = ref[f"{key}_per_unit"]
                r[f"{key}_rel"] = r[f"{key}_per_unit"] / base if base > 0 else float("nan")
    return rows


def quadratic_problems(rows: list[dict[str, Any]]) -> list[str]:
    """What grows faster than cells: a tensor of a sample reaching ``(HW)^2`` from 64x64 up, or a largest
    tensor per sample and cell more than twice (or under half) the smallest grid's. Empty = linear."""
    problems = []
    for r in rows:
        if "max_numel" not in r:
            continue
        cells = r["grid"] ** 2
        if r["grid"] >= 64 and r["max_numel"] / r["batch"] >= cells * cells:
            problems.append(f"grid {r['grid']}: a tensor of {r['max_numel']:,} >= (HW)^2 per sample")
        if not 0.5 <= r["numel_rel"] <= 2.0:
            problems.append(
                f"grid {r['grid']}: largest tensor per sample and cell {r['numel_rel']:.2f}x the first grid's"
            )
    return problems


def linear_fit(rows: list[dict[str, Any]], key: str) -> tuple[float, float, float]:
    """Least squares (relative) ``key / batch = a + b * cells`` over the measured grids: ``(b, a, max relative deviation)``."""
    done = [r for r in rows if "step_s" in r]
    cells = np.array([r["grid"] ** 2 for r in done], dtype=float)
    vals = np.array([r[key] / r["batch"] for r in done], dtype=float)
    if len(done) < 2:
        return float("nan"), float("nan"), float("nan")
    b, a = np.polyfit(cells, vals, 1, w=1.0 / np.abs(vals))  # weights: relative residuals count
    dev = np.abs(a + b * cells - vals) / np.abs(vals)
    return float(b), float(a), float(dev.max())


def run_scaling(grids: tuple[int, ...], batch: int, threads: int, quick: bool, log=print) -> list[dict[str, Any]]:
    """Idle baseline, then one worker per grid size (skipping sizes the free memory cannot hold)."""
    idle = _run_worker(0, batch, threads, quick)["maxrss"]
    log(f"  idle worker peak RSS {idle / 2**20:.0f} MiB")
    rows: list[dict[str, Any]] = []
    per_unit: float | None = None
    for g in grids:
        need = None if per_unit is None else 1.25 * per_unit * batch * g * g + idle
        avail = available_bytes()
        if need is not None and avail is not None and need > avail - 2 * 2**30:
            log(f"  grid {g}: skipped, needs ~{need / 2**30:.1f} GiB, {avail / 2**30:.1f} GiB available")
            rows.append(
                {"grid": g, "batch": batch, "skipped": f"needs ~{need / 2**30:.1f} GiB, {avail / 2**30:.1f} available"}
            )
            continue
        r = _run_worker(g, batch, threads, quick)
        per_unit = max(r["maxrss"] - idle, 0) / (batch * g * g)
        log(
            f"  grid {g}: step {r['step_s']:.2f} s (first {r['first_step_s']:.2f} s), peak RSS {r['maxrss'] / 2**30:.2f} GiB"
        )
        rows.append(r)
    return normalise_scaling(rows, idle) + [{"grid": 0, "maxrss": idle}]


# --------------------------------------------------------------------------------------- profiles
def profile_step(step: Callable[[], float], top: int = 6) -> list[tuple[str, float]]:
    """Share of self CPU time of the top operators in one step (``torch.profiler``)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = [e for e in prof.key_averages() if not e.key.startswith(("autograd::", "Optimizer."))]
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return [(e.key, e.self_cpu_time_total / total) for e in events[:top]]


# ----------------------------------------------------------------------------------------- CUDA
def cuda_speed(size: Size, repeat: int, log=print) -> list[str]:
    """Training/inference samples/s of (a) and (b) on CUDA, bf16 autocast, channels_last (untested here)."""
    dev = torch.device("cuda")
    lines = [f"CUDA device: {torch.cuda.get_device_name(dev)}; bf16 autocast, channels_last.", ""]
    lines += ["| model | train samples/s | inference samples/s |", "|---|---:|---:|"]

    def autocast() -> Any:
        return torch.autocast("cuda", dtype=torch.bfloat16)

    data = Batch(*(t.to(dev) for t in make_batch(size)))
    train, infer = {}, {}
    for name in INFERENCE:
        model = build_model(name, size).to(dev, memory_format=torch.channels_last)  # type: ignore[call-overload]
        train[name] = train_step(model, loss_closure(name, model, data), autocast)
        infer[name] = infer_step(forward_closure(name, model, data), autocast)
    tr = interleaved(train, repeat, per_rep=5, warmup=3, sync=torch.cuda.synchronize, log=log)
    inf = interleaved(infer, repeat, per_rep=10, warmup=3, sync=torch.cuda.synchronize, log=log)
    for name in INFERENCE:
        t = [size.batch / m.wall_s for m in tr[name]]
        i = [size.batch / m.wall_s for m in inf[name]]
        lines.append(f"| {LABELS[name]} | {fmt_spread(t, 1)} | {fmt_spread(i, 1)} |")
    return lines


# ------------------------------------------------------------------------------------------ report
def render_speed(
    size: Size,
    args: argparse.Namespace,
    train: dict[str, list[Measurement]],
    infer: dict[str, list[Measurement]],
    params: dict[str, int],
    gflops: dict[str, float],
    profiles: dict[str, list[tuple[str, float]]],
    cuda_lines: list[str],
    runtime_s: float,
) -> str:
    b = size.batch
    speed = paired_ratios(train["reference"], train["ours"])  # t_ref / t_ours = samples/s ours / reference
    attn = paired_ratios(train["ours"], train["ours_plain"])
    speed_med, attn_med = statistics.median(speed), statistics.median(attn)
    lines = [
        "## Forecaster speed: training samples/s on CPU vs a naive ConvLSTM",
        "",
        f"- Machine: {machine()}; {platform.system()} {platform.machine()}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} intra-op threads",
        f"- Date: {today()}; load average {load_average()} at the end of the run; run time {runtime_s:.0f} s",
        f"- Command: `{command(args)}`",
        f"- Sizes: grid {size.grid}x{size.grid}, {size.channels} channels, hidden {size.hidden}, "
        f"{size.context} bins in -> {size.horizon} out, batch {b}, 3x3 kernels; ours: embed_dim {size.embed}, "
        "2 attention heads of 8, no peepholes, the whole grid active; the reference reads the 15 input features "
        "directly and has per-cell peepholes.",
        f"- Training step = forward + masked MSE + backward + AdamW step; {args.repeat} repetitions of "
        f"{args.steps} step(s) per model, interleaved, after 1 warm-up step each. Figures: median [min-max] over the "
        "repetitions; `load` is the 1-minute load average when each measurement started (the machine is shared).",
        "",
        "| model | params | fwd GFLOP/sample | train samples/s | s/step wall | s/step CPU | load | inference samples/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, ms in train.items():
        sps = [b / m.wall_s for m in ms]
        inf = fmt_spread([b / m.wall_s for m in infer[name]], 1) if name in infer else "-"
        lines.append(
            f"| {LABELS[name]} | {params[name]:,} | {gflops[name]:.2f} | {fmt_spread(sps)} | "
            f"{fmt_spread([m.wall_s for m in ms])} | {fmt_spread([m.cpu_s for m in ms])} | "
            f"{fmt_spread([m.load1 for m in ms], 1)} | {inf} |"
        )
    lines += [
        "",
        "| ratio (paired per repetition) | median [min-max] | target | met |",
        "|---|---:|---:|---|",
        f"| training speed ours (b) / reference (a) | {fmt_spread(speed)} | >= 1.5 | "
        f"{'yes' if speed_med >= 1.5 else '**no**'} |",
        f"| time attention (b) / plain (c) | {fmt_spread(attn)} | <= 1.3 | {'yes' if attn_med <= 1.3 else '**no**'} |",
    ]
    if "ours_patch2" in train:
        lines.append(
            f"| training speed (f) patch=2 / reference (a) | {fmt_spread(paired_ratios(train['reference'], train['ours_patch2']))} | >= 1.5 | - |"
        )
    for name, other in (("ours_convgru", "ours"), ("ours_autoregressive", "ours")):
        lines.append(f"| time {name} / {other} | {fmt_spread(paired_ratios(train[name], train[other]))} | - | - |")
    if profiles:
        lines += [
            "",
            "Where one training step's self CPU time goes (`--profile`, `torch.profiler`, top operators):",
            "",
        ]
        for name, top in profiles.items():
            lines.append(f"- {LABELS[name]}: " + ", ".join(f"`{k}` {v:.0%}" for k, v in top))
    lines += ["", *(cuda_lines or ["CUDA: not available on this machine (the CUDA path of the bench is untested)."])]
    return "\n".join(lines)


def render_scaling(rows: list[dict[str, Any]], args: argparse.Namespace, runtime_s: float) -> str:
    idle = next(r["maxrss"] for r in rows if r["grid"] == 0)
    lines = [
        "## Forecaster scaling in grid cells (CPU, training step)",
        "",
        f"- Machine: {machine()}; torch {torch.__version__}, {args.threads} intra-op threads",
        f"- Date: {today()}; load average {load_average()} at the end; run time {runtime_s:.0f} s",
        f"- Command: `{command(args)}`",
        f"- Model (b) at the speed section's sizes, {args.scaling_batch} sample(s) per step on every grid, one fresh "
        "process per grid. Step = the second training step (the first runs under the largest-tensor recorder). "
        f"Peak memory = worker peak RSS - idle worker peak RSS ({idle / 2**20:.0f} MiB). `rel` columns: per sample "
        "and cell, divided by the smallest grid's (1.00 = linear in cells).",
        "",
        "| grid | cells | s/step | first step s | load | peak RSS - idle | time rel | memory rel | largest tensor "
        "(numel, shape) | largest rel |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        if r["grid"] == 0:
            continue
        if "step_s" not in r:
            lines.append(f"| {r['grid']} | {r['grid'] ** 2:,} | skipped: {r['skipped']} | | | | | | | |")
            continue
        lines.append(
            f"| {r['grid']} | {r['grid'] ** 2:,} | {r['step_s']:.2f} | {r['first_step_s']:.2f} | {r['load1']:.1f} | "
            f"{r['mem_delta'] / 2**30:.2f} GiB | {r['time_rel']:.2f} | {r['mem_rel']:.2f} | "
            f"{r['max_numel']:,} {tuple(r['max_shape'])} | {r['numel_rel']:.2f} |"
        )
    tb, ta, tdev = linear_fit(rows, "step_s")
    mb, ma, mdev = linear_fit(rows, "mem_delta")
    problems = quadratic_problems(rows)
    lines += [
        "",
        f"Linear fits per sample over the grids (least squares on relative residuals): time = {ta:.2f} s + {tb * 1e6:.0f} us x cells "
        f"(largest deviation {tdev:.0%}); peak memory = {ma / 2**20:.0f} MiB + {mb / 2**10:.0f} KiB x cells "
        f"(largest deviation {mdev:.0%}). The constant holds the parameters, optimiser state and allocator "
        "overhead, so the per-cell `memory rel` falls towards the slope's share as grids grow.",
        "",
        "Largest tensor check (no (HW x HW) tensor; the largest per sample and cell constant across grids): "
        + ("passed." if not problems else "**failed**: " + "; ".join(problems)),
    ]
    return "\n".join(lines)


def command(args: argparse.Namespace) -> str:
    parts = ["python bench/bench_model_speed.py"]
    if args.threads_given:
        parts.append(f"--threads {args.threads}")
    if args.repeat != 3:
        parts.append(f"--repeat {args.repeat}")
    if args.steps != 1:
        parts.append(f"--steps {args.steps}")
    if args.profile:
        parts.append("--profile")
    if args.only:
        parts.append(f"--only {args.only}")
    return " ".join(parts)


# -------------------------------------------------------------------------------------------- main
def run_speed(size: Size, args: argparse.Namespace, log=print) -> tuple[str, float]:
    t0 = time.perf_counter()
    data = make_batch(size)
    models = {name: build_model(name, size) for name in VARIANTS}
    params = {k: n_params(m) for k, m in models.items()}
    gflops = {k: forward_gflops_per_sample(k, m, size) for k, m in models.items()}
    log("training steps:")
    train = interleaved(
        {k: train_step(m, loss_closure(k, m, data)) for k, m in models.items()}, args.repeat, args.steps, log=log
    )
    log("inference:")
    infer = interleaved(
        {k: infer_step(forward_closure(k, models[k], data)) for k in INFERENCE}, args.repeat, args.steps, log=log
    )
    profiles: dict[str, list[tuple[str, float]]] = {}
    if args.profile:
        for k in INFERENCE:
            log(f"profiling {k}")
            profiles[k] = profile_step(train_step(models[k], loss_closure(k, models[k], data)))
    cuda_lines: list[str] = []
    if torch.cuda.is_available():
        log("cuda:")
        cuda_lines = cuda_speed(size, args.repeat, log=log)
    runtime = time.perf_counter() - t0
    return render_speed(size, args, train, infer, params, gflops, profiles, cuda_lines, runtime), runtime


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's, = cores)")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved repetitions per model (default 3)")
    ap.add_argument("--steps", type=int, default=1, help="steps per repetition (default 1)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, a smoke run; writes nothing")
    ap.add_argument("--profile", action="store_true", help="profile one training step of (a) and (b)")
    ap.add_argument("--only", choices=("speed", "scaling"), help="run one section only")
    ap.add_argument("--no-write", action="store_true", help="print, do not write bench/RESULTS.md")
    ap.add_argument("--scaling-batch", type=int, default=1, help="samples per step in the scaling run (default 1)")
    ap.add_argument("--scaling-worker", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.threads_given = args.threads is not None
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()
    size = QUICK if args.quick else FULL

    if args.scaling_worker is not None:
        print(json.dumps(scaling_worker(args.scaling_worker, args.scaling_batch, size)))
        return

    write = not (args.no_write or args.quick)
    if args.only in (None, "speed"):
        print(f"speed ({'quick' if args.quick else 'full'} sizes, {args.threads} threads, load {load_average()}):")
        body, _ = run_speed(size, args)
        print(body)
        if write:
            replace_block("speed", body)
    if args.only in (None, "scaling"):
        grids = QUICK_SCALING_GRIDS if args.quick else SCALING_GRIDS
        print(f"scaling over grids {grids}:")
        t0 = time.perf_counter()
        rows = run_scaling(grids, args.scaling_batch, args.threads, args.quick)
        body = render_scaling(rows, args, time.perf_counter() - t0)
        print(body)
        if write:
            replace_block("scaling", body)
        problems = quadratic_problems(rows)
        if problems:
            raise SystemExit("largest tensor grows faster than cells: " + "; ".join(problems))


if __name__ == "__main__":
    main()
