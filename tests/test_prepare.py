import json
import os
import subprocess
import sys

import numpy as np
from midi_factory import midi_file, notes, track

import dataset
import describe
import prepare
import tokenizer as T


def make_folder(root, n_good=24):
    """n_good small MIDI files in nested folders, plus an empty one and a corrupt one."""
    midi = root / "midi"
    for i in range(n_good):
        folder = midi / f"set{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        spec = [(b, 1, 48 + (i + 3 * b) % 40) for b in range(4 + i % 5)]
        midi_file([track(notes(i % 9, spec, program=i % 7))]).save(str(folder / f"piece{i}.mid"))
    midi_file([track([])]).save(str(midi / "empty.mid"))
    (midi / "broken.midi").write_bytes(b"MThd\x00\x00\x00\x06garbage")
    return midi


def read_split(data_dir, split):
    return np.memmap(data_dir / f"{split}.bin", dtype=np.uint16, mode="r")


def test_written_data_reads_back_and_splits_are_disjoint(tmp_path):
    midi = make_folder(tmp_path)
    counts = prepare.prepare(str(tmp_path), val_fraction=0.3, workers=2, quiet=True)
    index = [json.loads(line) for line in open(tmp_path / "index.jsonl")]
    assert counts["files"] == len(index) == 24 and counts["skipped"] == 2
    assert counts["skipped_by_reason"] == {"no notes": 1, "not a readable MIDI file": 1}
    skipped = dict(line.rstrip("\n").split("\t") for line in open(tmp_path / "skipped.tsv"))
    assert set(skipped) == {"empty.mid", "broken.midi"}

    splits = {"train": set(), "val": set()}
    for row in index:
        splits[row["split"]].add(row["midi_file"])
        tokens = read_split(tmp_path, row["split"])[row["start"] : row["end"]]
        # each file's tokens, intact
        assert np.array_equal(tokens, T.encode(str(midi / row["midi_file"])))
        assert row["notes"] == len(T.read_midi(str(midi / row["midi_file"])).notes)
    assert splits["train"] and splits["val"], "0.3 of 24 files should put some in each split"
    assert not splits["train"] & splits["val"]
    for split in splits:  # the index covers each .bin exactly, file after file
        rows = [r for r in index if r["split"] == split]
        assert [r["start"] for r in rows] == [0] + [r["end"] for r in rows[:-1]]
        assert rows[-1]["end"] == len(read_split(tmp_path, split)) == counts[f"{split}_tokens"]

    # the measured attributes a window's condition can carry, as describe.measure reads them
    for row in index:
        measured = describe.measure(T.read_midi(str(midi / row["midi_file"])))
        assert {k: row[k] for k in dataset.INDEX_ATTRIBUTES} == {
            k: measured[k] for k in dataset.INDEX_ATTRIBUTES
        }
        assert (
            row["key"] in describe.KEY_NAMES and row["meter"] == "4/4" and row["tempo_bpm"] == 120
        )
    programs = {i % 7 for i in range(24)}
    assert {
        p for row in index for p in row["instruments"]
    } == programs  # the files' programs, one each
    meta = json.load(open(tmp_path / "meta.json"))
    assert meta["vocab_size"] == T.VOCAB_SIZE and meta["counts"]["files"] == 24
    assert meta["blocks"]["NOTE"] == [T.OFFSET["NOTE"], 128]
    assert meta["uncond_token"] == T.UNCOND
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_split_is_stable_and_independent_of_workers(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    make_folder(a, 12)
    make_folder(b, 12)
    prepare.prepare(str(a), val_fraction=0.25, workers=1, quiet=True)
    prepare.prepare(str(b), val_fraction=0.25, workers=2, quiet=True)
    for name in ("train.bin", "val.bin", "index.jsonl"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert prepare.split_of("x/y.mid", 0.25) == prepare.split_of("x/y.mid", 0.25)


def test_cli_summary_and_exit_codes(tmp_path):
    make_folder(tmp_path, 3)
    r = subprocess.run(
        [sys.executable, "prepare.py", "--data_dir", str(tmp_path), "--workers", "1"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert "files used" in r.stdout and "skipped" in r.stdout and "notes/s" in r.stdout

    bad = tmp_path / "only_bad"
    (bad / "midi").mkdir(parents=True)
    (bad / "midi" / "x.mid").write_bytes(b"nope")
    r = subprocess.run(
        [sys.executable, "prepare.py", "--data_dir", str(bad)], capture_output=True, text=True
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr and "could be used" in r.stderr
    assert not (bad / "train.bin").exists()

    r = subprocess.run(
        [sys.executable, "prepare.py", "--data_dir", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0 and "export.py" in r.stderr and "Traceback" not in r.stderr


def test_karaoke_files_are_prepared(tmp_path):
    import mido

    midi = make_folder(tmp_path, 3)
    lyrics = track(
        [(b, mido.MetaMessage("lyrics", text=w)) for b, w in enumerate(["la ", "la ", "la"])],
        "Words",
    )
    midi_file([lyrics, track(notes(0, [(b, 1, 60 + b) for b in range(3)], program=52))]).save(
        str(midi / "song.kar")
    )
    prepare.prepare(str(tmp_path), workers=2, quiet=True)
    index = {
        json.loads(line)["midi_file"]: json.loads(line) for line in open(tmp_path / "index.jsonl")
    }
    assert index["song.kar"]["notes"] == 3
