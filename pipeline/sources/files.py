"""Read ActionTrail events from files: what an OSS trail delivers, what LookupEvents returns, what
people export.

Accepted in any file, optionally gzip-compressed: a JSON array of events, a single event, NDJSON
(one event per line), a LookupEvents response body ``{"Events": [...]}`` (also one per line).
Directories are walked recursively, which covers the OSS delivery layout
``AliyunLogs/Actiontrail/<region>/YYYY/MM/DD/*.gz``. Everything streams: a file is never loaded
whole unless it is a single pretty-printed document.

A reader yields :class:`Item` s: a parsed JSON value with its original text, or the text and the
reason it could not be parsed. Turning values into events is the caller's job.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pipeline.errors import UsageError

EVENT_SUFFIXES = (".json", ".jsonl", ".ndjson", ".log", ".gz", ".txt")
_WHOLE_DOCUMENT_LIMIT = 64 * 1024 * 1024  # bytes: larger non-NDJSON documents stream as arrays
_CHUNK = 1024 * 1024
_decoder = json.JSONDecoder()


@dataclass(frozen=True, slots=True)
class Item:
    location: str  # path:line or path[index]
    value: Any  # the parsed JSON value; None when error is set
    raw: str  # original text (or a re-encoding for values unpacked from a larger document)
    error: str | None = None


def find_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand directories (recursively, event-file suffixes only); named files are taken as is.

    A path that does not exist is a usage error, raised before anything is read.
    """
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*") if p.is_file() and _looks_like_events(p)
                              and not any(part.startswith(".") for part in p.relative_to(path).parts)))
        elif path.is_file():
            out.append(path)
        elif path.exists():
            raise UsageError("not a regular file or directory", path=str(path))
        else:
            raise UsageError("no such file or directory", path=str(path))
    return out


def _looks_like_events(path: Path) -> bool:
    return path.name.lower().endswith(EVENT_SUFFIXES) and not path.name.startswith(".")


@dataclass(frozen=True, slots=True)
class Chunk:
    """A run of whole lines of an uncompressed file: bytes [start, end), first line number."""

    start: int
    end: int
    first_line: int


@dataclass(frozen=True, slots=True)
class FileScan:
    sha256: str
    size: int
    chunks: list[Chunk]  # line-aligned pieces of about ``chunk_bytes``; empty for gzip


def scan_file(path: Path, chunk_bytes: int = 4 * 1024 * 1024) -> FileScan:
    """Hash the content and, for uncompressed files, cut it into line-aligned chunks that
    can be parsed independently (the line counts come free with the hashing pass)."""
    digest = hashlib.sha256()
    chunks: list[Chunk] = []
    start, line, pos, newlines, gz = 0, 1, 0, 0, None
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
            gz = block[:2] == b"\x1f\x8b" if gz is None else gz
            while not gz and start + chunk_bytes <= pos + len(block):
                cut = block.find(b"\n", max(0, start + chunk_bytes - pos))
                if cut < 0:
                    break
                chunks.append(Chunk(start, pos + cut + 1, line))
                line = newlines + block.count(b"\n", 0, cut + 1) + 1
                start = pos + cut + 1
            if not gz:
                newlines += block.count(b"\n")
            pos += len(block)
    if not gz and pos > start:
        chunks.append(Chunk(start, pos, line))
    return FileScan(digest.hexdigest(), pos, [] if gz else chunks)


def read_chunk(path: Path, chunk: Chunk) -> Iterator[Item]:
    """The items of one NDJSON chunk (see :func:`scan_file`)."""
    with path.open("rb") as fh:
        fh.seek(chunk.start)
        data = fh.read(chunk.end - chunk.start)
    yield from _line_items(str(path), b"", io.BytesIO(data), first_line=chunk.first_line)


def is_ndjson(path: Path) -> bool:
    """Uncompressed, and the first non-blank line is a JSON object on its own."""
    with path.open("rb") as fh:
        head = fh.read(2)
        if head == b"\x1f\x8b":
            return False
        fh.seek(0)
        for line in fh:
            if line.strip():
                return _is_json_object(line)
    return False


class CountingReader(io.RawIOBase):
    """Wraps a binary file and counts bytes read from disk, for progress on compressed input."""

    def __init__(self, fh: IO[bytes]):
        self._fh = fh
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._fh.readinto(buffer)  # type: ignore[attr-defined]
        self.count += n or 0
        return n or 0


def open_events_file(path: Path) -> tuple[IO[bytes], CountingReader]:
    """A binary stream of the (decompressed) content, and the on-disk byte counter."""
    raw = path.open("rb")
    counter = CountingReader(raw)
    buffered = io.BufferedReader(counter, buffer_size=_CHUNK)
    magic = buffered.peek(2)[:2]
    if magic == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=buffered, mode="rb"), counter  # type: ignore[return-value]
    return buffered, counter


_GZIP_ERRORS = (gzip.BadGzipFile, zlib.error, EOFError)


def read_items(path: Path, stream: IO[bytes]) -> Iterator[Item]:
    """Sniff the layout and yield every value in the file.

    A corrupt or truncated gzip stream ends the file with one error item for the file itself
    (location = the path, reason e.g. ``corrupt gzip: CRC check failed``); the values read before
    the damage are yielded as usual and kept. Quarantining the whole file instead would have to
    take back events already committed: gzip checks the CRC only at the end of a member, after
    every event in it was parsed, and a large file is committed over many transactions. Keeping
    them keeps "nothing lost" (what could be read is stored; what could not is named in the
    quarantine), and "nothing doubled" holds because the caller records the file as ingested, by
    content hash, with its last batch - which carries this error item: a retry skips the file, and
    a repaired copy (another hash) finds its events already stored, by ``eventId``. Only decode
    failures are caught: an I/O error from the disk may pass on a retry, so it is not recorded.
    """
    try:
        yield from _sniffed_items(path, stream)
    except _GZIP_ERRORS as exc:
        yield Item(str(path), None, f"{type(exc).__name__}: {exc}", _gzip_reason(exc))


def _gzip_reason(exc: BaseException) -> str:
    """One line without the file-specific values (CRCs, bytes), so equal damage groups together."""
    if isinstance(exc, EOFError):
        what = "truncated gzip: the file ends inside the compressed stream"
    elif isinstance(exc, zlib.error):
        what = f"corrupt gzip: {str(exc).rsplit(': ', 1)[-1]}"
    else:
        what = f"corrupt gzip: {str(exc).split(' 0x')[0].split(' (')[0]}"
    return f"{what} (events read before it were kept)"


def _sniffed_items(path: Path, stream: IO[bytes]) -> Iterator[Item]:
    reader: Any = stream if hasattr(stream, "peek") else io.BufferedReader(stream, _CHUNK)
    skipped_lines = _skip_leading_space(reader)
    head = reader.peek(4096)
    if not head:
        return
    if head[:1] == b"[":
        yield from _array_items(str(path), io.TextIOWrapper(reader, "utf-8", errors="replace"))
        return
    first = reader.readline()
    if _is_json_object(first):
        yield from _line_items(str(path), first, reader, first_line=1 + skipped_lines)
        return
    rest = reader.read(_WHOLE_DOCUMENT_LIMIT)
    whole = first + rest
    doc = _try_whole(whole) if len(rest) < _WHOLE_DOCUMENT_LIMIT else None
    if doc is not None:
        yield from _unpack(str(path), doc, whole.decode("utf-8", errors="replace").strip())
        return
    yield from _line_items(str(path), b"", io.BufferedReader(_Chain(whole, reader)), first_line=1 + skipped_lines)


_BOM = b"\xef\xbb\xbf"
_SPACE = b" \t\r\n"


def _skip_leading_space(reader: Any) -> int:
    """Consume a UTF-8 BOM and any run of leading whitespace; return the newlines skipped."""
    if reader.peek(3)[:3] == _BOM:
        reader.read(3)
    newlines = 0
    while True:
        head = reader.peek(65536)
        if not head:
            return newlines
        rest = head.lstrip(_SPACE)
        skip = len(head) - len(rest)
        newlines += head.count(b"\n", 0, skip)
        reader.read(skip)
        if rest:
            return newlines


def _is_json_object(line: bytes) -> bool:
    text = line.strip()
    if not text.startswith(b"{"):
        return False
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def _try_whole(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None


def _unpack(path: str, doc: Any, text: str) -> Iterator[Item]:
    """A whole document: a LookupEvents body, a list, or one event."""
    if isinstance(doc, dict) and isinstance(doc.get("Events"), list):
        for i, event in enumerate(doc["Events"]):
            yield Item(f"{path}[{i}]", event, _encode(event))
    elif isinstance(doc, list):
        for i, event in enumerate(doc):
            yield Item(f"{path}[{i}]", event, _encode(event))
    else:
        yield Item(path, doc, text)


def _line_items(path: str, first: bytes, rest: IO[bytes], first_line: int = 1) -> Iterator[Item]:
    for lineno, line in enumerate(_prepend(first, rest), first_line):
        stripped = line.strip()
        if not stripped:
            continue
        try:
            text = stripped.decode("utf-8").lstrip("\ufeff")
        except UnicodeDecodeError:
            yield Item(f"{path}:{lineno}", None, stripped.decode("utf-8", "replace"), "not valid UTF-8")
            continue
        try:
            value = json.loads(text)
        except ValueError as exc:
            yield Item(f"{path}:{lineno}", None, text, f"malformed JSON: {exc}")
            continue
        if isinstance(value, dict) and isinstance(value.get("Events"), list):
            for i, event in enumerate(value["Events"]):
                yield Item(f"{path}:{lineno}[{i}]", event, _encode(event))
        else:
            yield Item(f"{path}:{lineno}", value, text)


def _prepend(first: bytes, rest: IO[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


def _array_items(path: str, text: IO[str]) -> Iterator[Item]:
    """Stream the elements of a top-level JSON array, keeping each element's original text."""
    buf = text.read(_CHUNK)
    pos = buf.index("[") + 1
    index = 0
    eof = False
    while True:
        pos = _skip(buf, pos, " \t\r\n,")
        if pos >= len(buf) and not eof:
            chunk = text.read(_CHUNK)
            eof = not chunk
            buf, pos = buf[pos:] + chunk, 0
            continue
        if pos < len(buf) and buf[pos] == "]":
            return
        if pos >= len(buf):
            yield Item(f"{path}[{index}]", None, "", "malformed JSON array: missing closing ]")
            return
        try:
            value, end = _decoder.raw_decode(buf, pos)
        except ValueError as exc:
            if not eof:
                chunk = text.read(_CHUNK)
                eof = not chunk
                buf, pos = buf[pos:] + chunk, 0
                continue
            rest = buf[pos:]
            yield Item(f"{path}[{index}]", None, rest[:65536],
                       f"malformed JSON array element: {exc}; the rest of the file is unreadable")
            return
        after = _skip(buf, end, " \t\r\n")
        if not eof and (after >= len(buf) or buf[after] not in ",]"):
            # the value may be cut by the read (a number "1." before "5"): see its delimiter first
            chunk = text.read(_CHUNK)
            eof = not chunk
            buf, pos = buf[pos:] + chunk, 0
            continue
        yield Item(f"{path}[{index}]", value, buf[pos:end])
        index += 1
        pos = end


def _skip(buf: str, pos: int, chars: str) -> int:
    while pos < len(buf) and buf[pos] in chars:
        pos += 1
    return pos


def _encode(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class _Chain(io.RawIOBase):
    """Bytes already read, then the rest of a stream."""

    def __init__(self, head: bytes, tail: IO[bytes]):
        self._head = memoryview(head)
        self._tail = tail

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head.nbytes:
            n = min(len(buffer), self._head.nbytes)
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._tail.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)
