"""Chord names and chords measured from notes (chords.py)."""

import pytest

import chords
from tokenizer import DRUMS, Note, Score


def score_of(bars, meter=(4, 4)):
    """bars: [[pitches sounding the whole bar], ...] -> a Score, one block chord per bar."""
    length = meter[0] * 48 // meter[1]
    score = Score(time_signatures=[(0, *meter)], end_step=length * len(bars))
    for i, pitches in enumerate(bars):
        score.notes += [Note(i * length, length, p, 0, 80) for p in pitches]
    return score


@pytest.mark.parametrize(
    "text, chord",
    [
        ("C", (0, "major")),
        ("Am", (9, "minor")),
        ("F#m", (6, "minor")),
        ("Bb", (10, "major")),
        ("E7", (4, "dominant 7")),
        ("Abmaj7", (8, "major 7")),
        ("Cm7", (0, "minor 7")),
        ("Bm7b5", (11, "half-diminished")),
        ("G6", (7, "6")),
        ("Dsus4", (2, "sus4")),
        ("D/F#", (2, "major")),
        ("Ebdim", (3, "diminished")),
    ],
)
def test_symbols_read_and_written(text, chord):
    assert chords.parse_symbol(text) == chord
    assert chords.parse_symbol(chords.symbol(chord)) == chord


@pytest.mark.parametrize("text", ["H7", "Cxyz", "C/Q", "", "7", "the"])
def test_what_is_no_chord_symbol(text):
    assert chords.parse_symbol(text) is None


def test_block_chords_are_named_bar_by_bar():
    score = score_of([[48, 60, 64, 67], [43, 59, 62, 65, 67], [45, 60, 64, 69], [41, 60, 65, 69]])
    assert chords.progression_text(chords.per_bar(score)) == "C G7 Am F"


def test_the_bass_breaks_a_tie_and_drums_are_not_harmony():
    # C E G A: C6 or Am7 by pitch classes; the bass on C makes it C6, on A it is Am7
    on_c, on_a = score_of([[48, 64, 67, 69]]), score_of([[45, 60, 64, 67]])
    on_a.notes += [Note(0, 48, 38, DRUMS, 80), Note(0, 48, 42, DRUMS, 80)]  # snare, hi-hat
    assert chords.per_bar(on_c) == [(0, "6")]
    assert chords.per_bar(on_a) == [(9, "minor 7")]


def test_a_bar_moving_twice_as_fast_is_split_in_halves():
    score = score_of([[48, 60, 64, 67]])
    fast = Score(time_signatures=[(0, 4, 4)], end_step=48)
    fast.notes = [Note(0, 24, p, 0, 80) for p in (48, 60, 64, 67)]  # C, then G
    fast.notes += [Note(24, 24, p, 0, 80) for p in (43, 59, 62, 67)]
    assert chords.bar_chords(fast) == [(0, (0, "major")), (24, (7, "major"))]
    assert chords.bar_chords(score) == [(0, (0, "major"))]


def test_bar_lines_follow_meter_changes_and_silence_has_no_chord():
    score = score_of([[50, 53, 57], [], [48, 52, 55]], meter=(3, 4))
    assert chords.bar_lines(score).tolist() == [0, 36, 72]
    assert chords.per_bar(score) == [(2, "minor"), None, (0, "major")]
    score.time_signatures.append((72, 2, 4))
    score.end_step = 72 + 48
    assert chords.bar_lines(score).tolist() == [0, 36, 72, 96]


def test_transposition_and_cycling():
    assert chords.transpose((9, "minor"), 5) == (2, "minor")
    assert chords.transpose((11, "major"), 1) == (0, "major")
    assert chords.triad((7, "dominant 7")) == (7, "major")
    assert chords.triad((11, "half-diminished")) == (11, "minor")
    assert [chords.symbol(c) for c in chords.cycled([(0, "major"), (7, "major")], 5)] == [
        "C", "G", "C", "G", "C",
    ]  # fmt: skip


def test_a_sliding_window_turns_the_chord_slots_to_its_bar():
    """generation.follow_bars, model.stream's pin: the slots hold the chords from the bar the window
    starts in, as training fills them, the asked progression read back as its shortest cycle."""
    import torch

    import attributes
    import generation
    import tokenizer as T

    progression = [(0, "major"), (7, "major"), (9, "minor")]  # C G Am, cycled over 8 slots
    prefix = attributes.attribute_prefix(
        T.semantic_token(1), meter=(3, 4), chords=attributes.chord_slots(progression)
    )
    bar = [T.OFFSET["PROGRAM"], T.OFFSET["NOTE"] + 60, T.OFFSET["DURATION"] + 11]
    bar += [T.OFFSET["TIME_ON"] + 35]  # one 3/4 bar: 36 steps
    row = prefix + [T.START] + bar * 4  # four bars, then the window's recent part
    plain = attributes.attribute_prefix(T.semantic_token(1), meter=(3, 4))
    seq = torch.tensor([row, plain + [T.START] + bar * 4])
    pinned = generation.follow_bars(seq, len(row))
    got = attributes.read_prefix(pinned[0].tolist())["chords"]
    assert got == [progression[(4 + i) % 3] for i in range(8)], "bar 4 of C G Am is G"
    assert pinned[1].tolist() == plain, "a row without chords keeps its prefix"
    at_start = generation.follow_bars(seq, len(prefix) + 1)
    assert at_start[0].tolist() == prefix, "at bar 0 nothing turns"


def test_chord_strength_takes_nats_from_notes_off_the_bars_chord():
    """generation.grammar_hook with chord_plans: on a beat a note off the planned chord loses the
    whole strength, between beats half of it; the next bar has the next chord; drums are free."""
    import torch

    import attributes
    import generation
    import tokenizer as T

    progression = [(0, "major"), (9, "minor")]  # C, Am
    prefix = attributes.attribute_prefix(
        T.semantic_token(1), meter=(4, 4), chords=attributes.chord_slots(progression)
    )
    start = prefix + [T.START, T.OFFSET["PROGRAM"]]
    plans = generation.chord_plans([start])
    hook = generation.grammar_hook(T.VOCAB_SIZE, "cpu", chord_plan=(plans, 3.0))
    hook.start = len(prefix) + 1
    note = lambda p: T.OFFSET["NOTE"] + p  # noqa: E731

    def penalty(tokens):
        out = hook(torch.tensor([tokens]), torch.zeros(1, T.VOCAB_SIZE))[0]
        return {p: float(out[note(p)]) for p in (60, 62, 64, 67, 69)}

    assert penalty(start) == {60: 0.0, 62: -3.0, 64: 0.0, 67: 0.0, 69: -3.0}, "C on bar 1's beat"
    eighth = [T.OFFSET["PROGRAM"], note(60), T.OFFSET["DURATION"] + 5, T.OFFSET["TIME_ON"] + 5]
    assert penalty(start[:-1] + eighth + [T.OFFSET["PROGRAM"]])[62] == -1.5, "between beats"
    bar = [T.OFFSET["PROGRAM"], note(60), T.OFFSET["DURATION"] + 47, T.OFFSET["TIME_ON"] + 47]
    assert penalty(start[:-1] + bar + [T.OFFSET["PROGRAM"]]) == {
        60: 0.0, 62: -3.0, 64: 0.0, 67: -3.0, 69: 0.0,
    }, "Am on bar 2"  # fmt: skip
    drums = start[:-1] + [T.OFFSET["PROGRAM"] + T.DRUMS]
    assert set(penalty(drums).values()) == {0.0}
