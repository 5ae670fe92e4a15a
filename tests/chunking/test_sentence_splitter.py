"""The rule-based sentence splitter, case by case."""

import pytest

from embedtune.chunking import split_sentences


def sentences(text):
    return [text[s:e] for s, e in split_sentences(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("One. Two! Three? Four", ["One.", "Two!", "Three?", "Four"]),
        (
            "Use a solvent, e.g. ethanol. Then heat it.",
            ["Use a solvent, e.g. ethanol.", "Then heat it."],
        ),
        ("That is, i.e. This one. Next.", ["That is, i.e. This one.", "Next."]),
        (
            "Dr. Smith met Prof. Jones. They talked.",
            ["Dr. Smith met Prof. Jones.", "They talked."],
        ),
        (
            "The pH rose to 3.5 in the tank. It stayed.",
            ["The pH rose to 3.5 in the tank.", "It stayed."],
        ),
        (
            "J. R. R. Tolkien wrote it. We read it.",
            ["J. R. R. Tolkien wrote it.", "We read it."],
        ),
        (
            "As shown in Fig. 2 and Eq. 3, it works. Good.",
            ["As shown in Fig. 2 and Eq. 3, it works.", "Good."],
        ),
        (
            "See No. 5 and Fig. (a) here. The answer was no. Then fig. It ends.",
            [
                "See No. 5 and Fig. (a) here.",
                "The answer was no.",
                "Then fig.",
                "It ends.",
            ],
        ),
        (
            "Smith et al. (2019) found it. Others did not.",
            ["Smith et al. (2019) found it.", "Others did not."],
        ),
        ("Wait... What happened? Nothing.", ["Wait...", "What happened?", "Nothing."]),
        (
            "It trailed off… and went on. Done.",
            ["It trailed off… and went on.", "Done."],
        ),
        ('He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
        (
            "(See the appendix.) The results follow.",
            ["(See the appendix.)", "The results follow."],
        ),
        ("Really?! Yes.", ["Really?!", "Yes."]),
        (
            "It was founded in 1998. The rest is history.",
            ["It was founded in 1998.", "The rest is history."],
        ),
        ("Visit example.com today. Thanks.", ["Visit example.com today.", "Thanks."]),
        (
            "Title line\nThe body starts here. More.",
            ["Title line", "The body starts here.", "More."],
        ),
        (
            "a line that is\nwrapped in the middle. Next.",
            ["a line that is\nwrapped in the middle.", "Next."],
        ),
        ("para one\n\nlowercase para two", ["para one", "lowercase para two"]),
        ("これは文です。これも文です。", ["これは文です。", "これも文です。"]),
        ("  \n  ", []),
        ("", []),
        # lowercased collections (Cranfield, ADI): case cannot tell, so a full stop ends a sentence
        (
            "a wing in a slipstream . an experimental study . the results, e.g. the curves .",
            [
                "a wing in a slipstream .",
                "an experimental study .",
                "the results, e.g. the curves .",
            ],
        ),
        (
            "written by j. smith in 1990. it works",
            ["written by j. smith in 1990.", "it works"],
        ),
        ("one line\nnext line", ["one line", "next line"]),
        ("no end mark at all", ["no end mark at all"]),
    ],
)
def test_cases(text, expected):
    assert sentences(text) == expected


def test_spans_cover_every_visible_character_and_point_into_the_text():
    text = "  Dr. Who?  Yes!\n\n\tA new paragraph... with more.  "
    spans = split_sentences(text)
    covered = {i for s, e in spans for i in range(s, e)}
    assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())
    assert spans == sorted(spans) and all(text[s:e] == text[s:e].strip() for s, e in spans)


def test_a_span_of_a_larger_text():
    text = "Skip this. Keep one. Keep two. Skip that."
    start, end = text.index("Keep"), text.index(" Skip that")
    assert [text[s:e] for s, e in split_sentences(text, start, end)] == [
        "Keep one.",
        "Keep two.",
    ]
