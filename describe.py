"""
What describes a piece of music, measured from its notes (a tokenizer.Score): General MIDI names,
seconds from a tempo map, key and mode, meter, tempo word and Italian term, instruments, register
and density. words.py reads the same attributes from what a person types, with these names.
Its consumers:

- cluster.py: `describe_score` writes the description sentence of a MIDI file that has no caption;
- metrics.py: evaluate.py's statistics build on the time helpers and `sounding_per_step`;
- prepare.py: `measure` gives each file's key, meter, tempo, instruments and texture for the index;
- attributes.py: `measure` also fills a gallery card; `KEY_NAMES` are the key tokens' names;
- words.py: `GM_NAMES`, `key_name`, `TEMPO_TERMS`, the names a prompt is read with;
- roundtrip.py, bench_data.py: `round_trip`, what the tokens keep of a file's notes.

Keys are spelled one way everywhere, in words a sentence embedder and a person both know:
"B flat major", "F sharp minor" (see KEY_NAMES).

    python describe.py song.mid     # prints the sentence cluster.py would embed for it
"""

import math
import sys
from collections import Counter, defaultdict

import numpy as np

import chords
import tokenizer
from files import UserError
from midifile import events_of, load_midi, read_raw
from tokenizer import seconds_at  # grid steps -> seconds through a Score's tempo map

DRUMS = tokenizer.DRUMS  # the program of a drum-channel note

GM_NAMES = (
    "Acoustic Grand Piano;Bright Acoustic Piano;Electric Grand Piano;Honky-tonk Piano;Electric "
    "Piano 1;"
    "Electric Piano 2;Harpsichord;Clavinet;Celesta;Glockenspiel;Music "
    "Box;Vibraphone;Marimba;Xylophone;Tubular Bells;"
    "Dulcimer;Drawbar Organ;Percussive Organ;Rock Organ;Church Organ;Reed "
    "Organ;Accordion;Harmonica;Tango Accordion;"
    "Acoustic Guitar (nylon);Acoustic Guitar (steel);Electric Guitar (jazz);Electric Guitar "
    "(clean);"
    "Electric Guitar (muted);Overdriven Guitar;Distortion Guitar;Guitar Harmonics;Acoustic "
    "Bass;Electric Bass (finger);"
    "Electric Bass (pick);Fretless Bass;Slap Bass 1;Slap Bass 2;Synth Bass 1;Synth Bass "
    "2;Violin;Viola;Cello;"
    "Contrabass;Tremolo Strings;Pizzicato Strings;Orchestral Harp;Timpani;String Ensemble 1;String "
    "Ensemble 2;"
    "Synth Strings 1;Synth Strings 2;Choir Aahs;Voice Oohs;Synth Choir;Orchestra "
    "Hit;Trumpet;Trombone;Tuba;"
    "Muted Trumpet;French Horn;Brass Section;Synth Brass 1;Synth Brass 2;Soprano Sax;Alto "
    "Sax;Tenor Sax;Baritone Sax;"
    "Oboe;English Horn;Bassoon;Clarinet;Piccolo;Flute;Recorder;Pan Flute;Blown "
    "Bottle;Shakuhachi;Whistle;Ocarina;"
    "Lead 1 (square);Lead 2 (sawtooth);Lead 3 (calliope);Lead 4 (chiff);Lead 5 (charang);Lead 6 "
    "(voice);"
    "Lead 7 (fifths);Lead 8 (bass + lead);Pad 1 (new age);Pad 2 (warm);Pad 3 (polysynth);Pad 4 "
    "(choir);Pad 5 (bowed);"
    "Pad 6 (metallic);Pad 7 (halo);Pad 8 (sweep);FX 1 (rain);FX 2 (soundtrack);FX 3 (crystal);FX 4 "
    "(atmosphere);"
    "FX 5 (brightness);FX 6 (goblin);FX 7 (echoes);FX 8 "
    "(sci-fi);Sitar;Banjo;Shamisen;Koto;Kalimba;Bagpipe;Fiddle;"
    "Shanai;Tinkle Bell;Agogo;Steel Drums;Woodblock;Taiko Drum;Melodic Tom;Synth Drum;Reverse "
    "Cymbal;"
    "Guitar Fret Noise;Breath Noise;Seaside;Bird Tweet;Telephone Ring;Helicopter;Applause;Gunshot"
).split(";")
assert len(GM_NAMES) == 128, f"the General MIDI table must have 128 names, has {len(GM_NAMES)}"


def instrument_name(program):
    return "drums" if program == DRUMS else GM_NAMES[program]


def program_counts(notes):
    """{program: notes} (DRUMS for the drum channel), most notes first, ties in program order."""
    counts = Counter(n.program for n in notes)
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


# -----------------------------------------------------------------------------
# time: grid steps -> seconds through a tempo map


def segments(changes, default, end_step):
    """[(step, value...)] changes -> [(length in steps, value...)] pieces covering 0..end_step."""
    changes = sorted(tuple(c) for c in changes)
    if not changes or changes[0][0] > 0:
        changes = [(0, *default)] + changes  # MIDI defaults until the first change
    return [
        (min(nxt[0] if nxt else end_step, end_step) - max(cur[0], 0), *cur[1:])
        for cur, nxt in zip(changes, changes[1:] + [None])
        if cur[0] < end_step
    ]


def end_step(score):
    """The last step of a piece: its end, or its last note's end if that is later (at least 1)."""
    return max([score.end_step, 1] + [n.onset + n.duration for n in score.notes])


def mean_bpm(score):
    """The tempo averaged over the piece's grid steps (a piece mostly at 60 with a short 120 reads
    near 60)."""
    end = end_step(score)
    return (
        sum(steps * bpm for steps, bpm in segments(score.tempos, (tokenizer.DEFAULT_BPM,), end))
        / end
    )


def main_meter(score):
    """(numerator, denominator) of the meter that lasts longest; 4/4 where a file sets none."""
    return max(segments(score.time_signatures, (4, 4), end_step(score)))[1:]


# (below, word): the word the control report measures
TEMPO_WORDS = [
    (60, "very slow"),
    (76, "slow"),
    (108, "moderate"),
    (132, "fast"),
    (1e9, "very fast"),
]


# Italian tempo terms -> their usual metronome range (low, high) in bpm, the modern ranges of common
# reference lists. The open-ended ones are closed where the lists leave them open: larghissimo ("24
# and under") from 20, prestissimo ("200 and over") to 216. Lentissimo has no standard range and is
# placed just below lento. Terms that share a range (allegrissimo, allegro vivace, vivacissimo)
# share a bpm. In the order of their middles.
ITALIAN_TEMPI = {
    "larghissimo": (20, 24),
    "adagissimo": (24, 40),
    "grave": (25, 45),
    "lentissimo": (35, 45),
    "largo": (40, 60),
    "lento": (45, 60),
    "larghetto": (60, 66),
    "adagio": (66, 76),
    "adagietto": (72, 76),
    "marcia moderato": (83, 85),
    "andante": (76, 108),
    "andantino": (80, 108),
    "andante moderato": (92, 112),
    "moderato": (108, 120),
    "allegretto": (112, 120),
    "allegro moderato": (116, 120),
    "allegro": (120, 156),
    "vivace": (156, 176),
    "vivacissimo": (172, 176),
    "allegrissimo": (172, 176),
    "allegro vivace": (172, 176),
    "presto": (168, 200),
    "prestissimo": (200, 216),
}
# term -> the bpm it asks for and is measured at: the middle of its range
TEMPO_TERMS = {term: (low + high) / 2 for term, (low, high) in ITALIAN_TEMPI.items()}


def tempo_word(bpm):
    return next(word for limit, word in TEMPO_WORDS if bpm < limit)


# -----------------------------------------------------------------------------
# key and mode

# Spelled as in common practice: flats for the flat keys, F sharp and the sharp minor keys as
# sharps.
MAJOR_TONICS = "C;D flat;D;E flat;E;F;F sharp;G;A flat;A;B flat;B".split(";")
MINOR_TONICS = "C;C sharp;D;E flat;E;F;F sharp;G;G sharp;A;B flat;B".split(";")
# index = 12 * minor + tonic
KEY_NAMES = [f"{t} major" for t in MAJOR_TONICS] + [f"{t} minor" for t in MINOR_TONICS]
LETTERS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
# Krumhansl-Kessler key profiles: how well each pitch class fits a major / minor key on its tonic
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def key_name(tonic, mode):
    """A tonic, as a pitch class 0..11 or a spelled name ("B-", "Bb", "B flat", "A#"), and a mode ->
    the one spelling used everywhere: "B flat major", "G sharp minor"; other modes keep their name
    on the major key's spelling of the tonic ("E flat dorian")."""
    if isinstance(tonic, str):
        name = tonic.strip().replace(" sharp", "#").replace(" flat", "b").replace("-", "b")
        if not name or name[0].upper() not in LETTERS:
            raise ValueError(f"not a key tonic: {tonic!r}")
        tonic = LETTERS[name[0].upper()] + name[1:].count("#") - name[1:].count("b")
    mode = mode.strip().lower()
    if mode in ("major", "minor"):
        return KEY_NAMES[12 * (mode == "minor") + tonic % 12]
    return f"{MAJOR_TONICS[tonic % 12]} {mode}"


# (24, 12) every key's profile, rows in KEY_NAMES order, standardised so that a dot product is a
# correlation
KEY_PROFILES = np.stack([np.roll(p, t) for p in (MAJOR_PROFILE, MINOR_PROFILE) for t in range(12)])
KEY_PROFILES = (KEY_PROFILES - KEY_PROFILES.mean(1, keepdims=True)) / KEY_PROFILES.std(
    1, keepdims=True
)


def pitch_class_weights(notes):
    """(12,) the duration of the pitched notes in each pitch class (a zero-length note counts one
    step)."""
    hist = np.zeros(12)
    for n in notes:
        if n.program != DRUMS:
            hist[n.pitch % 12] += max(n.duration, 1)
    return hist


def key_correlations(hist):
    """(12,) pitch-class weights -> (24,) their correlation with every key profile, KEY_NAMES
    order; None for no notes or a flat histogram."""
    if hist.sum() == 0 or hist.std() == 0:
        return None
    return KEY_PROFILES @ ((hist - hist.mean()) / hist.std()) / 12


def estimate_key(notes, hist=None):
    """Krumhansl-Schmuckler: correlate the duration-weighted pitch-class histogram (hist: given, or
    measured from the notes) with all 24 key profiles -> a KEY_NAMES entry, or None for drums only
    or a flat histogram."""
    correlation = key_correlations(pitch_class_weights(notes) if hist is None else hist)
    return None if correlation is None else KEY_NAMES[int(np.argmax(correlation))]


# A key signature fits the notes when this share of their duration lies in its pitch collection
# (with the raised seventh of its relative minor) and no other collection holds more than
# FIT_MARGIN more: a default C major over a piece in D major does not fit.
FIT_SHARE, FIT_MARGIN = 0.8, 0.03
COLLECTIONS = np.zeros((12, 12))  # (collection: its major tonic, pitch class) -> 1 inside
for _c in range(12):
    COLLECTIONS[_c, [(_c + step) % 12 for step in (0, 2, 4, 5, 7, 8, 9, 11)]] = 1


def main_signature(score):
    """The pitch collection (its major tonic's pitch class) of the key signature in force over the
    most of a Score, or None where the file has none."""
    spans = Counter()
    marks = sorted(score.key_signatures) + [(max(end_step(score), 1), None, None)]
    for (step, collection, _), (following, _, _) in zip(marks, marks[1:]):
        spans[collection] += max(following - max(step, 0), 0) + 1e-3  # a signature at the end
    return spans.most_common(1)[0][0] if spans else None


def bass_class(notes, at):
    """The pitch class of the lowest note sounding at step `at` (or starting there)."""
    sounding = [n.pitch for n in notes if n.onset == at or n.onset < at < n.onset + n.duration]
    return min(sounding) % 12 if sounding else None


def label_key(score):
    """A piece's key label -> (KEY_NAMES entry or None, source). Where the file's key signature fits
    its notes, the label keeps the signature's pitch collection, and the notes choose its tonic:
    the major or the relative minor, by the bass of the last and then the first notes, else by
    the key profiles ("signature"). Where there is no signature, or the notes contradict it,
    Krumhansl-Schmuckler on the notes ("notes")."""
    notes = [n for n in score.notes if n.program != DRUMS]
    hist = pitch_class_weights(notes)
    collection = main_signature(score) if hist.sum() else None
    if collection is not None:
        shares = COLLECTIONS @ hist / hist.sum()
        if shares[collection] >= max(FIT_SHARE, shares.max() - FIT_MARGIN):
            major, minor = collection, (collection + 9) % 12
            ends = (max(n.onset for n in notes), min(n.onset for n in notes))
            for bass in (bass_class(notes, at) for at in ends):
                if bass in (major, minor):
                    return key_name(bass, "major" if bass == major else "minor"), "signature"
            correlation = key_correlations(hist)
            if correlation is None or correlation[major] >= correlation[12 + minor]:
                return key_name(major, "major"), "signature"
            return key_name(minor, "minor"), "signature"
    key = estimate_key(notes, hist)
    return key, "notes" if key else None


# -----------------------------------------------------------------------------
# the description sentence, for MIDI without a caption


def describe_score(score):
    """One sentence in words a sentence embedder knows: tempo, key, meter, instruments, size,
    register."""
    notes = score.notes
    if not notes:
        raise tokenizer.MidiError("no notes")
    end, spq = end_step(score), tokenizer.STEPS_PER_QUARTER
    seconds, bpm, (num, den) = (
        float(seconds_at(end, score.tempos)),
        mean_bpm(score),
        main_meter(score),
    )
    bars = sum(
        length / (n * spq * 4 / d) for length, n, d in segments(score.time_signatures, (4, 4), end)
    )
    counts = program_counts(notes)
    names = [GM_NAMES[p] for p in counts if p != DRUMS]
    instruments = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    key = estimate_key(notes)
    text = (
        f"A {tempo_word(bpm)} piece at {bpm:.0f} bpm"
        + (f" in {key}" if key else "")
        + f", {num}/{den} time, "
    )
    text += (
        (f"for {instruments}" + (", with drums" if DRUMS in counts else ""))
        if names
        else "for drums only"
    )
    text += (
        f"; {len(notes)} notes over {bars:.0f} bars ({seconds:.0f} seconds), "
        f"{len(notes) / max(seconds, 1e-3):.1f} notes per second"
    )
    pitched = [n.pitch for n in notes if n.program != DRUMS]
    if pitched:
        text += f", in a {register_of(float(np.median(pitched)))} register"
    return text + "."


def register_of(median_pitch):
    """The register of a piece's median MIDI pitch: low below E3, high from C5."""
    return "low" if median_pitch < 52 else "middle" if median_pitch < 72 else "high"


def describe_midi(path):
    return describe_score(tokenizer.read_midi(path))


# -----------------------------------------------------------------------------
# measured attributes of a piece: what a prompt can ask for, read back from the notes


def italian_tempo(bpm):
    """The Italian term (of TEMPO_TERMS, which prompts are read with) nearest bpm on a log scale, so
    that a tempo asked for as 'adagio' reads back as adagio (terms that share a bpm read back as the
    first of them)."""
    return min(TEMPO_TERMS, key=lambda term: abs(math.log(TEMPO_TERMS[term] / bpm)))


def sounding_per_step(notes, end):
    """(end,) how many notes sound at each grid step."""
    cover = np.zeros(end + 1)
    np.add.at(cover, [n.onset for n in notes], 1)
    np.add.at(cover, [n.onset + n.duration for n in notes], -1)  # end >= every note's end
    return np.cumsum(cover)[:end]


def sounding_runs(notes):
    """-> (counts, lengths): the piece cut at every onset and note end into runs of grid steps over
    which the same number of notes sound, as arrays the size of the notes, never of the piece's
    length (a note of a million steps costs what a short one does)."""
    onsets = np.array([n.onset for n in notes], dtype=np.int64)
    ends = onsets + np.array([n.duration for n in notes], dtype=np.int64)
    times, change = np.concatenate([onsets, ends]), np.repeat([1, -1], len(notes))
    order = np.argsort(times, kind="stable")
    bounds, first = np.unique(times[order], return_index=True)  # (runs + 1,) where a count changes
    counts = np.cumsum(np.add.reduceat(change[order], first))[:-1]  # (runs,) sounding in each
    return counts, np.diff(bounds)


def texture(notes):
    """'solo line', 'two voices' or 'N parts', from how many pitched notes sound together (the 90th
    percentile over the grid steps where any sounds, so a few passing chords do not count)."""
    pitched = [n for n in notes if n.program != DRUMS]
    if not pitched:
        return "drums only"
    counts, lengths = sounding_runs(pitched)
    steps_with = np.bincount(counts, weights=lengths)[1:]  # steps with 1, 2, ... notes sounding
    # nearest-rank 90th percentile
    voices = 1 + int(np.searchsorted(np.cumsum(steps_with), 0.9 * steps_with.sum()))
    return "solo line" if voices <= 1 else "two voices" if voices == 2 else f"{voices} parts"


def voices_per_instrument(notes):
    """How many notes an instrument sounds at once, averaged over its steps that sound and then over
    the instruments (drums included): 1 for a melody, 4 for a four-part chorale on one organ, 2 for
    two solo lines."""
    by_program = {}
    for n in notes:
        by_program.setdefault(n.program, []).append(n)
    if not by_program:
        return 0.0
    means = []
    for part in by_program.values():
        counts, lengths = sounding_runs(part)
        on = counts > 0
        means.append(float((counts[on] * lengths[on]).sum() / lengths[on].sum()))
    return float(np.mean(means))


def measure(score):
    """The attributes a prompt can name, measured from a piece's notes -> dict of tempo (bpm, word,
    Italian term), meter, key and mode, instruments (GM programs, most notes first, DRUMS for
    drums), each bar's chord and start, texture, note density, register and length."""
    notes, end = score.notes, end_step(score)
    bpm, seconds = mean_bpm(score), float(seconds_at(end, score.tempos))
    key, key_source = label_key(score)
    pitched = [n.pitch for n in notes if n.program != DRUMS]
    median = float(np.median(pitched)) if pitched else None
    bars = chords.bar_chords(score, halves=False)
    return dict(
        tempo_bpm=round(bpm, 1),
        tempo_word=tempo_word(bpm),
        tempo_italian=italian_tempo(bpm),
        meter="%d/%d" % main_meter(score),
        key=key,
        mode=key.split()[-1] if key else None,
        key_source=key_source,
        instruments=list(program_counts(notes)),
        chords=[chord and chords.symbol(chord) for _, chord in bars],  # per bar, None: no chord
        bar_steps=[step for step, _ in bars],
        texture=texture(notes),
        voices_per_instrument=round(voices_per_instrument(notes), 2),
        notes_per_second=round(len(notes) / max(seconds, 1e-3), 2),
        median_pitch=median,
        register=None if median is None else register_of(median),
        seconds=round(seconds, 2),
    )


# -----------------------------------------------------------------------------
# round-trip check: what the model will "hear" against what the file holds


def round_trip(src):
    """Encode and decode a file, and measure what survived.

    A note is kept when the decoded file has a note of the same pitch and
    instrument whose onset and duration are each within one grid step. Lengths
    in seconds are measured on each file's own tempo map."""
    midi = load_midi(src)
    raw, tempos, _, end_tick, *_ = read_raw(midi)
    score = tokenizer.read_midi(midi)
    tokens = tokenizer.score_to_tokens(score)
    out = tokenizer.decode(tokens)
    out_raw, out_tempos, _, out_end_tick, *_ = read_raw(events_of(out))

    def voices(notes, ticks_per_beat):  # (program, pitch) -> [(onset, duration)] in beats
        out = defaultdict(list)
        for onset, end, pitch, program, _ in notes:
            out[program, pitch].append((onset / ticks_per_beat, (end - onset) / ticks_per_beat))
        return out

    before, after = voices(raw, midi.ticks_per_beat), voices(out_raw, tokenizer.TICKS_PER_BEAT)
    tolerance = 1 / tokenizer.STEPS_PER_QUARTER + 1e-9
    kept = sum(
        matched(sorted(notes), sorted(after.get(voice, [])), tolerance)
        for voice, notes in before.items()
    )
    return dict(
        notes_in=score.notes_in,
        notes_kept=kept,
        tokens=len(tokens),
        dropped=score.dropped,
        changed=score.changed,
        seconds_in=float(seconds_at(end_tick, tempos, midi.ticks_per_beat)),
        seconds_out=float(seconds_at(out_end_tick, out_tempos, tokenizer.TICKS_PER_BEAT)),
        midi=out,
    )


def matched(notes, candidates, tolerance):
    """How many of the notes (onset, duration), sorted, each take the first unused candidate (sorted
    the same way) whose onset and duration are both within tolerance. Near linear: the notes come in
    onset order, so the first candidate that can still match only moves forward, and used ones are
    stepped over by a link to the next unused one (halved as it is followed)."""
    first, kept = 0, 0
    unused = list(range(len(candidates) + 1))  # unused[j] == j: j is free; else a later one

    def next_unused(j):
        while unused[j] != j:
            unused[j] = unused[unused[j]]
            j = unused[j]
        return j

    for onset, duration in notes:
        while first < len(candidates) and onset - candidates[first][0] > tolerance:
            first += 1
        j = next_unused(first)
        while j < len(candidates) and candidates[j][0] <= onset + tolerance:
            o, d = candidates[j]
            if abs(o - onset) <= tolerance and abs(d - duration) <= tolerance:
                unused[j] = j + 1
                kept += 1
                break
            j = next_unused(j + 1)
    return kept


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python describe.py FILE.mid")
    try:
        print(describe_midi(sys.argv[1]))
    except UserError as e:
        sys.exit(f"{sys.argv[1]}: {e}")
    except OSError as e:
        sys.exit(f"{sys.argv[1]}: {e.strerror or e}")
