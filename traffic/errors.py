"""The faults a user can act on: one typed hierarchy, one way to show them.

Every error the pipeline raises on purpose derives from :class:`TrafficError`. It carries
what a user needs to fix the input (the file, the column or key, the value and what is
allowed) both in its message and as attributes, and says whether retrying the same work can
help (:attr:`TrafficError.retryable`). The ``traffic`` command prints such an error as one
line on stderr and exits 2, or 1 for a retryable one (an unreachable MLflow server: not a fault of the
input; ``--debug`` adds the traceback); an Airflow task logs it and fails
at once, without retries, when a retry cannot fix it (see :func:`traffic.airflow_runner.task_errors`).

Each class also keeps the built-in base it had before this module existed (``ValueError`` for
bad input, ``RuntimeError`` for a state the pipeline cannot work in), so ``except ValueError``
in callers keeps working.

========================  ==============================================================
class                     raised when
========================  ==============================================================
:class:`ConfigError`      a city file (or the model spec) has a missing, unknown or bad key
:class:`UsageError`       a command-line option or argument is out of range
:class:`IngestError`      a delivered file cannot be ingested (unreadable, schema drift)
:class:`QualityError`     the data of a nightly run is stale or fails the quality gate
:class:`GridMismatchError` the grid stored in the lake differs from the city config
:class:`NoChampion`       no champion model yet: nothing approved to forecast with
:class:`RegistryError`    the model registry is not in the state an operation needs
:class:`TrackingServerError` the MLflow tracking server is unreachable, failing or refusing the credentials
:class:`TrainingDiverged` training produced NaN or infinite values
:class:`PublishError`     the inputs of a publish do not fit together
:class:`HotspotError`     a hotspot question the published runs cannot answer
:class:`ExportError`      a city, run, channel or format the catalog does not have
:class:`QueryError`       an analyst's SQL that is not a read statement, or that fails
========================  ==============================================================
"""

from __future__ import annotations

from typing import Any, ClassVar

#: Longest message :meth:`TrafficError.one_line` prints before it cuts the rest.
MAX_LINE = 1500

_UNSET: Any = object()


class TrafficError(Exception):
    """A fault in the input or the state of the pipeline that a user can act on.

    Parameters
    ----------
    message : str
        What is wrong, naming the file, the column or key, the value and what is allowed.
    file : str, optional
        The file at fault (a city TOML, a delivered feed file, a catalog...).
    key : str, optional
        The config key or command-line option at fault (``[forecast] context_steps``, ``--hours``).
    column : str, optional
        The column of a delivered file at fault.
    value : object, optional
        The offending value.
    allowed : str, optional
        What would have been accepted.
    hint : str, optional
        What to do about it; appended to the message.
    retryable : bool, optional
        Overrides the class default :attr:`retryable`.

    Attributes
    ----------
    retryable : bool
        Whether running the same work again can succeed without a change to the input
        (False for every class here but :class:`TrackingServerError`: a bad file or value stays bad).
    """

    retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        key: str | None = None,
        column: str | None = None,
        value: Any = _UNSET,
        allowed: str | None = None,
        hint: str | None = None,
        retryable: bool | None = None,
    ) -> None:
        text = f"{message} ({hint})" if hint else message
        super().__init__(text)
        self.file = file
        self.key = key
        self.column = column
        self.value = None if value is _UNSET else value
        self.allowed = allowed
        self.hint = hint
        if retryable is not None:
            self.retryable = retryable  # type: ignore[misc]

    def one_line(self) -> str:
        """The message on one line (whitespace runs collapsed), cut after :data:`MAX_LINE` characters."""
        return one_line(str(self))


def one_line(text: str, limit: int = MAX_LINE) -> str:
    """``text`` with every run of whitespace (newlines included) collapsed to one space.

    Parameters
    ----------
    text : str
        Any message.
    limit : int
        Longest result; the rest is replaced by a note saying how much was cut.

    Returns
    -------
    str
        One line, never longer than ``limit`` plus the note.
    """
    flat = " ".join(str(text).split())
    if len(flat) > limit:
        flat = f"{flat[:limit]} ... ({len(flat) - limit} more characters; --debug shows all)"
    return flat


class ConfigError(TrafficError, ValueError):
    """A city file is missing a key or has a value outside what is allowed."""


class UsageError(TrafficError, ValueError):
    """A command-line option or argument outside what is allowed (the message names it and the range)."""


class IngestError(TrafficError, ValueError):
    """A delivered file cannot be ingested: unreadable, schema drift or wrong dtype.

    Parameters
    ----------
    message : str
        Human-readable message naming the file, the column and what was expected.
    file, column : str, optional
        The offending file and column (also available as attributes).
    **kwargs
        ``key``, ``value``, ``allowed``, ``hint``, ``retryable`` of :class:`TrafficError`.
    """


class QualityError(TrafficError, RuntimeError):
    """The data for a nightly run is stale or fails the quality gate."""


class GridMismatchError(TrafficError, RuntimeError):
    """The grid stored in the lake differs from the one the city config describes."""


class NoChampion(TrafficError, RuntimeError):
    """The city has no champion model yet: there is nothing approved to forecast with."""


class RegistryError(TrafficError, RuntimeError):
    """The registry is not in the state an operation needs (no such alias, export mismatch...)."""


class TrackingServerError(TrafficError, RuntimeError):
    """The MLflow tracking server cannot be used (unreachable, failing, or refusing the credentials).

    Not a fault of the input: the same work can succeed once the server is back, so it is
    :attr:`~TrafficError.retryable` (an Airflow task keeps its retries; ``traffic`` exits 1).
    """

    retryable: ClassVar[bool] = True


class TrainingDiverged(TrafficError, RuntimeError):
    """The loss, a gradient, the parameters, the linear base or a forecast became NaN or infinite."""


class PublishError(TrafficError, ValueError):
    """Inputs of a publish do not fit together; nothing was written."""


class HotspotError(TrafficError, ValueError):
    """A hotspot question the published runs cannot answer (the message says what is allowed)."""


class ExportError(TrafficError, ValueError):
    """A city, run, channel or format that the catalog does not have; the message lists what it has."""


class QueryError(TrafficError, ValueError):
    """An analyst's SQL (``traffic sql``) that is not a read statement, reaches outside the catalog or fails."""
