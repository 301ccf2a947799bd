"""
What describes a piece of music, measured from its notes (a tokenizer.Score): General MIDI names,
seconds from a tempo map, key and mode, meter, tempo word, instruments, register and density.
Two consumers:

- cluster.py: `describe_score` writes the description sentence of a MIDI file that has no caption;
- evaluate.py: `piece_stats` gives the numeric statistics that compare generated and real music.

Keys are spelled one way everywhere, in words a sentence embedder and a person both know:
"B flat major", "F sharp minor" (see KEY_NAMES).

    python describe.py song.mid     # prints the sentence cluster.py would embed for it
"""

import math
import sys
from collections import Counter

import numpy as np

import tokenizer

DRUMS = tokenizer.DRUMS  # the program of a drum-channel note

GM_NAMES = (
    "Acoustic Grand Piano;Bright Acoustic Piano;Electric Grand Piano;Honky-tonk Piano;Electric Piano 1;"
    "Electric Piano 2;Harpsichord;Clavinet;Celesta;Glockenspiel;Music Box;Vibraphone;Marimba;Xylophone;Tubular Bells;"
    "Dulcimer;Drawbar Organ;Percussive Organ;Rock Organ;Church Organ;Reed Organ;Accordion;Harmonica;Tango Accordion;"
    "Acoustic Guitar (nylon);Acoustic Guitar (steel);Electric Guitar (jazz);Electric Guitar (clean);"
    "Electric Guitar (muted);Overdriven Guitar;Distortion Guitar;Guitar Harmonics;Acoustic Bass;Electric Bass (finger);"
    "Electric Bass (pick);Fretless Bass;Slap Bass 1;Slap Bass 2;Synth Bass 1;Synth Bass 2;Violin;Viola;Cello;"
    "Contrabass;Tremolo Strings;Pizzicato Strings;Orchestral Harp;Timpani;String Ensemble 1;String Ensemble 2;"
    "Synth Strings 1;Synth Strings 2;Choir Aahs;Voice Oohs;Synth Choir;Orchestra Hit;Trumpet;Trombone;Tuba;"
    "Muted Trumpet;French Horn;Brass Section;Synth Brass 1;Synth Brass 2;Soprano Sax;Alto Sax;Tenor Sax;Baritone Sax;"
    "Oboe;English Horn;Bassoon;Clarinet;Piccolo;Flute;Recorder;Pan Flute;Blown Bottle;Shakuhachi;Whistle;Ocarina;"
    "Lead 1 (square);Lead 2 (sawtooth);Lead 3 (calliope);Lead 4 (chiff);Lead 5 (charang);Lead 6 (voice);"
    "Lead 7 (fifths);Lead 8 (bass + lead);Pad 1 (new age);Pad 2 (warm);Pad 3 (polysynth);Pad 4 (choir);Pad 5 (bowed);"
    "Pad 6 (metallic);Pad 7 (halo);Pad 8 (sweep);FX 1 (rain);FX 2 (soundtrack);FX 3 (crystal);FX 4 (atmosphere);"
    "FX 5 (brightness);FX 6 (goblin);FX 7 (echoes);FX 8 (sci-fi);Sitar;Banjo;Shamisen;Koto;Kalimba;Bagpipe;Fiddle;"
    "Shanai;Tinkle Bell;Agogo;Steel Drums;Woodblock;Taiko Drum;Melodic Tom;Synth Drum;Reverse Cymbal;"
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
    return [(min(nxt[0] if nxt else end_step, end_step) - max(cur[0], 0), *cur[1:])
            for cur, nxt in zip(changes, changes[1:] + [None]) if cur[0] < end_step]


def seconds_at(steps, tempos):
    """Grid steps (int or array) -> seconds, through a tempo map [(step, bpm)] that starts at step 0."""
    steps, seconds = np.asarray(steps, dtype=np.float64), 0.0
    tempos = list(tempos)
    if not tempos or tempos[0][0] > 0:
        tempos.insert(0, (0, tokenizer.DEFAULT_BPM))  # MIDI's default until the first tempo event
    for (start, bpm), (end, _) in zip(tempos, tempos[1:] + [(np.inf, 0)]):
        seconds = seconds + np.clip(steps - start, 0, end - start) * 60.0 / (bpm * tokenizer.STEPS_PER_QUARTER)
    return seconds


def end_step(score):
    """The last step of a piece: its end, or the end of its last note if that is later (at least 1)."""
    return max([score.end_step, 1] + [n.onset + n.duration for n in score.notes])


def mean_bpm(score):
    """The tempo averaged over the piece's grid steps (a piece mostly at 60 with a short 120 reads near 60)."""
    end = end_step(score)
    return sum(steps * bpm for steps, bpm in segments(score.tempos, (tokenizer.DEFAULT_BPM,), end)) / end


def main_meter(score):
    """(numerator, denominator) of the meter that lasts longest; 4/4 where a file sets none."""
    return max(segments(score.time_signatures, (4, 4), end_step(score)))[1:]


TEMPO_WORDS = [(60, "very slow"), (76, "slow"), (108, "moderate"), (132, "fast"), (1e9, "very fast")]  # (below, word)


def tempo_word(bpm):
    return next(word for limit, word in TEMPO_WORDS if bpm < limit)


# -----------------------------------------------------------------------------
# key and mode

# Spelled as in common practice: flats for the flat keys, F sharp and the sharp minor keys as sharps.
MAJOR_TONICS = "C;D flat;D;E flat;E;F;F sharp;G;A flat;A;B flat;B".split(";")
MINOR_TONICS = "C;C sharp;D;E flat;E;F;F sharp;G;G sharp;A;B flat;B".split(";")
KEY_NAMES = [f"{t} major" for t in MAJOR_TONICS] + [f"{t} minor" for t in MINOR_TONICS]  # index = 12 * minor + tonic
LETTERS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
# Krumhansl-Kessler key profiles: how well each pitch class fits a major / minor key on its tonic
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def key_name(tonic, mode):
    """A tonic, as a pitch class 0..11 or a spelled name ("B-", "Bb", "B flat", "A#"), and a mode ->
    the one spelling used everywhere: "B flat major", "G sharp minor"; other modes keep their name on the
    major key's spelling of the tonic ("E flat dorian")."""
    if isinstance(tonic, str):
        name = tonic.strip().replace(" sharp", "#").replace(" flat", "b").replace("-", "b")
        if not name or name[0].upper() not in LETTERS:
            raise ValueError(f"not a key tonic: {tonic!r}")
        tonic = LETTERS[name[0].upper()] + name[1:].count("#") - name[1:].count("b")
    mode = mode.strip().lower()
    if mode in ("major", "minor"):
        return KEY_NAMES[12 * (mode == "minor") + tonic % 12]
    return f"{MAJOR_TONICS[tonic % 12]} {mode}"


def estimate_key(notes):
    """Krumhansl-Schmuckler: correlate the duration-weighted pitch-class histogram with all 24 key profiles
    -> a KEY_NAMES entry, or None for drums only or a flat histogram."""
    hist = np.zeros(12)
    for n in notes:
        if n.program != DRUMS:
            hist[n.pitch % 12] += max(n.duration, 1)
    if hist.sum() == 0 or hist.std() == 0:
        return None
    _, tonic, mode = max((np.corrcoef(hist, np.roll(profile, tonic))[0, 1], tonic, mode)
                         for mode, profile in (("major", MAJOR_PROFILE), ("minor", MINOR_PROFILE))
                         for tonic in range(12))
    return key_name(tonic, mode)


# -----------------------------------------------------------------------------
# the description sentence, for MIDI without a caption

def describe_score(score):
    """One sentence in words a sentence embedder knows: tempo, key, meter, instruments, size, register."""
    notes = score.notes
    if not notes:
        raise tokenizer.MidiError("no notes")
    end, spq = end_step(score), tokenizer.STEPS_PER_QUARTER
    seconds, bpm, (num, den) = float(seconds_at(end, score.tempos)), mean_bpm(score), main_meter(score)
    bars = sum(length / (n * spq * 4 / d) for length, n, d in segments(score.time_signatures, (4, 4), end))
    counts = program_counts(notes)
    names = [GM_NAMES[p] for p in counts if p != DRUMS]
    instruments = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    key = estimate_key(notes)
    text = f"A {tempo_word(bpm)} piece at {bpm:.0f} bpm" + (f" in {key}" if key else "") + f", {num}/{den} time, "
    text += (f"for {instruments}" + (", with drums" if DRUMS in counts else "")) if names else "for drums only"
    text += (f"; {len(notes)} notes over {bars:.0f} bars ({seconds:.0f} seconds), "
             f"{len(notes) / max(seconds, 1e-3):.1f} notes per second")
    pitched = [n.pitch for n in notes if n.program != DRUMS]
    if pitched:
        median = float(np.median(pitched))
        text += ", in a " + ("low" if median < 52 else "middle" if median < 72 else "high") + " register"
    return text + "."


def describe_midi(path):
    return describe_score(tokenizer.read_midi(path))


# -----------------------------------------------------------------------------
# numeric statistics of a piece, real or generated (evaluate.py)

MAJOR, MINOR = np.array([0, 2, 4, 5, 7, 9, 11]), np.array([0, 2, 3, 5, 7, 8, 10])  # natural minor
DURATION_EDGES = [1, 2, 3, 4, 6, 9, 12, 18, 24, 48, np.inf]  # grid steps (12 = a quarter): 10 bins
METRICS = {"pc_entropy": "pitch-class entropy (bits)", "scale": "scale consistency", "polyphony": "polyphony",
           "density": "note density (notes/beat)", "empty_beats": "empty-beat rate"}


def sounding_per_step(notes, end):
    """(end,) how many notes sound at each grid step."""
    cover = np.zeros(end + 1)
    np.add.at(cover, [n.onset for n in notes], 1)
    np.add.at(cover, [n.onset + n.duration for n in notes], -1)  # end >= every note's end
    return np.cumsum(cover)[:end]


def bar_starts(score, end):
    """Grid steps where bars start, from the time signatures (4/4 by default)."""
    starts, at = [], 0
    for steps, num, den in segments(score.time_signatures, (4, 4), end):
        starts += range(at, at + steps, max(1, num * tokenizer.STEPS_PER_QUARTER * 4 // den))
        at += steps
    return starts


def piece_stats(score):
    """A Score -> dict of the METRICS (as muspy defines them; nan where one does not apply, e.g. pitch classes of
    drums), the duration histogram, whether a note sounds in every bar, and a feature vector for classifiers."""
    spq, notes, end = tokenizer.STEPS_PER_QUARTER, score.notes, end_step(score)
    pitch = np.array([n.pitch for n in notes if n.program != DRUMS], dtype=np.int64)     # (P,)
    program = np.array([n.program for n in notes], dtype=np.int64)                      # (N,)
    pc = np.bincount(pitch % 12, minlength=12) / max(len(pitch), 1)                     # (12,) shares
    sounding = sounding_per_step(notes, end)                                            # (end,) notes on
    share = pc[pc > 0]
    s = dict(pc_entropy=-(share * np.log2(share)).sum() if len(pitch) else np.nan,  # 0: a single pitch class
             scale=max(pc[(sc + tonic) % 12].sum() for sc in (MAJOR, MINOR) for tonic in range(12))
             if len(pitch) else np.nan,                                  # the largest share in one scale
             polyphony=sounding[sounding > 0].mean() if notes else 0.0,  # notes at once, while any sounds
             density=len(notes) / (end / spq),
             empty_beats=1 - len({n.onset // spq for n in notes}) / math.ceil(end / spq),  # beats with no onset
             durations=np.histogram([n.duration for n in notes], DURATION_EDGES)[0] / max(len(notes), 1),  # (10,)
             all_bars=bool(notes) and bool(np.maximum.reduceat(sounding > 0, bar_starts(score, end)).all()))
    seconds = float(seconds_at(end, score.tempos))
    families = np.bincount(np.where(program == DRUMS, 16, program // 8), minlength=17)  # (17,) 16 = drums
    register = [*np.percentile(pitch, [5, 50, 95]), pitch.std()] if len(pitch) else [np.nan] * 4
    meter = main_meter(score)
    s["features"] = np.concatenate([
        pc, [s[k] for k in METRICS], register,
        [math.log2(mean_bpm(score)), len(notes) / seconds, len(set(program.tolist())),
         np.mean([n.velocity for n in notes] or [0])],
        families / max(len(notes), 1), s["durations"], [meter == ts for ts in tokenizer.TIME_SIGNATURES]]).astype(float)
    return s


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python describe.py FILE.mid")
    try:
        print(describe_midi(sys.argv[1]))
    except tokenizer.UserError as e:
        sys.exit(f"{sys.argv[1]}: {e}")
    except OSError as e:
        sys.exit(f"{sys.argv[1]}: {e.strerror or e}")
