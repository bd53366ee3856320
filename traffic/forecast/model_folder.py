"""The model folder: a trained :class:`~traffic.model.Forecaster` as ``model.pt`` + ``config.json`` + ``fingerprint.json`` (+ ``report.json``).

One format for the eager module, written by :func:`save_model` and read by :func:`load_model`
wherever a trained network is kept as plain files: ``traffic grid evaluate --save-model DIR``
and the registry's eager copy of every training run (``traffic.registry``, artifact folder
``eager``). ``model.pt`` is the state dict only (``torch.load(weights_only=True)``: no pickled
code runs), ``config.json`` the :class:`~traffic.model.ForecasterConfig`, ``fingerprint.json``
the code the state dict belongs to (:func:`fingerprint`: a state dict is only the same model
under the same ``Forecaster`` code), ``report.json`` the evaluation report when given.

Two other model files serve other jobs and are owned elsewhere, on purpose:

* the MLflow model of a registered version (``traffic.registry``): an exported program with
  its signature, input example and pinned requirements, what MLflow serves and versions;
* the training checkpoint (:mod:`traffic.forecast.checkpoint`): optimizer, scheduler and RNG
  states with the weights, to resume an interrupted run, never to serve.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from traffic.tempfiles import atomic_path, atomic_write

#: Files of the model folder.
MODEL_WEIGHTS = "model.pt"
MODEL_CONFIG = "config.json"
MODEL_REPORT = "report.json"
MODEL_FINGERPRINT = "fingerprint.json"

_log = logging.getLogger(__name__)


def fingerprint() -> dict[str, str]:
    """What a state dict depends on: the source of ``traffic/model.py`` and the torch version.

    An exported program is self-contained; a state dict is only the same model under the same
    ``Forecaster`` code (a changed layer shape fails to load, a changed ``forward`` would not).
    """
    import torch

    source = (Path(__file__).resolve().parents[1] / "model.py").read_bytes()
    return {"model_py_sha256": hashlib.sha256(source).hexdigest(), "torch": str(torch.__version__)}


def save_model(module: Any, directory: str | Path, report: dict[str, Any] | None = None) -> Path:
    """Write a trained :class:`~traffic.model.Forecaster` into ``directory`` (each file atomically).

    Parameters
    ----------
    module : Forecaster
        With ``config.to_dict()`` and ``state_dict()``.
    directory : str or Path
        Created if needed.
    report : dict, optional
        Written as ``report.json`` with ``saved_model`` set to ``directory``.

    Returns
    -------
    Path
        ``directory``.
    """
    import torch

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    with atomic_path(d / MODEL_WEIGHTS) as tmp:
        torch.save(state, tmp)
    cfg = json.dumps(module.config.to_dict(), indent=2).encode()
    atomic_write(d / MODEL_CONFIG, lambda fh: fh.write(cfg))
    code = json.dumps(fingerprint(), sort_keys=True).encode()
    atomic_write(d / MODEL_FINGERPRINT, lambda fh: fh.write(code))
    if report is not None:
        text = json.dumps({**report, "saved_model": str(d)}, indent=2).encode()
        atomic_write(d / MODEL_REPORT, lambda fh: fh.write(text))
    return d


def load_model(directory: str | Path):
    """Read back a module written by :func:`save_model` (CPU, eval mode, ``torch.load(weights_only=True)``).

    A folder whose ``fingerprint.json`` names other model code is still read, with a warning
    (the registry loads the version's exported program instead in that case).

    Forecast with ``traffic.forecast.inference.forecast_after(module, grid, -1)`` or score it with
    ``traffic.forecast.inference.evaluate_module``.

    Raises
    ------
    FileNotFoundError
        When ``model.pt`` or ``config.json`` is missing.
    ValueError
        When ``config.json`` has keys :class:`~traffic.model.ForecasterConfig` does not know.
    """
    import torch

    from traffic.model import Forecaster, ForecasterConfig

    d = Path(directory)
    for name in (MODEL_WEIGHTS, MODEL_CONFIG):
        if not (d / name).exists():
            raise FileNotFoundError(f"{d / name}: missing; save_model writes {MODEL_WEIGHTS} and {MODEL_CONFIG}")
    cfg = json.loads((d / MODEL_CONFIG).read_text())
    allowed = {f.name for f in dataclasses.fields(ForecasterConfig)}
    unknown = sorted(set(cfg) - allowed)
    if unknown:
        raise ValueError(f"{d / MODEL_CONFIG}: unknown config keys {unknown}; allowed: {sorted(allowed)}")
    if (d / MODEL_FINGERPRINT).exists():
        saved = json.loads((d / MODEL_FINGERPRINT).read_text())
        if saved != fingerprint():
            _log.warning("%s: saved under other model code %s (now %s)", d, saved, fingerprint())
    module = Forecaster(ForecasterConfig(**cfg))
    module.load_state_dict(torch.load(d / MODEL_WEIGHTS, map_location="cpu", weights_only=True))
    return module.eval()
