import io
import subprocess
import sys

import mido
import numpy as np
import pytest
from midi_factory import TPB, heard, meter, midi_file, notes, tempo, track

import attributes as A
import describe
import midifile
import tokenizer as T

SPQ = T.STEPS_PER_QUARTER


def save(mid, path):
    mid.save(str(path))
    return str(path)


def note_set(score):
    return sorted((n.onset, n.duration, n.pitch, n.program) for n in score.notes)


def round_trip(mid):
    """encode -> decode -> read back; also checks that re-encoding gives the same tokens."""
    tokens = T.encode(mid)
    out = T.decode(tokens)
    out = mido.MidiFile(file=io.BytesIO(_bytes(out)))  # what a reader of the saved file sees
    assert np.array_equal(T.encode(out), tokens), "encode(decode(tokens)) must give the same tokens"
    return tokens, T.read_midi(out), out


def _bytes(mid):
    buf = io.BytesIO()
    mid.save(file=buf)
    return buf.getvalue()


def assert_grammatical(tokens):
    for prev, nxt in zip(tokens[:-1], tokens[1:]):
        assert T.GRAMMAR_MASK[prev, nxt], (
            f"{T.token_name(prev)} -> {T.token_name(nxt)} breaks the grammar"
        )


# --- the vocabulary ---------------------------------------------------------


def test_vocabulary_blocks_are_contiguous_and_fit():
    ends = [T.OFFSET[name] + T.SIZE[name] for name in T.TYPE_NAMES]
    starts = [T.OFFSET[name] for name in T.TYPE_NAMES]
    assert starts[0] == 0 and starts[1:] == ends[:-1] and ends[-1] == T.VOCAB_SIZE
    # the design's cap, with the KEY and "unspecified" attribute tokens in
    assert T.VOCAB_SIZE <= 512
    for i in range(T.VOCAB_SIZE):
        assert T.token_id(T.token_name(i)) == i
        assert T.OFFSET[T.TYPE_NAMES[T.TOKEN_TYPE[i]]] <= i
    assert T.token_name(T.semantic_token(3)) == "SEMANTIC_TOKEN_3"
    assert T.token_name(T.OFFSET["TIME_ON"]) == "TIME_ON_1"
    with pytest.raises(ValueError, match="unknown token"):
        T.token_id("SEMANTIC_TOKEN_99")


def test_tempo_levels_are_within_0_5_percent_from_8_to_1000_bpm():
    for bpm in np.geomspace(8, 1000, 2000):
        assert abs(T.level_bpm(T.tempo_level(bpm)) / bpm - 1) < 0.005
    for bpm in (30, 60, 120, 240, 480):
        assert T.level_bpm(T.tempo_level(bpm)) == pytest.approx(bpm, rel=1e-12)


def test_time_signature_tokens_name_both_halves():
    assert [
        T.token_name(T.OFFSET["TIMESIG_NUM"] + 22),
        T.token_name(T.OFFSET["TIMESIG_DEN"] + 4),
    ] == ["TIMESIG_NUM_23", "TIMESIG_DEN_16"]
    assert (
        T.fit_meter(23, 16) == (23, 16)
        and T.fit_meter(64, 16) == (16, 4)
        and T.fit_meter(33, 16) is None
    )


# --- round trips on edge cases -----------------------------------------------


def test_type0_single_track_round_trip():
    spec = [
        (0, 1, 60),
        (1, 0.5, 62),
        (1.5, 0.5, 64),
        (2, 2, 65),
        (2, 2, 69),
        (4, 1 / 3, 72),
        (4 + 1 / 3, 1 / 3, 71),
    ]
    mid = midi_file([track(notes(0, spec, program=0) + [tempo(0, 90)])], type=0)
    tokens, back, out = round_trip(mid)
    expected = sorted(
        (round(o * SPQ), round((o + d) * SPQ) - round(o * SPQ), p, 0) for o, d, p in spec
    )
    assert note_set(back) == expected
    assert back.tempos[0][1] == pytest.approx(90, rel=0.0055)
    assert out.length == pytest.approx(mid.length, rel=0.01)
    assert_grammatical(tokens)


def test_type1_tracks_tempo_changes_drums_and_programs():
    piano = notes(0, [(0, 1, 60), (1, 1, 64), (2, 1, 67), (6, 2, 72)], program=0)
    bass = notes(1, [(0, 2, 36), (2, 2, 43)], program=33)
    drums = notes(9, [(b / 2, 0.25, 36 if b % 2 == 0 else 42) for b in range(16)])
    conductor = [
        tempo(0, 100),
        tempo(4, 140),
        tempo(6, 70),
        (0, mido.MetaMessage("time_signature", numerator=3, denominator=4)),
    ]
    mid = midi_file(
        [track(conductor), track(piano, "piano"), track(bass, "bass"), track(drums, "drums")]
    )
    tokens, back, out = round_trip(mid)
    programs = {n.program for n in back.notes}
    assert programs == {0, 33, T.DRUMS}
    drum_channels = {
        m.channel
        for t in out.tracks
        for m in t
        if m.type == "note_on" and m.note in (36, 42) and m.velocity
    }
    assert 9 in drum_channels
    assert [bpm for _, bpm in back.tempos] == pytest.approx([100, 140, 70], rel=0.005)
    assert [s for s, _ in back.tempos] == [0, 4 * SPQ, 6 * SPQ]
    assert back.time_signatures == [(0, 3, 4)]
    assert len(back.notes) == 4 + 2 + 16
    assert out.length == pytest.approx(mid.length, rel=0.01)
    assert_grammatical(tokens)


def test_program_change_mid_track_changes_the_instrument():
    events = notes(0, [(0, 1, 60)], program=0) + [
        (1, mido.Message("program_change", channel=0, program=40))
    ]
    events += notes(0, [(1, 1, 60)])
    tokens, back, _ = round_trip(midi_file([track(events)]))
    assert [(n.onset, n.program) for n in back.notes] == [(0, 0), (SPQ, 40)]


def test_note_on_velocity_zero_is_a_note_off():
    events = [
        (0, mido.Message("note_on", note=60, velocity=100)),
        (1, mido.Message("note_on", note=60, velocity=0)),
        (1, mido.Message("note_on", note=62, velocity=50)),
        (3, mido.Message("note_off", note=62)),
    ]
    _, back, _ = round_trip(midi_file([track(events)]))
    assert note_set(back) == [(0, SPQ, 60, 0), (SPQ, 2 * SPQ, 62, 0)]
    assert [T.velocity_bin(n.velocity) for n in back.notes] == [
        T.velocity_bin(100),
        T.velocity_bin(50),
    ]


def test_overlapping_notes_of_one_pitch():
    # Same channel: the second strike ends the first (what a synth does).
    same_channel = [
        (0, mido.Message("note_on", note=60, velocity=80)),
        (1, mido.Message("note_on", note=60, velocity=80)),
        (2, mido.Message("note_off", note=60)),
        (3, mido.Message("note_off", note=60)),
    ]
    _, back, _ = round_trip(midi_file([track(same_channel)]))
    assert note_set(back) == [(0, SPQ, 60, 0), (SPQ, SPQ, 60, 0)]
    # Two tracks of one instrument in unison: both notes survive, on channels of their own.
    doubled = midi_file(
        [track(notes(0, [(0, 2, 60)], program=30)), track(notes(1, [(1, 2, 60)], program=30))]
    )
    _, back, out = round_trip(doubled)
    assert note_set(back) == [(0, 2 * SPQ, 60, 30), (SPQ, 2 * SPQ, 60, 30)]
    assert len({m.channel for t in out.tracks for m in t if m.type == "note_on"}) == 2


def test_long_note_becomes_several_durations():
    mid = midi_file([track(notes(0, [(1, 40, 48)]))])
    tokens, back, _ = round_trip(mid)
    assert note_set(back) == [(SPQ, 40 * SPQ, 48, 0)]
    durations = [t for t in tokens if T.TOKEN_TYPE[t] == T.TYPE["DURATION"]]
    assert len(durations) == -(-40 * SPQ // T.MAX_DURATION)  # several DURATION tokens add up


def test_long_gap_becomes_several_time_on_tokens():
    mid = midi_file([track(notes(0, [(0, 1, 60), (30, 1, 62)]))])
    tokens, back, _ = round_trip(mid)
    assert [n.onset for n in back.notes] == [0, 30 * SPQ]
    shifts = [t for t in tokens if T.TOKEN_TYPE[t] == T.TYPE["TIME_ON"]]
    # up to the end of the last note
    assert sum(t - T.OFFSET["TIME_ON"] + 1 for t in shifts) == 31 * SPQ


def test_empty_file_encodes_to_a_header_only():
    tokens = T.encode(midi_file([track([])]))
    assert tokens[0] == T.START and tokens[-1] == T.END
    assert not any(T.TOKEN_TYPE[t] == T.TYPE["NOTE"] for t in tokens)
    assert T.tokens_to_score(tokens)[1] == 0


@pytest.mark.parametrize(
    "content", [b"", b"MThd", b"this is not a midi file at all", bytes(range(256)) * 4]
)
def test_garbage_raises_midi_error(tmp_path, content):
    path = tmp_path / "bad.mid"
    path.write_bytes(content)
    with pytest.raises(T.MidiError):
        T.encode(str(path))


def test_truncated_file_raises_midi_error(tmp_path):
    data = _bytes(midi_file([track(notes(0, [(i, 1, 60 + i) for i in range(20)]))]))
    path = tmp_path / "cut.mid"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(T.MidiError):
        T.encode(str(path))


def test_random_bytes_never_escape_as_other_errors(tmp_path):
    rng = np.random.default_rng(0)
    header = _bytes(midi_file([track(notes(0, [(0, 1, 60)]))]))[:22]  # a valid MThd + MTrk start
    for i in range(50):
        path = tmp_path / f"r{i}.mid"
        path.write_bytes(
            header + rng.integers(0, 256, size=int(rng.integers(1, 400)), dtype=np.uint8).tobytes()
        )
        try:
            T.encode(str(path))
        except T.MidiError:
            pass


# --- real-world files: what a player hears survives -----------------------------


def assert_heard(out, expected, rel=0.005):
    """The decoded file, played by mido's clock, strikes the expected (seconds, pitch, program)."""
    got = heard(out)
    assert [(p, i) for _, p, i in got] == [(p, i) for _, p, i in expected]
    for (t, p, _), (want, _, _) in zip(got, expected):
        assert t == pytest.approx(want, rel=rel, abs=1e-6), (
            f"pitch {p} sounds at {t:.4f} s, not {want:.4f} s"
        )


def test_zero_length_notes_on_drums_and_melody_sound_as_short_notes():
    on_off = lambda channel, beat, pitch: [
        (beat, mido.Message("note_on", channel=channel, note=pitch, velocity=90)),
        (beat, mido.Message("note_off", channel=channel, note=pitch)),
    ]
    # hi-hat hits written as zero length
    drums = [e for b in range(8) for e in on_off(9, b / 2, 42)]
    # grace notes before a note
    melody = on_off(0, 0, 72) + on_off(0, 0.25, 74) + notes(0, [(0.5, 1, 76)])
    mid = midi_file([track([tempo(0, 100)]), track(drums), track(melody)])
    score = T.read_midi(mid)
    assert score.notes_in == 11 and len(score.notes) == 11 and not score.dropped
    assert (
        score.changed["zero-length notes (note-off at the note-on's tick) kept at one grid step"]
        == 10
    )
    tokens, back, out = round_trip(mid)
    assert note_set(back) == sorted(
        [(6 * b, 1, 42, T.DRUMS) for b in range(8)]
        + [(0, 1, 72, 0), (3, 1, 74, 0), (6, SPQ, 76, 0)]
    )
    beat = 60 / 100
    assert_heard(
        out,
        sorted(
            [(b / 2 * beat, 42, "drums") for b in range(8)]
            + [(0, 72, 0), (0.25 * beat, 74, 0), (0.5 * beat, 76, 0)]
        ),
    )
    assert describe.round_trip(mid)["notes_kept"] == 11


def test_extreme_tempos_keep_the_seconds_timeline():
    # 8 bpm for two beats (15 s), then 900 bpm for 64 beats (4.27 s), then 120 bpm.
    melody = notes(0, [(b, 0.5, 60 + b % 12) for b in range(0, 70)], program=0)
    mid = midi_file([track([tempo(0, 8), tempo(2, 900), tempo(66, 120)]), track(melody)])
    seconds = lambda b: 7.5 * min(b, 2) + 60 / 900 * min(max(b - 2, 0), 64) + 0.5 * max(b - 66, 0)
    score = T.read_midi(mid)
    assert not any("clamped" in why for why in score.changed)
    tokens, back, out = round_trip(mid)
    assert_heard(out, [(seconds(b), 60 + b % 12, 0) for b in range(0, 70)])
    assert out.length == pytest.approx(mid.length, rel=0.005)


def test_fast_tempo_map_keeps_the_seconds_timeline():
    # A performance's tempo map: a change every 10 ticks, many within one grid step (40 ticks).
    rng = np.random.default_rng(0)
    changes = [
        tempo(i * 10 / TPB, float(bpm)) for i, bpm in enumerate(rng.uniform(40, 400, 8 * TPB // 10))
    ]
    melody = notes(0, [(b / 4, 0.25, 60 + b % 12) for b in range(32)], program=0)
    mid = midi_file([track(changes), track(melody)])
    tokens, back, out = round_trip(mid)
    assert_heard(out, [(t, p, 0) for t, p, _ in heard(mid)])
    assert out.length == pytest.approx(mid.length, rel=0.005)


@pytest.mark.parametrize(
    "numerator, denominator", [(23, 16), (9, 16), (4, 8), (2, 8), (9, 4), (12, 4), (3, 1), (5, 32)]
)
def test_odd_time_signatures_keep_their_bars(numerator, denominator):
    bar = numerator * 4 / denominator  # beats
    mid = midi_file(
        [
            track([meter(0, numerator, denominator), meter(2 * bar, 3, 4)]),
            track(notes(0, [(b * bar, bar, 60) for b in range(3)] + [(2 * bar + 3, 1, 62)])),
        ]
    )
    tokens, back, out = round_trip(mid)
    assert back.time_signatures == [(0, numerator, denominator), (round(2 * bar * SPQ), 3, 4)]
    metas = [
        (m.numerator, m.denominator) for t in out.tracks for m in t if m.type == "time_signature"
    ]
    assert metas == [(numerator, denominator), (3, 4)]
    assert_grammatical(tokens)


def test_23_16_then_9_16_bar_lines_and_seconds():
    mid = midi_file(
        [
            track([tempo(0, 90), meter(0, 23, 16), meter(23 / 4, 9, 16)]),
            track(notes(0, [(0, 23 / 4, 48), (23 / 4, 9 / 4, 50), (8, 9 / 4, 52)], program=32)),
        ]
    )
    tokens, back, out = round_trip(mid)
    assert back.time_signatures == [(0, 23, 16), (69, 9, 16)]  # a 23/16 bar is 69 grid steps
    assert [T.token_name(t) for t in tokens[1:3]] == ["TIMESIG_NUM_23", "TIMESIG_DEN_16"]
    assert_heard(out, [(0, 48, 32), (23 / 4 * 60 / 90, 50, 32), (8 * 60 / 90, 52, 32)])


def test_karaoke_file_with_lyrics_reads_as_midi(tmp_path):
    words = [
        (0, mido.MetaMessage("text", text="@KMIDI KARAOKE FILE")),
        (0, mido.MetaMessage("text", text="@Tsong")),
    ]
    words += [
        (b, mido.MetaMessage("lyrics", text=syllable))
        for b, syllable in enumerate(["Hap", "py ", "bïrth", "day"])
    ]
    mid = midi_file(
        [
            track([tempo(0, 100)]),
            track(words, "Words"),
            track(notes(0, [(b, 1, 60 + b) for b in range(4)], program=53)),
        ]
    )
    path = save(mid, tmp_path / "song.kar")
    result = describe.round_trip(path)
    assert result["notes_in"] == result["notes_kept"] == 4
    assert_heard(result["midi"], [(b * 0.6, 60 + b, 53) for b in range(4)])


def test_type2_sequences_play_one_after_another():
    # 2 beats at 60 bpm: 2 s
    first = track([tempo(0, 60)] + notes(0, [(0, 1, 60), (1, 1, 62)], program=0))
    # then 2 beats at 120 bpm
    second = track([tempo(0, 120)] + notes(0, [(0, 1, 64), (1, 1, 65)], program=0))
    mid = midi_file([first, second], type=2)
    score = T.read_midi(mid)
    assert score.changed["sequences of a type 2 file, played one after another"] == 2
    assert note_set(score) == [
        (0, SPQ, 60, 0),
        (SPQ, SPQ, 62, 0),
        (2 * SPQ, SPQ, 64, 0),
        (3 * SPQ, SPQ, 65, 0),
    ]
    out = T.decode(T.score_to_tokens(score))
    assert_heard(out, [(0, 60, 0), (1, 62, 0), (2, 64, 0), (2.5, 65, 0)])


def test_program_change_while_a_note_sounds_keeps_the_onset_program():
    events = notes(0, [(0, 2, 60)], program=0) + [
        (1, mido.Message("program_change", channel=0, program=40))
    ]
    events += notes(0, [(1.5, 1, 62)])
    mid = midi_file([track(events)])
    tokens, back, out = round_trip(mid)
    assert note_set(back) == [(0, 2 * SPQ, 60, 0), (18, SPQ, 62, 40)]
    # the piano note is heard as piano, the next as violin
    assert_heard(out, [(0, 60, 0), (0.75, 62, 40)])


def test_fast_reader_equals_mido():
    # Running status (mido writes it), controllers, pitch bend, aftertouch, sysex, text and meters.
    events = notes(1, [(b / 3, 0.5, 40 + b) for b in range(12)], program=7) + notes(
        9, [(0, 0, 36), (1, 0.1, 38)]
    )
    events += [
        (0.1, mido.Message("control_change", channel=1, control=64, value=127)),
        (0.2, mido.Message("pitchwheel", channel=1, pitch=-300)),
        (0.3, mido.Message("aftertouch", channel=1, value=30)),
        (0.4, mido.Message("polytouch", channel=1, note=41, value=30)),
        (0.5, mido.Message("sysex", data=[0x7E, 0x7F, 0x09, 0x01])),
        (0.6, mido.MetaMessage("lyrics", text="la")),
        tempo(0.7, 97),
        meter(1, 7, 8),
    ]
    data = _bytes(midi_file([track(events), track(notes(2, [(0, 4, 50)], program=3))]))
    fast = midifile.parse_smf(data)
    slow = midifile.events_of(mido.MidiFile(file=io.BytesIO(data), clip=True))
    assert (fast.type, fast.ticks_per_beat, fast.tracks, fast.ends) == (
        slow.type,
        slow.ticks_per_beat,
        slow.tracks,
        slow.ends,
    )


def test_unusual_bytes_are_left_to_mido(tmp_path):
    data = bytearray(_bytes(midi_file([track([tempo(0, 90)] + notes(0, [(0, 1, 60)]))])))
    at = data.index(b"\xff\x51\x03")  # a tempo meta event of 4 bytes: mido reads the first 3
    data[at : at + 6] = b"\xff\x51\x04" + data[at + 3 : at + 6] + b"\x00"
    data[18:22] = (int.from_bytes(data[18:22], "big") + 1).to_bytes(4, "big")
    with pytest.raises(midifile._Unusual):
        midifile.parse_smf(bytes(data))
    path = tmp_path / "odd.mid"
    path.write_bytes(bytes(data))
    assert T.read_midi(str(path)).tempos[0][1] == pytest.approx(90, rel=0.005)


# --- decode on model-like output ----------------------------------------------


def test_decode_never_crashes_on_random_tokens():
    rng = np.random.default_rng(0)
    for _ in range(200):
        tokens = rng.integers(0, T.VOCAB_SIZE, size=int(rng.integers(0, 300)))
        score, skipped = T.tokens_to_score(tokens)
        assert all(n.duration >= 1 and 0 <= n.pitch < 128 for n in score.notes)
        mido.MidiFile(file=io.BytesIO(_bytes(T.decode(tokens))))  # writes and reads back as MIDI


def test_decode_skips_what_breaks_the_grammar():
    P, N, D, TO = (T.OFFSET[k] for k in ("PROGRAM", "NOTE", "DURATION", "TIME_ON"))
    good = A.attribute_prefix(
        T.semantic_token(2), key=9, meter=(3, 4), tempo_bpm=90, instruments=[0, 40]
    ) + [T.START, P + 0, N + 60, D + 11, TO + 11, P + 0, N + 62, D + 11, T.END]
    score, skipped = T.tokens_to_score(good)
    assert skipped == 0 and note_set(score) == [(0, 12, 60, 0), (12, 12, 62, 0)]
    bad = [
        T.START,
        N + 61,
        P + 0,
        N + 60,
        D + 11,
        D + 11,
        P + 5,
        TO + 11,
        P + 0,
        N + 62,
        D + 11,
        T.END,
    ]
    score, skipped = T.tokens_to_score(bad)
    # NOTE without PROGRAM and the unfinished PROGRAM go
    assert note_set(score) == [(0, 24, 60, 0), (12, 12, 62, 0)]
    assert skipped == 2


def test_attribute_prefix_has_a_fixed_layout_and_reads_back():
    prefix = A.attribute_prefix(
        T.semantic_token(4),
        key=21,
        meter=(64, 16),
        tempo_bpm=72,
        instruments=[40, 41, 42, 40, T.DRUMS, 0, 73, 71],
    )
    assert len(prefix) == A.PREFIX_LEN
    assert [T.token_name(t) for t in prefix[:6]] == [
        "SEMANTIC_TOKEN_4",
        "KEY_A_MINOR",
        "TIMESIG_NUM_16",
        "TIMESIG_DEN_4",
        "TEMPO_COARSE_9",
        "TEMPO_FINE_6",
    ]
    got = A.read_prefix(prefix)
    assert got["semantic"] == T.semantic_token(4) and got["key"] == 21 and got["meter"] == (16, 4)
    assert got["tempo_bpm"] == pytest.approx(72, rel=0.005)
    assert got["instruments"] == [40, 41, 42, T.DRUMS, 0, 73], (
        "duplicates go, the first six are kept"
    )
    short = A.read_prefix(A.attribute_prefix(instruments=[T.DRUMS]))
    assert short == dict(
        semantic=None, key=None, meter=None, tempo_bpm=None, instruments=[T.DRUMS], chords=None
    )
    # the vocabulary can't write it: unspecified, not wrong
    unfit = A.attribute_prefix(meter=(33, 16))
    assert unfit == list(A.UNCOND_PREFIX) and A.read_prefix(unfit)["meter"] is None
    assert len(set(A.UNCOND_PREFIX.tolist()) & set(range(T.OFFSET["KEY"]))) == 1, (
        "every unspecified token but UNCOND is the prefix's own"
    )
    blank = A.blank_prefix(["key", "tempo"])
    merged = np.where(blank >= 0, blank, prefix)
    assert A.read_prefix(merged) | dict(key=21, tempo_bpm=got["tempo_bpm"]) == got
    assert A.read_prefix(merged)["key"] is None and A.read_prefix(merged)["tempo_bpm"] is None


def test_grammar_mask_agrees_with_encoded_files():
    mid = midi_file(
        [
            track([tempo(0, 77)] + notes(0, [(0, 0.5, 60, 20), (0.5, 9, 64, 100)], program=5)),
            track(notes(9, [(0, 0.25, 36), (1, 0.25, 38)])),
        ]
    )
    tokens = T.encode(mid)
    assert_grammatical(tokens)
    # a NOTE takes a DURATION
    assert T.next_token_mask(T.OFFSET["NOTE"] + 3).sum() == T.MAX_DURATION


# --- the command line -----------------------------------------------------------


def test_cli_writes_round_trip_and_reports(tmp_path):
    src = save(
        midi_file([track(notes(0, [(0, 1, 60), (1, 1, 64)], program=0))]), tmp_path / "in.mid"
    )
    out = tmp_path / "out.mid"
    r = subprocess.run(
        [sys.executable, "roundtrip.py", src, "-o", str(out)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert "notes in     2" in r.stdout and "notes kept   2" in r.stdout
    assert len(T.read_midi(str(out)).notes) == 2


def test_cli_corrupt_input_is_one_line_on_stderr(tmp_path):
    path = tmp_path / "bad.mid"
    path.write_bytes(b"not midi")
    r = subprocess.run([sys.executable, "roundtrip.py", str(path)], capture_output=True, text=True)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "bad.mid" in r.stderr
