"""Load registered models without running code that came with them.

A model the project logs is a ``pt2`` archive (``torch.export``) plus, per training run, an
eager copy (state dict + JSON config). Neither needs unpickling, but the stock loaders
unpickle when told to: MLflow 3 loads ``pickle``-format models with ``torch.load`` (and
defaults ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION`` to true), and ``torch.export.load`` calls
``torch.load(weights_only=False)`` on every record its archive marks ``use_pickle`` and on
sample inputs that a restricted load refuses, and ``pickle.loads`` on opaque objects. A
tampered version therefore runs its payload on load.

Here a model is loaded only when it is what the project writes:

1. its ``MLmodel`` has a ``pytorch`` flavor whose data folder holds ``model.pt2`` and no
   pickled model (``model.pth``);
2. :func:`check_pt2_archive` accepts the archive: only the records ``torch.export.save``
   writes for a plain exported program (no AOTInductor libraries, no custom or opaque
   objects, no legacy pickled weight files), every weight and constant stored as raw tensor
   bytes (``use_pickle`` false), and the sample inputs readable by
   ``torch.load(weights_only=True)``, which builds tensors and containers only;
3. the archive is then read by ``torch.export.load`` with ``torch.load`` forced to
   ``weights_only=True`` for the duration (:func:`_weights_only`), so that a record the
   check missed still cannot run code.

Anything else is refused with :class:`UnsafeModelError`, which names the model, the record
and what is allowed; nothing of the refused model has been executed.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: File of the exported program inside a logged model's data folder.
PT2_FILE = "model.pt2"
#: What MLflow writes for a ``pickle``-format model: refused.
PICKLED_MODEL_FILE = "model.pth"

# records of a plain torch.export archive (torch/export/pt2_archive/constants.py), after the
# archive's top-level folder; <m> is the program's name (MLflow: "model")
_ALLOWED_RECORDS = re.compile(
    r"""(?x)
    (?:archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id)
    | models/[A-Za-z0-9_.-]+\.json
    | data/weights/[A-Za-z0-9_.-]+_weights_config\.json
    | data/weights/weight_\d+
    | data/constants/[A-Za-z0-9_.-]+_constants_config\.json
    | data/constants/tensor_\d+
    | data/sample_inputs/[A-Za-z0-9_.-]+\.pt
    """
)
_CONFIG = re.compile(r"data/(weights|constants)/[A-Za-z0-9_.-]+_(?:weights|constants)_config\.json")


class UnsafeModelError(RuntimeError):
    """A model is not in a format the project loads without running code (nothing was run)."""


def _members(archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """``{record name after the top-level folder: info}`` of a pt2 archive."""
    out: dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        if info.is_dir():
            continue
        _, _, rest = info.filename.partition("/")
        out[rest or info.filename] = info
    return out


def check_pt2_archive(path: str | Path, *, what: str = "") -> None:
    """Refuse a ``pt2`` archive unless loading it can build tensors and graphs only.

    Parameters
    ----------
    path : str or Path
        The ``model.pt2`` file.
    what : str, optional
        How to name the model in errors (e.g. its model URI).

    Raises
    ------
    UnsafeModelError
        Not a zip archive, a record a plain exported program does not have (AOTInductor
        libraries, custom or opaque objects, legacy pickled weights), a weight or constant
        marked ``use_pickle`` or not stored as raw tensor bytes, or sample inputs that
        ``torch.load(weights_only=True)`` refuses. The message names the record.
    """
    import torch

    name = what or str(path)
    allowed = (
        "only the records torch.export.save writes for a plain exported program, weights and constants "
        "stored as raw tensors (use_pickle false) and sample inputs of tensors"
    )
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UnsafeModelError(f"{name}: {path} is not a pt2 (zip) archive ({exc}); refused") from exc
    with archive:
        members = _members(archive)
        for rec in members:
            if not _ALLOWED_RECORDS.fullmatch(rec):
                raise UnsafeModelError(
                    f"{name}: record {rec!r} of {Path(path).name} is not allowed ({allowed}); refused"
                )
        for rec, info in members.items():
            m = _CONFIG.fullmatch(rec)
            if not m:
                continue
            prefix = "weight_" if m.group(1) == "weights" else "tensor_"
            try:
                entries = json.loads(archive.read(info).decode("utf-8"))["config"]
            except (ValueError, KeyError, TypeError) as exc:
                raise UnsafeModelError(f"{name}: {rec!r} is not a payload config ({exc}); refused") from exc
            for fqn, entry in entries.items():
                path_name = entry.get("path_name") if isinstance(entry, dict) else None
                if not isinstance(entry, dict) or entry.get("use_pickle") is not False:
                    raise UnsafeModelError(
                        f"{name}: {rec!r} marks {fqn!r} as pickled (use_pickle = "
                        f"{entry.get('use_pickle') if isinstance(entry, dict) else entry!r}); "
                        f"allowed: {allowed}; refused"
                    )
                if not (isinstance(path_name, str) and path_name.startswith(prefix) and "/" not in path_name):
                    raise UnsafeModelError(
                        f"{name}: {rec!r} stores {fqn!r} in {path_name!r}, not a raw tensor record "
                        f"'{prefix}<n>'; refused"
                    )
        for rec, info in members.items():
            if not rec.startswith("data/sample_inputs/"):
                continue
            try:
                torch.load(io.BytesIO(archive.read(info)), map_location="cpu", weights_only=True)
            except Exception as exc:  # the restricted unpickler refused it: it is not tensors only
                raise UnsafeModelError(
                    f"{name}: sample inputs {rec!r} are not tensors and containers only "
                    f"(torch.load(weights_only=True): {type(exc).__name__}: {str(exc).splitlines()[0][:200]}); refused"
                ) from exc


@contextmanager
def _weights_only() -> Iterator[None]:
    """``torch.load`` restricted to ``weights_only=True`` while the block runs (belt and braces)."""
    import torch

    original = torch.load

    def restricted(*args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        return original(*args, **kwargs)

    torch.load = restricted  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.load = original  # type: ignore[assignment]


def load_pt2_model_dir(model_dir: str | Path, *, what: str = "") -> Any:
    """Load a downloaded MLflow ``pytorch`` model folder that holds a ``pt2`` archive.

    Parameters
    ----------
    model_dir : str or Path
        The folder of a logged model (with ``MLmodel``).
    what : str, optional
        How to name the model in errors (its URI).

    Returns
    -------
    torch.nn.Module
        ``torch.export.load(...).module()`` on the CPU.

    Raises
    ------
    UnsafeModelError
        No ``pytorch`` flavor, a ``pickle``-format model, or an archive that
        :func:`check_pt2_archive` refuses.
    """
    import torch
    import yaml

    folder = Path(model_dir)
    name = what or str(folder)
    mlmodel = folder / "MLmodel"
    if not mlmodel.is_file():
        raise UnsafeModelError(f"{name}: no MLmodel file in {folder}; not an MLflow model")
    spec = yaml.safe_load(mlmodel.read_text(encoding="utf-8")) or {}
    flavor = (spec.get("flavors") or {}).get("pytorch")
    if not isinstance(flavor, dict):
        raise UnsafeModelError(
            f"{name}: MLmodel has flavors {sorted(spec.get('flavors') or {})}, not 'pytorch'; only pt2 models load"
        )
    data = folder / str(flavor.get("model_data", "data"))
    if (data / PICKLED_MODEL_FILE).exists() or not (data / PT2_FILE).is_file():
        found = sorted(p.name for p in data.iterdir()) if data.is_dir() else []
        raise UnsafeModelError(
            f"{name}: stored in the pickle format ({data.name}/ holds {found}); loading it would unpickle "
            f"(run) code, and pickle deserialization is off. Only serialization_format='pt2' models "
            f"({data.name}/{PT2_FILE}) load; log the model again with the project"
        )
    archive = data / PT2_FILE
    check_pt2_archive(archive, what=name)
    with _weights_only():
        try:
            program = torch.export.load(str(archive))
        except Exception as exc:
            raise UnsafeModelError(f"{name}: {archive.name} could not be read as tensors only: {exc}") from exc
    return program.module()
