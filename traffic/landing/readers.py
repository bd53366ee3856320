"""Thin I/O helpers shared by the landing adapters: read files, check columns.

Every problem with the *shape* of a delivered file (unreadable, not UTF-8, truncated in
the middle of a line, wrong delimiter, missing column, a column whose values are mostly
not numbers) raises :class:`IngestError` naming the file, the column and what was
expected; nothing is written for the delivery. Problems with *values* in individual rows
or cells (one cell that is not a number, a line with the wrong number of fields) are not
errors: the adapters mark them and :mod:`traffic.ingest.validate` quarantines them.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

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


def read_parquet(
    path: UPath | str, columns: Sequence[str] | None = None, *, optional: Sequence[str] = ()
) -> pd.DataFrame:
    """Read a Parquet file (optionally only ``columns``) into pandas; :class:`IngestError` on failure.

    Columns named in ``optional`` (a subset of ``columns``) are read when the file has them and
    are left out of the frame when it does not; any other column of ``columns`` must be there.
    """
    import pyarrow.parquet as pq

    try:
        with UPath(path).open("rb") as fh:
            pf = pq.ParquetFile(fh)
            if columns is not None:
                present = set(pf.schema_arrow.names)
                columns = [c for c in columns if c in present or c not in optional]
                missing = [c for c in columns if c not in present]
                if missing:
                    raise IngestError(
                        f"{path}: missing column `{missing[0]}`; expected columns {list(columns)}; "
                        f"found {sorted(present)}",
                        file=str(path),
                        column=missing[0],
                    )
            check_unique_columns(pf.schema_arrow.names, str(path))
            table = pf.read(columns=list(columns) if columns is not None else None)
    except IngestError:
        raise
    except Exception as exc:  # pyarrow raises several unrelated types for corrupt files
        raise IngestError(f"cannot read {path} as Parquet: {exc}", file=str(path)) from exc
    return table.to_pandas()


def check_unique_columns(names: Sequence[str], file: str) -> None:
    """Raise :class:`IngestError` when a header names a column twice (which one would be read is a guess).

    Parameters
    ----------
    names : sequence of str
        The delivered column names, in order.
    file : str
        File named in the message.
    """
    seen: dict[str, int] = {}
    for i, name in enumerate(names, start=1):
        if name in seen and name != "":
            raise IngestError(
                f"{file}: column `{name}` appears twice (columns {seen[name]} and {i} of the header); "
                "expected every column name once: rename or drop one",
                file=file,
                column=name,
                value=name,
                allowed="unique column names",
            )
        seen.setdefault(name, i)


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


# --------------------------------------------------------------------------------------
# CSV text: delimiter, truncation and field counts, values kept as delivered

#: Delimiters recognised in a header line, with the name an error message gives them.
DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
#: Cell texts that a feed uses to say "no value" (compared case-insensitively, stripped).
MISSING_MARKERS = frozenset({"na", "n/a", "#n/a", "nan", "null", "none", "-", "--", "?"})
#: A column whose non-blank cells are mostly (more than this share) not numbers is schema drift.
DRIFT_SHARE = 0.5


@dataclass
class CsvText:
    """A CSV file split into fields, every field kept as the delivered text.

    Attributes
    ----------
    file : str
    header : list of str
        Fields of the first line (BOM removed).
    rows : list of list of str
        Fields of every following line, in file order (a blank line is one empty field).
    lines : numpy.ndarray
        int64, the 1-based line number where each row starts.
    n_fields : numpy.ndarray
        int64, fields per row; rows whose count differs from the header's are faults.
    """

    file: str
    header: list[str]
    rows: list[list[str]]
    lines: np.ndarray
    n_fields: np.ndarray

    def bad_lines(self) -> np.ndarray:
        """bool per row: the row's field count differs from the header's."""
        return self.n_fields != len(self.header)

    def matrix(self) -> np.ndarray:
        """object array ``(rows, header fields)`` of the texts; short rows padded with ``""``, long ones cut."""
        width = len(self.header)
        out = np.full((len(self.rows), width), "", dtype=object)
        good = ~self.bad_lines()
        if good.any():
            out[good] = np.array([r for r, g in zip(self.rows, good, strict=True) if g], dtype=object).reshape(
                -1, width
            )
        for i in np.flatnonzero(~good):
            fields = self.rows[i][:width]
            out[i, : len(fields)] = fields
        return out


def read_csv_text(path: UPath | str, *, delimiter: str = ",", option: str = "csv_delimiter") -> CsvText:
    """Read a CSV file into delivered text fields, refusing files that cannot be trusted.

    Parameters
    ----------
    path : UPath or str
        ``.csv``, ``.txt`` or ``.csv.gz``.
    delimiter : str
        The field delimiter the feed uses (feed option ``csv_delimiter``, default ``,``).
    option : str
        The feed option that sets ``delimiter`` (named in the error message).

    Returns
    -------
    CsvText

    Raises
    ------
    IngestError
        Unreadable, empty, not UTF-8, quoting broken, a header that uses another
        delimiter, or a last line cut short (no newline and fewer fields than the header:
        the file was truncated in the middle of a line).
    """
    file = str(path)
    try:
        with UPath(path).open("rb") as fh:
            data = fh.read()
        if file.lower().endswith(".gz"):
            data = gzip.decompress(data)
    except (OSError, EOFError, ValueError) as exc:
        raise IngestError(f"cannot read {file}: {exc}", file=file) from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IngestError(
            f"cannot read {file} as CSV: byte 0x{data[exc.start]:02x} at offset {exc.start} is not UTF-8; "
            "expected UTF-8 text",
            file=file,
            value=f"0x{data[exc.start]:02x}",
            allowed="UTF-8 text",
        ) from exc
    if not text.strip():
        raise IngestError(f"cannot read {file} as CSV: empty file; expected a header line", file=file)
    first = text.split("\n", 1)[0].rstrip("\r")
    if delimiter not in first:
        others = [d for d in DELIMITER_NAMES if d != delimiter and d in first]
        if others:
            found = max(others, key=first.count)
            name = DELIMITER_NAMES.get(delimiter, repr(delimiter))
            raise IngestError(
                f"{file}: the header line is delimited by {DELIMITER_NAMES[found]} {found!r}, "
                f"expected {name} {delimiter!r}; save the file {name}-separated or set "
                f"`{option} = {found!r}` in the feed's [feeds.options]",
                file=file,
                value=found,
                allowed=delimiter,
            )
    try:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
        header = next(reader)
        rows: list[list[str]] = []
        lines: list[int] = []
        start = reader.line_num + 1
        for fields in reader:
            rows.append(fields if fields else [""])
            lines.append(start)
            start = reader.line_num + 1
    except csv.Error as exc:
        raise IngestError(f"cannot read {file} as CSV: line {reader.line_num}: {exc}", file=file) from exc
    check_unique_columns([h.strip() for h in header], file)
    while rows and rows[-1] == [""] and len(header) > 1:  # blank lines at the very end
        rows.pop()
        lines.pop()
    n_fields = np.array([len(r) for r in rows], dtype=np.int64)
    if rows and not text.endswith(("\n", "\r")) and n_fields[-1] < len(header):
        raise IngestError(
            f"{file}: truncated: the last line ({lines[-1]}) ends without a newline after "
            f"{n_fields[-1]} of {len(header)} fields; the file was cut in the middle of a line. "
            "Deliver the whole file again",
            file=file,
            value=delimiter.join(rows[-1])[-40:],
            allowed=f"{len(header)} fields per line",
        )
    return CsvText(file, header, rows, np.array(lines, dtype=np.int64), n_fields)


@dataclass
class ParsedNumbers:
    """A text column parsed as numbers, with the cells that are not.

    Attributes
    ----------
    values : numpy.ndarray
        float64; NaN where the cell is blank, a missing marker or not a number.
    garbage : numpy.ndarray
        bool: the cell holds text that is not a number (``unparseable_value``).
    marker : numpy.ndarray
        bool: the cell is a missing marker such as ``N/A`` (see :data:`MISSING_MARKERS`).
    """

    values: np.ndarray
    garbage: np.ndarray
    marker: np.ndarray


def parse_numbers(
    values: pd.Series | np.ndarray, *, file: str, column: str, expected: str = "a number", drift: bool = True
) -> ParsedNumbers:
    """Parse a delivered column cell by cell; schema drift only when most cells are not numbers.

    Blank cells are null (measurement columns are nullable). Cells in
    :data:`MISSING_MARKERS` (``N/A``, ``NaN``, ``null`` ...) are null *and* flagged as
    markers. Any other cell that is not a number is flagged as garbage, to be quarantined
    on its own. When more than :data:`DRIFT_SHARE` of the non-blank, non-marker cells are
    garbage (or the column is boolean), the column is not numeric at all: schema drift
    (unless ``drift=False``: the caller checks it per column).

    Raises
    ------
    IngestError
        Schema drift (names file, column, example values and what was expected).
    """
    series = pd.Series(values) if not isinstance(values, pd.Series) else values
    n = len(series)
    if pd.api.types.is_bool_dtype(series.dtype):
        raise IngestError(
            f"{file}: column `{column}` has dtype bool; expected {expected}", file=file, column=column, allowed=expected
        )
    if pd.api.types.is_numeric_dtype(series.dtype):
        none = np.zeros(n, dtype=bool)
        return ParsedNumbers(series.to_numpy(dtype="float64", na_value=np.nan), none, none.copy())
    text = series.astype("string").str.strip()
    blank = (text.isna() | (text == "")).to_numpy(dtype=bool)
    marker = text.str.lower().isin(MISSING_MARKERS).to_numpy(dtype=bool) & ~blank
    candidate = text.mask(blank | marker)
    parsed = pd.to_numeric(candidate, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    garbage = np.isnan(parsed) & ~blank & ~marker
    filled = int((~blank & ~marker).sum())
    if drift and garbage.any() and garbage.sum() > DRIFT_SHARE * filled:
        examples = pd.unique(text[garbage].to_numpy(dtype=object))[:5].tolist()
        raise IngestError(
            f"{file}: column `{column}` has wrong dtype {series.dtype} with {int(garbage.sum())} non-numeric values "
            f"of {filled} (e.g. {examples}); expected {expected}",
            file=file,
            column=column,
            value=str(examples[0]),
            allowed=expected,
        )
    return ParsedNumbers(parsed, garbage, marker)
