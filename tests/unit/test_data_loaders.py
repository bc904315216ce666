"""Loaders and record formats on synthetic files written to tmp_path."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hneuron_lens.data.formats import (
    DataFormatError,
    LoadReport,
    as_str_list,
    decode_byte_level,
    decode_sentencepiece,
    reconstruct_answer_text,
)
from hneuron_lens.data.loaders import (
    load_consistency,
    load_judged,
    load_multiple_choice,
    load_qa,
    load_release,
    looks_like_hub_id,
    release_qids_path,
    split_from_name,
)
from hneuron_lens.data.records import FAITHFUL, HALLUCINATED
from hneuron_lens.errors import DataError


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text(
        "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8"
    )
    return path


# --------------------------------------------------------------------------- open QA


def test_open_qa_jsonl_variants(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "qa.jsonl",
        [
            {"id": "a", "question": "Capital of France?", "answer": "Paris"},
            {"id": "b", "question": "Two plus two?", "answers": ["4", "four", "4"]},
            {
                "question_id": "c",
                "question": "TriviaQA style?",
                "answer": {"value": "Yes", "aliases": ["yes", "Yep"]},
            },
        ],
    )
    items, report = load_qa(path)
    assert report.format == "open_qa"
    assert [i.qid for i in items] == ["a", "b", "c"]
    assert items[0].aliases == ("Paris",)
    assert items[1].aliases == ("4", "four")
    assert items[2].aliases == ("Yes", "yes", "Yep")
    assert all(i.source == "qa" for i in items)
    assert report.n_lines == 3 and report.n_loaded == 3 and not report.skipped


def test_open_qa_malformed_lines_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_jsonl(
        tmp_path / "qa.jsonl",
        [
            {"id": "a", "question": "Q1?", "answer": "A1"},
            "{not json",
            {"id": "b", "question": "", "answer": "A2"},
            {"id": "c", "question": "Q3?", "answer": []},
            "[1, 2]",
            {"id": "a", "question": "Q1 again?", "answer": "A1"},
            {"id": "d", "question": "Q4?", "answer": "A4"},
        ],
    )
    with caplog.at_level(logging.WARNING):
        items, report = load_qa(path)
    assert [i.qid for i in items] == ["a", "d"]
    assert report.n_lines == 7 and report.n_loaded == 2
    assert [(s.line, s.field) for s in report.skipped] == [
        (2, "<json>"),
        (3, "question"),
        (4, "answer"),
        (5, "<record>"),
        (6, "<qid>"),
    ]
    assert report.counts_by_reason["empty"] == 1
    assert "duplicate id 'a'" in report.skipped[-1].reason
    assert "skipped 5" in str(report)
    assert "skipped 5" in caplog.text


def test_strict_mode_names_file_line_field(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "bad.jsonl",
        [{"id": "a", "question": "Q?", "answer": "A"}, {"id": "b", "question": 7, "answer": "A"}],
    )
    with pytest.raises(DataFormatError) as info:
        load_qa(path, strict=True)
    msg = str(info.value)
    assert "bad.jsonl:2 question" in msg and "\n" not in msg
    assert info.value.line == 2 and info.value.field == "question"


def test_open_qa_json_csv_parquet(tmp_path: Path) -> None:
    import pandas as pd

    rows = [
        {"qid": "x1", "question": "Q1?", "answer": "A1"},
        {"qid": "x2", "question": "Q2?", "answer": "['A2', 'B2']"},
    ]
    (tmp_path / "qa.json").write_text(json.dumps(rows), encoding="utf-8")
    pd.DataFrame(rows).to_csv(tmp_path / "qa.csv", index=False)
    pd.DataFrame(rows).to_parquet(tmp_path / "qa.parquet")
    for name in ("qa.json", "qa.csv", "qa.parquet"):
        items, report = load_qa(tmp_path / name)
        assert [i.qid for i in items] == ["x1", "x2"], name
        assert items[1].aliases == ("A2", "B2"), name
        assert report.n_loaded == 2


def test_open_qa_explicit_keys_and_wrapped_dict_json(tmp_path: Path) -> None:
    path = tmp_path / "custom.json"
    path.write_text(json.dumps({"k1": {"prompt_text": "Q?", "gold_answer": "A"}}), encoding="utf-8")
    items, _ = load_qa(path, format="open_qa", question_key="prompt_text", answer_key="gold_answer")
    assert items[0].qid == "k1" and items[0].question == "Q?" and items[0].aliases == ("A",)


def test_unknown_format_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown format"):
        load_qa(tmp_path / "x.jsonl", format="nope")
    with pytest.raises(DataError, match="no such file") as err:
        load_qa(tmp_path / "missing.jsonl")
    assert err.value.file == str(tmp_path / "missing.jsonl")
    path = write_jsonl(tmp_path / "weird.jsonl", [{"foo": 1}])
    with pytest.raises(DataFormatError, match="cannot detect"):
        load_qa(path)


# --------------------------------------------------------------------------- consistency


def consistency_row(qid: str, n: int = 3) -> dict:
    return {
        qid: {
            "question": f"{qid}?",
            "responses": ["r"] * n,
            "judges": ["true"] * (n - 1) + ["False"],
            "ground_truth": ["g1", "G1"],
        }
    }


def test_consistency(tmp_path: Path) -> None:
    bad = {
        "q3": {
            "question": "q3?",
            "responses": ["a", "b"],
            "judges": ["true"],
            "ground_truth": ["x"],
        }
    }
    path = write_jsonl(
        tmp_path / "cons.jsonl", [consistency_row("q1"), consistency_row("q2", 1), bad]
    )
    samples, report = load_consistency(path)
    assert [s.qid for s in samples] == ["q1", "q2"]
    assert samples[0].judges == ("true", "true", "false")
    assert samples[0].n_true == 2 and samples[0].n_false == 1
    assert samples[0].to_qa_item().aliases == ("g1", "G1")
    assert [(s.line, s.field) for s in report.skipped] == [(3, "judges")]
    items, report2 = load_qa(path)
    assert report2.format == "consistency" and [i.qid for i in items] == ["q1", "q2"]


# --------------------------------------------------------------------------- judged


def test_judged_labels(tmp_path: Path) -> None:
    rows = [
        {"id": "1", "question": "Q", "response": "Paris is it", "label": 1, "answer_text": "Paris"},
        {"id": "2", "question": "Q", "response": "R", "label": "faithful"},
        {"id": "3", "question": "Q", "response": "R", "hallucinated": True},
        {"id": "4", "question": "Q", "response": "R", "correct": True},
        {"id": "5", "question": "Q", "response": "R", "label": True},
        {"id": "6", "question": "Q", "response": "R", "label": 2},
        {"id": "7", "question": "Q", "response": "R", "label": 0, "answer_text": "nope"},
    ]
    samples, report = load_judged(write_jsonl(tmp_path / "j.jsonl", rows), split="test")
    assert [(s.qid, s.label) for s in samples] == [
        ("1", HALLUCINATED),
        ("2", FAITHFUL),
        ("3", HALLUCINATED),
        ("4", FAITHFUL),
    ]
    assert samples[0].answer_text == "Paris" and samples[0].split == "test"
    assert samples[0].meta["line"] == 1
    assert [(s.line, s.field) for s in report.skipped] == [
        (5, "label"),
        (6, "label"),
        (7, "answer_text"),
    ]


# --------------------------------------------------------------------------- release


def write_release(tmp_path: Path) -> Path:
    rows = [
        {
            "a1": {
                "question": "Q1",
                "response": "The Serpentine",
                "tokenized_response": ["The", "ĠSer", "pent", "ine"],
                "answer_tokens": ["The", "ĠSer", "pent", "ine"],
            }
        },
        {
            "a2": {
                "question": "Q2",
                "response": "Simón Bolívar",
                "tokenized_response": ["Sim", "Ã³n", "ĠBol", "ÃŃvar"],
                "answer_tokens": ["Sim", "Ã³n", "ĠBol", "ÃŃvar"],
            }
        },
        {
            "a3": {
                "question": "Q3",
                "response": "Peter, Susan",
                "tokenized_response": ["Peter", ",", "ĠSusan"],
                "answer_tokens": ["Peter", "ĠSusan"],
            }
        },
        {
            "a4": {
                "question": "Q4",
                "response": "Unknown",
                "tokenized_response": ["Unknown"],
                "answer_tokens": [],
            }
        },
        {
            "a5": {
                "question": "Q5",
                "response": "x",
                "tokenized_response": ["x"],
                "answer_tokens": ["x"],
            }
        },
        '{"a6": {"question": "Q6", "respo',
        {"a7": {"question": "Q7", "response": "x", "answer_tokens": "x"}},
    ]
    path = write_jsonl(tmp_path / "Toy_TriviaQA_answer_tokens_train.jsonl", rows)
    (tmp_path / "Toy_TriviaQA_train_qids.json").write_text(
        json.dumps({"t": ["a1", "a2", "a7", "zz"], "f": ["a3", "a4", "a3"]}), encoding="utf-8"
    )
    return path


def test_release(tmp_path: Path) -> None:
    path = write_release(tmp_path)
    assert release_qids_path(path).name == "Toy_TriviaQA_train_qids.json"
    samples, report = load_release(path)
    by = {s.qid: s for s in samples}
    assert set(by) == {"a1", "a2", "a3", "a4"}
    assert by["a1"].label == FAITHFUL and by["a3"].label == HALLUCINATED
    assert by["a1"].answer_text == "The Serpentine" and by["a1"].split == "train"
    assert by["a2"].answer_text == "Simón Bolívar"
    assert by["a3"].answer_text is None and by["a3"].answer_tokens == ("Peter", "ĠSusan")
    assert by["a4"].answer_tokens is None and by["a4"].answer_text is None
    assert report.counts_by_reason == {
        "id not in qids file": 1,
        "unparseable JSON": 1,
        "expected a list of strings": 1,
    }
    assert [(s.line, s.field) for s in report.skipped] == [
        (5, "<qid>"),
        (6, "<json>"),
        (7, "answer_tokens"),
    ]
    assert report.notes["qids file id not in responses"] == 1
    assert report.notes["repeated id in qids file"] == 1
    assert report.notes["answer_text None: empty answer_tokens"] == 1
    assert report.notes["answer_text None: not a substring of the response"] == 1
    with pytest.raises(DataFormatError, match=r"\.jsonl:6 "):
        load_release(path, strict=True)


def test_release_qids_conflict(tmp_path: Path) -> None:
    path = write_release(tmp_path)
    qpath = tmp_path / "ids.json"
    qpath.write_text(json.dumps({"t": ["a1"], "f": ["a1"]}), encoding="utf-8")
    with pytest.raises(DataFormatError, match="both 't' and 'f'"):
        load_release(path, qpath)


def test_decoders() -> None:
    assert decode_byte_level(["Hello", "Ġworld", "Ċ"]) == "Hello world\n"
    assert decode_byte_level(["Ã"]) is None
    assert decode_sentencepiece(["▁Hello", "▁w", "<0xC3>", "<0xA9>"]) == " Hello wé"
    assert reconstruct_answer_text(["▁Paris"], "It is Paris.") == "Paris"
    assert reconstruct_answer_text([], "x") is None


@given(st.text(min_size=1, max_size=30))
@settings(max_examples=200, deadline=None)
def test_byte_level_roundtrip(text: str) -> None:
    from hneuron_lens.data.formats import _BYTE_DECODER

    encoder = {b: c for c, b in _BYTE_DECODER.items()}
    pieces = ["".join(encoder[b] for b in ch.encode("utf-8")) for ch in text]
    assert decode_byte_level(pieces) == text
    assert reconstruct_answer_text(pieces, f"<<{text}>>") == (text.strip() or None)


@given(st.lists(st.text(min_size=0, max_size=8), min_size=0, max_size=6))
def test_as_str_list_property(values: list[str]) -> None:
    expected = list(dict.fromkeys(v.strip() for v in values if v.strip()))
    if not expected:
        with pytest.raises(ValueError):
            as_str_list(values, "answer")
    else:
        assert as_str_list(values, "answer") == expected


# --------------------------------------------------------------------------- multiple choice


def test_multiple_choice_layouts(tmp_path: Path) -> None:
    mmlu = write_jsonl(
        tmp_path / "mmlu.jsonl",
        [
            {"question": "Q", "choices": ["a", "b", "c", "d"], "answer": 2},
            {"question": "Q", "choices": ["a", "b"], "answer": 5},
        ],
    )
    items, report = load_multiple_choice(mmlu)
    assert report.format == "multiple_choice/mmlu"
    assert items[0].answer_index == 2 and items[0].options == ("a", "b", "c", "d")
    assert [(s.line, s.field) for s in report.skipped] == [(2, "answer")]

    medqa = write_jsonl(
        tmp_path / "medqa.jsonl",
        [
            {"question": "Q", "options": {"A": "x", "B": "y", "C": "z"}, "answer_idx": "B"},
            {
                "question": "Q",
                "options": [{"key": "A", "value": "x"}, {"key": "B", "value": "y"}],
                "answer_idx": "A",
            },
        ],
    )
    items, report = load_multiple_choice(medqa)
    assert report.format == "multiple_choice/medqa"
    assert [i.answer_index for i in items] == [1, 0] and items[0].options == ("x", "y", "z")

    def medmcqa(name: str, cops: list[int]) -> Path:
        return write_jsonl(
            tmp_path / name,
            [
                {
                    "id": str(i),
                    "question": "Q",
                    "opa": "a",
                    "opb": "b",
                    "opc": "c",
                    "opd": "d",
                    "cop": c,
                }
                for i, c in enumerate(cops)
            ],
        )

    items, _ = load_multiple_choice(medmcqa("hub.jsonl", [0, 3, 1]))
    assert [i.answer_index for i in items] == [0, 3, 1]
    items, _ = load_multiple_choice(medmcqa("orig.jsonl", [4, 1, 2]))
    assert [i.answer_index for i in items] == [3, 0, 1]
    with pytest.raises(ValueError, match="answer_base"):
        load_multiple_choice(medmcqa("amb.jsonl", [1, 2]))
    items, _ = load_multiple_choice(tmp_path / "amb.jsonl", answer_base=1)
    assert [i.answer_index for i in items] == [0, 1]


def test_multiple_choice_explicit_keys(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "custom.jsonl",
        [
            {"stem": "Q", "opts": ["yes", "no"], "gold": "no"},
            {"stem": "Q", "opts": ["yes", "no"], "gold": "B"},
        ],
    )
    items, _ = load_multiple_choice(
        path, question_key="stem", options_key="opts", answer_key="gold"
    )
    assert [i.answer_index for i in items] == [1, 1]


# --------------------------------------------------------------------------- misc


def test_helpers() -> None:
    assert looks_like_hub_id("mandarjoshi/trivia_qa")
    assert not looks_like_hub_id("data/file.jsonl")
    assert split_from_name("X_answer_tokens_test.jsonl") == "test"
    assert split_from_name("dev-set.json") == "validation"
    assert split_from_name("contest.json") is None


def test_load_report_roundtrip() -> None:
    report = LoadReport(file="f.jsonl", format="open_qa", n_lines=3, n_loaded=2)
    report.skip(2, "question", "empty")
    report.notes["x"] += 1
    again = LoadReport.from_dict(json.loads(json.dumps(report.to_dict())))
    assert again == report
    assert str(again) == "f.jsonl [open_qa]: 2/3 loaded; skipped 1 (empty: 1); notes (x: 1)"
