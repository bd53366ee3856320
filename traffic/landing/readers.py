"""Thin I/O helpers shared by the landing adapters: read files, check columns.

Every problem with the *shape* of a delivered file (unreadable, missing column, wrong
dtype) raises :class:`IngestError` naming the file, the column and what was expected.
Problems with *values* in individual rows are not errors: they are quarantined by
:mod:`traffic.ingest.validate`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from upath import UPath

from traffic.errors import IngestError

#: File suffixes the canonical reader understands.
CSV_SUFFIXES = (".csv", ".csv.gz", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq", ".geoparquet")


def resolve_files(path: str, suffixes: Sequence[str]) -> list[UPath]:
    """Files behind ``path``: the file itself, a folder's matching files, or a glob's matches.

    Parameters
    ----------
    path : str
        Local path or URI of a file, a folder or a glob pattern.
    suffixes : sequence of str
        Suffixes accepted when ``path`` is a folder or a glob.

    Returns
    -------
    list of UPath
        Sorted, so that multi-file deliveries are read in a deterministic order.

    Raises
    ------
    IngestError
        When nothing matches.
    """
    if any(ch in path for ch in "*?["):
        import fsspec

        fs, _, matches = fsspec.core.get_fs_token_paths(path)
        local = "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))
        files = sorted((UPath(m) if local else UPath(fs.unstrip_protocol(m)) for m in matches if fs.isfile(m)), key=str)
    else:
        p = UPath(path)
        if p.is_dir():
            files = sorted(
                (f for f in p.iterdir() if f.is_file() and f.name.lower().endswith(tuple(suffixes))), key=str
            )
        elif p.exists():
            files = [p]
        else:
            raise IngestError(f"cannot read {path}: file does not exist", file=path)
    if not files:
        raise IngestError(f"cannot read {path}: no files ending in {list(suffixes)}", file=path)
    return files


def file_format(path: UPath | str) -> str:
    """``"csv"`` or ``"parquet"`` from the file name; :class:`IngestError` otherwise."""
    name = str(path).lower()
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    raise IngestError(
        f"cannot read {path}: unknown file type; expected one of {list(CSV_SUFFIXES + PARQUET_SUFFIXES)}",
        file=str(path),
    )


def read_csv(path: UPath | str, **kwargs) -> pd.DataFrame:
    """``pandas.read_csv`` that turns any failure into :class:`IngestError` naming the file."""
    try:
        with UPath(path).open("rb") as fh:
            return pd.read_csv(fh, compression="gzip" if str(path).endswith(".gz") else None, **kwargs)
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise IngestError(f"cannot read {path} as CSV: {exc}", file=str(path)) from exc


def read_parquet(path: UPath | str, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Read a Parquet file (optionally only ``columns``) into pandas; :class:`IngestError` on failure."""
    import pyarrow.parquet as pq

    try:
        with UPath(path).open("rb") as fh:
            pf = pq.ParquetFile(fh)
            if columns is not None:
                present = set(pf.schema_arrow.names)
                missing = [c for c in columns if c not in present]
                if missing:
                    raise IngestError(
                        f"{path}: missing column `{missing[0]}`; expected columns {list(columns)}; "
                        f"found {sorted(present)}",
                        file=str(path),
                        column=missing[0],
                    )
            table = pf.read(columns=list(columns) if columns is not None else None)
    except IngestError:
        raise
    except Exception as exc:  # pyarrow raises several unrelated types for corrupt files
        raise IngestError(f"cannot read {path} as Parquet: {exc}", file=str(path)) from exc
    return table.to_pandas()


def require_columns(
    df: pd.DataFrame, required: Iterable[str], file: str, *, expected: Iterable[str] | None = None
) -> None:
    """Raise :class:`IngestError` for the first column of ``required`` missing from ``df``.

    Parameters
    ----------
    df : pandas.DataFrame
    required : iterable of str
        Columns that must be present.
    file : str
        File named in the message.
    expected : iterable of str, optional
        Full list of columns shown in the message (defaults to ``required``).
    """
    required = list(required)
    missing = [c for c in required if c not in df.columns]
    if missing:
        shown = list(expected) if expected is not None else required
        raise IngestError(
            f"{file}: missing column `{missing[0]}`; expected columns {shown}; found {[str(c) for c in df.columns]}",
            file=file,
            column=missing[0],
        )


def numeric_column(values: pd.Series, *, file: str, column: str, expected: str = "a number") -> np.ndarray:
    """Column as float64; blank cells become NaN, anything unparseable raises.

    Parameters
    ----------
    values : pandas.Series
        Raw column.
    file, column : str
        Named in the error message.
    expected : str
        What the column should hold (shown in the message).

    Returns
    -------
    numpy.ndarray
        float64 values with NaN for missing cells.

    Raises
    ------
    IngestError
        When non-empty cells are not numbers (wrong dtype / schema drift).
    """
    if pd.api.types.is_bool_dtype(values.dtype):
        raise IngestError(f"{file}: column `{column}` has dtype bool; expected {expected}", file=file, column=column)
    if pd.api.types.is_numeric_dtype(values.dtype):
        return values.to_numpy(dtype="float64", na_value=np.nan)
    as_text = values.astype("string").str.strip()
    parsed = pd.to_numeric(as_text.replace("", pd.NA), errors="coerce")
    bad = parsed.isna() & as_text.notna() & (as_text != "")
    if bad.any():
        examples = as_text[bad].unique()[:5].tolist()
        raise IngestError(
            f"{file}: column `{column}` has wrong dtype {values.dtype} with {int(bad.sum())} non-numeric values "
            f"(e.g. {examples}); expected {expected}",
            file=file,
            column=column,
        )
    return parsed.to_numpy(dtype="float64", na_value=np.nan)
