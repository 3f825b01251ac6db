"""CSV partitioner: discovery, planning and line-exact byte ranges (``dask_faas.partition``).

The central property: for every block size, the partitions read back and parsed one by one,
then concatenated, equal pandas on the whole object.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import itertools
import lzma
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dask.config
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dask_faas.config  # noqa: F401 - registers the faas.* defaults before any dask.config.set below
from dask_faas.backends.storage import close_cached, storage_from_locator
from dask_faas.backends.storage.local import LocalStorage
from dask_faas.exceptions import ConfigError
from dask_faas.partition import (
    ByteRange,
    ObjectInfo,
    discover,
    iter_lines,
    plan,
    quote_options,
    read_range,
    read_sample,
)

HEADER = b"id,name,city\n"
ROWS = [b"1,Ann,Paris\n", b"22,B\xc3\xa9a,K\xc3\xb8benhavn\n", b"333,Chlo\xc3\xa9,\xe6\x9d\xb1\xe4\xba\xac\n"]
PLAIN = HEADER + b"".join(ROWS)


def parse(data: bytes, **kwargs: Any) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, **kwargs)


def block_sizes(size: int) -> list[int | None]:
    return [*sorted({1, 2, 3, 7, max(size - 1, 1), max(size, 1), size + 1, 10 * size + 10}), None]


def put(root: Path, key: str, data: bytes) -> str:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def assert_exact(
    storage: Any, ranges: Sequence[ByteRange], data: bytes, *, read_ahead: int = 1 << 20, header: bool = True
) -> None:
    """Byte-exact line ownership, and the pandas result of the parts equals pandas on ``data``."""
    parts = [read_range(storage, rng, read_ahead=read_ahead) for rng in ranges]
    owned = []
    for rng, part in zip(ranges, parts, strict=True):
        if rng.start > 0:
            assert part.startswith(rng.header)
            part = part[len(rng.header) :]
        owned.append(part)
    assert b"".join(owned) == data
    lines = [line for rng in ranges for line in iter_lines(storage, rng, read_ahead=read_ahead)]
    assert all(line.endswith(b"\n") for line in lines[:-1])
    first = ranges[0].header if header else b""
    assert first + b"".join(lines) == data
    if not data:
        return
    kwargs: dict[str, Any] = {} if header else {"header": None}
    parsed: dict[bytes, pd.DataFrame] = {}  # many parts are the header alone: parse each text once
    frames = [parsed.get(p) if p in parsed else parsed.setdefault(p, parse(p, **kwargs)) for p in parts if p]
    expected = parse(data, **kwargs)
    pd.testing.assert_frame_equal(pd.concat(frames, ignore_index=True), expected)


def check_object(root: Path, data: bytes, *, key: str = "obj.csv", read_ahead: int = 1 << 20) -> None:
    path = put(root, key, data)
    storage, objects = discover(path)
    assert objects == [ObjectInfo(path, key, len(data), storage.stat(key).version)]
    assert objects[0].version is not None  # every read of its ranges asks for this version
    for blocksize in block_sizes(len(data)):
        ranges = plan(storage, objects, blocksize)
        assert ranges[0].start == 0 and ranges[-1].end == len(data)
        assert all(a.end == b.start for a, b in itertools.pairwise(ranges))
        assert [r.index for r in ranges] == list(range(len(ranges)))
        if blocksize is not None:
            assert all(r.end - r.start <= blocksize for r in ranges)
        assert_exact(storage, ranges, data, read_ahead=read_ahead)


# -- the property ------------------------------------------------------------------------------

CELL = st.text(alphabet=st.sampled_from(list("ab Z09-.é€ß日本𝄞")), max_size=6)


@st.composite
def csv_objects(draw: st.DrawFn) -> bytes:
    ncols = draw(st.integers(1, 4))
    rows = [[f"c{i}" for i in range(ncols)]]
    rows += draw(st.lists(st.lists(CELL, min_size=ncols, max_size=ncols), max_size=12))
    if len(rows) > 1 and draw(st.booleans()):  # a first data row longer than most samples
        rows[1][0] = "x" * draw(st.integers(50, 1500)) + rows[1][0]
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    text = eol.join(",".join(row) for row in rows) + (eol if draw(st.booleans()) else "")
    return text.encode()


@pytest.fixture(scope="module")
def prop_storage(tmp_path_factory: pytest.TempPathFactory) -> LocalStorage:
    return LocalStorage(tmp_path_factory.mktemp("property"))


def expected_sample(data: bytes, header: bytes, sample: int) -> bytes:
    """The shortest prefix of whole lines of ``data`` with at least ``sample`` bytes that holds a
    complete line with a value after the header's line; ``data`` itself when there is none."""
    prefix, row = b"", False
    for number, line in enumerate(re.findall(rb"[^\n]*\n|[^\n]+$", data)):
        prefix += line
        row = row or (number >= bool(header) and line.endswith(b"\n") and bool(line.strip(b" \t\r\n")))
        if row and len(prefix) >= sample:
            return prefix
    return data


@settings(max_examples=150, deadline=None)
@given(data=csv_objects(), blocks=st.data(), read_ahead=st.sampled_from([1, 2, 5, 64, 1 << 20]))
def test_ranges_join_to_the_whole_object(
    prop_storage: LocalStorage, data: bytes, blocks: st.DataObject, read_ahead: int
) -> None:
    prop_storage.put("obj.csv", data)
    objects = [ObjectInfo("obj.csv", "obj.csv", len(data))]
    blocksize = blocks.draw(st.integers(1, len(data) + 20), label="blocksize")
    sample = blocks.draw(st.integers(1, len(data) + 20), label="sample")
    ranges = plan(prop_storage, objects, blocksize, sample_bytes=sample)
    assert_exact(prop_storage, ranges, data, read_ahead=read_ahead)
    # the dtype sample: grown past ``sample`` to a line end, and on until it holds a row
    head, whole = read_sample(prop_storage, ranges[0], sample)
    assert head == expected_sample(data, ranges[0].header, sample)
    assert whole == (head == data)
    rows = parse(head)
    pd.testing.assert_frame_equal(rows, parse(data).iloc[: len(rows)])
    assert len(rows) >= min(1, len(parse(data)))


# -- named cases -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(PLAIN, id="final-newline"),
        pytest.param(PLAIN[:-1], id="no-final-newline"),
        pytest.param(PLAIN.replace(b"\n", b"\r\n"), id="crlf"),
        pytest.param(PLAIN.replace(b"\n", b"\r\n")[:-2], id="crlf-no-final-newline"),
        pytest.param(HEADER, id="header-only"),
        pytest.param(HEADER[:-1], id="header-only-no-newline"),
        pytest.param(HEADER + b"\n\n1,a,b\n\n", id="blank-lines"),
        pytest.param(b"k,v\n" + "é€𝄞,日本語\n".encode() * 9, id="multibyte"),
    ],
)
def test_named_objects(tmp_path: Path, data: bytes) -> None:
    check_object(tmp_path, data)


def test_multibyte_characters_straddle_every_boundary(tmp_path: Path) -> None:
    data = b"k,v\n" + "𝄞€,é日\n".encode() * 5
    # every cut position lands inside a character somewhere: all block sizes up to the size
    path = put(tmp_path, "mb.csv", data)
    storage, objects = discover(path)
    for blocksize in range(1, len(data) + 2):
        assert_exact(storage, plan(storage, objects, blocksize), data)


def test_line_longer_than_block_and_read_ahead(tmp_path: Path) -> None:
    long_line = b"7," + b"x" * 200 + b"\n"
    data = b"a,b\n1,short\n" + long_line + b"2,end\n"
    check_object(tmp_path, data, read_ahead=16)
    check_object(tmp_path, data + long_line[:-1], key="tail.csv", read_ahead=16)


def test_read_ahead_grows_for_a_long_line(tmp_path: Path) -> None:
    """A long last line is completed with few GETs (doubling read-ahead), not one per read_ahead."""
    data = b"a\n" + b"x" * 5000 + b"\n"
    put(tmp_path, "long.csv", data)
    storage = CountingStorage(tmp_path)
    third = plan(storage, [ObjectInfo("long.csv", "long.csv", len(data))], 1)[2]  # owns the long line
    storage.calls.clear()
    assert read_range(storage, third, read_ahead=16) == data  # header + the long line
    assert len(storage.calls) <= 10
    assert [got for *_, got in storage.calls][:4] == [18, 16, 32, 64]  # [start - 1, end + 16), then growing


def test_empty_object(tmp_path: Path) -> None:
    path = put(tmp_path, "empty.csv", b"")
    storage, objects = discover(path)
    assert objects == [ObjectInfo(path, "empty.csv", 0, storage.stat("empty.csv").version)]
    for blocksize in (1, 7, None):
        (rng,) = plan(storage, objects, blocksize)
        assert (rng.start, rng.end, rng.header) == (0, 0, b"")
        assert read_range(storage, rng) == b""
        assert list(iter_lines(storage, rng)) == []
    # pandas rejects empty input: read_csv treats an empty partition as no rows
    with pytest.raises(pd.errors.EmptyDataError):
        pd.read_csv(io.BytesIO(b""))


def test_header_false(tmp_path: Path) -> None:
    data = b"1,a\n2,b\n3,c"
    path = put(tmp_path, "nohead.csv", data)
    storage, objects = discover(path)
    for blocksize in block_sizes(len(data)):
        ranges = plan(storage, objects, blocksize, header=False)
        assert all(r.header == b"" for r in ranges)
        assert_exact(storage, ranges, data, header=False)
    # a range that owns no line reads as nothing
    assert read_range(storage, plan(storage, objects, 1, header=False)[1]) == b""


def test_header_longer_than_sample(tmp_path: Path) -> None:
    header = ",".join(f"column_{i}" for i in range(40)).encode() + b"\r\n"
    data = header + b",".join(b"1" for _ in range(40)) + b"\r\n"
    path = put(tmp_path, "wide.csv", data)
    storage, objects = discover(path)
    ranges = plan(storage, objects, 50, sample_bytes=16)
    assert {r.header for r in ranges} == {header}
    assert_exact(storage, ranges, data)


@pytest.mark.parametrize("compression", [None, "gzip", "bz2", "xz"])
@pytest.mark.parametrize("eol", [b"\n", b"\r\n"])
def test_sample_grows_to_hold_a_first_row_longer_than_it(
    tmp_path: Path, compression: str | None, eol: bytes
) -> None:
    long_row = b"1," + b"y" * 300_000 + eol
    data = b"a,b" + eol + long_row + (b"2,z" + eol) * 1000
    suffix, compress = COMPRESSORS[compression] if compression else ("", bytes)
    path = put(tmp_path, f"long.csv{suffix}", compress(data))
    storage, objects = discover(path)
    (rng, *_) = plan(storage, objects, 100_000, sample_bytes=64)
    head, whole = read_sample(storage, rng, 65536)
    assert (head, whole) == (data[: len(b"a,b" + eol + long_row)], False)
    head, whole = read_sample(storage, rng, len(data) - 1)  # the last line completes it: the whole object
    assert (head, whole) == (data, True)
    tail = put(tmp_path, f"tail.csv{suffix}", compress(data[: len(b"a,b" + eol) + len(long_row) - len(eol)]))
    storage, objects = discover(tail)
    (rng, *_) = plan(storage, objects, None, sample_bytes=64)
    head, whole = read_sample(storage, rng, 10)  # no final newline: the object is the only row
    assert whole and head == b"a,b" + eol + long_row[: -len(eol)]


class CountingStorage(LocalStorage):
    """Local storage that records every GET."""

    def __init__(self, root: Any) -> None:
        super().__init__(root)
        self.calls: list[tuple[str, int | None, int | None, int]] = []

    def get(
        self, key: str, start: int | None = None, end: int | None = None, *, version: str | None = None
    ) -> bytes:
        data = super().get(key, start, end, version=version)
        self.calls.append((key, start, end, len(data)))
        return data


def test_sample_grows_in_doubling_gets(tmp_path: Path) -> None:
    data = b"a\n" + b"x" * 300_000 + b"\n2\n"
    put(tmp_path, "long.csv", data)
    storage = CountingStorage(tmp_path)
    (rng,) = plan(storage, [ObjectInfo("long.csv", "long.csv", len(data))], None)
    storage.calls.clear()
    assert read_sample(storage, rng, 1000) == (data[:-2], False)
    assert [end - start for _, start, end, _ in storage.calls][:5] == [1000, 1000, 2000, 4000, 8000]
    assert len(storage.calls) <= 10


def test_plan_reads_only_the_header_samples(tmp_path: Path) -> None:
    for i in range(6):
        put(tmp_path, f"data/part-{i}.csv", b"a,b\n" + b"1,2\n" * 500)
    _, objects = discover(str(tmp_path / "data") + "/")
    storage = CountingStorage(tmp_path / "data")
    ranges = plan(storage, objects, 100, sample_bytes=64)
    assert len(ranges) == 6 * 21  # 2004 bytes each
    assert sorted(key for key, *_ in storage.calls) == [obj.key for obj in objects]
    assert all(start == 0 and got <= 64 for _, start, _, got in storage.calls)
    storage.calls.clear()
    plan(storage, objects, 100, header=False)
    assert storage.calls == []


def test_many_objects_under_a_prefix(tmp_path: Path) -> None:
    contents = {f"data/part-{i:02d}.csv": HEADER + b"".join(ROWS[: i % 4]) for i in range(12)}
    for key, data in contents.items():
        put(tmp_path, key, data)
    put(tmp_path, "other/x.csv", PLAIN)
    put(tmp_path, "data-not/y.csv", PLAIN)
    storage, objects = discover(str(tmp_path / "data") + "/")
    assert [o.key for o in objects] == [k.removeprefix("data/") for k in sorted(contents)]
    assert [o.size for o in objects] == [len(contents[k]) for k in sorted(contents)]
    for blocksize in (1, 7, 64, None):
        ranges = plan(storage, objects, blocksize)
        for obj in objects:
            mine = [r for r in ranges if r.key == obj.key]
            assert_exact(storage, mine, contents["data/" + obj.key])
        frames = [parse(read_range(storage, r)) for r in ranges]
        whole = pd.concat([parse(contents[k]) for k in sorted(contents)], ignore_index=True)
        pd.testing.assert_frame_equal(pd.concat(frames, ignore_index=True), whole)


def test_local_globs_and_lists(tmp_path: Path) -> None:
    for key in ("a.csv", "b.csv", "c.txt", "sub/d.csv", "sub/deep/e.csv", "year=2019/f.csv"):
        put(tmp_path, key, PLAIN)
    storage, objects = discover(str(tmp_path / "*.csv"))
    assert [o.key for o in objects] == ["a.csv", "b.csv"] and storage.root == str(tmp_path)
    _, objects = discover(f"file://{tmp_path}/**.csv")
    assert [o.key for o in objects] == ["a.csv", "b.csv", "sub/d.csv", "sub/deep/e.csv", "year=2019/f.csv"]
    _, objects = discover(f"{tmp_path}/**/*.csv")
    assert len(objects) == 5
    storage, objects = discover(f"{tmp_path}/sub/*/*.csv")
    assert storage.root == str(tmp_path / "sub") and [o.key for o in objects] == ["deep/e.csv"]
    storage, objects = discover(f"{tmp_path}/year=201?/[a-f].csv")
    assert storage.root == str(tmp_path) and [o.url for o in objects] == [f"{tmp_path}/year=2019/f.csv"]
    _, objects = discover(f"{tmp_path}/[!a].csv")
    assert [o.key for o in objects] == ["b.csv"]
    storage, objects = discover([f"{tmp_path}/sub/d.csv", f"{tmp_path}/a.csv", f"{tmp_path}/sub/d.csv"])
    assert storage.root == str(tmp_path) and [o.key for o in objects] == ["a.csv", "sub/d.csv"]
    _, objects = discover(tmp_path / "sub")  # a directory, named without "/"
    assert [o.key for o in objects] == ["d.csv", "deep/e.csv"]


def test_local_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(FileNotFoundError, match="missing"):
        discover(f"{missing}/*.csv")
    assert not missing.exists()  # discovery never creates anything
    put(tmp_path, "a.csv", PLAIN)
    with pytest.raises(FileNotFoundError, match=rf"no object matches {tmp_path}/\*\.tsv"):
        discover(f"{tmp_path}/*.tsv")
    with pytest.raises(FileNotFoundError, match=r"no object matches .*b\.csv"):
        discover([f"{tmp_path}/a.csv", f"{tmp_path}/b.csv"])
    with pytest.raises(ValueError, match="unsupported URL"):
        discover("gs://bucket/x.csv")
    with pytest.raises(ValueError, match="mix"):
        discover([f"{tmp_path}/a.csv", "s3://bucket/a.csv"])
    with pytest.raises(ValueError, match="no URL"):
        discover([])


def test_plan_arguments(tmp_path: Path) -> None:
    path = put(tmp_path, "a.csv", PLAIN)
    storage, objects = discover(path)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="blocksize"):
            plan(storage, objects, bad)
    with pytest.raises(TypeError, match="blocksize"):
        plan(storage, objects, 1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unsupported compression 'zip'"):
        plan(storage, objects, None, compression="zip")
    assert plan(storage, objects, None)[0].locator == {"backend": "local", "root": str(tmp_path)}


# -- compression -------------------------------------------------------------------------------

COMPRESSORS = {"gzip": (".gz", gzip.compress), "bz2": (".bz2", bz2.compress), "xz": (".xz", lzma.compress)}


@pytest.mark.parametrize("compression", sorted(COMPRESSORS))
def test_compressed_objects_are_one_range_each(tmp_path: Path, compression: str) -> None:
    suffix, compress = COMPRESSORS[compression]
    contents = {f"part-{i}.csv{suffix}": PLAIN * (i + 1) for i in range(3)}
    contents["part-9.csv" + suffix] = b""  # an empty stream
    for key, data in contents.items():
        put(tmp_path, key, compress(data))
    storage, objects = discover(f"{tmp_path}/*.csv{suffix}")
    ranges = plan(storage, objects, 7)
    assert [(r.key, r.start, r.end, r.compression) for r in ranges] == [
        (o.key, 0, o.size, compression) for o in objects
    ]
    for rng in ranges:
        data = contents[rng.key]
        assert rng.header == (HEADER if data else b"")
        assert read_range(storage, rng, read_ahead=5) == data
        assert rng.header + b"".join(iter_lines(storage, rng, read_ahead=5)) == data


def test_gzip_members_explicit_and_disabled(tmp_path: Path) -> None:
    data = PLAIN * 3
    blob = gzip.compress(data[:20]) + gzip.compress(data[20:])  # two members, as `cat a.gz b.gz`
    put(tmp_path, "multi.csv.gz", blob)
    put(tmp_path, "noext", gzip.compress(data))
    storage, objects = discover(f"{tmp_path}/multi.csv.gz")
    (rng,) = plan(storage, objects, 10, sample_bytes=8)
    assert rng.header == HEADER and read_range(storage, rng) == data
    storage, objects = discover(f"{tmp_path}/noext")
    (rng,) = plan(storage, objects, 10, compression="gzip")
    assert read_range(storage, rng) == data
    (raw,) = plan(storage, objects, None, compression=None, header=False)
    assert raw.compression is None and read_range(storage, raw) == (tmp_path / "noext").read_bytes()
    put(tmp_path, "cut.csv.gz", gzip.compress(data)[:-12])
    storage, objects = discover(f"{tmp_path}/cut.csv.gz")
    with pytest.raises(EOFError):
        read_range(storage, plan(storage, objects, None)[0])


# -- quoted fields with line breaks ------------------------------------------------------------

QUOTED = b'id,text\n1,"two\nlines"\n2,"say ""hi"""\n3,plain\n'


def read_all(storage: Any, ranges: Sequence[ByteRange], **kwargs: Any) -> list[bytes]:
    return [read_range(storage, rng, **kwargs) for rng in ranges]


def test_quoted_line_break_rejected_when_split(tmp_path: Path) -> None:
    path = put(tmp_path, "quoted.csv", QUOTED)
    storage, objects = discover(path)
    for blocksize in (1, 7, len(QUOTED) - 1):
        with pytest.raises(ValueError, match=r"quoted\.csv.*blocksize=None"):
            read_all(storage, plan(storage, objects, blocksize))
    (whole,) = plan(storage, objects, None)
    assert read_range(storage, whole) == QUOTED
    frame = parse(read_range(storage, whole))
    assert frame["text"].tolist() == ["two\nlines", 'say "hi"', "plain"]
    (bigger,) = plan(storage, objects, 10 * len(QUOTED))
    assert read_range(storage, bigger) == QUOTED


def test_balanced_quotes_split_fine(tmp_path: Path) -> None:
    check_object(tmp_path, b'id,text\n1,"a,b"\n2,"say ""hi"""\n3,"x"\r\n')


def test_stray_quote_mid_field_accepted_when_split(tmp_path: Path) -> None:
    """A quote inside an unquoted field (or after a closed one) is literal, as in pandas."""
    check_object(tmp_path, b"a,b\n" + b'1,5" screen\n' * 40)
    check_object(tmp_path, b'a,b\n1,"x"y"z\n2,w""v\n3,"q"\n', key="after-closed.csv")
    # the reported case, through read_csv
    from dask_faas.dataframe import read_csv

    path = put(tmp_path, "q/a.csv", b"a,b\n" + b'1,5" screen\n' * 2000)
    df = read_csv(path, blocksize=4000)
    assert df.npartitions > 1
    got = df.compute(scheduler="sync").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, pd.read_csv(path), check_dtype=False)  # dask: its own str dtype


def test_quoted_line_break_after_a_stray_quote_rejected(tmp_path: Path) -> None:
    data = b'id,size,text\n1,5" screen,"two\nlines"\n2,7" screen,plain\n'
    path = put(tmp_path, "stray-then-break.csv", data)
    storage, objects = discover(path)
    message = rf"{re.escape(path)}: a quoted field contains a line break.*blocksize=None"
    with pytest.raises(ValueError, match=message):
        read_all(storage, plan(storage, objects, 20))


def test_escaped_quotes_and_delimiters_in_quoted_fields_split_fine(tmp_path: Path) -> None:
    rows = [b'1,"a, ""b"", c",2\n', b'2,"""",3\n', b'3,"",4\n', b'4,"x,""",5\n', b'5,"""y""",6\r\n']
    check_object(tmp_path, b"id,text,n\n" + b"".join(rows * 3))


@pytest.mark.parametrize("sep", [";", "\t", "|"])
def test_other_separator_with_the_keyword(tmp_path: Path, sep: str) -> None:
    s = sep.encode()
    fine = b'id%stext\n1%s"a%sb"\n2%s5" x\n3%s"say ""hi"""\n'.replace(b"%s", s)
    path = put(tmp_path, "fine.csv", fine)
    storage, objects = discover(path)
    for blocksize in (1, 5, None):
        parts = read_all(storage, plan(storage, objects, blocksize), sep=sep)
        frames = [parse(part, sep=sep) for part in parts if part]
        pd.testing.assert_frame_equal(pd.concat(frames, ignore_index=True), parse(fine, sep=sep))
    broken = b'id%stext\n1%s"two\nlines"\n2%sx\n'.replace(b"%s", s)
    path = put(tmp_path, "broken.csv", broken)
    storage, objects = discover(path)
    ranges = plan(storage, objects, 8)
    with pytest.raises(ValueError, match=r"broken\.csv"):
        read_all(storage, ranges, sep=sep)
    assert read_all(storage, ranges, sep=sep, quotechar=None)  # no quote character: nothing to check
    if sep == "\t":  # pandas' whitespace separator: a quote after a space or a tab opens a field
        with pytest.raises(ValueError, match=r"broken\.csv"):
            read_all(storage, ranges, sep=r"\s+")


def test_sniffed_separator_and_other_quotechar(tmp_path: Path) -> None:
    path = put(tmp_path, "semi.csv", b'id;text\n1;"two\nlines"\n2;x\n')
    storage, objects = discover(path)
    ranges = plan(storage, objects, 8)
    with pytest.raises(ValueError, match=r"semi\.csv"):
        read_all(storage, ranges, sep=None)  # sniffed from the header line, as pandas does
    assert read_all(storage, ranges, sep="a|b")  # regex separators: pandas never joins lines
    path = put(tmp_path, "single.csv", b"id,text\n1,'two\nlines'\n2,it's\n")
    storage, objects = discover(path)
    ranges = plan(storage, objects, 8)
    assert read_all(storage, ranges)
    with pytest.raises(ValueError, match=r"single\.csv"):
        read_all(storage, ranges, quotechar="'")
    with pytest.raises(ValueError, match="one character"):
        read_all(storage, ranges, quotechar="''")


def test_quote_options_follow_pandas_keywords() -> None:
    assert quote_options({}) == {"sep": ",", "quotechar": '"'}
    assert quote_options({"sep": ";", "quotechar": "'"}) == {"sep": ";", "quotechar": "'"}
    assert quote_options({"sep": ",", "delimiter": "\t"}) == {"sep": "\t", "quotechar": '"'}
    assert quote_options({"sep": None}) == {"sep": None, "quotechar": '"'}
    assert quote_options({"delim_whitespace": True})["sep"] == r"\s+"
    assert quote_options({"quoting": csv.QUOTE_NONE, "quotechar": "'"})["quotechar"] is None


LINE = st.text(alphabet=st.sampled_from(list('ab ",;\t')), min_size=1, max_size=12)


def pandas_ends_quoted(line: bytes, sep: str) -> bool:
    """Whether pandas' C parser finds ``line`` ending inside a quoted field."""
    try:
        pd.read_csv(io.BytesIO(line + b"\n"), header=None, dtype=str, sep=sep)
    except pd.errors.ParserError as exc:
        if "EOF inside string" in str(exc):
            return True
        raise
    except pd.errors.EmptyDataError:
        pass
    return False


@settings(max_examples=300, deadline=None)
@given(line=LINE, sep=st.sampled_from([",", ";", "\t"]))
def test_rejected_exactly_when_pandas_finds_a_line_ending_in_quotes(
    prop_storage: LocalStorage, line: str, sep: str
) -> None:
    data = b"h\n" + line.encode() + b"\nz\n"
    prop_storage.put("line.csv", data)
    ranges = plan(prop_storage, [ObjectInfo("line.csv", "line.csv", len(data))], 3, header=False)
    try:
        read_all(prop_storage, ranges, sep=sep)
    except ValueError as exc:
        assert "quoted field contains a line break" in str(exc)
        rejected = True
    else:
        rejected = False
    assert rejected == pandas_ends_quoted(line.encode(), sep)


# -- S3 (moto server on loopback) --------------------------------------------------------------

S3_KEYS = {
    "data/a.csv": PLAIN,
    "data/b.csv": PLAIN * 2,
    "data/empty.csv": b"",
    "data/notes.txt": b"not csv",
    "data/": b"",  # a directory marker
    "data/nested/c.csv": PLAIN,
    "year=2019/m01.csv": PLAIN,
    "year=2019/m02.csv": PLAIN,
    "year=2020/m01.csv": PLAIN,
}


@pytest.fixture
def s3_data(s3_storage: Any, s3_endpoint: str) -> dict[str, Any]:
    for key, data in S3_KEYS.items():
        s3_storage.put(key, data)
    options = {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": s3_endpoint, "region_name": "us-east-1"},
    }
    return {"bucket": s3_storage.bucket, "options": options, "endpoint": s3_endpoint}


def keys_of(urlpath: Any, s3: dict[str, Any]) -> list[str]:
    storage, objects = discover(urlpath, s3["options"])
    for obj in objects:
        assert obj.size == len(S3_KEYS[obj.key])
        assert obj.url.endswith(f"://{s3['bucket']}/{obj.key}")
    storage.close()
    return [obj.key for obj in objects]


def test_s3_discover(s3_data: dict[str, Any]) -> None:
    b = s3_data["bucket"]
    everything = ["data/a.csv", "data/b.csv", "data/empty.csv", "data/nested/c.csv", "data/notes.txt"]
    assert keys_of(f"s3://{b}/data/", s3_data) == everything
    assert keys_of(f"s3://{b}/data", s3_data) == keys_of(f"s3://{b}/data/", s3_data)
    assert keys_of(f"s3://{b}/data/*.csv", s3_data) == ["data/a.csv", "data/b.csv", "data/empty.csv"]
    assert keys_of(f"s3://{b}/year=2019/*.csv", s3_data) == ["year=2019/m01.csv", "year=2019/m02.csv"]
    assert keys_of(f"s3://{b}/year=*/m01.csv", s3_data) == ["year=2019/m01.csv", "year=2020/m01.csv"]
    assert keys_of(f"s3://{b}/**/c.csv", s3_data) == ["data/nested/c.csv"]
    assert keys_of(f"s3a://{b}/**/c.csv", s3_data) == ["data/nested/c.csv"]
    assert len(keys_of(f"s3://{b}/**.csv", s3_data)) == 7
    assert len(keys_of(f"s3://{b}", s3_data)) == 8
    assert keys_of([f"s3://{b}/data/b.csv", f"s3://{b}/data/a.csv"], s3_data) == ["data/a.csv", "data/b.csv"]
    assert keys_of([f"s3://{b}/data/b.csv", "year=2020/m01.csv"], s3_data) == [
        "data/b.csv",
        "year=2020/m01.csv",
    ]
    storage, objects = discover(f"cos://{b}/data/a.csv", s3_data["options"])
    etag = storage.stat("data/a.csv").version
    assert etag and objects == [ObjectInfo(f"cos://{b}/data/a.csv", "data/a.csv", len(PLAIN), etag)]
    assert storage.locator() == {
        "backend": "s3",
        "bucket": b,
        "endpoint_url": s3_data["endpoint"],
        "region_name": "us-east-1",
    }
    storage.close()


def test_s3_discover_errors(s3_data: dict[str, Any], s3_endpoint_auth: Any) -> None:
    b, options = s3_data["bucket"], s3_data["options"]
    with pytest.raises(FileNotFoundError, match=f"s3://{b}-missing/x.csv"):
        discover(f"s3://{b}-missing/x.csv", options)
    with pytest.raises(FileNotFoundError, match=rf"no object matches s3://{b}/data/\*\.tsv"):
        discover(f"s3://{b}/data/*.tsv", options)
    with pytest.raises(FileNotFoundError, match=f"no object matches s3://{b}/nothing"):
        discover(f"s3://{b}/nothing", options)
    with pytest.raises(ValueError, match="one bucket"):
        discover([f"s3://{b}/data/a.csv", "s3://other/a.csv"], options)
    with pytest.raises(ConfigError, match="anon"):
        discover(f"s3://{b}/data/a.csv", {"anon": True})
    auth = s3_endpoint_auth
    url = f"s3://{auth.bucket}/data/*.csv"
    bad = {"key": auth.key, "secret": auth.secret + "x", "endpoint_url": auth.endpoint_url}
    with pytest.raises(PermissionError, match=rf"s3://{auth.bucket}/data/\*\.csv"):
        discover(url, bad)


def test_s3_settings_fallback(s3_data: dict[str, Any]) -> None:
    b = s3_data["bucket"]
    s3 = {"endpoint-url": s3_data["endpoint"], "region-name": "us-east-1", "key": "testing"}
    with dask.config.set({"faas.s3": {**s3, "secret": "testing"}}):
        storage, objects = discover(f"s3://{b}/year=2020/", None)
    assert [o.key for o in objects] == ["year=2020/m01.csv"]
    assert storage.locator()["endpoint_url"] == s3_data["endpoint"]
    storage.close()


def test_s3_read_ranges_end_to_end(s3_data: dict[str, Any], s3_storage: Any) -> None:
    b = s3_data["bucket"]
    data = HEADER + b"".join(ROWS * 7)
    s3_storage.put("big/data.csv", data)
    s3_storage.put("big/data.csv.gz", gzip.compress(data))
    storage, objects = discover(f"s3://{b}/big/*", s3_data["options"])
    ranges = plan(storage, objects, 40, sample_bytes=8)
    storage.close()
    remote = storage_from_locator(ranges[0].locator)  # as a function does: no credentials inside
    try:
        for key in ("big/data.csv", "big/data.csv.gz"):
            mine = [r for r in ranges if r.key == key]
            assert len(mine) == (1 if key.endswith(".gz") else -(-len(data) // 40))
            assert_exact(remote, mine, data, read_ahead=8)
    finally:
        close_cached()  # shared by the cache: closed through it
