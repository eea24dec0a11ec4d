"""Splitting a byte stream into text lines, the way API.md promises.

`LineSplitter` turns the chunks read from a pipe into lines: ``\\n`` and
``\\r\\n`` end a line (a lone ``\\r`` stays in it), blank lines are kept, the
last line is delivered at EOF even without a newline, a line longer than
`limit` bytes is split into chunks of at most `limit` bytes that end on
UTF-8 character boundaries, and bytes that are not UTF-8 become U+FFFD.

The fast path decodes everything up to the last newline of a read in one
call and splits the text once; lines are only examined one by one when a
read holds a line that may exceed the limit.
"""

from __future__ import annotations

_NL = 0x0A
_CR = 0x0D


def _cut(data: bytes | bytearray | memoryview, limit: int) -> int:
    """Where to end a chunk of at most `limit` bytes without splitting a character."""
    pos = limit
    # Move back over UTF-8 continuation bytes (10xxxxxx) so the character's
    # lead byte starts the next chunk; a valid character has at most 3 of them.
    while pos > limit - 3 and pos > 1 and (data[pos] & 0xC0) == 0x80:
        pos -= 1
    if (data[pos] & 0xC0) == 0x80:  # not UTF-8 anyway: cut at the limit
        return limit
    return pos


def _all_short(data: bytes | bytearray, limit: int) -> bool:
    """True when no line of `data` can be longer than `limit` bytes (False: maybe).

    A line of more than `limit` bytes covers a whole aligned block of
    ``limit // 2`` bytes without a newline; finding a newline in every such
    block takes a few `find` calls per read instead of a look at every line.
    """
    step = limit // 2
    find = data.find
    for start in range(0, len(data) - step + 1, step):
        if find(b"\n", start, start + step) < 0:
            return False
    return True


def _decode(data: bytes | bytearray) -> str:
    return data.decode("utf-8", "replace")


class LineSplitter:
    """Incremental bytes-to-lines splitter for one output stream."""

    __slots__ = ("_limit", "_partial")

    def __init__(self, limit: int) -> None:
        if limit < 4:
            raise ValueError(f"line limit must be at least 4 bytes, got {limit}")
        self._limit = limit
        self._partial = bytearray()  # the bytes of the line being read, never a full line

    def feed(self, data: bytes) -> list[str]:
        """Add a chunk read from the stream; return the lines it completed."""
        end = data.rfind(b"\n")
        if end < 0:
            self._partial += data
            return self._overflow()
        if self._partial:
            self._partial += data[:end]
            complete: bytes | bytearray = self._partial
            self._partial = bytearray(data[end + 1 :])
        else:
            complete = data[:end]
            self._partial = bytearray(data[end + 1 :])
        lines = self._split(complete)
        if len(self._partial) > self._limit:
            lines += self._overflow()
        return lines

    def flush(self) -> list[str]:
        """At EOF: the last line, even without a trailing newline."""
        if not self._partial:
            return []
        rest = self._partial
        self._partial = bytearray()
        if rest[-1] == _CR:
            del rest[-1]
        return self._chunks(rest)

    def _split(self, complete: bytes | bytearray) -> list[str]:
        """Lines of a region that ends just before a newline."""
        limit = self._limit
        text = _decode(complete)
        lines = text.split("\n")
        if len(complete) > limit and not _all_short(complete, limit):
            # A line may be too long.  ASCII: characters are bytes.  Otherwise a
            # character holds at most 4 bytes, so only a long text needs bytes.
            longest = max(map(len, lines))
            if longest > limit or (longest * 4 > limit and not text.isascii()):
                return self._split_long(complete)
        if "\r" in text:
            lines = [line[:-1] if line.endswith("\r") else line for line in lines]
        return lines

    def _split_long(self, complete: bytes | bytearray) -> list[str]:
        """Lines of a region that may hold lines longer than the limit."""
        out: list[str] = []
        for line in complete.split(b"\n"):
            if line and line[-1] == _CR:
                line = line[:-1]
            out += self._chunks(line)
        return out

    def _chunks(self, line: bytes | bytearray) -> list[str]:
        """One line as chunks of at most `limit` bytes (a single chunk if it fits)."""
        limit = self._limit
        out = []
        start = 0
        while len(line) - start > limit:
            cut = start + _cut(memoryview(line)[start:], limit)
            out.append(_decode(line[start:cut]))
            start = cut
        out.append(_decode(line[start:]))
        return out

    def _overflow(self) -> list[str]:
        """Emit chunks of a line without newline that grew past the limit."""
        partial = self._partial
        limit = self._limit
        out: list[str] = []
        # A line of exactly `limit` bytes may still be followed by "\r\n".
        while len(partial) > limit and not (len(partial) == limit + 1 and partial[-1] == _CR):
            cut = _cut(partial, limit)
            out.append(_decode(partial[:cut]))
            del partial[:cut]
        return out
