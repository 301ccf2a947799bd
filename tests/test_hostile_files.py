"""Hostile files, built for real: a lock file planted as a symlink to a file of the user's, a FIFO
and /dev/zero under MIDI names, a sparse file of several GB, MIDI bombs of a few bytes (one note
or one gap of 2**28 ticks), headers of 40,000 and 65,535 tracks, names holding a TAB or a newline,
and writers that share a folder with the user's own files. Each is refused in one line or skipped
with its reason; nothing of the user's is read out, changed or deleted; nothing hangs (every
script runs under a subprocess timeout) and nothing allocates by a file's length (the scripts that
read the bombs run under a limit on their memory)."""

import codecs
import json
import os
import re
import resource
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from midi_factory import midi_file, notes, track

import describe
import files
import midifile
import render
import tokenizer
from files import UserError

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
EXPORT = ROOT / "data" / "music21" / "export.py"
SECRET = b"user's private notes: the bank PIN is 2468\n"


def run(*args, memory_gib=None, timeout=120):
    """A script (or any command) from the repository root, to its end -> CompletedProcess, output
    as text; memory_gib: a limit on its address space, so an allocation by a file's length fails."""

    def limit():
        cap = memory_gib << 30
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    return subprocess.run(
        [sys.executable, *map(str, args)],
        cwd=ROOT,
        env=ENV,
        text=True,
        capture_output=True,
        timeout=timeout,
        preexec_fn=limit if memory_gib else None,
    )


def one_line_error(r, *words):
    assert r.returncode == 1, (r.args, r.stdout[-2000:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    for word in words:
        assert word in r.stderr, (word, r.stderr)
    return r.stderr


# -----------------------------------------------------------------------------
# MIDI bytes by hand, as a hostile file is written

EOT = b"\x00\xff\x2f\x00"  # end of track at delta 0
MAX_DELTA = b"\xff\xff\xff\x7f"  # the largest delta time a file can hold: 2**28 - 1 ticks


def smf(tracks, *, ticks_per_beat=96, n_tracks=None):
    """Track bodies -> a type 1 file's bytes; n_tracks: the count its header claims."""
    count = len(tracks) if n_tracks is None else n_tracks
    header = b"MThd" + struct.pack(">IHHH", 6, 1, count, ticks_per_beat)
    return header + b"".join(b"MTrk" + struct.pack(">I", len(t)) + t for t in tracks)


def note_body(pitches, length=48):
    """One note after another, each `length` ticks (under 128: a one-byte delta)."""
    body = b"".join(bytes([0, 0x90, p, 64, length, 0x80, p, 0]) for p in pitches)
    return body + EOT


LONG_NOTE = smf([b"\x00\x90\x3c\x40" + MAX_DELTA + b"\x80\x3c\x00" + EOT], ticks_per_beat=1)
GAP_BOMB = smf(
    [b"\x00\x90\x3c\x40\x00\x80\x3c\x00" + MAX_DELTA + b"\x90\x3e\x40\x00\x80\x3e\x00" + EOT],
    ticks_per_beat=1,
)


def many_tracks(n, pitches):
    """A file of n tracks, all empty but the last, which plays the pitches."""
    return smf([EOT] * (n - 1) + [note_body(pitches)])


def good_file(path, i):
    spec = [(b, 1, 50 + (i * 7 + b * 3) % 30) for b in range(6)]
    midi_file([track(notes(0, spec, program=i % 5))]).save(str(path))


def test_the_bombs_are_the_sizes_a_hostile_file_has():
    # the files, byte for byte: what the limits are checked against
    assert len(LONG_NOTE) == 37 and len(GAP_BOMB) == 45


# -----------------------------------------------------------------------------
# 1. locks and writes never follow a link the user did not make


def test_a_planted_lock_link_is_neither_followed_nor_read_out(tmp_path):
    data, secret = tmp_path / "data", tmp_path / "home" / "notes.txt"
    secret.parent.mkdir()
    secret.write_bytes(SECRET)
    for i in range(3):
        (data / "midi").mkdir(parents=True, exist_ok=True)
        good_file(data / "midi" / f"piece{i}.mid", i)
    # as an archive unpacks it: the lock's name, a link to a file of the user's
    (data / files.LOCK_NAME).symlink_to(secret)
    err = one_line_error(
        run("prepare.py", "--data_dir", data, "--workers", 1), "is a symlink", files.LOCK_NAME
    )
    assert "PIN" not in err
    assert secret.read_bytes() == SECRET, "the file the link points to is untouched"
    assert os.readlink(data / files.LOCK_NAME) == str(secret), "and so is the link"
    assert not (data / "train.bin").exists()

    # a regular file under the lock's name that holds no lock: not the lock's to overwrite or show
    (data / files.LOCK_NAME).unlink()
    (data / files.LOCK_NAME).write_bytes(SECRET)
    err = one_line_error(run("prepare.py", "--data_dir", data, "--workers", 1), "holds no lock")
    assert "PIN" not in err and (data / files.LOCK_NAME).read_bytes() == SECRET

    # the lock of a writer that died (its own JSON, a pid that is gone) is taken over
    gone = run("-c", "import os; print(os.getpid())").stdout.strip()
    lock = {"pid": int(gone), "command": "python prepare.py", "since": "2026-01-01 00:00:00"}
    (data / files.LOCK_NAME).write_text(json.dumps(lock))
    r = run("prepare.py", "--data_dir", data, "--workers", 1)
    assert r.returncode == 0, r.stderr
    assert f"taking over the lock left by pid {gone} (python prepare.py" in r.stdout
    assert not (data / files.LOCK_NAME).exists()


def test_a_lock_that_is_a_fifo_a_hard_link_or_a_link_is_refused_without_waiting(tmp_path):
    secret = tmp_path / "notes.txt"
    secret.write_bytes(SECRET)
    for name, plant in [
        ("fifo", lambda lock: os.mkfifo(lock)),
        ("hard", lambda lock: os.link(secret, lock)),
        ("soft", lambda lock: lock.symlink_to(secret)),
        ("dangling", lambda lock: lock.symlink_to(tmp_path / "nothing" / "here")),
    ]:
        folder = tmp_path / name
        folder.mkdir()
        plant(folder / files.LOCK_NAME)
        with pytest.raises(UserError, match="not a lock file this program made"):
            with files.folder_lock(str(folder)):
                pytest.fail("a planted lock was taken")
        assert secret.read_bytes() == SECRET and not (tmp_path / "nothing").exists()
    # the gallery's waiting lock takes the same path: a FIFO never makes it wait
    with pytest.raises(UserError, match="a FIFO"):
        render.write_gallery(str(tmp_path / "fifo"), [])


def test_a_link_planted_at_the_temporary_name_is_never_written_through(tmp_path):
    secret, out = tmp_path / "notes.txt", tmp_path / "meta.json"
    secret.write_bytes(SECRET)
    planted = Path(f"{out}.{os.getpid()}.tmp")
    planted.symlink_to(secret)
    with pytest.raises(UserError, match="in the way"):
        files.write_atomic(str(out), "{}")
    assert secret.read_bytes() == SECRET and planted.is_symlink() and not out.exists()

    # a regular file there is this pid's own temporary, left by a killed run: replaced
    planted.unlink()
    planted.write_bytes(b"half a file")
    files.write_atomic(str(out), "{}")
    assert out.read_text() == "{}" and not planted.exists()


def test_stale_temporaries_go_and_the_users_look_alikes_stay(tmp_path):
    target = tmp_path / "train.bin"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], text=True, capture_output=True
    ).stdout.strip()
    stale = tmp_path / f"train.bin.{dead}.tmp"
    users = [tmp_path / "train.bin.mine.tmp", tmp_path / "notes.tmp", tmp_path / "train.bin.tmp"]
    for path in [stale, *users]:
        path.write_bytes(SECRET)
    # a link named as a temporary of a process that is gone: not ours to remove
    link = tmp_path / "train.bin.999999999.tmp"
    link.symlink_to(tmp_path / "notes.tmp")
    files.remove_stale_temps([target])
    assert not stale.exists()
    assert all(p.read_bytes() == SECRET for p in users) and link.is_symlink()


# -----------------------------------------------------------------------------
# 2 and 3. a folder of hostile files among good ones: the good ones are prepared


def unescape(field):
    return codecs.decode(field, "unicode_escape")


def test_a_folder_with_hostile_files_prepares_the_good_ones(tmp_path):
    midi = tmp_path / "midi"
    midi.mkdir()
    good = [f"good{i}.mid" for i in range(4)] + ["tab\there.mid"]
    for i, name in enumerate(good):
        good_file(midi / name, i)
    # the track counts a signed read loses: their notes must reach the index
    (midi / "tracks40000.mid").write_bytes(many_tracks(40_000, [60, 64, 67]))
    (midi / "tracks65535.mid").write_bytes(many_tracks(65_535, [62, 65, 69, 72]))
    hostile = {
        "fifo.mid": "not a regular file",
        "zero.mid": "not a regular file",
        "sparse.mid": "over the size limit",
        "long note.mid": "longer than the limit of 4 hours",
        "gap bomb.midi": "longer than the limit of 4 hours",
        "new\nline.mid": "not a readable MIDI file",
        "tab\tand\nnewline.kar": "not a readable MIDI file",
    }
    os.mkfifo(midi / "fifo.mid")
    (midi / "zero.mid").symlink_to("/dev/zero")
    with open(midi / "sparse.mid", "wb") as f:
        f.write(smf([note_body([60])]))
        f.truncate(6 << 30)  # 6 GB that take no room on disk
    (midi / "long note.mid").write_bytes(LONG_NOTE)
    (midi / "gap bomb.midi").write_bytes(GAP_BOMB)
    (midi / "new\nline.mid").write_bytes(b"MThd broken")
    (midi / "tab\tand\nnewline.kar").write_bytes(b"MThd\x00\x00\x00\x06also broken")

    r = run("prepare.py", "--data_dir", tmp_path, "--workers", 2, timeout=180)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr

    index = [json.loads(line) for line in (tmp_path / "index.jsonl").read_text().splitlines()]
    by_name = {row["midi_file"]: row for row in index}
    assert set(by_name) == set(good) | {"tracks40000.mid", "tracks65535.mid"}
    assert by_name["tracks40000.mid"]["notes"] == 3 and by_name["tracks65535.mid"]["notes"] == 4

    lines = (tmp_path / "skipped.tsv").read_text(errors="surrogateescape").split("\n")
    assert lines[-1] == "" and len(lines) - 1 == len(hostile), "one line per entry, no phantom"
    skipped = {}
    for line in lines[:-1]:
        name, reason = line.split("\t")  # two columns, whatever the name holds
        skipped[unescape(name)] = unescape(reason)
    assert set(skipped) == set(hostile)
    for name, why in hostile.items():
        assert skipped[name].startswith(why), (name, skipped[name])
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["counts"]["skipped"] == len(hostile)
    assert os.path.getsize(midi / "sparse.mid") == 6 << 30, "the user's files stay as they are"


def test_every_reader_of_midi_bytes_skips_a_bomb_in_one_line_within_bounded_memory(tmp_path):
    cases = {
        "long.mid": (LONG_NOTE, "longer than the limit of 4 hours"),
        "gap.mid": (GAP_BOMB, "longer than the limit of 4 hours"),
        "zero.mid": (None, "not a regular file (a character device)"),
        "fifo.mid": (None, "not a regular file (a FIFO)"),
        "sparse.mid": (smf([note_body([60])]), "over the size limit"),
    }
    for name, (data, _) in cases.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
    (tmp_path / "zero.mid").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "fifo.mid")
    os.truncate(tmp_path / "sparse.mid", 6 << 30)
    for name, (_, why) in cases.items():
        path = tmp_path / name
        # the library every script reads through, and the script that reads one file
        with pytest.raises(tokenizer.MidiError, match=re.escape(why)):
            tokenizer.read_midi(path)
        one_line_error(run("roundtrip.py", path, memory_gib=2, timeout=60), name, why)
        # cluster.py describes a file that has no caption
        with pytest.raises(tokenizer.MidiError):
            describe.describe_midi(path)


def test_the_length_of_a_piece_costs_nothing_in_the_measures(tmp_path):
    # a Score of one note of a billion grid steps (past what a file may hold, so built directly):
    # every measure prepare.py takes is by events, not by steps (8 GB of steps would fail here)
    code = (
        "import describe, tokenizer\n"
        "score = tokenizer.Score(notes=[tokenizer.Note(0, 10**9, 60, 0, 80),"
        " tokenizer.Note(5, 10**9, 64, 0, 80)], end_step=10**9)\n"
        "m = describe.measure(score)\n"
        "print(m['texture'], m['voices_per_instrument'])\n"
    )
    r = run("-c", code, memory_gib=2, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["two", "voices", "2.0"]


def test_track_counts_are_unsigned_and_no_reader_loses_notes_silently():
    for n in (32_768, 40_000, 65_535):
        score = tokenizer.read_midi(many_tracks(n, [60, 62]))
        assert [note.pitch for note in score.notes] == [60, 62]
    # bytes the fast reader leaves to mido (running status after a sysex) in a file of more tracks
    # than mido reads: a reason, never a file read as empty
    odd = b"\x00\xf0\x01\xf7\x00\x3c\x40" + EOT
    with pytest.raises(tokenizer.MidiError, match="40,000 tracks"):
        tokenizer.read_midi(smf([EOT] * 39_999 + [odd]))


def test_a_file_over_the_event_limit_is_skipped_with_its_reason():
    over = midifile.MAX_EVENTS // 2 + 1  # notes: an on and an off each
    body = b"".join(bytes([0, 0x90, 60, 64, 1, 0x80, 60, 0]) for _ in range(over)) + EOT
    with pytest.raises(tokenizer.MidiError, match="events"):
        tokenizer.read_midi(smf([body]))


# -----------------------------------------------------------------------------
# 4. no hangs: the round trip's matching, FIFOs where text files are read


def quadratic_matched(notes, candidates, tolerance):
    """The greedy match written the plain way: every note scans the candidates from the start."""
    used, kept = [False] * len(candidates), 0
    for onset, duration in notes:
        for j, (o, d) in enumerate(candidates):
            if not used[j] and abs(o - onset) <= tolerance and abs(d - duration) <= tolerance:
                used[j], kept = True, kept + 1
                break
            if o > onset + tolerance:
                break
    return kept


def test_the_near_linear_match_keeps_what_the_plain_one_keeps():
    import random

    rng = random.Random(3)
    for _ in range(300):
        grid = [rng.randrange(40) / 12 for _ in range(rng.randrange(30))]
        notes = sorted((o + rng.choice([0, 0.05, 0.1]), rng.choice([1, 2]) / 12) for o in grid)
        candidates = sorted((o, rng.choice([1, 2, 3]) / 12) for o in grid + grid[: len(grid) // 2])
        tolerance = 1 / 12 + 1e-9
        assert describe.matched(notes, candidates, tolerance) == quadratic_matched(
            notes, candidates, tolerance
        )


def test_the_round_trip_of_two_hundred_thousand_notes_ends(tmp_path):
    # one voice of 200,000 notes, one after another: the plain match scans every used note before
    # each new one (2e10 steps, many minutes); the near linear one ends well inside the timeout
    path = tmp_path / "long.mid"
    body = b"".join(bytes([0, 0x90, 60, 64, 4, 0x80, 60, 0]) for _ in range(200_000)) + EOT
    path.write_bytes(smf([body], ticks_per_beat=48))
    r = run("roundtrip.py", path, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "notes in     200000" in r.stdout and "notes kept   200000" in r.stdout


def test_a_fifo_where_descriptions_are_read_is_one_line_and_the_lock_is_let_go(tmp_path):
    midi = tmp_path / "midi"
    midi.mkdir()
    for i in range(3):
        good_file(midi / f"piece{i}.mid", i)
    os.mkfifo(midi / "descriptions.jsonl")
    one_line_error(
        run("cluster.py", "--data_dir", tmp_path, "--k", 2, timeout=120),
        "descriptions.jsonl is a FIFO",
    )
    assert not (tmp_path / files.LOCK_NAME).exists()
    # the same reader everywhere a JSON-lines file is read
    with pytest.raises(UserError, match="a FIFO"):
        files.read_jsonl(midi / "descriptions.jsonl")


def test_a_sparse_json_lines_file_is_read_in_bounded_pieces(tmp_path):
    path = tmp_path / "descriptions.jsonl"
    with open(path, "wb") as f:
        f.write(b'{"midi_file": "a.mid", "description": "a jig"}\n')
        f.truncate(files.MAX_LINE_BYTES * 3)  # zeros: one line far longer than the limit
        f.seek(0, 2)
        f.write(b'\n{"midi_file": "b.mid", "description": "a reel"}\n')
    rows = files.read_jsonl(path)
    assert [r["midi_file"] for r in rows] == ["a.mid", "b.mid"]
    with pytest.raises(UserError, match="line 2"):
        files.read_jsonl(path, rebuild="python prepare.py --data_dir x")


# -----------------------------------------------------------------------------
# writers that share a folder with the user: the gallery, the export


def test_a_card_without_its_facts_loses_only_that_table(tmp_path):
    written = []
    for i in range(3):
        path = tmp_path / f"sample{i}.mid"
        good_file(path, i)
        written.append((str(path), tokenizer.read_midi(path), f"sample {i}", {"prompt": "a jig"}))
    _, cards = render.audio_and_gallery(written, str(tmp_path))
    store = tmp_path / render.GALLERY_CARDS
    old = json.loads(store.read_text())
    del old[1]["facts"]  # as an older version, or a hand edit, leaves one card
    old[2]["understood"] = {"instruments": 5}  # and a value of the wrong shape on another
    store.write_text(json.dumps(old))

    path = tmp_path / "sample3.mid"
    good_file(path, 3)
    render.audio_and_gallery(
        [(str(path), tokenizer.read_midi(path), "sample 3", {})], str(tmp_path)
    )
    cards = json.loads(store.read_text())
    assert sorted(c["midi"] for c in cards) == [f"sample{i}.mid" for i in range(4)]
    assert next(c for c in cards if c["midi"] == old[1]["midi"])["facts"] == {}
    page = (tmp_path / "index.html").read_text()
    assert all(f"sample{i}.mid" in page for i in range(4))


def test_an_export_into_the_users_folder_keeps_their_captions_and_files(tmp_path):
    args = ["--out", tmp_path, "--collections", "oneills1850", "--limit", 2]
    r = run(EXPORT, *args, timeout=300)
    assert r.returncode == 0, r.stderr
    jsonl = tmp_path / "midi" / "descriptions.jsonl"
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(rows) == 2
    mine, theirs = rows
    # the user's own caption for a file the export writes, a line of their own, their files
    edited = dict(mine, description="my favourite reel, for the Friday session")
    own = {"midi_file": "mine/tune.mid", "description": "a tune I wrote"}
    jsonl.write_text("".join(json.dumps(row) + "\n" for row in [edited, theirs, own]))
    users = [tmp_path / "midi" / "draft.tmp", tmp_path / "midi" / "oneills1850" / "notes.tmp"]
    for path in users:
        path.write_bytes(SECRET)
    exported = tmp_path / "midi" / theirs["midi_file"]
    stale = Path(f"{exported}.999999999.tmp")  # a temporary of a killed export (no such pid)
    stale.write_bytes(b"half a file")

    r = run(EXPORT, *args, timeout=300)
    assert r.returncode == 0, r.stderr
    after = [json.loads(line) for line in jsonl.read_text().splitlines()]
    by_file = {row["midi_file"]: row for row in after}
    assert (
        len(after) == 3
        and by_file[mine["midi_file"]] == edited
        and by_file[own["midi_file"]] == own
    )
    assert by_file[theirs["midi_file"]]["description"] == theirs["description"]
    assert "2 lines of yours kept" in r.stdout
    assert all(path.read_bytes() == SECRET for path in users)
    assert not stale.exists()
