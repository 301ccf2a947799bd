"""How the parts of an ensemble play together, for the control report: notes per second, notes
sounding at once, and the share of the piece's time each part plays, of a sample whose prompt names
two or more instruments; the yardstick, the middle 80% of each over real pieces in parts; and
whether a sample lies inside it."""

from dataclasses import replace

import numpy as np

from describe import end_step, sounding_per_step, voices_per_instrument
from tokenizer import seconds_at

MIN_PARTS = 2  # an ensemble: a prompt names, or a real piece plays, this many instruments
MIDDLE = (10, 90)  # the percentiles of the real pieces in parts that bound each range
ROWS = (
    "ensemble in range",  # notes per second and notes sounding at once both in range
    "ensemble notes/s in range",
    "ensemble sounding in range",
    "ensemble weakest part in range",
)
RANGED = {"notes_per_second": ROWS[1], "sounding": ROWS[2], "weakest": ROWS[3]}  # measure -> row
VALUES = {  # measure -> how the report names it
    "notes_per_second": "notes/s",
    "sounding": "sounding at once",
    "weakest": "weakest part",
    "mean_part": "mean part",
}


def mean_sounding(sounding):
    """(steps,) notes sounding per grid step (describe.sounding_per_step) -> their mean over the
    steps where any sounds (muspy's polyphony); 0 where none does."""
    on = sounding[sounding > 0]
    return float(on.mean()) if len(on) else 0.0


def sounding_at_once(notes):
    """The mean number of notes sounding over the grid steps where any sounds; 0 for no notes."""
    if not notes:
        return 0.0
    return mean_sounding(sounding_per_step(notes, max(n.onset + n.duration for n in notes)))


def measure(score, parts=None):
    """A Score -> dict of notes per second (all parts), notes sounding at once, and of the share of
    the piece's time each part's notes cover (parts: GM programs, by default those that play) the
    smallest (the weakest part: 0 where a part is silent) and the mean. The piece's time runs from
    its first onset to its last note's end, in seconds (a step lasts as its tempo says)."""
    notes = score.notes
    if not notes:
        return dict.fromkeys(VALUES, 0.0)
    parts = sorted(set(parts if parts is not None else [n.program for n in notes]))
    first, last = min(n.onset for n in notes), max(n.onset + n.duration for n in notes)
    step_seconds = np.diff(seconds_at(np.arange(first, last + 1), score.tempos))  # (last - first,)
    total, shares = float(step_seconds.sum()), []
    for program in parts:
        own = [n for n in notes if n.program == program]
        covered = sounding_per_step(own, last)[first:] > 0 if own else np.zeros(last - first, bool)
        shares.append(float(step_seconds[covered].sum()) / total)
    return dict(
        notes_per_second=len(notes) / total,
        sounding=sounding_at_once(notes),
        weakest=min(shares),
        mean_part=float(np.mean(shares)),
    )


def cut(score, seconds):
    """A Score's first `seconds`: the notes that start before then, ended there."""
    times = seconds_at(np.arange(end_step(score) + 1), score.tempos)  # (end + 1,)
    at = int(np.searchsorted(times, seconds, side="right")) - 1  # the last step at or before
    notes = [
        replace(n, duration=min(n.duration, at - n.onset)) for n in score.notes if n.onset < at
    ]
    return replace(score, notes=notes, end_step=min(score.end_step, at))


def in_range(values, ranges):
    """measure()'s values against the yardstick's ranges -> {row: inside (bool)} for ROWS: each
    measure inside its range, and "ensemble in range": notes per second and sounding both."""
    hits = {RANGED[k]: bool(low <= values[k] <= high) for k, (low, high) in ranges.items()}
    return {ROWS[0]: hits[ROWS[1]] and hits[ROWS[2]]} | hits


def ensemble_values(score, asked):
    """measure() over the asked instruments (GM programs), or None where fewer than MIN_PARTS are
    asked: a solo is no ensemble."""
    return measure(score, asked) if len(set(asked)) >= MIN_PARTS else None


def realised(score, asked, yardstick):
    """The ensemble rows of one sample whose prompt asked for the instruments `asked` -> {row:
    bool}; {} for fewer than MIN_PARTS asked or no yardstick."""
    values = ensemble_values(score, asked) if yardstick else None
    return in_range(values, yardstick["ranges"]) if values else {}


def in_parts(score):
    """A real piece in parts: MIN_PARTS or more instruments, or more than one note at a time on one
    (a chorale on one program), as metrics.polyphony_thresholds counts them."""
    programs = {n.program for n in score.notes}
    return len(programs) >= MIN_PARTS or voices_per_instrument(score.notes) > 1


def yardstick(scores, seconds):
    """Real pieces (read to at most the control's token cut) -> the ensemble yardstick, from those
    in parts (in_parts), each cut to its first `seconds` (the length of a
    sample on the user's path) and measured over all of its instruments, as a sample is over all
    the asked ones: dict(n, seconds, ranges {measure: (10th, 90th percentile)}, medians {measure:
    median}, ceiling {row: share of those pieces in range}); None with fewer than 2 such pieces."""
    measured = [
        measure(cut(score, seconds), [n.program for n in score.notes])
        for score in scores
        if in_parts(score)
    ]
    if len(measured) < 2:
        return None
    column = lambda k: [m[k] for m in measured]
    ranges = {k: tuple(float(v) for v in np.percentile(column(k), MIDDLE)) for k in RANGED}
    hits = [in_range(m, ranges) for m in measured]
    return dict(
        n=len(measured),
        seconds=seconds,
        ranges=ranges,
        medians={k: float(np.median(column(k))) for k in VALUES},
        ceiling={row: float(np.mean([h[row] for h in hits])) for row in ROWS},
    )


# -----------------------------------------------------------------------------
# the report's words and table


def value_cell(k, x):
    return f"{100 * x:.0f}%" if k in ("weakest", "mean_part") else f"{x:.2f}"


def ranges_words(yard):
    """The yardstick in words: 'real pieces in parts: 5.3-10.6 notes/s, ...'."""
    r = yard["ranges"]
    return (
        f"real pieces in parts: {r['notes_per_second'][0]:.1f}-{r['notes_per_second'][1]:.1f} "
        f"notes/s, {r['sounding'][0]:.1f}-{r['sounding'][1]:.1f} sounding, weakest part "
        f"{value_cell('weakest', r['weakest'][0])}-{value_cell('weakest', r['weakest'][1])} of "
        "the time"
    )


def words(yard):
    """The ensemble paragraph of the report: what the rows measure, against which ranges."""
    return (
        f"**Ensembles**, over the samples whose prompt names {MIN_PARTS} or more instruments (n "
        f"in the samples column). Yardstick, the middle 80% ({MIDDLE[0]}th to {MIDDLE[1]}th "
        f"percentile) of the {yard['n']} real val pieces in parts ({MIN_PARTS} or more "
        "instruments, or more than one note at a time on one: chorales, quartets), each cut to "
        f"its first {yard['seconds']:g} s; {ranges_words(yard)}. Notes "
        "per second over all parts; sounding: the mean number of notes sounding over the steps "
        "where any does; a part's share: of the piece's time (first onset to last note end) its "
        "notes cover, the weakest part the smallest share over the asked instruments (over all of "
        "a real piece's). *ensemble in range*: notes per second and sounding both inside (target "
        ">= 80%). Ceiling: the same rows on the real pieces themselves (by construction 64-80% "
        "for *ensemble in range*).\n"
    )


def medians(c, name):
    """The medians of measure() over one prompt set's ensemble samples, a row per path, and over
    the real pieces in parts. c: evaluate.Control -> (table header, rows)."""
    yard, rows, out = c.ensemble, c.rows, []
    for path in dict.fromkeys(row["path"] for row in rows):
        values = [
            row["ensemble"]
            for row in rows
            if row["set"] == name and row["path"] == path and row.get("ensemble")
        ]
        if values:
            cells = [value_cell(k, np.median([v[k] for v in values])) for k in VALUES]
            out.append([path, len(values), *cells])
    real = [value_cell(k, v) for k, v in yard["medians"].items()]
    head = ["medians of the ensembles", "samples", *VALUES.values()]
    return head, out + [["real pieces in parts", yard["n"], *real]]
