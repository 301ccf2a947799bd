"""Key labels from the file's own key signature where the notes agree with it (describe.label_key),
and the key signature as midifile.py reads it, by its own reader and by mido's."""

import json

import mido
import pytest
from midi_factory import midi_file, notes, track

import dataset
import describe
import midifile
import prepare
import tokenizer as T
from files import UserError

D_MAJOR = [62, 64, 66, 67, 69, 71, 73]  # D E F# G A B C#
E_MAJOR = [64, 66, 68, 69, 71, 73, 75]


def signature(key, beat=0):
    return (beat, mido.MetaMessage("key_signature", key=key))


def tune(pitches, final, *, keys=(), bass=None):
    """A melody over the pitches, ending on `final`, with key signature metas (mido key names) and
    an optional held bass note under its first and last beats."""
    spec = [(i, 1, p) for i, p in enumerate(pitches * 3)] + [(len(pitches) * 3, 2, final)]
    events = [signature(k) for k in keys] + notes(0, spec)
    if bass is not None:
        events += notes(1, [(0, 1, bass), (len(pitches) * 3, 2, bass)])
    return midi_file([track(events)])


def label(mid, tmp_path, name="t.mid"):
    mid.save(str(tmp_path / name))
    return describe.label_key(T.read_midi(str(tmp_path / name)))


@pytest.mark.parametrize("key, expected", [("D", (2, 0)), ("Bm", (2, 1)), ("Eb", (3, 0))])
def test_key_signature_read_by_both_readers(tmp_path, key, expected):
    mid = tune(D_MAJOR, 62, keys=[key])
    mid.save(str(tmp_path / "k.mid"))
    fast = T.read_midi(str(tmp_path / "k.mid")).key_signatures
    slow = T.read_midi(mid).key_signatures  # a mido.MidiFile goes through events_of
    assert fast == slow == [(0, *expected)]


def test_signature_collection_tonic_from_the_notes(tmp_path):
    # two sharps, ending on D over a D bass: D major
    assert label(tune(D_MAJOR, 62, keys=["D"], bass=38), tmp_path) == ("D major", "signature")
    # the same collection ending on B over a B bass: its relative minor, whatever the signature's
    # own mode flag says
    assert label(tune(D_MAJOR, 71, keys=["D"], bass=35), tmp_path) == ("B minor", "signature")
    assert label(tune(D_MAJOR, 71, keys=["Bm"], bass=35), tmp_path) == ("B minor", "signature")


def test_contradicted_or_missing_signature_falls_back_to_the_estimator(tmp_path):
    # a default C major over a piece in E major: the notes win
    default = tune(E_MAJOR, 64, keys=["C"], bass=40)
    assert label(default, tmp_path) == ("E major", "notes")
    assert label(tune(E_MAJOR, 64, bass=40), tmp_path) == ("E major", "notes")
    drums = midi_file([track([signature("D")] + notes(9, [(0, 1, 36), (1, 1, 38)]))])
    assert label(drums, tmp_path) == (None, None)


def test_the_signature_in_force_longest_counts(tmp_path):
    # a C major signature at the start, D major from beat 1 on: two sharps hold most of the piece
    mid = tune(D_MAJOR, 62, keys=[], bass=38)
    mid.tracks[0][1:1] = [mido.MetaMessage("key_signature", key="C", time=0)]
    mid.tracks.append(track([signature("D", beat=1)]))
    mid.save(str(tmp_path / "m.mid"))
    score = T.read_midi(str(tmp_path / "m.mid"))
    assert [collection for _, collection, _ in score.key_signatures] == [0, 2]
    assert describe.main_signature(score) == 2
    assert describe.label_key(score) == ("D major", "signature")


def test_an_impossible_key_signature_is_left_out_not_fatal(tmp_path):
    mid = tune(D_MAJOR, 62)
    mid.save(str(tmp_path / "x.mid"))
    data = bytearray((tmp_path / "x.mid").read_bytes())
    # a key signature meta of 9 sharps (mido refuses it) spliced in at the start of the track
    at = data.index(b"MTrk") + 8
    data[at:at] = b"\x00\xff\x59\x02\x09\x00"
    data[at - 4 : at] = (int.from_bytes(data[at - 4 : at], "big") + 6).to_bytes(4, "big")
    (tmp_path / "x.mid").write_bytes(bytes(data))
    score = T.read_midi(str(tmp_path / "x.mid"))
    assert score.key_signatures == [] and len(score.notes) == len(D_MAJOR) * 3 + 1
    with pytest.raises(mido.midifiles.meta.KeySignatureError):
        mido.MidiFile(str(tmp_path / "x.mid"))


def test_index_says_where_each_label_came_from(tmp_path):
    midi = tmp_path / "midi"
    midi.mkdir()
    tune(D_MAJOR, 71, keys=["D"], bass=35).save(str(midi / "signed.mid"))
    tune(E_MAJOR, 64, keys=["C"], bass=40).save(str(midi / "default_c.mid"))
    tune(E_MAJOR, 64, bass=40).save(str(midi / "unsigned.mid"))
    prepare.prepare(str(tmp_path), val_fraction=0.0, workers=1, quiet=True)
    rows = {r["midi_file"]: r for r in map(json.loads, open(tmp_path / "index.jsonl"))}
    assert {name: (r["key"], r["key_source"]) for name, r in rows.items()} == {
        "signed.mid": ("B minor", "signature"),
        "default_c.mid": ("E major", "notes"),
        "unsigned.mid": ("E major", "notes"),
    }
    # an index written before key_source existed is refused with what to do about it
    old = [{k: v for k, v in r.items() if k != "key_source"} for r in rows.values()]
    (tmp_path / "index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old))
    with pytest.raises(UserError, match="before key labels came from key signatures.*prepare.py"):
        dataset.read_index(str(tmp_path))


def test_signature_names_round_trip_through_mido():
    for (sharps, minor), name in mido.midifiles.meta._key_signature_decode.items():
        assert midifile.signature_of(name) == (7 * sharps % 12, minor)
