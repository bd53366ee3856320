"""A new city's defaults on a 57 x 57 grid (issue 18, part 8): does the default training fit a nightly on 2 cores?

A synthetic hourly grid (57 x 57 cells, 30 % observed, two channels, 35 days: 28 of training and 7 of
holdout, the defaults of a city file without a [forecast] table) trained with the default step budget
(600) and wall-clock floor (900 s), the backtest included. Writes the ``new-city-grid`` section of
bench/RESULTS.md:

    python bench/bench_new_city_grid.py
"""

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from results import load_average, machine, replace_block, today  # noqa: E402

from tests.forecast.synth import synthetic_grid  # noqa: E402
from traffic.forecast.train import train_forecaster  # noqa: E402


def main() -> None:
    load = load_average()
    g = synthetic_grid(
        days=35, freq="1h", shape=(57, 57), channels=("loop.speed_kmh", "cam.car"), observed_share=0.3, seed=1
    )
    t = time.time()
    r = train_forecaster(
        g, context_steps=12, horizon_steps=24, holdout_days=7, train_days=28, budget_s=900, max_steps=600, device="cpu"
    )
    line = (
        f"57x57: total {time.time() - t:.0f} s, training {r.train_seconds:.0f} s, backtest {r.extra['backtest_seconds']:.0f} s, "
        f"steps {r.extra['steps']}, stopped {r.stopped_reason}, guard {r.extra['wall_clock_guard_s']:.0f} s"
    )
    print(line)
    replace_block(
        "new-city-grid",
        "\n".join(
            [
                "## A new city's defaults on a 57 x 57 grid",
                "",
                f"- Machine: {machine()}; {today()}; load average at start {load}",
                "- Command: `python bench/bench_new_city_grid.py`",
                "",
                line,
            ]
        ),
    )


if __name__ == "__main__":
    main()
