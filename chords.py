"""Chords: their names, and the chord of each bar measured from the notes.

A chord is (root pitch class 0..11, quality), a quality one of QUALITIES. Its symbol is how lead
sheets and captions write it: "C", "Am", "F#m", "Bb", "E7", "Abmaj7", "Cm7", "Bm7b5", "G6",
"Dsus4", "Cdim", "Caug"; a slash chord "D/F#" names its bass after the slash. Each quality has a
triad class, major or minor (MIREX's "majmin"): the attribute prefix holds a chord as its root and
that class, and the report's chord row compares those two.

bar_chords measures a score's chords by template matching: per bar (or half bar, where the harmony
moves faster), the pitch classes weighted by how long they sound, scored against every root and
quality, the bass breaking ties.
"""

import re

import numpy as np

import tokenizer

# quality -> (its symbol's suffix, its pitch classes above the root, its triad class)
QUALITIES = {
    "major": ("", (0, 4, 7), "major"),
    "minor": ("m", (0, 3, 7), "minor"),
    "diminished": ("dim", (0, 3, 6), "minor"),
    "augmented": ("aug", (0, 4, 8), "major"),
    "dominant 7": ("7", (0, 4, 7, 10), "major"),
    "major 7": ("maj7", (0, 4, 7, 11), "major"),
    "minor 7": ("m7", (0, 3, 7, 10), "minor"),
    "half-diminished": ("m7b5", (0, 3, 6, 10), "minor"),
    "sus4": ("sus4", (0, 5, 7), "major"),
    "6": ("6", (0, 4, 7, 9), "major"),
}
QUALITY_NAMES = tuple(QUALITIES)
# other ways symbols write a quality's suffix; extensions fold into the nearest quality
SUFFIX_ALIASES = {
    "": "major", "maj": "major", "M": "major", "add9": "major", "5": "major", "9": "dominant 7",
    "m": "minor", "min": "minor", "-": "minor", "mi": "minor", "m6": "minor", "madd9": "minor",
    "dim": "diminished", "o": "diminished", "°": "diminished", "dim7": "diminished",
    "aug": "augmented", "+": "augmented",
    "7": "dominant 7", "dom7": "dominant 7", "11": "dominant 7", "13": "dominant 7",
    "maj7": "major 7", "M7": "major 7", "Δ": "major 7", "Δ7": "major 7", "maj9": "major 7",
    "m7": "minor 7", "min7": "minor 7", "-7": "minor 7", "mi7": "minor 7", "m9": "minor 7",
    "m7b5": "half-diminished", "ø": "half-diminished", "ø7": "half-diminished",
    "sus4": "sus4", "sus": "sus4", "7sus4": "sus4", "sus2": "sus4",
    "6": "6", "maj6": "6",
}  # fmt: skip
ROOT_NAMES = tokenizer.PITCH_CLASSES  # C C# D Eb E F F# G Ab A Bb B: how symbols are written
LETTERS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
SYMBOL = re.compile(r"([A-G])([#b♯♭]?)([^/\s]*)(?:/([A-G][#b♯♭]?))?$")
VALID_FORMS = "C, Am, F#m, Bb, E7, Abmaj7, Cm7, Bm7b5, G6, Dsus4, Cdim, Caug, D/F#"
MAX_CHORDS = 8  # the prefix's chord slots: a progression is cycled bar by bar over them


def pitch_class(name):
    """'F#', 'Bb', 'E♭' -> 5..; None where it is no note name."""
    if not name or name[0] not in LETTERS:
        return None
    accidental = {"": 0, "#": 1, "♯": 1, "b": -1, "♭": -1}.get(name[1:])
    return None if accidental is None else (LETTERS[name[0]] + accidental) % 12


def parse_symbol(text):
    """'Abmaj7' -> (8, 'major 7'); 'D/F#' -> (2, 'major'); None where it is not a chord symbol."""
    match = SYMBOL.match(text.strip())
    if not match:
        return None
    letter, accidental, suffix, bass = match.groups()
    quality = SUFFIX_ALIASES.get(suffix)
    if quality is None or (bass and pitch_class(bass) is None):
        return None
    return pitch_class(letter + accidental), quality


def symbol(chord):
    """(9, 'minor') -> 'Am'."""
    root, quality = chord
    return ROOT_NAMES[root] + QUALITIES[quality][0]


def triad(chord):
    """(root, quality) -> (root, 'major' or 'minor'): what the prefix holds, what the report
    compares."""
    root, quality = chord
    return root, QUALITIES[quality][2]


def transpose(chord, semitones):
    root, quality = chord
    return (root + semitones) % 12, quality


def progression_text(chords):
    """[(0, 'major'), None, (7, 'dominant 7')] -> 'C - G7': a bar without a chord is '-'."""
    return " ".join(symbol(c) if c else "-" for c in chords)


def shortest_cycle(items):
    """The shortest run whose repeats make the list: C G Am C G Am C G -> C G Am (what cycled made
    of a progression, read back)."""
    items = list(items)
    period = next(p for p in range(1, len(items) + 1) if items == cycled(items[:p], len(items)))
    return items[:period]


def cycled(chords, n=MAX_CHORDS):
    """A progression repeated bar by bar to fill n bars: C G Am F -> C G Am F C G Am F."""
    return [chords[i % len(chords)] for i in range(n)] if chords else []


# -----------------------------------------------------------------------------
# chords from notes

TEMPLATES = np.zeros((12 * len(QUALITIES), 12))  # row 12 * quality + root: its pitch classes
for _q, (_, _intervals, _) in enumerate(QUALITIES.values()):
    for _root in range(12):
        TEMPLATES[12 * _q + _root, [(_root + i) % 12 for i in _intervals]] = 1.0
TEMPLATE_SIZE = TEMPLATES.sum(axis=1)
# Triads are preferred where a seventh or sixth would explain no more of the bar, and the rarer
# triads (diminished, augmented, sus4) need more evidence than major and minor ones. These and the
# bass's weight were set on 80 chorales against music21 (bench_data.py --only chords).
PRIOR = np.repeat([0.02 if len(v[1]) == 3 else 0.0 for v in QUALITIES.values()], 12) - np.repeat(
    [0.1 if k in ("diminished", "augmented", "sus4") else 0.0 for k in QUALITIES], 12
)
MISSING = 0.1  # a chord tone that does not sound costs this much of the bar's weight
BASS = 0.15  # the bar's lowest note on the root: the tiebreak
MIN_WEIGHT = 1.0  # steps of sounding notes in a bar below which it has no chord
SPLIT_MARGIN = 0.15  # a bar is split in halves only where they fit this much better
MAX_BARS = 10_000  # bars measured per piece: hours of music, where a real piece has hundreds


def bar_lines(score):
    """The steps where bars start, through the score's meters (4/4 before the first), to its end;
    at most MAX_BARS of them, so a note held for hours costs what its events cost."""
    changes = [(0, 4, 4)] + [tuple(t) for t in score.time_signatures]
    starts = []
    for i, (step, num, den) in enumerate(changes):
        stop = changes[i + 1][0] if i + 1 < len(changes) else max(score.end_step, step + 1)
        length = max(1, round(num * 4 * tokenizer.STEPS_PER_QUARTER / den))
        starts += range(step, min(stop, step + length * MAX_BARS), length)
        if len(starts) >= MAX_BARS:  # the meters come in order
            break
    return np.array(sorted(set(starts)), dtype=np.int64)[:MAX_BARS]


def weights(score, edges):
    """(len(edges) - 1, 12) steps each pitch class sounds between consecutive edges, and (n,) the
    lowest pitch starting or sounding in each span (999 where none). Drums are left out."""
    n = len(edges) - 1
    w, low = np.zeros((n, 12)), np.full(n, 999)
    notes = [x for x in score.notes if x.program != tokenizer.DRUMS]
    if not notes:
        return w, low
    on = np.array([x.onset for x in notes])
    off = on + np.maximum([x.duration for x in notes], 1)
    pitch = np.array([x.pitch for x in notes])
    first = np.clip(np.searchsorted(edges, on, "right") - 1, 0, n - 1)
    last = np.clip(np.searchsorted(edges, off - 1, "right") - 1, 0, n - 1)
    one = first == last  # most notes sit in one span
    np.add.at(w, (first[one], pitch[one] % 12), (off - on)[one])
    np.minimum.at(low, first[one], pitch[one])
    for i in np.flatnonzero(~one):  # the others, a slice of spans each
        a, b, pc = first[i], last[i], pitch[i] % 12
        inside = np.minimum(off[i], edges[a + 1 : b + 2]) - np.maximum(on[i], edges[a : b + 1])
        w[a : b + 1, pc] += inside
        low[a : b + 1] = np.minimum(low[a : b + 1], pitch[i])
    return w, low


def best_chords(w, low):
    """Span weights (n, 12) and lowest pitches (n,) -> (n,) best template row (-1: no chord) and
    (n,) its score (the share of the weight it explains, less what it misses)."""
    total = w.sum(axis=1, keepdims=True)
    share = w / np.maximum(total, 1e-9)  # (n, 12)
    inside = share @ TEMPLATES.T  # (n, 120)
    missing = (share < 0.03).astype(float) @ TEMPLATES.T  # chord tones that hardly sound
    score = inside - (1 - inside) - MISSING * missing + PRIOR
    roots = np.tile(np.arange(12), len(QUALITIES))
    score += BASS * ((low[:, None] % 12) == roots[None, :]) * (low[:, None] < 999)
    best = score.argmax(axis=1)
    best[total[:, 0] < MIN_WEIGHT] = -1
    return best, score[np.arange(len(best)), best]


def chord_of(row):
    return None if row < 0 else (int(row) % 12, QUALITY_NAMES[int(row) // 12])


def bar_chords(score, halves=True):
    """A score -> [(step, chord or None)]: each bar's chord from its start, or each half bar's where
    the harmony moves faster (halves fit SPLIT_MARGIN better than the whole and name two chords)."""
    bars = bar_lines(score)
    edges = np.append(bars, max(score.end_step, bars[-1] + 1))
    best, fit = best_chords(*weights(score, edges))
    if not halves:
        return [(int(s), chord_of(b)) for s, b in zip(bars, best)]
    mids = (edges[:-1] + edges[1:]) // 2
    half_edges = np.append(np.stack([edges[:-1], mids], axis=1).ravel(), edges[-1])
    half_best, half_fit = best_chords(*weights(score, half_edges))
    out = []
    for i, start in enumerate(bars.tolist()):
        a, b = half_best[2 * i], half_best[2 * i + 1]
        split = a >= 0 and b >= 0 and a != b
        if split and (half_fit[2 * i] + half_fit[2 * i + 1]) / 2 > fit[i] + SPLIT_MARGIN:
            out += [(start, chord_of(a)), (int(mids[i]), chord_of(b))]
        else:
            out.append((start, chord_of(best[i])))
    return out


def per_bar(score):
    """One chord per bar (None for a bar without one): what the prefix's slots are filled from."""
    return [chord for _, chord in bar_chords(score, halves=False)]
