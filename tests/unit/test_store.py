"""ActivationStore on synthetic features: layout, fingerprint checks, integrity, reads."""

from __future__ import annotations

import json
import logging
import zlib

import numpy as np
import pytest

from hneuron_lens.features import FeatureSplit, NeuronLayout
from hneuron_lens.store import (
    ActivationStore,
    StoreBusyError,
    StoreMismatchError,
    fingerprint_diff,
)

LAYOUT = NeuronLayout((4, 6, 5))  # varied d_mlp: 15 features
REGIONS = ("answer", "other")
FP = {"model": {"name": "fake", "weights_sha256": "abc"}, "cett_config": {"reduce": "mean"}}


def fake_rows(ids: list[str], seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic per-id CETT-like values (a function of the id only)."""
    out = {}
    for k, region in enumerate(REGIONS):
        rows = []
        for sid in ids:
            rng = np.random.default_rng(zlib.crc32(f"{sid}/{region}/{seed}".encode()))
            rows.append(rng.lognormal(-5, 1.5, LAYOUT.n_features).astype(np.float32) + k)
        out[region] = np.stack(rows)
    return out


def fill(store: ActivationStore, n: int, batch: int = 3, prefix: str = "s") -> list[str]:
    store.open_for(FP, layout=LAYOUT, regions=REGIONS)
    ids = [f"{prefix}{i:03d}" for i in range(n)]
    for start in range(0, n, batch):
        b = ids[start : start + batch]
        store.write_batch(
            b,
            [i % 2 for i in range(start, start + len(b))],
            ["train" if i % 3 else "test" for i in range(start, start + len(b))],
            fake_rows(b),
        )
    store.close()
    return ids


def expected(ids: list[str], region: str, dtype: str = "float16") -> np.ndarray:
    return fake_rows(sorted(ids))[region].astype(dtype)


def test_roundtrip_chunks_and_reads(tmp_path):
    store = ActivationStore(tmp_path / "st", chunk_size=4)
    ids = fill(store, 10)
    chunk_json = sorted((tmp_path / "st" / "chunks").glob("*.json"))
    assert len(chunk_json) == 3  # 4 + 4 + 2
    assert len(store) == 10 and store.ids == sorted(ids)
    again = ActivationStore(tmp_path / "st")
    assert again.dtype == "float16" and again.layout == LAYOUT
    assert again.ids == sorted(ids)
    X, y, got = again.features("answer")
    assert got == sorted(ids)
    np.testing.assert_array_equal(X, expected(ids, "answer"))
    np.testing.assert_array_equal(y, [int(s[1:]) % 2 for s in got])
    manifest = json.loads((tmp_path / "st" / "manifest.json").read_text())
    assert manifest["counts"]["n_samples"] == 10
    assert manifest["counts"]["by_split"] == {"test": 4, "train": 6}
    info = again.info()
    assert info["n_samples"] == 10 and info["n_features"] == 15 and info["bytes"] > 0


def test_split_and_layers(tmp_path):
    store = ActivationStore(tmp_path / "st", chunk_size=4)
    ids = fill(store, 10)
    train = store.split("train")
    assert isinstance(train, FeatureSplit) and train.layout == LAYOUT
    train_ids = sorted(i for i in ids if int(i[1:]) % 3)
    assert train.ids == train_ids
    np.testing.assert_array_equal(train.region("other"), expected(train_ids, "other"))
    X, _, _ = store.features("answer", layers=[1], split="train")
    np.testing.assert_array_equal(X, expected(train_ids, "answer")[:, 4:10])
    X, _, _ = store.features("answer", layers=[0, 2])
    full = expected(ids, "answer")
    np.testing.assert_array_equal(X, np.concatenate([full[:, :4], full[:, 10:]], axis=1))
    with pytest.raises(KeyError, match="split 'dev'"):
        store.split("dev")
    with pytest.raises(KeyError, match="region 'input'"):
        store.features("input")


def test_compact_gives_memmaps(tmp_path):
    store = ActivationStore(tmp_path / "st", chunk_size=4)
    ids = fill(store, 10)
    assert not store.info()["compacted"]
    store.compact()
    assert store.info()["compacted"]
    assert len(list((tmp_path / "st" / "chunks").glob("*.json"))) == 2  # one per split
    reopened = ActivationStore(tmp_path / "st", verify=True)
    test = reopened.split("test")
    x = test.region("answer")
    assert isinstance(x, np.memmap) or isinstance(getattr(x, "base", None), np.memmap)
    test_ids = sorted(i for i in ids if int(i[1:]) % 3 == 0)
    np.testing.assert_array_equal(x, expected(test_ids, "answer"))
    X, _, _ = reopened.features("other", layers=[1, 2], split="train")
    assert isinstance(X.base, np.memmap) or isinstance(X, np.memmap)  # contiguous layers: a view
    # writing after compaction appends new chunks
    reopened.open_for(FP, layout=LAYOUT, regions=REGIONS)
    reopened.write_batch(["z1"], [1], ["train"], fake_rows(["z1"]))
    reopened.close()
    assert "z1" in ActivationStore(tmp_path / "st").split("train").ids


def test_float32_and_dtype_mismatch(tmp_path):
    store = ActivationStore(tmp_path / "st", dtype="float32")
    ids = fill(store, 5)
    X, _, _ = store.features("answer")
    assert X.dtype == np.float32
    np.testing.assert_array_equal(X, expected(ids, "answer", "float32"))
    with pytest.raises(StoreMismatchError, match="dtype: 'float32' != 'float16'"):
        ActivationStore(tmp_path / "st", dtype="float16").open_for(
            FP, layout=LAYOUT, regions=REGIONS
        )


def test_fingerprint_mismatch_names_fields_and_overwrite(tmp_path):
    store = ActivationStore(tmp_path / "st")
    fill(store, 4)
    other = {"model": {"name": "fake", "weights_sha256": "zzz"}, "cett_config": {"reduce": "max"}}
    with pytest.raises(StoreMismatchError) as err:
        ActivationStore(tmp_path / "st").open_for(other, layout=LAYOUT, regions=REGIONS)
    msg = str(err.value)
    assert "cett_config.reduce: 'mean' != 'max'" in msg
    assert "model.weights_sha256: 'abc' != 'zzz'" in msg
    with pytest.raises(StoreMismatchError, match="regions"):
        ActivationStore(tmp_path / "st").open_for(FP, layout=LAYOUT, regions=("answer",))
    s2 = ActivationStore(tmp_path / "st")
    s2.open_for(other, layout=LAYOUT, regions=REGIONS, overwrite=True)
    assert len(s2) == 0 and ActivationStore(tmp_path / "st").fingerprint == other
    # same fingerprint (after a JSON round trip, tuples vs lists) is accepted
    s2.open_for({**other, "t": (1, 2)}, layout=LAYOUT, regions=REGIONS, overwrite=True)
    ActivationStore(tmp_path / "st").open_for(
        {**other, "t": [1, 2]}, layout=LAYOUT, regions=REGIONS
    )


def test_fingerprint_diff_missing_keys():
    assert fingerprint_diff({"a": {"b": 1}}, {"a": {"b": 1, "c": 2}}) == ["a.c: '<missing>' != 2"]


def test_write_validation(tmp_path):
    store = ActivationStore(tmp_path / "st")
    with pytest.raises(RuntimeError, match="no manifest"):
        store.write_batch(["a"], [0], None, fake_rows(["a"]))
    store.open_for(FP, layout=LAYOUT, regions=REGIONS)
    store.write_batch(["a"], [0], None, fake_rows(["a"]))
    with pytest.raises(ValueError, match="already in the store"):
        store.write_batch(["a"], [0], None, fake_rows(["a"]))
    with pytest.raises(ValueError, match="shape"):
        store.write_batch(["b"], [0], None, {r: np.zeros((1, 3)) for r in REGIONS})
    with pytest.raises(ValueError, match="regions"):
        store.write_batch(["b"], [0], None, {"answer": np.zeros((1, 15))})
    with pytest.raises(ValueError, match="labels"):
        store.write_batch(["b"], [2], None, fake_rows(["b"]))
    store.close()
    assert store.splits == [None]
    assert store.split(None).ids == ["a"]


def test_accepts_padded_tensors(tmp_path):
    import torch

    store = ActivationStore(tmp_path / "st", dtype="float32")
    store.open_for(FP, layout=LAYOUT, regions=REGIONS)
    x = torch.full((2, 3, 6), float("nan"))
    for layer, d in enumerate(LAYOUT.d_mlp):
        x[:, layer, :d] = layer + 1.0
    store.write_batch(["a", "b"], [0, 1], None, {"answer": x, "other": x})
    store.close()
    X, _, _ = store.features("answer")
    np.testing.assert_array_equal(X[0], [1.0] * 4 + [2.0] * 6 + [3.0] * 5)


def test_float16_clips_out_of_range(tmp_path, caplog):
    store = ActivationStore(tmp_path / "st")
    store.open_for(FP, layout=LAYOUT, regions=REGIONS)
    rows = fake_rows(["a"])
    rows["answer"][0, 0] = 1e6
    rows["answer"][0, 1] = np.nan
    with caplog.at_level(logging.WARNING):
        store.write_batch(["a"], [0], None, rows)
        store.close()
    assert "exceed the float16 range" in caplog.text
    X, _, _ = store.features("answer")
    assert X[0, 0] == np.float16(65504) and np.isnan(X[0, 1])


# ------------------------------------------------------------------ integrity


def _chunk_files(root, index):
    return sorted((root / "chunks").glob(f"{index:05d}.*"))


def test_truncated_chunk_is_quarantined(tmp_path, caplog):
    store = ActivationStore(tmp_path / "st", chunk_size=4)
    ids = fill(store, 10)
    data = tmp_path / "st" / "chunks" / "00001.other.npy"
    data.write_bytes(data.read_bytes()[:-10])
    with caplog.at_level(logging.WARNING):
        again = ActivationStore(tmp_path / "st")
    assert "00001.json" in caplog.text and "bytes" in caplog.text
    assert len(again) == 6 and set(again.ids) == set(ids) - set(ids[4:8])
    assert len(list((tmp_path / "st" / "quarantine").iterdir())) == 3
    assert not _chunk_files(tmp_path / "st", 1)


def test_bitflip_detected_by_verify(tmp_path, caplog):
    store = ActivationStore(tmp_path / "st", chunk_size=4)
    fill(store, 8)
    data = tmp_path / "st" / "chunks" / "00000.answer.npy"
    raw = bytearray(data.read_bytes())
    raw[-1] ^= 0xFF  # same size, same header: only the checksum sees it
    data.write_bytes(bytes(raw))
    assert len(ActivationStore(tmp_path / "st")) == 8  # cheap open: size + header only
    with caplog.at_level(logging.WARNING):
        verified = ActivationStore(tmp_path / "st", verify=True)
    assert "sha256 mismatch" in caplog.text and "00000.answer.npy" in caplog.text
    assert len(verified) == 4


def test_bad_sidecar_and_orphans(tmp_path, caplog):
    store = ActivationStore(tmp_path / "st", chunk_size=4)
    fill(store, 12)
    root = tmp_path / "st"
    (root / "chunks" / "00000.json").write_text("{not json")
    (root / "chunks" / "00002.json").unlink()  # an interrupted write: data without sidecar
    (root / "chunks" / "00007.answer.npy.123.tmp").write_bytes(b"x")
    with caplog.at_level(logging.WARNING):
        again = ActivationStore(root)
    assert "unreadable sidecar" in caplog.text and "no sidecar" in caplog.text
    assert len(again) == 4
    assert not _chunk_files(root, 2) and not list((root / "chunks").glob("*.tmp"))


def test_interrupted_session_gets_full_check(tmp_path, caplog):
    store = ActivationStore(tmp_path / "st", chunk_size=4)
    store.open_for(FP, layout=LAYOUT, regions=REGIONS)
    ids = [f"s{i}" for i in range(8)]
    store.write_batch(ids, [0] * 8, None, fake_rows(ids))  # two chunks, never closed
    assert (tmp_path / "st" / "writing.json").is_file()
    data = tmp_path / "st" / "chunks" / "00001.answer.npy"
    raw = bytearray(data.read_bytes())
    raw[-1] ^= 0xFF
    data.write_bytes(bytes(raw))
    store._unlock()  # as if the process died
    with caplog.at_level(logging.WARNING):
        again = ActivationStore(tmp_path / "st")
    assert "not closed cleanly" in caplog.text and "sha256 mismatch" in caplog.text
    assert len(again) == 4 and not (tmp_path / "st" / "writing.json").exists()


def test_lock_blocks_second_writer_and_reader_does_not_repair(tmp_path):
    store = ActivationStore(tmp_path / "st", chunk_size=4)
    store.open_for(FP, layout=LAYOUT, regions=REGIONS)
    store.write_batch(["a"], [0], None, fake_rows(["a"]))  # takes the lock
    orphan = tmp_path / "st" / "chunks" / "00005.answer.npy"
    orphan.write_bytes(b"partial")
    other = ActivationStore(tmp_path / "st")  # reader: ignores, does not delete
    assert orphan.exists() and len(other) == 0
    with pytest.raises(StoreBusyError):
        other.write_batch(["b"], [0], None, fake_rows(["b"]))
    store.close()
    assert ActivationStore(tmp_path / "st").ids == ["a"]
    assert not orphan.exists()  # repaired once nobody holds the lock


def test_interrupted_compaction_recovers(tmp_path):
    store = ActivationStore(tmp_path / "st", chunk_size=4)
    ids = fill(store, 10)
    root = tmp_path / "st"
    # incomplete new dir: rolled back
    (root / "chunks.new").mkdir()
    (root / "chunks.new" / "00000.json").write_text("{}")
    again = ActivationStore(root)
    assert not (root / "chunks.new").exists() and again.ids == sorted(ids)
    # complete new dir, old already moved aside: finished
    again.compact()
    import shutil

    shutil.copytree(root / "chunks", root / "chunks.new")
    (root / "chunks.new" / "COMPLETE").write_text("ok")
    (root / "chunks").rename(root / "chunks.old")
    final = ActivationStore(root, verify=True)
    assert final.ids == sorted(ids) and not (root / "chunks.old").exists()
    np.testing.assert_array_equal(final.features("answer")[0], expected(ids, "answer"))


def test_assign_splits(tmp_path):
    store = ActivationStore(tmp_path / "st", chunk_size=4)
    fill(store, 6)
    assert store.assign_splits({"s000": "validation", "s001": "train", "nope": "x"}) == 1
    store.close()
    assert ActivationStore(tmp_path / "st").split("validation").ids == ["s000"]
