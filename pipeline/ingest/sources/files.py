"""Read ActionTrail events from files: what an OSS trail delivers, what LookupEvents returns, what
people export.

Accepted in any file, optionally gzip-compressed: a JSON array of events, a single event, NDJSON
(one event per line), a LookupEvents response body ``{"Events": [...]}`` (also one per line), and
any of these one after the other (``cat a.json b.ndjson``: what follows an array's closing ``]``
is read too). UTF-8 (with or without a BOM), and UTF-16 or UTF-32 with a BOM; lines end with
``\\n``, ``\\r\\n`` or a lone ``\\r``. Directories are walked recursively, which covers the OSS
delivery layout ``AliyunLogs/Actiontrail/<region>/YYYY/MM/DD/*.gz``; a sub-folder or file that
cannot be read is reported (``unreadable``), never skipped silently.

Everything streams, in bounded memory: a file is never loaded whole unless it is a single
pretty-printed document (up to 64 MiB), and no line or array element is held beyond
:data:`MAX_ITEM_BYTES` - a longer one is quarantined as an excerpt with its byte offset and
length, and reading goes on after it. A ``.gz`` file is read up to :data:`MAX_GZIP_BYTES`
decompressed. Each item stands alone: a line or element that is malformed, too deep, not valid
UTF-8 or holds a duplicate key becomes an error item, and in an array reading resynchronises at
the next element, so exactly the bad element's text is quarantined.

A reader yields :class:`Item` s: a parsed JSON value with its original text, or the text and the
reason it could not be used. Turning values into events is the caller's job.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import json
import os
import re
import zlib
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pipeline.core.errors import UsageError
from pipeline.ingest import jsontext
from pipeline.ingest.jsontext import encodable

EVENT_SUFFIXES = (".json", ".jsonl", ".ndjson", ".log", ".gz", ".txt")
MIB = 1024 * 1024
# The longest line or array element read whole. ActionTrail events are a few KB; anything longer
# is quarantined as an excerpt (its offset and length in the reason), so one 1 GiB line cannot
# exhaust memory, and the store never holds a row nobody could read back.
MAX_ITEM_BYTES = 16 * MIB
EXCERPT_BYTES = 64 * 1024  # what the quarantine keeps of an over-long item
# The most one .gz file may decompress to (a gzip bomb expands ~1000x). What was read before it is
# kept, as with a damaged gzip; a real archive this large can be decompressed and read plainly.
MAX_GZIP_BYTES = 4 * 1024 * MIB
_WHOLE_DOCUMENT_LIMIT = 64 * MIB  # bytes: larger non-NDJSON documents are read as lines
_CHUNK = MIB
_HEAD_LIMIT = MIB  # how much of a file is looked at to decide it is NDJSON


@dataclass(frozen=True, slots=True)
class Item:
    location: str  # path:line or path[index]
    value: Any  # the parsed JSON value; None when error is set
    raw: str  # original text (or a re-encoding for values unpacked from a larger document)
    error: str | None = None


def find_files(paths: Iterable[str | os.PathLike[str]],
               unreadable: list[tuple[str, str]] | None = None) -> list[Path]:
    """Expand directories (recursively, event-file suffixes only); named files are taken as is.

    A path that does not exist is a usage error, raised before anything is read. A folder or file
    that cannot be listed or examined (no permission, vanished meanwhile) is appended to
    ``unreadable`` as ``(path, reason)`` and left out; the rest is still found.
    """
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        try:
            if path.is_dir():
                out.extend(_walk(path, unreadable))
                continue
            if path.is_file():
                out.append(path)
                continue
            exists = path.exists()
        except OSError as exc:
            _note(unreadable, str(path), exc)
            continue
        if exists:
            raise UsageError("not a regular file or directory", path=str(path))
        raise UsageError("no such file or directory", path=str(path))
    return out


def _walk(root: Path, unreadable: list[tuple[str, str]] | None) -> list[Path]:
    """Event files under ``root``, sorted; hidden files and folders are left out. ``os.walk``
    rather than ``Path.rglob``, which skips an unreadable folder without a word."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=lambda exc: _note(unreadable, str(root), exc)):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not _looks_like_events(name):
                continue
            path = Path(dirpath, name)
            try:
                if path.is_file():
                    found.append(path)
            except OSError as exc:
                _note(unreadable, str(path), exc)
    return sorted(found)


def _note(unreadable: list[tuple[str, str]] | None, where: str, exc: OSError) -> None:
    if unreadable is not None:
        unreadable.append((str(exc.filename or where), os_reason(exc)))


def os_reason(exc: OSError) -> str:
    """``Permission denied``, ``No such file or directory``: the OS's words, without the path."""
    return exc.strerror or type(exc).__name__


def _looks_like_events(name: str) -> bool:
    return name.lower().endswith(EVENT_SUFFIXES) and not name.startswith(".")


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


def scan_file(path: Path, chunk_bytes: int = 4 * MIB) -> FileScan:
    """Hash the content and, for uncompressed files, cut it into chunks that end with a ``\\n``
    and can be parsed independently (the line numbers come free with the hashing pass, counted
    as the reader counts them: ``\\n``, ``\\r\\n`` and a lone ``\\r`` each end a line)."""
    digest = hashlib.sha256()
    chunks: list[Chunk] = []
    start, line, pos, lines, gz, cr = 0, 1, 0, 0, None, False
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
            gz = block[:2] == b"\x1f\x8b" if gz is None else gz
            while not gz and start + chunk_bytes <= pos + len(block):
                cut = block.find(b"\n", max(0, start + chunk_bytes - pos))
                if cut < 0:
                    break
                chunks.append(Chunk(start, pos + cut + 1, line))
                line = lines + _terminators(block[:cut + 1], cr) + 1
                start = pos + cut + 1
            if not gz:
                lines += _terminators(block, cr)
                cr = block.endswith(b"\r")
            pos += len(block)
    if not gz and pos > start:
        chunks.append(Chunk(start, pos, line))
    return FileScan(digest.hexdigest(), pos, [] if gz else chunks)


def _terminators(data: bytes, after_cr: bool) -> int:
    """Line ends in ``data``; ``after_cr``: the data before it ended with ``\\r`` (so a leading
    ``\\n`` completes that ``\\r\\n`` rather than ending another line). Data without a ``\\r``
    (nearly every file) costs one count, not three: the three ran at ~340 MB/s, slower than
    hashing the same bytes."""
    n = data.count(b"\n")
    if b"\r" in data:
        n += data.count(b"\r") - data.count(b"\r\n")
    return n - 1 if after_cr and data[:1] == b"\n" else n


def read_chunk(path: Path, chunk: Chunk) -> Iterator[Item]:
    """The items of one NDJSON chunk (see :func:`scan_file`), read in bounded memory."""
    with path.open("rb") as fh:
        fh.seek(chunk.start)
        yield from _line_items(str(path), _Limited(fh, chunk.end - chunk.start), chunk.first_line,
                               "not valid UTF-8", chunk.start)


def is_ndjson(path: Path) -> bool:
    """Uncompressed, and the first non-blank line (within the first MiB) is a JSON object."""
    with path.open("rb") as fh:
        head = fh.read(_HEAD_LIMIT)
    if head[:2] == b"\x1f\x8b":
        return False
    for line in _TERMINATOR.split(head)[0::2]:
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


class GzipTooLarge(Exception):
    """A .gz file decompressed to more than :data:`MAX_GZIP_BYTES`."""


class _Capped(io.RawIOBase):
    """A decompressing stream that stops at ``limit`` bytes of output (a gzip bomb's defence)."""

    def __init__(self, fh: IO[bytes], limit: int):
        self._fh = fh
        self._left = limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._fh.readinto(buffer)  # type: ignore[attr-defined]
        self._left -= n or 0
        if self._left < 0:
            raise GzipTooLarge
        return n or 0

    def close(self) -> None:
        self._fh.close()
        super().close()


def open_events_file(path: Path) -> tuple[IO[bytes], CountingReader]:
    """A binary stream of the (decompressed) content, and the on-disk byte counter."""
    raw = path.open("rb")
    counter = CountingReader(raw)
    buffered = io.BufferedReader(counter, buffer_size=_CHUNK)
    magic = buffered.peek(2)[:2]
    if magic == b"\x1f\x8b":
        capped = _Capped(gzip.GzipFile(fileobj=buffered, mode="rb"), MAX_GZIP_BYTES)  # type: ignore[arg-type]
        return io.BufferedReader(capped, buffer_size=_CHUNK), counter
    return buffered, counter


_GZIP_ERRORS = (gzip.BadGzipFile, zlib.error, EOFError, GzipTooLarge)


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
    a repaired copy (another hash) finds its events already stored, by ``eventId``. A ``.gz``
    decompressing past :data:`MAX_GZIP_BYTES` ends the same way. Only decode failures are caught:
    an I/O error from the disk may pass on a retry, so it is not recorded.
    """
    try:
        yield from _sniffed_items(path, stream)
    except _GZIP_ERRORS as exc:
        yield Item(str(path), None, f"{type(exc).__name__}: {exc}", _gzip_reason(exc))


def _gzip_reason(exc: BaseException) -> str:
    """One line without the file-specific values (CRCs, bytes), so equal damage groups together."""
    if isinstance(exc, GzipTooLarge):
        what = (f"gzip decompresses to more than {MAX_GZIP_BYTES // MIB:,} MiB (the limit per .gz file); "
                "the rest was not read - decompress it to read it whole")
    elif isinstance(exc, EOFError):
        what = "truncated gzip: the file ends inside the compressed stream"
    elif isinstance(exc, zlib.error):
        what = f"corrupt gzip: {str(exc).rsplit(': ', 1)[-1]}"
    else:
        what = f"corrupt gzip: {str(exc).split(' 0x')[0].split(' (')[0]}"
    return f"{what} (events read before it were kept)"


# -- layout -----------------------------------------------------------------------------------

_BOMS = ((b"\xff\xfe\x00\x00", "utf-32-le"), (b"\x00\x00\xfe\xff", "utf-32-be"), (b"\xef\xbb\xbf", "utf-8"),
         (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))
_SPACE = b" \t\r\n"


def _sniffed_items(path: Path, stream: IO[bytes]) -> Iterator[Item]:
    """Values one after the other: arrays (each read element by element, and what follows its
    ``]`` read too), then NDJSON lines or one whole document."""
    reader, bad_text, consumed = _decoded(_peekable(stream))
    line, first = 1, True
    while True:
        newlines, skipped = _skip_leading_space(reader)
        line, consumed = line + newlines, consumed + skipped
        if not reader.peek(1)[:1]:
            return
        where = "" if first else f":{line}"  # values after the first are located by their line
        if reader.peek(1)[:1] != b"[":
            yield from _other_items(str(path), where, reader, line, bad_text, consumed)
            return
        leftover, lines, used = yield from _array_items(f"{path}{where}", reader, bad_text, consumed)
        line, consumed, first = line + lines, consumed + used, False
        reader = _peekable(_Chain(leftover, reader))


def _peekable(stream: IO[bytes] | io.RawIOBase) -> Any:
    return stream if hasattr(stream, "peek") else io.BufferedReader(stream, _CHUNK)


def _decoded(reader: Any) -> tuple[Any, str, int]:
    """The content as UTF-8 bytes: a UTF-8 BOM is dropped, UTF-16 and UTF-32 (with a BOM) are
    transcoded. Also the reason an undecodable item gets, and the BOM's length."""
    head = reader.peek(4)[:4]
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            reader.read(len(bom))
            if encoding == "utf-8":
                return reader, "not valid UTF-8", len(bom)
            return _peekable(_Transcoder(reader, encoding)), f"not valid {encoding[:6].upper()}", len(bom)
    return reader, "not valid UTF-8", 0


def _skip_leading_space(reader: Any) -> tuple[int, int]:
    """Consume a run of whitespace; return the lines it ended and the bytes it held."""
    lines = skipped = 0
    cr = False
    while True:
        head = reader.peek(65536)
        if not head:
            return lines, skipped
        rest = head.lstrip(_SPACE)
        skip = len(head) - len(rest)
        lines += _terminators(head[:skip], cr)
        cr = head[:skip].endswith(b"\r") if skip else cr
        skipped += skip
        reader.read(skip)
        if rest:
            return lines, skipped


def _is_json_object(line: bytes) -> bool:
    text = line.strip()
    if not text.startswith(b"{"):
        return False
    try:
        return isinstance(json.loads(text), dict)
    except (ValueError, RecursionError):
        return False


def _other_items(path: str, where: str, reader: Any, line: int, bad_text: str, consumed: int) -> Iterator[Item]:
    """NDJSON when the first line is an object on its own, else one whole document (a
    pretty-printed event or LookupEvents body), else lines (each one quarantined or not)."""
    first = reader.readline(MAX_ITEM_BYTES + 1)
    if len(first) <= MAX_ITEM_BYTES and _is_json_object(_TERMINATOR.split(first, 1)[0]):
        yield from _line_items(path, _Chain(first, reader), line, bad_text, consumed)
        return
    rest = reader.read(_WHOLE_DOCUMENT_LIMIT)
    whole = first + rest
    if len(rest) < _WHOLE_DOCUMENT_LIMIT:
        found = _whole_document(whole)
        if found is not None:
            yield from _unpack(f"{path}{where}", *found)
            return
    yield from _line_items(path, _Chain(whole, reader), line, bad_text, consumed)


def _whole_document(data: bytes) -> tuple[Any, str, dict[int, str]] | None:
    """The parsed document, its text and its duplicated keys, or None if it is not one document."""
    try:
        text = data.decode("utf-8").strip()
        value, dups = jsontext.loads_marking_duplicates(text)
    except (UnicodeDecodeError, jsontext.BadJson):
        return None
    return value, text, dups


def _unpack(path: str, doc: Any, text: str, dups: dict[int, str]) -> Iterator[Item]:
    """A whole document: a LookupEvents body, a list, or one event."""
    if isinstance(doc, dict) and isinstance(doc.get("Events"), list):
        yield from _values(path, doc["Events"], dups)
    elif isinstance(doc, list):
        yield from _values(path, doc, dups)
    else:
        duplicate = jsontext.first_duplicate(doc, dups)
        if duplicate is not None:
            yield _error(path, text, duplicate)
        elif len(text) > MAX_ITEM_BYTES:
            yield _too_long(path, text.encode("utf-8", "surrogatepass"), "document", 0)
        else:
            yield Item(path, doc, text)


def _values(prefix: str, values: list[Any], dups: dict[int, str]) -> Iterator[Item]:
    """Items ``prefix[i]`` for values unpacked from a parsed document (re-encoded: their text is
    not kept)."""
    for i, value in enumerate(values):
        loc = f"{prefix}[{i}]"
        duplicate = jsontext.first_duplicate(value, dups)
        if duplicate is not None:
            yield _error(loc, _encode(value), duplicate)
            continue
        yield encoded_item(loc, value)


def encoded_item(location: str, value: Any) -> Item:
    """An item for a value parsed elsewhere (a LookupEvents page, an unpacked body): its JSON
    re-encoded, or the reason it cannot be (too deep, too long)."""
    try:
        text = _encode(value)
    except RecursionError:
        return Item(location, None, "", jsontext.TOO_DEEP)
    if len(text) > MAX_ITEM_BYTES:
        return _too_long(location, text.encode("utf-8", "surrogatepass"), "event", None)
    return Item(location, value, text)


def _error(location: str, text: str, reason: str) -> Item:
    return Item(location, None, text, reason)


def _too_long(location: str, data: bytes, what: str, offset: int | None, length: int | None = None) -> Item:
    """An item over :data:`MAX_ITEM_BYTES`: quarantined as an excerpt, saying where the whole is."""
    length = len(data) if length is None else length
    excerpt = data[:EXCERPT_BYTES]
    where = f" at byte offset {offset:,} of the file's content" if offset is not None else ""
    return Item(location, None, excerpt.decode("utf-8", "replace"),
                f"{what} of {length:,} bytes{where} is over the {MAX_ITEM_BYTES // MIB} MiB limit: not stored "
                f"whole; its first {len(excerpt):,} bytes are kept here")


# -- lines ------------------------------------------------------------------------------------

_TERMINATOR = re.compile(rb"(\r\n|\r|\n)")


@dataclass(frozen=True, slots=True)
class _Oversized:
    """A line longer than :data:`MAX_ITEM_BYTES`: where it starts, how long it is, its head."""

    offset: int
    length: int
    excerpt: bytes


def _line_items(path: str, stream: Any, first_line: int, bad_text: str, offset: int) -> Iterator[Item]:
    for lineno, line in enumerate(_split_lines(stream, offset), first_line):
        if type(line) is _Oversized:
            yield _too_long(f"{path}:{lineno}", line.excerpt, "line", line.offset, line.length)
            continue
        yield from line_items(f"{path}:{lineno}", line, bad_text)  # type: ignore[arg-type]


def line_items(location: str, line: bytes, bad_text: str = "not valid UTF-8") -> Iterator[Item]:
    """The items of one NDJSON line (none for a blank one; several for a LookupEvents body).
    Also what the DuckDB-native reader falls back to for a line SQL cannot decide on."""
    stripped = line.strip()
    if not stripped:
        return
    try:
        text = stripped.decode("utf-8").lstrip("\ufeff")
    except UnicodeDecodeError:
        yield Item(location, None, stripped.decode("utf-8", "replace"), bad_text)
        return
    try:
        value = jsontext.loads(text)
    except jsontext.BadJson as exc:
        yield from _bad_line(location, text, exc)
        return
    if isinstance(value, dict) and isinstance(value.get("Events"), list):
        yield from _values(location, value["Events"], {})
    else:
        yield Item(location, value, text)


def _bad_line(location: str, text: str, exc: jsontext.BadJson) -> Iterator[Item]:
    """A line that failed: one error item, except a LookupEvents body with a duplicate key in
    some of its events, where only those events are refused."""
    if str(exc).startswith("duplicate key"):
        value, dups = jsontext.loads_marking_duplicates(text)
        if isinstance(value, dict) and isinstance(value.get("Events"), list) and id(value) not in dups \
                and jsontext.first_duplicate({k: v for k, v in value.items() if k != "Events"}, dups) is None:
            yield from _values(location, value["Events"], dups)
            return
    yield Item(location, None, text, str(exc))


def _split_lines(stream: Any, offset: int = 0) -> Iterator[bytes | _Oversized]:
    """Every line of ``stream`` without its terminator (``\\n``, ``\\r\\n`` or a lone ``\\r``),
    empty ones included, read in blocks: no more than :data:`MAX_ITEM_BYTES` of a line is ever
    held; a longer one comes as an :class:`_Oversized` once its end is found."""
    lines = _LineSplitter(offset)
    while True:
        block = stream.read(_CHUNK)
        if not block:
            break
        yield from lines.feed(block)
    yield from lines.end()


class _LineSplitter:
    """The state of :func:`_split_lines`: the line in progress (its bytes, or just its length
    once it is over the limit) and the byte offset where it starts."""

    def __init__(self, offset: int):
        self.offset = offset  # of the next byte fed
        self.start = offset  # of the line in progress
        self.pending = bytearray()
        self.over: _Oversized | None = None
        self.cr = False  # the last block ended with \r: a \n first in the next completes it

    def feed(self, block: bytes) -> Iterator[bytes | _Oversized]:
        if self.cr and block[:1] == b"\n":
            block = block[1:]
            self.offset += 1
            self.start += 1
        self.cr = False
        base = self.offset
        self.offset += len(block)
        last = max(block.rfind(b"\n"), block.rfind(b"\r"))
        if last < 0:
            self._extend(block)
            return
        self.cr = last == len(block) - 1 and block[last] == 13
        region, tail = block[:last + 1], block[last + 1:]
        if b"\r" in region:
            parts = _TERMINATOR.split(region)
            found, ends = parts[0::2], [len(t) for t in parts[1::2]]
        else:
            found, ends = region.split(b"\n"), []
        found.pop()  # what follows the last terminator is the tail
        yield self._complete(found[0])
        if len(found) > 1:
            if max(map(len, found)) > MAX_ITEM_BYTES:  # only when the limit is below a block
                yield from self._checked(found, ends, base)
            else:
                yield from found[1:]
        self.start = base + last + 1
        self._extend(tail)

    def end(self) -> Iterator[bytes | _Oversized]:
        if self.over is not None or self.pending:
            yield self._complete(b"")

    def _extend(self, piece: bytes) -> None:
        if self.over is not None:
            self.over = _Oversized(self.over.offset, self.over.length + len(piece), self.over.excerpt)
            return
        self.pending += piece
        if len(self.pending) > MAX_ITEM_BYTES:
            self.over = _Oversized(self.start, len(self.pending), bytes(self.pending[:EXCERPT_BYTES]))
            self.pending = bytearray()

    def _complete(self, piece: bytes) -> bytes | _Oversized:
        if self.over is not None:
            done = _Oversized(self.over.offset, self.over.length + len(piece), self.over.excerpt)
            self.over = None
            return done
        line = bytes(self.pending + piece) if self.pending else piece
        self.pending = bytearray()
        return _Oversized(self.start, len(line), line[:EXCERPT_BYTES]) if len(line) > MAX_ITEM_BYTES else line

    @staticmethod
    def _checked(found: list[bytes], ends: list[int], base: int) -> Iterator[bytes | _Oversized]:
        """The lines after the first, each checked against the limit, with exact offsets."""
        pos = base + len(found[0]) + (ends[0] if ends else 1)
        for i, line in enumerate(found[1:], 1):
            yield _Oversized(pos, len(line), line[:EXCERPT_BYTES]) if len(line) > MAX_ITEM_BYTES else line
            pos += len(line) + (ends[i] if ends else 1)


# -- arrays -----------------------------------------------------------------------------------

# A JSON string (no raw control characters: valid JSON has none, so a broken string ends at its
# line) or one structural character: enough to find where an element ends without parsing it.
_TOKEN = re.compile(r'"[^"\\\x00-\x1f]*(?:\\.[^"\\\x00-\x1f]*)*"|[{}\[\],"]')
_NUMBER_TAIL = re.compile(r"[0-9.eE+-]*\Z")
# Where a new element may begin after a broken one: a comma and an object (an event).
_NEXT_OBJECT = re.compile(r",[ \t\r\n]*(?=\{)")


class _Window:
    """A window of decoded text over a byte stream, refilled a MiB at a time: ``buf[pos:]`` is
    what has not been consumed. Invalid UTF-8 is kept (as surrogate escapes) so that it can be
    found in the element it belongs to and that element alone refused."""

    def __init__(self, reader: Any):
        self.reader = reader
        self.decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self.buf = ""
        self.pos = 0
        self.eof = False
        self.read_bytes = 0
        self.lines = 0  # line ends in the text consumed so far
        self._cr = False

    def refill(self) -> None:
        chunk = self.reader.read(_CHUNK)
        self.read_bytes += len(chunk)
        self.eof = not chunk
        text = self.decoder.decode(chunk, final=self.eof)
        self.drop(self.pos)
        self.buf += text

    def drop(self, upto: int) -> None:
        """Forget ``buf[:upto]`` (consumed), counting its line ends."""
        gone = self.buf[:upto]
        n = gone.count("\n") + gone.count("\r") - gone.count("\r\n")
        self.lines += n - 1 if self._cr and gone[:1] == "\n" else n
        self._cr = gone.endswith("\r") if gone else self._cr
        self.buf, self.pos = self.buf[upto:], self.pos - upto

    def offset(self, at: int) -> int:
        """The byte offset of ``buf[at]`` from where the window started reading."""
        pending = len(self.decoder.getstate()[0])
        return self.read_bytes - pending - len(self.buf[at:].encode("utf-8", "surrogateescape"))

    def leftover(self) -> bytes:
        """What was read but not consumed, as bytes again."""
        return self.buf[self.pos:].encode("utf-8", "surrogateescape") + self.decoder.getstate()[0]


def _array_items(location: str, reader: Any, bad_text: str,
                 offset: int) -> Generator[Item, None, tuple[bytes, int, int]]:
    """Stream the elements of the JSON array ``reader`` starts with, keeping each element's
    original text. Returns (via ``yield from``) the bytes read past its ``]``, the line ends and
    the bytes consumed up to there."""
    win = _Window(reader)
    win.refill()
    win.pos = win.buf.index("[") + 1
    index = 0
    ended_inside = False  # the last element ran to the end of the file: it says so already
    while True:
        win.pos = _skip(win.buf, win.pos, " \t\r\n,")
        if win.pos >= len(win.buf):
            if win.eof:
                if not ended_inside:
                    yield Item(f"{location}[{index}]", None, "", "malformed JSON array: missing closing ]")
                return b"", 0, 0
            win.refill()
            continue
        if win.buf[win.pos] == "]":
            win.pos += 1
            used = win.offset(win.pos)
            leftover = win.leftover()
            win.drop(win.pos)
            return leftover, win.lines, used
        step = _next_element(win, f"{location}[{index}]", bad_text, offset)
        if step is None:
            win.refill()
            continue
        ended_inside = step.error is not None and step.error.endswith("(no closing ])")
        yield step
        index += 1


def _next_element(win: _Window, location: str, bad_text: str, offset: int) -> Item | None:
    """The element at ``win.pos`` (consumed), or None when more text must be read first."""
    buf, pos = win.buf, win.pos
    try:
        value, end = jsontext.raw_decode(buf, pos)
    except (ValueError, RecursionError):
        return _bad_element(win, location, bad_text, offset)
    after = _skip(buf, end, " \t\r\n")
    if not win.eof and (after >= len(buf) or (isinstance(value, int | float) and _NUMBER_TAIL.match(buf, end))):
        return None  # it may be cut by the read (a number "1." before "5"): see its delimiter first
    text = buf[pos:end]
    win.pos = end
    if not text.isascii() and not encodable(text):
        return Item(location, None, _readable(text), bad_text)
    if len(text) > MAX_ITEM_BYTES // 4 and len(text.encode("utf-8", "surrogateescape")) > MAX_ITEM_BYTES:
        return _too_long(location, text.encode("utf-8", "surrogateescape"), "array element", offset + win.offset(pos))
    return Item(location, value, text)


def _bad_element(win: _Window, location: str, bad_text: str, offset: int) -> Item | None:
    """An element that does not parse: complete (quarantine exactly its text and go on after
    it), cut by the read (None: read more), or without an end in sight (resynchronise at the next
    element, or quarantine an excerpt of what runs past the limit)."""
    buf, pos = win.buf, win.pos
    end = _element_end(buf, pos)
    if end == pos:  # a stray closing bracket: it is the bad element
        end = pos + 1
    if end is None and not win.eof and win.offset(pos) + MAX_ITEM_BYTES >= win.read_bytes:
        return None
    if end is None:
        end = _resync(buf, pos)
    note = ""
    if end is None:
        if not win.eof:
            return _skip_oversized(win, location, offset)
        stripped = buf.rstrip(" \t\r\n")
        end = len(stripped) - 1 if stripped.endswith("]") else len(buf)
        note = "" if stripped.endswith("]") else "; the file ends inside it (no closing ])"
    text = buf[pos:end]
    win.pos = end
    if not encodable(text):
        return Item(location, None, _readable(text), bad_text)
    if len(text.encode("utf-8")) > MAX_ITEM_BYTES:
        return _too_long(location, text.encode("utf-8"), "array element", offset + win.offset(pos))
    return Item(location, None, text, _element_reason(text) + note)


def _element_reason(text: str) -> str:
    """Why an element alone does not parse (positions relative to the element itself)."""
    try:
        jsontext.loads(text)
    except jsontext.BadJson as exc:
        reason = str(exc)
        return reason.replace("malformed JSON: ", "malformed JSON array element: ", 1)
    return "malformed JSON array element"


def _element_end(buf: str, pos: int) -> int | None:
    """Where the element at ``pos`` ends, by matching brackets outside strings; None when the
    text runs out first or a string is broken - a quote without its end on the line, or text
    right after a string (then only a later element can tell)."""
    depth = 0
    for match in _TOKEN.finditer(buf, pos):
        char = buf[match.start()]
        if char == '"':
            if match.end() - match.start() == 1:
                return None  # a quote without its end on the line
            after = _skip(buf, match.end(), " \t\r\n")
            if after < len(buf) and buf[after] not in ":,}]":
                return None  # text right after a string: its quoting is broken, so are these brackets
            continue
        if char in "{[":
            depth += 1
        elif char in "}]":
            if depth == 0:
                return match.start()
            depth -= 1
            if depth == 0:
                return match.end()
        elif depth == 0:
            return match.start()
    return None


def _resync(buf: str, pos: int) -> int | None:
    """The comma before the first later element that looks like an event - an object whose
    brackets balance and that names an ``eventId`` (it may be damaged itself) - where a broken
    element must have ended."""
    for match in _NEXT_OBJECT.finditer(buf, pos + 1):
        start = match.end()
        end = _element_end(buf, start)
        if end is not None and '"eventId"' in buf[start:end]:
            return match.start()
    return None


def _skip_oversized(win: _Window, location: str, offset: int) -> Item:
    """An element running past :data:`MAX_ITEM_BYTES`: keep its head, read on (a MiB kept at a
    time) to the next element, and report where it was and how long."""
    start = win.offset(win.pos)
    excerpt = win.buf[win.pos:win.pos + EXCERPT_BYTES].encode("utf-8", "surrogateescape")
    while True:
        end = _resync(win.buf, win.pos)
        if end is not None or win.eof:
            if end is None:
                stripped = win.buf.rstrip(" \t\r\n")
                end = len(stripped) - 1 if stripped.endswith("]") else len(win.buf)
            length = win.offset(end) - start
            win.pos = end
            return _too_long(location, excerpt, "array element", offset + start, length)
        win.pos = max(win.pos, len(win.buf) - _CHUNK)
        win.refill()


def _readable(text: str) -> str:
    """Text with undecodable bytes (kept as surrogate escapes) shown as U+FFFD, as for NDJSON."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _skip(buf: str, pos: int, chars: str) -> int:
    while pos < len(buf) and buf[pos] in chars:
        pos += 1
    return pos


def _encode(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# -- streams ----------------------------------------------------------------------------------

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


class _Limited(io.RawIOBase):
    """At most ``size`` bytes of a stream (one chunk of a file)."""

    def __init__(self, fh: IO[bytes], size: int):
        self._fh = fh
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._fh.read(min(len(buffer), self._left))
        self._left -= len(data)
        buffer[: len(data)] = data
        return len(data)


def _invalid(exc: UnicodeError) -> tuple[str, int]:
    """Decoding error handler: a lone surrogate in place of what cannot be decoded, so the item
    holding it is found and refused (``surrogateescape`` cannot escape UTF-16's bytes below 0x80)."""
    return "\ud800", exc.end  # type: ignore[attr-defined]


codecs.register_error("trailwarden.invalid", _invalid)


class _Transcoder(io.RawIOBase):
    """UTF-16 or UTF-32 in, UTF-8 out. Undecodable input comes out as invalid UTF-8 (kept
    surrogates), so the item holding it is refused like any other undecodable item."""

    def __init__(self, fh: IO[bytes], encoding: str):
        self._fh = fh
        self._decoder = codecs.getincrementaldecoder(encoding)("trailwarden.invalid")
        self._out = b""
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._out and not self._done:
            chunk = self._fh.read(_CHUNK)
            self._done = not chunk
            self._out = self._decoder.decode(chunk, final=self._done).encode("utf-8", "surrogatepass")
        n = min(len(buffer), len(self._out))
        buffer[:n] = self._out[:n]
        self._out = self._out[n:]
        return n
