"""The optional LLM span tagger: strict contiguous-span parser, fake local server, rule fallback."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hneuron_lens.answer import LLMSpanTagger, UnparseableSpan, parse_span_reply
from hneuron_lens.data import JudgedSample
from hneuron_lens.pipeline import attach_answer_text

from .test_llm_judge import server  # noqa: F401  (fixture: scripted OpenAI-compatible server)


def test_parser_is_strict():
    assert parse_span_reply("Paris", "It is Paris.") == (6, 11)
    assert parse_span_reply("  'Paris' ", "It is Paris.") == (6, 11)
    assert parse_span_reply("none.", "No idea.") is None
    for bad in ["", "paris", "Paris, France", "It is\nParis", "The answer is Paris"]:
        with pytest.raises(UnparseableSpan):
            parse_span_reply(bad, "It is Paris.")


@given(st.text(min_size=1, max_size=40), st.integers(0, 39), st.integers(1, 40))
def test_parsed_span_is_the_reply_verbatim(response, a, n):
    piece = response[a : a + n].strip()
    if not piece or "\n" in piece or piece.upper().rstrip(".") == "NONE" or piece[0] in "\"'`“‘":
        return
    start, end = parse_span_reply(piece, response)
    assert response[start:end] == piece


def test_tagger_against_fake_server(server):  # noqa: F811
    server.script = [(200, "Christopher Marlowe"), (200, "the playwright"), (200, "NONE")]
    tagger = LLMSpanTagger(server.url, "fake-model", max_retries=0)
    loc = tagger.tag("Who wrote Hamlet?", "Hamlet was written by Christopher Marlowe.")
    assert (loc.text, loc.method) == ("Christopher Marlowe", "llm")
    assert tagger.tag("Q?", "A reply without it.") is None and tagger.n_unparseable == 1
    assert tagger.tag("Q?", "I don't know.") is None
    assert "Who wrote Hamlet?" in server.requests[0]["body"]["messages"][0]["content"]


def test_pipeline_uses_tagger_then_rules(server):  # noqa: F811
    server.script = [(200, "Mount Everest"), (200, "garbage")]
    tagger = LLMSpanTagger(server.url, "fake-model", max_retries=0)
    samples = [
        JudgedSample("a", "Highest mountain?", "Surely Mount Everest.", 0, aliases=("Everest",)),
        JudgedSample("b", "Capital of France?", "It is Paris.", 0, aliases=("Paris",)),
    ]
    kept, missing = attach_answer_text(samples, tagger=tagger)
    assert [s.answer_text for s in kept] == ["Mount Everest", "Paris"] and not missing
