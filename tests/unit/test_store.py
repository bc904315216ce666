"""ActivationStore on synthetic features: layout, fingerprint checks, integrity, reads."""

from __future__ import annotations

import json
import logging
import os
import zlib

import numpy as np
import pytest

from hneuron_lens.errors import StoreError
from hneuron_lens.features import FeatureSplit, NeuronLayout
from hneuron_lens.store import (
    ActivationStore,
    StoreBusyError,
    StoreCorruptError,
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
    s2.close()  # a write session holds the lock until close()
    s3 = ActivationStore(tmp_path / "st")
    s3.open_for({**other, "t": [1, 2]}, layout=LAYOUT, regions=REGIONS)
    s3.close()


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


def tree_digest(root) -> dict[str, tuple[int, str]]:
    """Every file under ``root`` with its size and sha256 (to show that nothing changed)."""
    import hashlib

    return {
        str(p.relative_to(root)): (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _flip_last_byte(path) -> None:
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF  # same size, same header: only the checksum sees it
    path.write_bytes(bytes(raw))


def test_truncated_chunk_stops_reads_and_a_writer_quarantines_it(tmp_path, caplog):
    store = ActivationStore(tmp_path / "st", chunk_size=4)
    ids = fill(store, 10)
    root = tmp_path / "st"
    data = root / "chunks" / "00001.other.npy"
    data.write_bytes(data.read_bytes()[:-10])
    before = tree_digest(root)
    with caplog.at_level(logging.WARNING):
        reader = ActivationStore(root)
    assert "00001.json" in caplog.text and "bytes" in caplog.text
    assert reader.problems and "00001.json" in reader.problems[0]
    with pytest.raises(StoreCorruptError, match="00001.json") as err:
        reader.split("train")
    assert "--repair" in str(err.value) and "\n" not in str(err.value)
    assert tree_digest(root) == before  # a reader never moves or changes a file
    done = ActivationStore(root).repair()
    assert len(done) == 3 and all("quarantine" in d for d in done)
    again = ActivationStore(root)
    assert len(again) == 6 and set(again.ids) == set(ids) - set(ids[4:8])
    assert len(list((root / "quarantine").iterdir())) == 3
    assert not _chunk_files(root, 1)
    again.split("train")  # the manifest's chunk list was updated: readable again


def test_flipped_byte_stops_reads_naming_the_chunk(tmp_path):
    store = ActivationStore(tmp_path / "st", chunk_size=4)
    fill(store, 8)
    root = tmp_path / "st"
    _flip_last_byte(root / "chunks" / "00000.answer.npy")
    before = tree_digest(root)
    reader = ActivationStore(root)
    assert len(reader) == 8  # cheap open: size + header only
    with pytest.raises(StoreCorruptError, match="00000.answer.npy") as err:
        reader.split("train")
    assert "sha256" in str(err.value) and "--repair" in str(err.value)
    with pytest.raises(StoreCorruptError, match="00000.answer.npy"):
        reader.features("answer", split="test")
    problems = ActivationStore(root).verify()
    assert len(problems) == 1 and "sha256 mismatch" in problems[0]
    assert tree_digest(root) == before
    verified = ActivationStore(root)
    verified.repair()
    assert len(verified) == 4
    verified.split("train")


def test_checksum_cache_is_written_by_writers_and_respects_mtime(tmp_path, monkeypatch):
    import os

    import hneuron_lens.store as store_mod

    store = ActivationStore(tmp_path / "st", chunk_size=4)
    fill(store, 8)
    root = tmp_path / "st"
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["verified"] == {}  # files younger than RACY_SECONDS are never vouched for
    for p in (root / "chunks").glob("*.npy"):  # age them, as if written an hour ago
        st = p.stat()
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns - 3600 * 10**9))
    ActivationStore(root).repair()
    manifest = json.loads((root / "manifest.json").read_text())
    assert len(manifest["verified"]) == 4
    calls = []
    real = store_mod.file_sha256
    monkeypatch.setattr(store_mod, "file_sha256", lambda p, *a: calls.append(p) or real(p, *a))
    ActivationStore(root).split("train")
    assert calls == []  # the cache vouches: nothing hashed
    target = root / "chunks" / "00001.answer.npy"
    _flip_last_byte(target)  # a change moves the mtime: the cache no longer vouches
    with pytest.raises(StoreCorruptError, match="00001.answer.npy"):
        ActivationStore(root).split("train")
    assert [p.name for p in calls] == ["00001.answer.npy"]


def test_bad_sidecar_and_orphans_are_moved_never_deleted(tmp_path, caplog):
    store = ActivationStore(tmp_path / "st", chunk_size=4)
    fill(store, 12)
    root = tmp_path / "st"
    (root / "chunks" / "00000.json").write_text("{not json")
    (root / "chunks" / "00002.json").unlink()  # an interrupted write: data without sidecar
    (root / "chunks" / "00007.answer.npy.123.tmp").write_bytes(b"x")
    with caplog.at_level(logging.WARNING):
        reader = ActivationStore(root)
    assert "unreadable sidecar" in caplog.text
    assert len(reader) == 4 and reader.problems
    assert (root / "chunks" / "00007.answer.npy.123.tmp").exists()  # readers leave it
    ActivationStore(root).repair()
    again = ActivationStore(root)
    assert len(again) == 4 and not again.problems
    moved = sorted(p.name.split(".", 1)[1] for p in (root / "quarantine").iterdir())
    assert moved == sorted(
        ["00000.json", "00000.answer.npy", "00000.other.npy"]
        + ["00002.answer.npy", "00002.other.npy"]
    )
    assert not list((root / "chunks").glob("*.tmp"))  # the library's own temp file


def test_quarantine_never_replaces_an_earlier_file(tmp_path):
    store = ActivationStore(tmp_path / "st", chunk_size=4)
    fill(store, 4)
    root = tmp_path / "st"
    for _ in range(3):  # the same chunk name damaged three times within one second
        _flip_last_byte(root / "chunks" / "00000.answer.npy")
        ActivationStore(root).repair()
        again = ActivationStore(root)
        again.open_for(FP, layout=LAYOUT, regions=REGIONS)
        again.write_batch(["s000"], [0], ["train"], fake_rows(["s000"]))
        again.close()
        assert (root / "chunks" / "00000.answer.npy").exists()
    assert len([p for p in (root / "quarantine").iterdir() if "answer" in p.name]) == 3


def test_interrupted_session_gets_full_check(tmp_path, caplog):
    store = ActivationStore(tmp_path / "st", chunk_size=4)
    store.open_for(FP, layout=LAYOUT, regions=REGIONS)
    ids = [f"s{i}" for i in range(8)]
    store.write_batch(ids, [0] * 8, None, fake_rows(ids))  # two chunks, never closed
    assert (tmp_path / "st" / "writing.json").is_file()
    _flip_last_byte(tmp_path / "st" / "chunks" / "00001.answer.npy")
    store._unlock()  # as if the process died
    with caplog.at_level(logging.WARNING):
        writer = ActivationStore(tmp_path / "st")
        writer.open_for(FP, layout=LAYOUT, regions=REGIONS)
        writer.close()
    assert "not closed cleanly" in caplog.text and "sha256 mismatch" in caplog.text
    again = ActivationStore(tmp_path / "st")
    assert len(again) == 4 and not (tmp_path / "st" / "writing.json").exists()


def test_lock_is_held_for_the_session_and_names_its_holder(tmp_path):
    import socket

    store = ActivationStore(tmp_path / "st", chunk_size=4)
    store.open_for(FP, layout=LAYOUT, regions=REGIONS)  # the lock is taken here
    record = json.loads((tmp_path / "st" / ".lock").read_text())
    assert record["host"] == socket.gethostname() and record["pid"] > 0
    store.write_batch(["a"], [0], None, fake_rows(["a"]))
    orphan = tmp_path / "st" / "chunks" / "00005.answer.npy"
    orphan.write_bytes(b"partial")
    other = ActivationStore(tmp_path / "st")  # reader: ignores, does not move
    assert orphan.exists() and len(other) == 0
    with pytest.raises(StoreBusyError, match=f"pid {record['pid']} on host"):
        other.open_for(FP, layout=LAYOUT, regions=REGIONS)
    with pytest.raises(StoreBusyError):
        other.write_batch(["b"], [0], None, fake_rows(["b"]))
    store.close()
    assert (tmp_path / "st" / ".lock").read_text() == ""  # released: no holder recorded
    assert ActivationStore(tmp_path / "st").ids == ["a"]
    assert orphan.exists()  # a reader still leaves it
    writer = ActivationStore(tmp_path / "st")
    writer.open_for(FP, layout=LAYOUT, regions=REGIONS)
    writer.close()
    assert not orphan.exists() and list((tmp_path / "st" / "quarantine").glob("*00005*"))


def test_stale_lock_rule_without_flock(tmp_path, monkeypatch):
    """Where flock is unavailable the pid/host record decides (module docstring)."""
    import socket

    import hneuron_lens.lock as lock_mod

    monkeypatch.setattr(lock_mod, "fcntl", None)
    root = tmp_path / "st"
    fill(ActivationStore(root), 2)
    dead = {"pid": 2**22 + 12345, "host": socket.gethostname(), "started": "then"}
    (root / ".lock").write_text(json.dumps(dead))
    store = ActivationStore(root)
    store.open_for(FP, layout=LAYOUT, regions=REGIONS)  # a dead pid on this host: taken over
    store.close()
    alive = {"pid": os.getpid() + 0, "host": "another-host", "started": "now"}
    (root / ".lock").write_text(json.dumps(alive))
    with pytest.raises(StoreBusyError, match="another-host"):
        ActivationStore(root).open_for(FP, layout=LAYOUT, regions=REGIONS)


def test_lost_manifest_is_rebuilt_never_emptied(tmp_path, caplog):
    store = ActivationStore(tmp_path / "st", chunk_size=4)
    ids = fill(store, 10)
    root = tmp_path / "st"
    want = ActivationStore(root).split("train")
    (root / "manifest.json").unlink()
    before = tree_digest(root)
    with caplog.at_level(logging.WARNING):
        reader = ActivationStore(root)  # rebuilt in memory from the sidecars
    assert "no manifest.json" in caplog.text and reader.manifest_rebuilt
    got = reader.split("train")
    np.testing.assert_array_equal(got.region("answer"), want.region("answer"))
    assert tree_digest(root) == before  # ... and nothing written by a reader
    # a writer (extract, repair) writes it back; the samples are all still there
    assert ActivationStore(root).repair() == ["rebuilt manifest.json from the chunk sidecars"]
    again = ActivationStore(root)
    assert not again.manifest_rebuilt and again.ids == sorted(ids)
    assert json.loads((root / "manifest.json").read_text())["fingerprint"] == FP


def test_lost_manifest_of_an_old_store_is_refused_then_adopted(tmp_path):
    store = ActivationStore(tmp_path / "st", chunk_size=4)
    ids = fill(store, 6)
    root = tmp_path / "st"
    for sc_path in (root / "chunks").glob("*.json"):  # sidecars as version 0.1.0 wrote them
        sc = json.loads(sc_path.read_text())
        del sc["manifest"]
        sc_path.write_text(json.dumps(sc))
    (root / "manifest.json").unlink()
    reader = ActivationStore(root)
    with pytest.raises(StoreError, match="carry only the fingerprint's hash") as err:
        reader.split("train")
    assert "hneuron-lens extract --store" in str(err.value)
    other = {**FP, "cett_config": {"reduce": "max"}}
    with pytest.raises(StoreMismatchError, match="were not written for this model"):
        ActivationStore(root).open_for(other, layout=LAYOUT, regions=REGIONS)
    assert len(list((root / "chunks").glob("*.npy"))) == 4  # nothing deleted
    writer = ActivationStore(root)  # the same fingerprint: the manifest is rebuilt from it
    writer.open_for(FP, layout=LAYOUT, regions=REGIONS)
    writer.close()
    assert ActivationStore(root).ids == sorted(ids)


def test_garbage_manifest_and_missing_store(tmp_path):
    store = ActivationStore(tmp_path / "st", chunk_size=4)
    ids = fill(store, 5)
    root = tmp_path / "st"
    (root / "manifest.json").write_text("model: [yaml, not json]\n")
    reader = ActivationStore(root)
    with pytest.raises(StoreError, match="manifest.json is unreadable") as err:
        reader.split("train")
    assert "--repair" in str(err.value)
    ActivationStore(root).repair()
    assert ActivationStore(root).ids == sorted(ids)
    assert list((root / "quarantine").glob("*manifest.json"))  # moved, not deleted
    with pytest.raises(StoreError, match="no activation store here"):
        ActivationStore(tmp_path / "nothing").split("train")
    assert not (tmp_path / "nothing").exists()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(StoreError, match="a file"):
        ActivationStore(tmp_path / "afile")


def test_a_foreign_directory_is_never_used_as_a_store(tmp_path):
    from hneuron_lens.errors import OutputError

    notes = tmp_path / "mine"
    notes.mkdir()
    (notes / "notes.txt").write_text("my notes")
    with pytest.raises(OutputError, match="did not write"):
        ActivationStore(notes).open_for(FP, layout=LAYOUT, regions=REGIONS)
    assert sorted(p.name for p in notes.iterdir()) == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    fill(ActivationStore(empty), 2)  # an empty directory is fine


def test_deleted_chunk_is_reported_not_silently_dropped(tmp_path):
    store = ActivationStore(tmp_path / "st", chunk_size=4)
    fill(store, 10)
    root = tmp_path / "st"
    for p in _chunk_files(root, 2):
        p.unlink()
    with pytest.raises(StoreCorruptError, match="00002.json: listed in manifest.json with 2 rows"):
        ActivationStore(root).split("train")


def test_interrupted_compaction_recovers(tmp_path):
    import shutil

    store = ActivationStore(tmp_path / "st", chunk_size=4)
    ids = fill(store, 10)
    root = tmp_path / "st"
    # incomplete new dir: readers ignore it, a writer rolls it back
    (root / "chunks.new").mkdir()
    (root / "chunks.new" / "00000.json").write_text("{}")
    assert ActivationStore(root).ids == sorted(ids)
    assert (root / "chunks.new").exists()
    ActivationStore(root).repair()
    assert not (root / "chunks.new").exists()
    # complete new dir, old already moved aside: readers read the new one, a writer finishes
    again = ActivationStore(root)
    again.compact()
    shutil.copytree(root / "chunks", root / "chunks.new")
    (root / "chunks.new" / "COMPLETE").write_text("ok")
    (root / "chunks").rename(root / "chunks.old")
    reader = ActivationStore(root, verify=True)
    assert reader.ids == sorted(ids) and (root / "chunks.old").exists()
    np.testing.assert_array_equal(reader.features("answer")[0], expected(ids, "answer"))
    ActivationStore(root).repair()
    final = ActivationStore(root, verify=True)
    assert final.ids == sorted(ids) and not (root / "chunks.old").exists()
    np.testing.assert_array_equal(final.features("answer")[0], expected(ids, "answer"))


def test_assign_splits(tmp_path):
    store = ActivationStore(tmp_path / "st", chunk_size=4)
    fill(store, 6)
    assert store.assign_splits({"s000": "validation", "s001": "train", "nope": "x"}) == 1
    store.close()
    assert ActivationStore(tmp_path / "st").split("validation").ids == ["s000"]


def test_a_newer_store_format_is_never_replaced_and_leftovers_are_moved(tmp_path):
    store = ActivationStore(tmp_path / "st", chunk_size=4)
    fill(store, 4)
    root = tmp_path / "st"
    manifest = json.loads((root / "manifest.json").read_text())
    (root / "manifest.json").write_text(json.dumps({**manifest, "format": 99}))
    with pytest.raises(StoreError, match="store format 99"):
        ActivationStore(root).open_for(FP, layout=LAYOUT, regions=REGIONS)
    assert len(list((root / "chunks").glob("*.npy"))) == 2  # nothing deleted
    # a store directory with chunk data but no manifest and no sidecar: moved to quarantine
    bare = tmp_path / "bare"
    (bare / "chunks").mkdir(parents=True)
    (bare / "chunks" / "00000.answer.npy").write_bytes(b"partial")
    (bare / ".hneuron_lens.json").write_text(json.dumps({"kind": "activation_store"}))
    fill(ActivationStore(bare), 2)
    assert [p.name.split(".", 1)[1] for p in (bare / "quarantine").iterdir()] == [
        "00000.answer.npy"
    ]
