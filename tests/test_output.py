"""Line splitting: the promises of API.md, checked against a plain reference."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_overseer._output import LineSplitter, _all_short


def _lines_of(data: bytes) -> list[bytes]:
    """Reference: lines end at \\n; a last line without one still counts; \\r\\n is one end."""
    parts = data.split(b"\n")
    last = parts.pop()
    if last:
        parts.append(last)
    return [p[:-1] if p.endswith(b"\r") else p for p in parts]


def _greedy_chunks(text: str, limit: int) -> list[str]:
    """Reference: longest prefixes of at most `limit` UTF-8 bytes, whole characters."""
    out = []
    while len(text.encode()) > limit:
        size = n = 0
        while size + len(text[n].encode()) <= limit:
            size += len(text[n].encode())
            n += 1
        out.append(text[:n])
        text = text[n:]
    out.append(text)
    return out


def _feed_in_pieces(data: bytes, cuts: list[int], limit: int) -> list[str]:
    splitter = LineSplitter(limit)
    out: list[str] = []
    start = 0
    for cut in sorted(c % (len(data) + 1) for c in cuts):
        out += splitter.feed(data[start:cut]) if cut > start else []
        start = max(start, cut)
    out += splitter.feed(data[start:]) if start < len(data) else []
    return out + splitter.flush()


line_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\n"), max_size=40)


@given(
    st.lists(st.tuples(line_text, st.sampled_from(["\n", "\r\n"])), max_size=8),
    st.one_of(st.just(""), line_text),
    st.lists(st.integers(min_value=0, max_value=400), max_size=10),
    st.integers(min_value=4, max_value=24),
)
def test_valid_utf8_any_reads_any_limit(
    lines: list[tuple[str, str]], last: str, cuts: list[int], limit: int
) -> None:
    data = ("".join(t + end for t, end in lines) + last).encode()
    expected = [c for line in _lines_of(data) for c in _greedy_chunks(line.decode(), limit)]
    got = _feed_in_pieces(data, cuts, limit)
    assert got == expected
    assert all(len(chunk.encode()) <= limit for chunk in got)


@given(st.binary(max_size=300), st.lists(st.integers(min_value=0, max_value=300), max_size=10))
def test_any_bytes_decoded_with_replace(data: bytes, cuts: list[int]) -> None:
    got = _feed_in_pieces(data, cuts, limit=1000)
    assert got == [line.decode("utf-8", "replace") for line in _lines_of(data)]


@pytest.mark.parametrize(
    ("data", "lines"),
    [
        (b"", []),
        (b"\n", [""]),
        (b"a\n\nb", ["a", "", "b"]),
        (b"a\r\nb\r\n", ["a", "b"]),
        (b"progress\r50%\rdone\n", ["progress\r50%\rdone"]),
        (b"no newline at the end", ["no newline at the end"]),
        (b"ends in cr\r", ["ends in cr"]),
        (b"\xff\xfebad\n", ["\ufffd\ufffdbad"]),
    ],
)
def test_edge_cases(data: bytes, lines: list[str]) -> None:
    splitter = LineSplitter(16384)
    assert splitter.feed(data) + splitter.flush() == lines


def test_long_line_split_into_chunks_that_rejoin() -> None:
    text = ("é" * 7 + "x") * 10_000  # 150,000 bytes, two-byte characters at odd places
    splitter = LineSplitter(16384)
    chunks = []
    data = text.encode() + b"\n"
    for start in range(0, len(data), 4093):  # reads that cut characters in half
        chunks += splitter.feed(data[start : start + 4093])
    chunks += splitter.flush()
    assert "".join(chunks) == text
    assert all(len(c.encode()) <= 16384 for c in chunks)
    assert len(chunks) == 10


def test_exact_limit_followed_by_crlf_is_one_line() -> None:
    splitter = LineSplitter(8)
    assert splitter.feed(b"12345678\r") == []
    assert splitter.feed(b"\n") == ["12345678"]


def test_limit_must_hold_a_character() -> None:
    with pytest.raises(ValueError, match="at least 4 bytes"):
        LineSplitter(3)


@given(
    st.lists(st.integers(min_value=0, max_value=80), min_size=1, max_size=40),
    st.integers(min_value=4, max_value=40),
)
def test_the_long_line_check_never_misses_one(lengths: list[int], limit: int) -> None:
    # _all_short() looks at a few blocks only; True must mean no line is too long.
    data = b"\n".join(b"x" * n for n in lengths)
    if _all_short(data, limit):
        assert max(lengths) <= limit, (lengths, limit)
    if max(lengths) < limit // 2:
        assert _all_short(data, limit)  # and short lines take the fast path
