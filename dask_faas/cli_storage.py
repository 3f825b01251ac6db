"""The storage commands of the command line: ``jobs``, ``storage ls`` and ``storage clean``.

A job keeps its objects under ``<faas.prefix>/<job id>/`` (:class:`~dask_faas.job.Job`) and deletes
them when it ends; what is still there belongs to a job that is running now or to a client that was
killed. :func:`jobs` sums them up per job, :func:`print_listing` lists objects, :func:`clean`
deletes the objects (and aborts the open multipart uploads) of all jobs or of the jobs named.

The storage seam reports no modification times, so :func:`listing` reads them where the storage
has them: the files' modification times of ``local`` storage, S3's ``LastModified`` (one listing
through the storage's own client); ``None`` elsewhere.
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from dask.utils import format_bytes

from .backends.storage import Storage
from .exceptions import ConfigError, StorageError

__all__ = [
    "Entry",
    "JobUsage",
    "clean",
    "job_root",
    "jobs",
    "listing",
    "print_jobs",
    "print_listing",
    "print_table",
]


@dataclass(frozen=True)
class Entry:
    """One object of a listing.

    Parameters
    ----------
    key : str
        Its key.
    size : int
        Its size in bytes.
    modified : float or None
        Its last modification (epoch seconds), ``None`` if the storage does not say.
    """

    key: str
    size: int
    modified: float | None


@dataclass
class JobUsage:
    """What one job holds in storage.

    Parameters
    ----------
    job : str
        The job id (the key segment after ``faas.prefix``).
    objects : int
        How many objects it has.
    bytes : int
        Their total size.
    uploads : int
        Multipart uploads left open under its prefix (S3 keeps, and bills, their parts).
    modified : float or None
        The newest modification of its objects (epoch seconds), ``None`` if unknown.
    """

    job: str
    objects: int = 0
    bytes: int = 0
    uploads: int = 0
    modified: float | None = None


def listing(storage: Storage, prefix: str) -> Iterator[Entry]:
    """Every object whose key starts with ``prefix``, in key order, with its modification time.

    Raises
    ------
    StorageError
        If S3 refuses or fails the listing, naming the bucket and the prefix.
    """
    if storage.name == "s3":
        yield from _s3_listing(storage, prefix)
        return
    if storage.name == "local":
        for found in storage.scan(prefix):
            try:
                modified = os.stat(os.path.join(storage.location, *found.key.split("/"))).st_mtime
            except FileNotFoundError:  # deleted since it was listed: no longer there
                continue
            yield Entry(found.key, found.size, modified)
        return
    for found in storage.scan(prefix):
        yield Entry(found.key, found.size, None)


def _s3_listing(storage: Storage, prefix: str) -> Iterator[Entry]:
    import botocore.exceptions as bce

    from .backends.storage.s3 import S3Storage

    if not isinstance(storage, S3Storage):  # another storage registered as "s3": no LastModified
        for found in storage.scan(prefix):
            yield Entry(found.key, found.size, None)
        return
    pages = storage.client.get_paginator("list_objects_v2").paginate(Bucket=storage.bucket, Prefix=prefix)
    try:
        for page in pages:
            for obj in page.get("Contents", ()):
                yield Entry(obj["Key"], int(obj["Size"]), obj["LastModified"].timestamp())
    except (bce.BotoCoreError, bce.ClientError) as exc:
        raise StorageError(f"S3 ListObjectsV2 of s3://{storage.bucket}/{prefix} failed: {exc}") from exc


def job_root(settings: dict[str, Any]) -> str:
    """The key prefix of every job, ``faas.prefix`` with one trailing ``/``.

    Raises
    ------
    ConfigError
        If ``faas.prefix`` is empty (the command would reach the whole storage).
    """
    root = str(settings.get("prefix") or "").strip("/")
    if not root:
        raise ConfigError("faas.prefix is empty: set it to the prefix under which jobs keep their objects")
    return root + "/"


def jobs(storage: Storage, root: str) -> list[JobUsage]:
    """The jobs holding objects or open multipart uploads under ``root``, by job id."""
    found: dict[str, JobUsage] = {}
    for entry in listing(storage, root):
        job = _job_of(entry.key, root)
        usage = found.setdefault(job, JobUsage(job))
        usage.objects += 1
        usage.bytes += entry.size
        if entry.modified is not None and (usage.modified is None or entry.modified > usage.modified):
            usage.modified = entry.modified
    for key in storage.open_uploads(root):
        job = _job_of(key, root)
        found.setdefault(job, JobUsage(job)).uploads += 1
    return [found[job] for job in sorted(found)]


def _job_of(key: str, root: str) -> str:
    return key[len(root) :].split("/", 1)[0]


def _when(modified: float | None) -> str:
    if modified is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(modified))


def print_jobs(storage: Storage, root: str) -> int:
    """Print one line per job under ``root`` and a total line; return the exit code (0)."""
    usages = jobs(storage, root)
    rows = [
        {
            "JOB": u.job,
            "OBJECTS": u.objects,
            "BYTES": u.bytes,
            "UPLOADS": u.uploads,
            "MODIFIED (UTC)": _when(u.modified),
        }
        for u in usages
    ]
    print_table(rows, "", right={"OBJECTS", "BYTES", "UPLOADS"})
    objects = sum(u.objects for u in usages)
    size = sum(u.bytes for u in usages)
    uploads = sum(u.uploads for u in usages)
    print(
        f"total: {len(usages)} jobs, {objects} objects, {size} bytes ({format_bytes(size)}), "
        f"{uploads} open uploads under {root} in {storage!r}",
    )
    return 0


def print_listing(storage: Storage, prefix: str) -> int:
    """Print size, modification time and key of every object under ``prefix``, then a total line."""
    count = size = 0
    for entry in listing(storage, prefix):
        print(f"{entry.size:>12}  {_when(entry.modified):19}  {entry.key}")
        count += 1
        size += entry.size
    print(
        f"total: {count} objects, {size} bytes ({format_bytes(size)}) under {prefix!r} in {storage!r}",
    )
    return 0


def clean(storage: Storage, root: str, names: Sequence[str] = (), yes: bool = False) -> int:
    """List, or with ``yes`` delete, the objects of the jobs ``names`` under ``root`` (all if none).

    Deleting also aborts the multipart uploads open under each prefix. A job that is still running
    loses its objects and fails: :func:`print_jobs` shows when each job last wrote.

    Raises
    ------
    ConfigError
        If a name is no job id (empty, holding ``/``), or no job of that id is under ``root``
        (nothing is deleted then).
    """
    prefixes = [root]
    if names:
        for name in names:
            if not name or "/" in name or name in (".", ".."):
                raise ConfigError(f"{name!r} is no job id: job ids are one key segment under {root}")
        known = {usage.job for usage in jobs(storage, root)}
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ConfigError(
                f"no job {', '.join(map(repr, unknown))} under {root} in {storage!r} "
                "('dask-faas jobs' lists them); "
                "nothing was deleted"
            )
        prefixes = [f"{root}{name}/" for name in dict.fromkeys(names)]
    for prefix in prefixes:
        if yes:
            print(f"deleted {storage.delete_prefix(prefix)} objects under {prefix}")
            continue
        count = size = 0
        for entry in listing(storage, prefix):
            print(f"{entry.size:>12}  {entry.key}")
            count += 1
            size += entry.size
        print(f"{count} objects, {size} bytes under {prefix} (run with --yes to delete them)")
    return 0


def print_table(rows: list[dict[str, Any]], empty: str, right: Collection[str] = ()) -> None:
    """Print ``rows`` as aligned columns under a header of their keys (``right`` ones right-aligned),
    or ``empty`` (when not ``""``) if there are none."""
    if not rows:
        if empty:
            print(empty)
        return
    columns = list(dict.fromkeys(column for row in rows for column in row))
    table = [columns, *[["" if row.get(c) is None else str(row.get(c)) for c in columns] for row in rows]]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for line in table:
        cells = [
            cell.rjust(width) if column in right else cell.ljust(width)
            for cell, width, column in zip(line, widths, columns, strict=True)
        ]
        print("  ".join(cells).rstrip())
