"""A rule-based sentence splitter that needs no downloaded data.

A sentence ends at ``.``, ``!``, ``?``, an ellipsis or ``。！？``, with any closing quotes or
brackets after it, when whitespace and then something other than a lowercase letter follow. A
full stop does not end a sentence after a known abbreviation (``e.g.``, ``Dr.``, ``Fig.``,
``et al.``), an initial (``J. R. Smith``) or inside a number (``3.5``, which has no space after its
dot). A blank line always ends one; a single line break does unless the next line starts in
lowercase (prose wrapped at a fixed width). Text without any capital letter (lowercased
collections such as Cranfield) cannot be read by case, so there a lowercase word after the mark
does not keep the sentence going.
"""

from __future__ import annotations

import itertools
import re

from .tokens import strip_span

__all__ = ["split_sentences"]

# Lowercased, without their final dot. Words that are almost always followed by more of the
# sentence; abbreviations that often end one (etc., Inc.) are left out on purpose.
ABBREVIATIONS = frozenset(
    """
    mr mrs ms dr prof sr jr st mt rev gen capt lt sgt gov
    e.g i.e cf vs viz al approx ca dept univ resp
    """.split()
)
# Abbreviations that precede a number ("Fig. 2", "No. 5", "Jan. 3"); before anything else the dot
# ends the sentence ("The answer was no. Then").
NUMBERED = frozenset(
    """
    no nos fig figs eq eqs ref refs vol vols pp p ch sec sect tab
    jan feb mar apr jun jul aug sep sept oct nov dec
    """.split()
)

_END = re.compile(r"(?:[.!?]+|…+)[\"'”’»)\]]*(?=\s|$)|[。！？]+[」』”’)]*")
_BLANK_LINE = re.compile(r"\n[^\S\n]*\n")
_LINE_BREAK = re.compile(r"\n")
_OPENERS = "\"'“‘«([{"
_INITIALS = re.compile(r"(?:[A-Z]\.)*[A-Z]")


def split_sentences(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """The sentences of ``text[start:end]`` as ``(start, end)`` spans of ``text``, stripped of
    surrounding whitespace; together they hold every non-whitespace character of the span."""
    end = len(text) if end is None else end
    cuts = {start, end}
    cased = any(ch.isupper() for ch in text[start:end])
    for match in _END.finditer(text, start, end):
        if _ends_sentence(text, match, start, end, cased):
            cuts.add(match.end())
    for match in _BLANK_LINE.finditer(text, start, end):
        cuts.add(match.start())
    for match in _LINE_BREAK.finditer(text, start, end):
        following = _next_visible(text, match.end(), end)
        if following is None or not (cased and text[following].islower()):
            cuts.add(match.start())
    spans = []
    ordered = sorted(cuts)
    for a, b in itertools.pairwise(ordered):
        s, e = strip_span(text, a, b)
        if s < e:
            spans.append((s, e))
    return spans


def _next_visible(text: str, i: int, end: int) -> int | None:
    while i < end and text[i].isspace():
        i += 1
    return i if i < end else None


def _ends_sentence(text: str, match: re.Match, start: int, end: int, cased: bool) -> bool:
    mark = match.group()
    if mark[0] in "。！？":
        return True
    following = _next_visible(text, match.end(), end)
    if following is None:
        return True
    if cased and text[following].islower():  # "e.g. the", "... and so on", "approx. five"
        return False
    if mark.rstrip("\"'”’»)]") != ".":  # ?, !, ellipses, "?!"
        return True
    word_start = match.start()
    while word_start > start and not text[word_start - 1].isspace():
        word_start -= 1
    word = text[word_start : match.start()].lstrip(_OPENERS)
    if word.lower() in ABBREVIATIONS:
        return False
    if word.lower() in NUMBERED and (text[following].isdigit() or text[following] in "(["):
        return False
    return not _INITIALS.fullmatch(word if cased else word.upper())  # "J. Smith", "J.R.R. Tolkien"
