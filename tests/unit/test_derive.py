"""The derived (base, instruct) pair: recipe, data split and leakage check, SFT, cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hneuron_lens import derive as D
from hneuron_lens.data.records import JudgedSample
from hneuron_lens.errors import DataError, ModelError, OutputError
from hneuron_lens.testing import tiny_hf_model, tiny_tokenizer


def test_recipe_is_validated_and_hashed():
    cfg = D.DeriveConfig()
    assert D.DeriveConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.recipe_hash() == D.DeriveConfig().recipe_hash()
    assert cfg.recipe_hash() != D.DeriveConfig(lr=1e-4).recipe_hash()
    for bad in ({"epochs": 0}, {"lr": -1.0}, {"batch_size": 0}, {"chat_template": "chatml"}):
        with pytest.raises(ValueError):
            D.DeriveConfig(**bad)


def test_sft_questions_stay_out_of_the_analysis_questions():
    sft = D.sft_questions()
    rest = D.analysis_questions()
    assert len(sft) == 300 and len({s.qid for s in sft}) == 300
    assert sft == D.sft_questions()  # seeded
    report = D.check_sft_leakage(sft, rest)
    pair = report.pairs[("sft", "analysis")]
    assert pair.ids == [] and pair.questions == []
    assert any(q.kind == "nonexistent" for q in rest)
    assert not any(q.kind == "nonexistent" for q in D.analysis_questions(nonexistent=False))
    assert D.sft_questions(D.DeriveConfig(seed=1)) != sft
    with pytest.raises(ValueError, match="none of the"):
        D.sft_questions(D.DeriveConfig(n_questions=10_000))


def test_leaked_samples_are_found():
    sft = D.sft_questions()
    leaked = JudgedSample("other-id", "  " + sft[0].question.upper(), "x", 0)
    report = D.check_sft_leakage(sft, [leaked])
    assert report.pairs[("sft", "analysis")].questions


def test_format_example_trains_the_answer_and_the_turn_end():
    tok = tiny_tokenizer()  # ChatML
    item = D.sft_questions()[0]
    ids, labels = D.format_example(tok, item)
    assert len(ids) == len(labels)
    trained = [i for i, lab in zip(ids, labels, strict=True) if lab != -100]
    text = tok.decode(trained)
    assert text.startswith(item.aliases[0]) and text.endswith("<|im_end|>")
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": f"{item.question} {D.PAPER_SUFFIX}"}],
        add_generation_prompt=True,
        tokenize=False,
    )
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    assert all(lab == -100 for lab in labels[:n_prompt])


def test_gemma_template_needs_gemma_tokens():
    tok = tiny_tokenizer()
    with pytest.raises(ModelError, match="start_of_turn"):
        D._set_chat_template(tok, D.DeriveConfig())
    tok.chat_template = None
    with pytest.raises(ModelError, match="no chat template"):
        D._set_chat_template(tok, D.DeriveConfig(chat_template=None))


def test_gemma_template_renders_gemma_turns():
    from jinja2 import Template

    text = Template(D.GEMMA_CHAT_TEMPLATE).render(
        bos_token="<bos>",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": "Paris."},
        ],
        add_generation_prompt=False,
    )
    assert text == (
        "<bos><start_of_turn>user\nBe brief.\n\nCapital of France?<end_of_turn>\n"
        "<start_of_turn>model\nParis.<end_of_turn>\n"
    )


@pytest.fixture(scope="module")
def tiny_derived(tmp_path_factory):
    root = tmp_path_factory.mktemp("derive")
    base = tiny_hf_model("llama")
    base.save_pretrained(root / "base")
    tiny_tokenizer().save_pretrained(root / "base")
    cfg = D.DeriveConfig(
        base=str(root / "base"), n_questions=24, epochs=1, batch_size=8, chat_template=None
    )
    derived = D.derive_sft(cfg, out_dir=root / "derived", progress=False)
    return root, cfg, derived


def test_sft_changes_only_mlp_weights_and_is_cached(tiny_derived):
    from safetensors.torch import load_file

    root, cfg, derived = tiny_derived
    assert not derived.cached and derived.path == root / "derived"
    m = derived.manifest["derive"]
    assert m["recipe"] == cfg.to_dict() and len(m["sft_question_ids"]) == 24
    assert m["log"]["n_steps"] == 3 and len(m["log"]["step_loss"]) == 3
    assert np.isfinite(m["log"]["step_loss"]).all()
    before = load_file(str(root / "base" / "model.safetensors"))
    after = load_file(str(root / "derived" / "model.safetensors"))
    assert before.keys() == after.keys()
    for name in before:
        same = torch.equal(before[name], after[name])
        assert same == (".mlp." not in name), name
    again = D.derive_sft(cfg, out_dir=root / "derived", progress=False)
    assert again.cached and again.manifest == derived.manifest
    assert "cached" in str(again)


def test_sft_is_deterministic(tiny_derived, tmp_path):
    from safetensors.torch import load_file

    root, cfg, _ = tiny_derived
    D.derive_sft(cfg, out_dir=tmp_path / "again", progress=False)
    a = load_file(str(root / "derived" / "model.safetensors"))
    b = load_file(str(tmp_path / "again" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_damaged_copy_is_rebuilt_and_foreign_dirs_refused(tiny_derived, tmp_path):
    import shutil

    root, cfg, _ = tiny_derived
    copy_dir = tmp_path / "copy"
    shutil.copytree(root / "derived", copy_dir)
    weights = copy_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # truncated
    rebuilt = D.derive_sft(cfg, out_dir=copy_dir, progress=False)
    assert not rebuilt.cached
    assert D.derive_sft(cfg, out_dir=copy_dir, progress=False).cached
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(OutputError):
        D.derive_sft(cfg, out_dir=foreign, progress=False)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_leakage_assertion_reads_the_manifest(tiny_derived, tmp_path):
    root, cfg, derived = tiny_derived
    sft = D.sft_questions(cfg)
    clean = [JudgedSample(q.qid, q.question, "x", 0) for q in D.analysis_questions(cfg)[:5]]
    assert D.assert_no_sft_leakage(derived.path, clean) == 24
    leaked = clean + [JudgedSample("new-id", sft[3].question, "x", 1)]
    with pytest.raises(DataError, match="SFT questions"):
        D.assert_no_sft_leakage(derived.path, leaked)
    assert D.assert_no_sft_leakage(root / "base", leaked) == 0  # not a derived model


def test_derived_pair_feeds_weight_drift(tiny_derived):
    from hneuron_lens.origin import weight_drift

    root, _, derived = tiny_derived
    report = weight_drift(
        root / "base", derived.path, [(0, 1), (1, 2)], n_permutations=200, progress=False
    )
    assert not report.identical
    assert all(np.all(v > 0) for v in report.components.values())


def test_write_questions_round_trip(tmp_path):
    from hneuron_lens.data.loaders import load_qa

    items = D.analysis_questions(nonexistent=True)
    path = D.write_questions(items, tmp_path / "q.jsonl")
    loaded, report = load_qa(path)
    assert [i.qid for i in loaded] == [i.qid for i in items if i.aliases]
    assert [i.aliases for i in loaded] == [i.aliases for i in items if i.aliases]
    first = json.loads(path.read_text().splitlines()[0])
    assert set(first) == {"qid", "question", "aliases"}
