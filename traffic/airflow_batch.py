"""One Airflow process for `traffic nightly`: its ``airflow`` commands one after the other, then each replay.

Each ``airflow dags test`` used to start an interpreter of its own: importing Airflow, parsing the
DAG folder and starting the in-process execution API took about 13 s before a DAG's first task,
four times in ``make nightly``, and the replay after a city's nightly DAG (another process) fitted
the baselines of the version again. Here a plan of steps runs in one child process
(``python -m traffic.airflow_batch PLAN.json``): the ``airflow`` commands exactly as the CLI runs
them (its own argument parser and command functions, as ``airflow/__main__.py`` does), and each
city's replay and verification (:func:`traffic.airflow_runner.replay_and_verify`) after its
nightly DAG, where the fits of that night's training are still kept
(:func:`traffic.forecast.fallback.fit_baseline`).

The plan: ``{"steps": [{"airflow": [args...]} | {"replay": {"city": ..., "newest": ...}}, ...],
"out": path}``. The child's stdout carries Airflow's output as it comes and one marker line per
event, which the parent (:func:`traffic.airflow_runner.run_plan`) reads::

    ::traffic:: start <i>
    ::traffic:: done <i> <seconds>
    ::traffic:: log <text>            (a line of a replay step's progress)
    ::traffic:: failed <i>            (the step's error is on the lines before; the child exits 1)

The results of the replay steps (``{str(i): result}``) are written to ``out`` (JSON) when every
step has succeeded.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

#: Prefix of the child's marker lines.
MARK = "::traffic::"


def _say(*parts: object) -> None:
    print(MARK, *parts, flush=True)


def _airflow_command(args: list[str]) -> None:
    """Run one ``airflow`` CLI command in this process, as ``airflow/__main__.py`` runs it."""
    from airflow.cli import cli_parser
    from airflow.configuration import write_default_airflow_configuration_if_needed

    parsed = cli_parser.get_parser().parse_args(args)
    write_default_airflow_configuration_if_needed()
    parsed.func(parsed)


def run(plan: dict[str, Any]) -> int:
    """Run the steps of ``plan`` in order; 0 when all succeeded, 1 at the first that failed (the rest do not run)."""
    from traffic.airflow_runner import replay_and_verify

    results: dict[str, Any] = {}
    for i, step in enumerate(plan["steps"]):
        _say("start", i)
        t = time.perf_counter()
        try:
            if "airflow" in step:
                _airflow_command([str(a) for a in step["airflow"]])
            else:
                rep = step["replay"]
                times: dict[str, float] = {}
                out = replay_and_verify(rep["city"], rep["newest"], times, log=lambda text: _say("log", text))
                results[str(i)] = {**out, "timings_s": times}
        except SystemExit as exc:  # the CLI's way to fail (``DagRun failed``); 0 / None is a success
            if exc.code not in (0, None):
                print(exc.code if isinstance(exc.code, str) else f"exit {exc.code}", flush=True)
                _say("failed", i)
                return 1
        except Exception:
            traceback.print_exc(file=sys.stdout)
            sys.stdout.flush()
            _say("failed", i)
            return 1
        _say("done", i, f"{time.perf_counter() - t:.1f}")
    Path(plan["out"]).write_text(json.dumps(results, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(run(json.loads(Path(sys.argv[1]).read_text())))
