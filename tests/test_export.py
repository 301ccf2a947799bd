"""data/music21/export.py on a small slice of the corpus bundled with music21, into a temp dir."""

import json
import re
import subprocess
import sys
from pathlib import Path

import mido

SCRIPT = Path(__file__).resolve().parents[1] / "data" / "music21" / "export.py"
# 2 ABC books, 1 score collection
SLICE = ["--limit", "2", "--collections", "oneills1850,essenFolksong,bach"]


def export(*args):
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300
    )


def test_export_writes_midi_descriptions_and_reuses_the_cache(tmp_path):
    r = export("--out", str(tmp_path), *SLICE)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    midi_dir = tmp_path / "midi"
    jsonl = (midi_dir / "descriptions.jsonl").read_text()
    lines = [json.loads(line) for line in jsonl.splitlines()]
    assert len(lines) == 6, lines  # 2 works from each of the 3 collections
    mids = sorted(midi_dir.rglob("*.mid"))
    assert {p.relative_to(midi_dir).as_posix() for p in mids} == {d["midi_file"] for d in lines}
    for p in mids:  # real MIDI with notes, readable by another library than the one that wrote it
        notes = sum(
            m.type == "note_on" and m.velocity > 0 for t in mido.MidiFile(p).tracks for m in t
        )
        assert notes > 0, p
    desc = {d["midi_file"]: d["description"] for d in lines}
    # O'Neill's no. 1, "The Enchanted Valley", has K:Gm and M:2/4 in the bundled book 0001-0050.abc
    oneill = desc["oneills1850/0001-0050_0001.mid"]
    assert (
        "G minor" in oneill
        and "2/4" in oneill
        and "O'Neill" in oneill
        and "Enchanted Valley" in oneill
    )
    # the first Essen book (altdeu10) holds German songs: O: "Europa, Mitteleuropa, Deutschland"
    assert all(
        "folk song from Germany" in v
        for k, v in desc.items()
        if k.startswith("essenFolksong/altdeu10")
    )
    chorales = [v for k, v in desc.items() if k.startswith("bach/")]
    assert len(chorales) == 2 and all(
        "Bach" in v and "four voices" in v and "BWV" in v for v in chorales
    )
    # voices sing on the choir program (bwv165.6 declares a harpsichord); tunes stay on the piano
    for p in mids:
        programs = {
            m.program for t in mido.MidiFile(p).tracks for m in t if m.type == "program_change"
        }
        assert programs == ({52} if p.parent.name == "bach" else programs - {52}), (p, programs)

    mtimes = {p: p.stat().st_mtime_ns for p in mids}
    r = export("--out", str(tmp_path), *SLICE)
    assert r.returncode == 0, r.stderr[-2000:]
    assert {p: p.stat().st_mtime_ns for p in mids} == mtimes  # nothing converted again
    assert (
        midi_dir / "descriptions.jsonl"
    ).read_text() == jsonl  # cached works keep their descriptions
    # summary row: collection, found, selected, new, cached, failed
    assert re.search(r"^bach\s+\d+\s+2\s+0\s+2\s+0\b", r.stdout, re.M), r.stdout


def test_user_errors_are_one_line_messages(tmp_path):
    r = export("--out", str(tmp_path), "--collections", "nosuch")
    assert (
        r.returncode != 0
        and "nosuch" in r.stderr
        and "valid:" in r.stderr
        and "Traceback" not in r.stderr
    )
    # nothing to export
    r = export("--out", str(tmp_path), "--collections", "oneills1850", "--limit", "0")
    assert (
        r.returncode != 0
        and "nothing could be exported" in r.stderr
        and "Traceback" not in r.stderr
    )


def test_a_score_over_the_timeout_fails_with_a_reason_and_is_not_retried(tmp_path):
    args = ["--out", str(tmp_path), "--collections", "beethoven", "--limit", "1", "--timeout", "1"]
    r = export(*args)  # the shortest Beethoven quartet movement needs several CPU seconds
    assert r.returncode != 0 and "TimeoutError" in r.stdout and "Traceback" not in r.stderr, (
        r.stdout + r.stderr
    )
    assert not list((tmp_path / "midi").rglob("*.mid*"))  # no partial MIDI left behind
    r = export(*args)
    assert "(earlier run)" in r.stdout, r.stdout
