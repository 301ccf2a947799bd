"""texture.py and the control report's ensemble rows, on hand-built Scores with known answers:
notes per second, notes sounding at once, each part's share of the time, the real pieces' ranges,
which samples get the rows, and the report that shows them. No model is trained."""

import json

import numpy as np
import pytest

import evaluate
import metrics
import prompt
import report
import texture
import tokenizer
from tokenizer import Note, Score

SPQ = tokenizer.STEPS_PER_QUARTER  # 120 bpm: a quarter (SPQ steps) lasts 0.5 s
VIOLIN, VIOLA, CELLO, PIANO = 40, 41, 42, 0
ROWS = texture.ROWS


def score(spec, tempos=((0, 120.0),)):
    """A Score from (onset, duration, pitch, program) in grid steps."""
    notes = [Note(o, d, p, prog, 80) for o, d, p, prog in sorted(spec)]  # as a Score keeps them
    end = max(n.onset + n.duration for n in notes)
    return Score(notes=notes, tempos=list(tempos), time_signatures=[(0, 4, 4)], end_step=end)


def duet(quarters=16):
    """Violin and cello playing a quarter note each on every beat, together."""
    return score(
        [(SPQ * i, SPQ, 76, VIOLIN) for i in range(quarters)]
        + [(SPQ * i, SPQ, 48, CELLO) for i in range(quarters)]
    )


def held_viola():
    """The demo's failure: a viola holds one A for 7 s; the violin and cello play one note each."""
    seven = 14 * SPQ  # 7 s at 120 bpm
    return score([(0, seven, 57, VIOLA), (0, SPQ, 69, VIOLIN), (7 * SPQ, SPQ, 45, CELLO)])


def test_two_parts_playing_together_against_one_part_holding_a_note():
    together = texture.measure(duet(), [VIOLIN, CELLO])
    assert together == pytest.approx(
        dict(notes_per_second=4.0, sounding=2.0, weakest=1.0, mean_part=1.0)
    )
    held = texture.measure(held_viola(), [VIOLIN, VIOLA, CELLO])
    assert held["notes_per_second"] == pytest.approx(3 / 7)
    assert held["sounding"] == pytest.approx((14 + 1 + 1) / 14)  # note-steps / steps that sound
    assert held["weakest"] == pytest.approx(1 / 14)  # a quarter of the 7 s
    assert held["mean_part"] == pytest.approx((1 / 14 + 1 + 1 / 14) / 3)
    # an asked part that never plays is the weakest, at 0; by default the parts are those that play
    assert texture.measure(duet(), [VIOLIN, VIOLA, CELLO])["weakest"] == 0.0
    assert texture.measure(duet())["weakest"] == 1.0
    assert texture.measure(Score())["notes_per_second"] == 0.0


def test_a_parts_share_is_of_the_seconds_not_the_steps():
    # the violin's 4 quarters at 60 bpm last 4 s, the cello's 4 quarters at 120 bpm 2 s
    piece = score(
        [(0, 4 * SPQ, 76, VIOLIN), (4 * SPQ, 4 * SPQ, 48, CELLO)],
        tempos=[(0, 60.0), (4 * SPQ, 120.0)],
    )
    m = texture.measure(piece)
    assert m["weakest"] == pytest.approx(1 / 3) and m["mean_part"] == pytest.approx(1 / 2)
    assert m["notes_per_second"] == pytest.approx(2 / 6)


def test_sounding_on_a_chord_and_the_same_function_as_the_polyphony_metric():
    triad = [(0, SPQ, p, PIANO) for p in (60, 64, 67)]
    assert texture.sounding_at_once(score(triad).notes) == 3.0
    # the triad for a quarter, then a single note for a quarter, a quarter's rest (not counted)
    piece = score(triad + [(SPQ, SPQ, 72, PIANO), (3 * SPQ, SPQ, 72, PIANO)])
    assert texture.sounding_at_once(piece.notes) == pytest.approx((3 + 1 + 1) / 3)
    assert metrics.piece_stats(piece)["polyphony"] == texture.sounding_at_once(piece.notes)
    assert texture.sounding_at_once([]) == 0.0


def test_cut_keeps_the_first_seconds():
    piece = score([(0, 8 * SPQ, 60, PIANO), (2 * SPQ, SPQ, 64, PIANO), (6 * SPQ, SPQ, 67, PIANO)])
    first = texture.cut(piece, 2.0)  # 2 s at 120 bpm: 4 quarters
    assert [(n.onset, n.duration) for n in first.notes] == [(0, 4 * SPQ), (2 * SPQ, SPQ)]
    assert first.end_step == 4 * SPQ and len(piece.notes) == 3


# notes per second of the real pieces in parts below: both parts play 5k notes each in 10 s
DENSITIES = [1, 2, 3, 4, 6, 8, 12, 16, 24, 48]


def real_pieces():
    """Ten real duets, each 10 s long and k notes per second (DENSITIES), both parts all the time,
    with notes after 10 s that the cut must drop; and a solo, which is no piece in parts."""
    pieces = []
    for k in DENSITIES:
        d = 48 // k  # 5k notes of d steps fill 240 steps, 10 s
        spec = [(d * i, d, 72, VIOLIN) for i in range(5 * k)]
        spec += [(d * i, d, 48, CELLO) for i in range(5 * k)]
        spec += [(240 + d * i, d, 72, VIOLIN) for i in range(100)]  # after the cut
        pieces.append(score(spec))
    return pieces + [score([(SPQ * i, SPQ, 60, PIANO) for i in range(40)])]


def test_the_yardstick_is_the_middle_80_percent_of_real_pieces_in_parts():
    yard = texture.yardstick(real_pieces(), 10.0)
    assert yard["n"] == 10 and yard["seconds"] == 10.0  # the solo is left out
    low, high = yard["ranges"]["notes_per_second"]
    assert low == pytest.approx(1.9) and high == pytest.approx(26.4)  # np.percentile, linear
    assert yard["ranges"]["sounding"] == pytest.approx((2.0, 2.0))
    assert yard["ranges"]["weakest"] == pytest.approx((1.0, 1.0))
    assert yard["medians"]["notes_per_second"] == pytest.approx(7.0)
    # by construction 8 of the 10 lie in the middle 80% of notes per second
    assert yard["ceiling"] == pytest.approx(
        {ROWS[0]: 0.8, ROWS[1]: 0.8, ROWS[2]: 1.0, ROWS[3]: 1.0}
    )
    json.dumps(yard)  # it goes into summary.json as it is
    assert texture.yardstick(real_pieces()[-1:] + real_pieces()[:1], 10.0) is None  # one duet


def test_the_range_check_needs_notes_per_second_and_sounding_both_inside():
    ranges = dict(notes_per_second=(5.3, 10.6), sounding=(2.4, 4.1), weakest=(0.4, 0.95))
    inside = dict(notes_per_second=5.3, sounding=4.1, weakest=0.5, mean_part=0.7)
    assert texture.in_range(inside, ranges) == dict.fromkeys(ROWS, True)
    sparse = inside | dict(notes_per_second=19 / 20.5, weakest=0.05)
    assert texture.in_range(sparse, ranges) == {
        ROWS[0]: False,
        ROWS[1]: False,
        ROWS[2]: True,
        ROWS[3]: False,
    }
    thin = inside | dict(sounding=1.1)
    assert texture.in_range(thin, ranges)[ROWS[0]] is False
    assert texture.in_range(thin, ranges)[ROWS[1]] is True


class Fixed:
    """A classifier that always names one label."""

    def __init__(self, label):
        self.label = label

    def predict(self, x):
        return np.array([self.label] * len(x))


CLASSIFIERS = {"meter": {"model": Fixed("3/4")}, "tempo word": {"model": Fixed("slow")}}
YARD = dict(
    n=30,
    seconds=20.0,
    ranges=dict(notes_per_second=(2.0, 10.0), sounding=(1.5, 4.0), weakest=(0.3, 1.0)),
    medians=dict(notes_per_second=5.0, sounding=2.5, weakest=0.6, mean_part=0.8),
    ceiling={ROWS[0]: 0.7, ROWS[1]: 0.8, ROWS[2]: 0.8, ROWS[3]: 0.8},
)


def hits(piece, text, yard=YARD):
    asked = prompt.parse_prompt(text)
    return metrics.realised(
        piece, asked, key=None, classifiers=CLASSIFIERS, seen={PIANO, VIOLIN, CELLO}, ensemble=yard
    )


def test_only_samples_asking_two_or_more_instruments_get_the_ensemble_rows():
    duo = hits(duet(), "a duet for violin and cello")
    assert {m: duo[m] for m in ROWS} == dict.fromkeys(ROWS, True)
    strings = hits(held_viola(), "a gentle waltz in A minor for strings")  # violin, viola, cello
    assert {m: strings[m] for m in ROWS} == dict.fromkeys(ROWS, False)
    assert not set(ROWS) & set(hits(duet(), "a piano piece"))
    assert not set(ROWS) & set(hits(duet(), "a slow waltz"))  # no instrument asked
    assert not set(ROWS) & set(hits(duet(), "a duet for violin and cello", yard=None))
    assert texture.ensemble_values(duet(), [PIANO]) is None
    assert set(ROWS) <= set(metrics.CONTROL_MEASURES) and ROWS[0] in metrics.PER_PROMPT_MEASURES


def fake_control(prompts):
    """A Control as evaluate.measure_control makes it, from hand-built samples: the duet and the
    held viola in turn on every path."""
    rows = []
    for path in ("user", "model", "none-user", "none-model"):
        for i, text in enumerate(prompts):
            for piece in (duet(), held_viola()):
                asked = prompt.parse_prompt(text)
                row = dict(set="fake", prompt=i, path=path, hits=hits(piece, text))
                rows.append(
                    row | dict(ensemble=texture.ensemble_values(piece, asked["instruments"]))
                )
    return evaluate.Control(
        rows=rows,
        summary=metrics.summarise(rows),
        sets={"fake": [(text, {}) for text in prompts]},
        path_words={path: path for path in ("user", "model", "none-user", "none-model")},
        n_per_prompt=2,
        classifiers={},
        seen=[PIANO, VIOLIN, CELLO],
        polyphony_p95=(2.0, 1.0),
        ensemble=YARD,
        lab={},
        closeness={},
    )


def test_the_report_shows_the_ensemble_rows_with_their_ceiling_and_ranges():
    c = fake_control(["a duet for violin and cello", "a piano piece"])
    text = "\n".join(report.report_control(c))
    for m in ROWS:  # half of the samples (the duet) in range, n = 2 ensemble samples per path
        line = next(line for line in text.splitlines() if line.startswith(f"| {m} |"))
        assert "| 2 | 50.0% [" in line and line.endswith(f"| {report.pct(YARD['ceiling'][m])} |")
    assert "real pieces (ceiling)" in text
    ranges = "real pieces in parts: 2.0-10.0 notes/s, 1.5-4.0 sounding, weakest part 30%-100%"
    assert ranges in text
    assert "| real pieces in parts | 30 | 5.00 | 2.50 | 60% | 80% |" in text
    # key, key (music21), mode, meter, tempo word | instruments exact | chords, polyphony outlier
    assert (
        "| a duet for violin and cello |" + "  |" * 5 + " 50.0% |" + "  |" * 2 + " 50.0% |" in text
    )
    main_table = text.split("**Ensembles**")[0]
    assert "| instruments exact |" in main_table and "ensemble" not in main_table
    assert "ensemble in range" in "\n".join(report.headline_control(c))  # with its 80% target
    assert (
        "ensemble in range",
        ">= 80.0%",
        ">= 80.0%",
        0.5,
        False,
        False,
    ) in report.control_targets(c, "fake")
    # a set whose prompts name one instrument each shows no ensemble rows
    # (the per-prompt table keeps its column, empty)
    solo = fake_control(["a piano piece", "a slow piece for piano"])
    lines = report.report_control(solo) + report.headline_control(solo)
    shown = [line for line in "\n".join(lines).splitlines() if "ensemble" in line.lower()]
    assert shown == [
        "| prompt (user's path) | key | key (music21) | mode | meter | tempo word "
        "| instruments exact | chords | polyphony outlier | ensemble in range |"
    ]


def test_a_chorale_on_one_program_is_a_piece_in_parts_and_a_solo_line_is_not():
    chorale = score([(SPQ * i, SPQ, p, 52) for i in range(8) for p in (48, 55, 64, 72)])
    solo = score([(SPQ * i, SPQ, 60, PIANO) for i in range(8)])
    assert texture.in_parts(chorale) and texture.in_parts(duet()) and not texture.in_parts(solo)
    yard = texture.yardstick([chorale, chorale, solo], 10.0)
    assert yard["n"] == 2 and yard["ranges"]["sounding"] == pytest.approx((4.0, 4.0))
