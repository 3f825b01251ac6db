"""What every invocation did, seen from the client: records, logs, and what they cost.

One :class:`InvocationRecord` per invocation (retries, re-deliveries and backups each have their
own), built by the client from what the function measured and returned in its response
(``Response.stats``: no extra storage request) and from the client's own clock. An executor keeps
the latest ``faas.records-kept`` of them (:meth:`FaasExecutor.invocations
<dask_faas.FaasExecutor.invocations>` gives them as a DataFrame, :func:`frame`);
:func:`collecting` gathers those of every executor of the process, with the
:class:`~dask_faas.scheduler.ComputeReport` of every compute, while a block runs::

    with dask_faas.records.collecting() as seen:
        dask.compute(x, scheduler=ex)
    seen.invocations, seen.computes

What the functions print (stdout, stderr, the root logger) comes back in the response, capped at
``faas.logs.max-bytes``, and is written on the client under ``faas.logs.directory``, one directory
per job (:func:`read_logs`, :func:`log_jobs`, ``dask-faas logs JOB``).

:func:`estimate_cost` prices GB-seconds, invocations and storage requests from ``faas.prices``.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import operator
import os
import re
import shutil
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from . import config
from .exceptions import ConfigError

if TYPE_CHECKING:
    import pandas

logger = logging.getLogger("dask_faas")

__all__ = [
    "FIELDS",
    "OUTCOMES",
    "REQUEST_KINDS",
    "Collected",
    "InvocationRecord",
    "LogWriter",
    "Observer",
    "Recorder",
    "Sent",
    "collecting",
    "estimate_cost",
    "frame",
    "log_directory",
    "log_jobs",
    "log_name",
    "one_line",
    "price_key",
    "publish_compute",
    "read_logs",
    "task_names",
]

#: Kinds of storage requests counted (by the client's store and inside functions).
REQUEST_KINDS = ("put", "get", "head", "list", "delete")
#: Outcomes of an invocation.
OUTCOMES = ("ok", "error", "lost", "superseded")


@dataclass(frozen=True)
class InvocationRecord:
    """One invocation, as the client saw it and the function measured it.

    Attributes
    ----------
    job, call, attempt, delivery : str, str, int, str
        Which invocation: the job, the call id, the attempt (0 first) and the delivery's nonce.
    tasks : tuple of str
        The Dask task keys it ran (as ``str``); for ``submit``/``map``, the function's name.
    prefix : str
        ``dask.utils.key_split`` of the first task, or the function's name.
    platform : str
        The compute backend's name (``"local"``, ``"aws_lambda"``, ``"openwhisk"``, ``"knative"``).
    submitted : float
        When the client handed it to the backend (client clock, epoch seconds).
    started, ended : float or None
        When the function began and finished handling it (the function's clock, epoch seconds).
    received : float or None
        When its answer reached the client (client clock); None when none came.
    running_s : float or None
        The function's own measurement of the time spent running the user's code.
    cold : bool or None
        Whether it was the first invocation of its function instance.
    bytes_in, bytes_out : int
        Bytes the function read (payload, function body, arguments, inputs) and wrote (response,
        stored results).
    peak_memory_mb : float or None
        Peak resident memory of the function's process during the call (MiB).
    memory_mb : int
        The memory limit it ran with.
    request_id : str or None
        The platform's id of the invocation (Lambda's request id, OpenWhisk's activation id,
        Knative's request or CloudEvent id, ``<pid>-<n>`` on the local pool).
    outcome : str
        ``"ok"``, ``"error"`` (the function raised, or its answer was refused), ``"lost"`` (no
        answer: timed out, process killed, lost by the platform) or ``"superseded"`` (a duplicate
        or backup whose result was not taken).
    error : str or None
        One line describing the failure.
    backup : bool
        The invocation is the backup of a straggler.
    log_bytes : int
        Bytes of captured output it returned (after the cap).
    """

    job: str
    call: str
    attempt: int
    delivery: str
    tasks: tuple[str, ...]
    prefix: str
    platform: str
    submitted: float
    started: float | None
    ended: float | None
    received: float | None
    running_s: float | None
    cold: bool | None
    bytes_in: int
    bytes_out: int
    peak_memory_mb: float | None
    memory_mb: int
    request_id: str | None
    outcome: str
    error: str | None
    backup: bool
    log_bytes: int


#: The field names of :class:`InvocationRecord`, in order (the columns of :func:`frame`).
FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(InvocationRecord))


def frame(records: Iterable[InvocationRecord]) -> pandas.DataFrame:
    """One row per record, with the columns :data:`FIELDS` (pandas is imported here)."""
    import pandas

    fields = operator.attrgetter(*FIELDS)  # not dataclasses.astuple, which deep-copies
    rows = [fields(record) for record in records]
    return pandas.DataFrame.from_records(rows, columns=list(FIELDS))


# -- collecting ---------------------------------------------------------------------------------


@dataclass
class Collected:
    """What :func:`collecting` gathered: every invocation record and compute report of its block."""

    invocations: list[InvocationRecord] = field(default_factory=list)
    computes: list[Any] = field(default_factory=list)  # dask_faas.scheduler.ComputeReport

    def frame(self) -> pandas.DataFrame:
        """:func:`frame` of :attr:`invocations`."""
        return frame(list(self.invocations))


_active: list[Collected] = []
_active_lock = threading.Lock()


@contextlib.contextmanager
def collecting() -> Iterator[Collected]:
    """Gather every invocation record and ComputeReport made in this process while the block runs.

    Thread-safe; nested blocks each get everything made while they run.
    """
    seen = Collected()
    with _active_lock:
        _active.append(seen)
    try:
        yield seen
    finally:
        with _active_lock:
            _active.remove(seen)


def _publish(record: InvocationRecord) -> None:
    with _active_lock:
        for seen in _active:
            seen.invocations.append(record)


def publish_compute(report: Any) -> None:
    """Hand a ComputeReport to the :func:`collecting` blocks that run."""
    with _active_lock:
        for seen in _active:
            seen.computes.append(report)


class Recorder:
    """The invocation records of one executor: the latest ``kept`` of them, and running totals.

    Records are kept as plain tuples of their fields (in :data:`FIELDS` order), which Python's
    garbage collector stops tracking, so that 100,000 of them cost a process's collections
    nothing; :meth:`records` makes the :class:`InvocationRecord` objects.

    Parameters
    ----------
    kept : int
        How many records are kept (the oldest are dropped first); totals count every record.
    enabled : bool
        False: nothing is recorded (``faas.records: false``).
    """

    def __init__(self, kept: int = 100_000, enabled: bool = True) -> None:
        self.enabled = enabled
        self._rows: collections.deque[tuple[Any, ...]] = collections.deque(maxlen=kept)
        self._lock = threading.Lock()
        #: Records made so far (dropped ones included).
        self.total = 0
        #: Storage requests the functions made, by kind (from their responses).
        self.function_requests: collections.Counter[str] = collections.Counter()

    def add(
        self, record: InvocationRecord | tuple[Any, ...], requests: Mapping[str, int] | None = None
    ) -> None:
        """Keep ``record`` (or the tuple of its fields), and count the function's storage ``requests``."""
        if not self.enabled:
            return
        row = operator.attrgetter(*FIELDS)(record) if isinstance(record, InvocationRecord) else record
        with self._lock:
            self._rows.append(row)
            self.total += 1
            if requests:
                counts = self.function_requests
                for kind, count in requests.items():
                    if kind in REQUEST_KINDS:
                        counts[kind] += int(count)
        if _active:  # collecting() blocks
            _publish(record if isinstance(record, InvocationRecord) else InvocationRecord(*row))

    def records(self) -> list[InvocationRecord]:
        """The records kept, oldest first."""
        with self._lock:
            rows = list(self._rows)
        return [InvocationRecord(*row) for row in rows]

    def since(self, total: int) -> list[InvocationRecord]:
        """The records made after :attr:`total` was ``total`` (those still kept)."""
        with self._lock:
            new = min(self.total - total, len(self._rows))
            rows = [self._rows[-k] for k in range(new, 0, -1)] if new > 0 else []
        return [InvocationRecord(*row) for row in rows]


# -- cost ---------------------------------------------------------------------------------------


def price_key(platform: str, settings: Mapping[str, Any]) -> str:
    """The entry of ``faas.prices`` for a backend: its name, with Lambda's architecture
    (``aws_lambda-x86_64``, ``aws_lambda-arm64``)."""
    if platform == "aws_lambda":
        architecture = (settings.get("aws-lambda") or {}).get("architecture") or "x86_64"
        return f"aws_lambda-{architecture}"
    return platform


def estimate_cost(
    prices: Mapping[str, Any],
    platform: str,
    gb_s: float,
    invocations: int,
    storage_requests: Mapping[str, int] | None = None,
    storage: str = "s3",
) -> float:
    """An estimate in USD: the platform's GB-seconds and requests, and the storage requests.

    Parameters
    ----------
    prices : mapping
        ``faas.prices``: per platform ``gb-s`` (USD per GB-second), ``request`` (USD per
        invocation) and optionally ``vcpu-s`` with ``vcpu-per-gb`` (platforms that bill CPU
        apart, such as IBM Code Engine); ``s3`` with ``put-per-1000`` (PUT, LIST) and
        ``get-per-1000`` (GET, HEAD).
    platform : str
        The entry of ``prices`` (:func:`price_key`).
    gb_s : float
        GB-seconds the invocations ran.
    invocations : int
        How many invocations ran.
    storage_requests : mapping, optional
        Storage requests by kind (:data:`REQUEST_KINDS`); deletes are free.
    storage : str
        The entry of ``prices`` for the storage's requests (the storage's name); none there (the
        local directory): free.

    Raises
    ------
    ConfigError
        When ``prices`` has no entry for ``platform``, or a price is not a number.
    """
    entry = _entry(prices, platform)
    if not isinstance(entry, Mapping):
        known = ", ".join(sorted(prices))
        raise ConfigError(f"setting 'faas.prices' has no entry {platform!r} (it has: {known})")
    cost = gb_s * _price(entry, platform, "gb-s") + invocations * _price(entry, platform, "request")
    if entry.get("vcpu-s"):
        cost += gb_s * _price(entry, platform, "vcpu-per-gb") * _price(entry, platform, "vcpu-s")
    requests = storage_requests or {}
    table = _entry(prices, storage) or {}
    writes = requests.get("put", 0) + requests.get("list", 0)
    reads = requests.get("get", 0) + requests.get("head", 0)
    cost += writes / 1000 * _price(table, storage, "put-per-1000")
    cost += reads / 1000 * _price(table, storage, "get-per-1000")
    return cost


def _entry(prices: Mapping[str, Any], name: str) -> Any:
    """``prices[name]``, whether the name is spelt with underscores or hyphens; where both
    spellings are there (a default and the user's own, which the settings' merge spells with
    hyphens), the later ones win, item by item."""
    wanted = name.replace("_", "-")
    found = [v for k, v in prices.items() if str(k).replace("_", "-") == wanted]
    if found and all(isinstance(v, Mapping) for v in found):
        merged: dict[str, Any] = {}
        for value in found:
            merged.update(value)
        return merged
    return found[-1] if found else None


def _price(entry: Mapping[str, Any], platform: str, name: str) -> float:
    value = _entry(entry, name) or 0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"setting 'faas.prices.{platform}.{name}' must be a number, got {value!r}")
    return float(value)


# -- logs ---------------------------------------------------------------------------------------


def log_directory(settings: Mapping[str, Any] | None = None) -> str:
    """``faas.logs.directory``, expanded (default ``~/.cache/dask-faas/logs``)."""
    settings = config.resolve() if settings is None else settings
    directory = (settings.get("logs") or {}).get("directory") or "~/.cache/dask-faas/logs"
    return os.path.abspath(os.path.expanduser(str(directory)))


def log_jobs(settings: Mapping[str, Any] | None = None) -> list[str]:
    """The jobs whose logs the log directory holds, oldest first.

    Only directories named like a job id and holding nothing but ``.log`` files count (and are
    ever deleted by the retention of ``faas.logs.keep-jobs``): others are left alone.
    """
    root = log_directory(settings)
    try:
        entries = [
            e for e in os.scandir(root) if e.is_dir() and _JOB_ID.fullmatch(e.name) and _only_logs(e.path)
        ]
    except FileNotFoundError:
        return []
    return [e.name for e in sorted(entries, key=lambda e: (e.stat().st_mtime, e.name))]


#: A job id (:attr:`dask_faas.job.Job.id`).
_JOB_ID = re.compile(r"[0-9a-f]{12}")


def _only_logs(path: str) -> bool:
    try:
        return all(e.is_file() and e.name.endswith(".log") for e in os.scandir(path))
    except OSError:
        return False


def log_name(call: str, attempt: int, delivery: str) -> str:
    """The file of one invocation's output in its job's log directory."""
    return f"{call}.{attempt}.{delivery}.log"


def _order(name: str) -> tuple[int, str, int, str]:
    call, attempt, delivery = [*name.removesuffix(".log").split("."), "", "", ""][:3]
    number = int(call) if call.isdigit() else -1
    return (number, call, int(attempt) if attempt.isdigit() else 0, delivery)


def read_logs(job: str, call: str | None = None, settings: Mapping[str, Any] | None = None) -> str:
    """The captured output of a job's invocations (or of one call's), each part headed by its
    call, attempt and task keys, in call order.

    Raises
    ------
    FileNotFoundError
        Naming the job (and call) and the directory, when no output of it is there.
    """
    root = log_directory(settings)
    directory = os.path.join(root, job)
    try:
        names = sorted((n for n in os.listdir(directory) if n.endswith(".log")), key=_order)
    except FileNotFoundError:
        names = []
    if call is not None:
        names = [n for n in names if n.split(".", 1)[0] == str(call)]
    if not names:
        which = f"call {call} of job {job}" if call is not None else f"job {job}"
        raise FileNotFoundError(f"no captured output of {which} in {directory} (faas.logs.directory)")
    parts = []
    for name in names:
        with open(os.path.join(directory, name), encoding="utf-8", errors="replace") as f:
            parts.append(f.read())
    return "".join(parts)


class LogWriter:
    """Writes invocations' output under ``<directory>/<job>/``, keeping the latest ``keep_jobs`` jobs.

    Parameters
    ----------
    directory : str
        ``faas.logs.directory`` (expanded).
    job : str
        The job id.
    keep_jobs : int
        How many job directories stay (the oldest are deleted when this job writes its first log).
    """

    def __init__(self, directory: str, job: str, keep_jobs: int = 50) -> None:
        self.directory, self.job, self.keep_jobs = directory, job, keep_jobs
        self._lock = threading.Lock()
        self._started = False

    @property
    def path(self) -> str:
        """This job's log directory."""
        return os.path.join(self.directory, self.job)

    def write(self, call: str, attempt: int, delivery: str, heading: str, text: str) -> None:
        """Write one invocation's output under a heading line."""
        with self._lock:
            if not self._started:
                os.makedirs(self.path, exist_ok=True)
                self._started = True
                self._prune()
        body = text if text.endswith("\n") else text + "\n"
        with open(os.path.join(self.path, log_name(call, attempt, delivery)), "w", encoding="utf-8") as f:
            f.write(f"--- {heading} ---\n{body}")

    def _prune(self) -> None:
        jobs = [j for j in log_jobs({"logs": {"directory": self.directory}}) if j != self.job]
        for old in jobs[: max(0, len(jobs) - (self.keep_jobs - 1))]:
            shutil.rmtree(os.path.join(self.directory, old), ignore_errors=True)


# -- what the dispatcher hands over ------------------------------------------------------------


def task_names(keys: Iterable[Any]) -> tuple[tuple[str, ...], str]:
    """``(tasks, prefix)`` of an invocation running Dask ``keys``: each key as ``str``, and
    ``dask.utils.key_split`` of the first."""
    from dask.utils import key_split

    keys = list(keys)
    return tuple(str(key) for key in keys), (key_split(keys[0]) if keys else "")


def one_line(error: BaseException | str, limit: int = 300) -> str:
    """``Type: message``, first line only, at most ``limit`` characters."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    line = (text.strip().splitlines() or [""])[0]
    return line if len(line) <= limit else line[: limit - 3] + "..."


class Sent(NamedTuple):
    """What the client knows of one invocation it sent (the record's client side; a tuple, made
    once per invocation on the client's hot path)."""

    call: str
    attempt: int
    delivery: str
    tasks: tuple[str, ...]
    prefix: str
    submitted: float
    memory_mb: int
    backup: bool


class Observer:
    """Turns what the dispatcher saw of each invocation into a record and its log file.

    Parameters
    ----------
    job : str
        The job id.
    platform : str
        The compute backend's name.
    recorder : Recorder
        Keeps the records.
    writer : LogWriter, optional
        Writes what the functions printed (None: not written).
    forward : bool
        Also print it on the client as it arrives, each line prefixed with the task key.
    """

    def __init__(
        self,
        job: str,
        platform: str,
        recorder: Recorder,
        writer: LogWriter | None = None,
        forward: bool = False,
    ) -> None:
        self.job, self.platform, self.recorder = job, platform, recorder
        self.writer, self.forward = writer, forward

    def observe(
        self,
        sent: Sent,
        outcome: str,
        received: float | None = None,
        stats: Mapping[str, Any] | None = None,
        logs: str = "",
        error: BaseException | str | None = None,
    ) -> None:
        """One invocation's outcome; ``stats`` and ``logs`` from its response, when it answered."""
        if logs:
            self._logs(sent, logs)
        if not self.recorder.enabled:
            return
        stats = stats or {}
        warm, request_id, requests = stats.get("warm"), stats.get("request_id"), stats.get("requests")
        row = (
            self.job,
            sent.call,
            sent.attempt,
            sent.delivery,
            sent.tasks,
            sent.prefix,
            self.platform,
            sent.submitted,
            _number(stats.get("started")),
            _number(stats.get("ended")),
            received,
            _number(stats.get("running_s")),
            None if not isinstance(warm, bool) else not warm,
            int(_number(stats.get("bytes_in")) or 0),
            int(_number(stats.get("bytes_out")) or 0),
            _number(stats.get("peak_memory_mb")),
            sent.memory_mb,
            None if request_id is None else str(request_id),
            outcome,
            None if error is None else one_line(error),
            sent.backup,
            len(logs.encode("utf-8", "replace")) if logs else 0,
        )
        self.recorder.add(row, requests if isinstance(requests, dict) else None)

    def _logs(self, sent: Sent, text: str) -> None:
        if self.writer is not None:
            backup = ", backup" if sent.backup else ""
            heading = (
                f"call {sent.call}, attempt {sent.attempt}{backup} (delivery {sent.delivery}): "
                + ", ".join(sent.tasks[:8])
                + (f" and {len(sent.tasks) - 8} more" if len(sent.tasks) > 8 else "")
            )
            try:
                self.writer.write(sent.call, sent.attempt, sent.delivery, heading, text)
            except OSError as exc:  # a full or read-only disk costs the log, not the call
                logger.warning("dask-faas: could not write the output of call %s: %s", sent.call, exc)
        if self.forward:
            prefix = sent.tasks[0] if sent.tasks else sent.call
            sys.stdout.write("".join(f"[{prefix}] {line}\n" for line in text.splitlines()))
            sys.stdout.flush()


def _number(value: Any) -> float | None:
    """``value`` as a float if it is an int or a float (not a bool), else None."""
    kind = type(value)
    return float(value) if kind is float or kind is int else None
