"""Training checkpoints (resume after a crash) and warm starts (initialise from another model).

A checkpoint is one ``torch.save`` file holding only tensors and primitive containers
(dict, list, tuple, str, int, float, bool, None), so it loads with
``torch.load(path, weights_only=True)``: no pickled code runs when a checkpoint is read.
Random-number-generator states are converted to such plain values here (numpy's global
MT19937 key becomes an int64 tensor) and converted back on resume.

Files are written atomically: to a temporary file in the same directory, then
``os.replace`` onto the final name, so a crash mid-write leaves the previous checkpoint.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: File name of the checkpoint inside ``checkpoint_dir``.
CHECKPOINT_NAME = "checkpoint.pt"
#: Bumped when the checkpoint layout changes; a checkpoint of another format is refused.
CHECKPOINT_FORMAT = 1


def checkpoint_path(checkpoint_dir: str | Path) -> Path:
    """The checkpoint file of ``checkpoint_dir``."""
    return Path(checkpoint_dir) / CHECKPOINT_NAME


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (:func:`traffic.tempfiles.atomic_path`).

    Parameters
    ----------
    path : str or Path
        Final file; its directory is created when missing.
    state : dict
        Tensors and primitive containers only (what ``torch.load(weights_only=True)`` reads back).

    Returns
    -------
    Path
    """
    from traffic.tempfiles import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``, tensors on CPU).

    Raises
    ------
    ValueError
        If the file is of another checkpoint format.
    """
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    fmt = state.get("format") if isinstance(state, dict) else None
    if fmt != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: checkpoint format {fmt!r}, this code reads format {CHECKPOINT_FORMAT}")
    return state


def rng_states(generator: np.random.Generator) -> dict[str, Any]:
    """The states of the training generator, numpy's and Python's global generators and torch's, as plain values."""
    kind, key, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    version, internal, gauss = random.getstate()
    out: dict[str, Any] = {
        "generator": _plain(generator.bit_generator.state),
        "numpy_global": {
            "kind": str(kind),
            "key": torch.from_numpy(np.asarray(key, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": int(version), "internal": list(internal), "gauss": gauss},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["torch_cuda"] = torch.cuda.get_rng_state_all()
    return out


def restore_rng_states(generator: np.random.Generator, states: dict[str, Any]) -> None:
    """Inverse of :func:`rng_states`: put every generator back where the checkpoint left it."""
    generator.bit_generator.state = states["generator"]
    g = states["numpy_global"]
    key = g["key"].numpy().astype(np.uint32)
    np.random.set_state((g["kind"], key, g["pos"], g["has_gauss"], g["cached_gaussian"]))
    p = states["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    torch.set_rng_state(states["torch"])
    if "torch_cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["torch_cuda"])


def _plain(value: Any) -> Any:
    """Nested dicts/lists of numpy scalars to Python ints/floats/str (a bit generator's state)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def transfer_parameters(
    target: torch.nn.Module, source: torch.nn.Module | Mapping[str, torch.Tensor]
) -> dict[str, list[str]]:
    """Warm start: copy into ``target`` every parameter of ``source`` with the same name and shape.

    A layer moves as a whole: its parameters are copied only if all of them match (a bias
    whose weight has another shape, because the hidden size or the channels differ, is not
    copied alone). Only parameters move: buffers (a forecaster's channel mean/std, seasonal
    profile and linear-base coefficients) are statistics of the source's own data and stay as
    ``target`` has them. Parameters without a match keep their initial values.

    Parameters
    ----------
    target : torch.nn.Module
    source : torch.nn.Module or mapping
        A module (a :class:`~traffic.model.Forecaster`, or the exported graph the registry
        loads back) or a state dict.

    Returns
    -------
    dict
        ``{"copied": [names], "skipped": [names]}``: the parameters of ``target``, in order.
    """
    if isinstance(source, torch.nn.Module):
        src = dict(source.state_dict())
    elif isinstance(source, Mapping):
        src = dict(source)
    else:
        raise TypeError(f"warm_start must be a torch.nn.Module or a state dict, not {type(source).__name__}")
    params = dict(target.named_parameters())

    def matches(name: str) -> bool:
        s = src.get(name)
        return isinstance(s, torch.Tensor) and tuple(s.shape) == tuple(params[name].shape)

    layers: dict[str, list[str]] = {}  # owning module -> its parameters (a top-level parameter stands alone)
    for name in params:
        layers.setdefault(name.rsplit(".", 1)[0] if "." in name else name, []).append(name)
    take = {n for names in layers.values() if all(matches(n) for n in names) for n in names}
    with torch.no_grad():
        for name in take:
            params[name].copy_(src[name].detach().to(device=params[name].device, dtype=params[name].dtype))
    return {"copied": [n for n in params if n in take], "skipped": [n for n in params if n not in take]}
