"""Tampered registered versions must not run code when loaded (real MLflow SQLite store).

Each case registers a version whose stored model carries a payload that writes a marker
file when unpickled: a ``pickle``-format model, a ``pt2`` archive whose weight is marked
``use_pickle``, and a ``pt2`` archive whose sample inputs are a pickle. Loading through the
project's entry points must raise a clear error and leave no marker.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import zipfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

import mlflow
import pytest
import torch
from mlflow import MlflowClient

from traffic.config import mlflow_uri
from traffic.registry import RegistryError, load_serving_module, load_version_module, log_training, model_name
from traffic.registry.safe_load import UnsafeModelError, check_pt2_archive

pytestmark = pytest.mark.usefixtures("mlflow_db")

DATA_WINDOW = {"start": "2024-10-20", "end": "2024-12-07", "days": 49}


class Payload:
    """Unpickling this writes ``marker``: what an attacker's model would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('payload ran')",))


class PayloadModule(torch.nn.Module):
    """A module that pickles as the payload (a ``pickle``-format model)."""

    def __init__(self, marker: Path) -> None:
        super().__init__()
        self.marker = marker
        self.lin = torch.nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)

    def __reduce__(self):
        return Payload(self.marker).__reduce__()


def _client() -> MlflowClient:
    return MlflowClient(tracking_uri=mlflow_uri(), registry_uri=mlflow_uri())


def _local(uri: str) -> Path:
    return Path(unquote(urlsplit(uri).path))


def _genuine(berlin, make_module, make_result) -> tuple[dict, Path]:
    """A version logged by the project; returns its info and the stored ``model.pt2``."""
    info = log_training(berlin, make_result(make_module(0.1)), data_window=DATA_WINDOW, code_version="test")
    client = _client()
    mv = client.get_model_version(info["model_name"], info["version"])
    model_id = mv.model_id or mv.source.split("/")[-1]
    folder = _local(client.get_logged_model(model_id).artifact_location)
    return info, folder / "data" / "model.pt2"


def _rewrite(archive: Path, replace: dict[str, bytes]) -> None:
    """Rewrite records of a zip archive in place (keys: names after the top-level folder)."""
    tmp = archive.with_suffix(".tampered")
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as dst:
        for item in src.infolist():
            rest = item.filename.partition("/")[2]
            dst.writestr(item, replace.get(rest, src.read(item)))
    os.replace(tmp, archive)


def _assert_refused(info: dict, marker: Path, match: str) -> None:
    with pytest.raises(RegistryError, match=match) as err:
        load_version_module(info["model_uri"])
    assert info["model_uri"] in str(err.value) and "refused" in str(err.value)
    assert not marker.exists(), "the payload ran"


def test_a_genuine_version_loads_and_its_archive_passes(berlin, make_module, make_result, holdout_data):
    info, archive = _genuine(berlin, make_module, make_result)
    check_pt2_archive(archive)
    module = load_version_module(info["model_uri"])
    x = torch.from_numpy(holdout_data[0][:2])
    with torch.no_grad():
        assert module(x).shape[0] == 2
    assert os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] == "false"


def test_pickle_format_model_is_refused_and_its_payload_does_not_run(berlin, tmp_path):
    marker = tmp_path / "marker"
    name = model_name(berlin)
    mlflow.set_tracking_uri(mlflow_uri())
    try:
        with mlflow.start_run() as run:
            mlflow.pytorch.log_model(PayloadModule(marker), name="model", serialization_format="pickle")
        mv = mlflow.register_model(f"runs:/{run.info.run_id}/model", name)
    finally:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    assert not marker.exists()
    info = {"model_uri": f"models:/{name}/{mv.version}"}
    _assert_refused(info, marker, "pickle format")
    # the serving path (no eager copy on this run) falls back to the same refusal
    with pytest.raises(RegistryError, match="pickle format"):
        load_serving_module(run.info.run_id, info["model_uri"])
    assert not marker.exists()


def test_pt2_with_a_weight_marked_pickled_is_refused(berlin, make_module, make_result, tmp_path):
    marker = tmp_path / "marker"
    info, archive = _genuine(berlin, make_module, make_result)
    with zipfile.ZipFile(archive) as z:
        key = next(n.partition("/")[2] for n in z.namelist() if n.endswith("_weights_config.json"))
        config = json.loads(z.read(f"model/{key}"))
    fqn, entry = next(iter(config["config"].items()))
    entry["use_pickle"] = True
    _rewrite(
        archive, {key: json.dumps(config).encode(), f"data/weights/{entry['path_name']}": pickle.dumps(Payload(marker))}
    )
    with pytest.raises(UnsafeModelError, match=f"marks '{fqn}' as pickled"):
        check_pt2_archive(archive)
    _assert_refused(info, marker, "as pickled")


def test_pt2_with_pickled_sample_inputs_is_refused(berlin, make_module, make_result, tmp_path):
    marker = tmp_path / "marker"
    info, archive = _genuine(berlin, make_module, make_result)
    with zipfile.ZipFile(archive) as z:
        key = next(n.partition("/")[2] for n in z.namelist() if "/data/sample_inputs/" in n)
    _rewrite(archive, {key: pickle.dumps(Payload(marker))})
    _assert_refused(info, marker, "sample inputs")


def test_pt2_with_a_record_outside_a_plain_export_is_refused(berlin, make_module, make_result, tmp_path):
    marker = tmp_path / "marker"
    info, archive = _genuine(berlin, make_module, make_result)
    tmp = archive.with_suffix(".tampered")
    shutil.copyfile(archive, tmp)
    with zipfile.ZipFile(tmp, "a", zipfile.ZIP_STORED) as z:
        z.writestr("model/data/constants/custom_obj_0", pickle.dumps(Payload(marker)))
    os.replace(tmp, archive)
    _assert_refused(info, marker, "custom_obj_0.*not allowed")
