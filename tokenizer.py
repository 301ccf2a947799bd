"""
The AMT tokenizer: MIDI <-> a stream of event tokens. Files are read by midifile.py (a small
reader of the events we use) and written with mido.

The vocabulary is declared once, below, as contiguous blocks of ids. Every range, mask and grammar
rule is derived from those blocks, never from literal ids.

A file encodes as

    START [TIMESIG_NUM TIMESIG_DEN] TEMPO_COARSE TEMPO_FINE
      [VELOCITY] PROGRAM NOTE DURATION+        one note (several DURATIONs add up)
      ...                                      more notes at the same time
      TIME_ON+ [TIMESIG_NUM TIMESIG_DEN] [TEMPO_COARSE TEMPO_FINE] notes ...   time moves on
    END

Time is beat-relative: STEPS_PER_QUARTER grid steps per quarter note, so tempo is the only thing
that maps steps to seconds. TIME_ON_k moves time k steps forward (a longer gap is several
TIME_ONs), so time never runs backwards. PROGRAM comes before every note so that any window
starting on a note is self-contained; VELOCITY only when it changes. The attribute prefix (the
semantic token, key, meter, tempo and instruments: attributes.py) is not part of a file's tokens:
dataset.build_windows puts it in front of every training window.

`python roundtrip.py IN.mid -o OUT.mid` writes a file's round trip and prints what was kept.
"""

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import mido
import numpy as np

from midifile import DRUMS, MidiError, load_midi, read_raw, track_from_events

# -----------------------------------------------------------------------------
# settings

STEPS_PER_QUARTER = 12  # grid: sixteenths (3), eighth triplets (4), sixteenth triplets (2)
MAX_TIME_ON = 48  # TIME_ON_1..48: up to 4 quarters per token
MAX_DURATION = 48  # DURATION_1..48: up to 4 quarters per token
# silence kept after the last note: 256 beats (longer tails are cut)
MAX_TRAILING_STEPS = 64 * MAX_TIME_ON
N_SEMANTIC = 32  # SEMANTIC_TOKEN_0..31: cluster.py's k may be at most this
DEFAULT_BPM = 120.0  # MIDI's default when a file sets no tempo
# Tempo is TEMPO_COARSE * 24 + TEMPO_FINE on a log grid of 70 levels per octave: a step of 1%,
# so the nearest level is within 0.5% and the timeline in seconds with it. Level 274 is 120 bpm,
# so 30, 60, 120, 240 and 480 bpm are exact; the levels span 7.96..1159 bpm (real files use
# about 10..1000), outside that tempos are clamped.
TEMPO_COARSE_LEVELS, TEMPO_FINE_LEVELS = 21, 24
TEMPO_LEVELS = TEMPO_COARSE_LEVELS * TEMPO_FINE_LEVELS
TEMPO_LEVELS_PER_OCTAVE = 70
TEMPO_LEVEL_OF_DEFAULT = 274
TEMPO_MIN_BPM = DEFAULT_BPM * 2 ** (-TEMPO_LEVEL_OF_DEFAULT / TEMPO_LEVELS_PER_OCTAVE)
N_VELOCITY = 8  # velocity bins of 16
# A time signature is TIMESIG_NUM_n TIMESIG_DEN_d: any n/d with n in 1..31 and d in 1..32.
# A larger n with an even n and d is written with both halved (32/16 as 16/8): the same bar.
MAX_NUMERATOR = 31
DENOMINATORS = [1, 2, 4, 8, 16, 32]
# Common meters, for the describers and evaluate.py's meter features (the vocabulary holds any n/d)
_COMMON = "2/4 3/4 4/4 5/4 6/4 7/4 2/2 3/2 4/2 3/8 5/8 6/8 7/8 9/8 12/8 1/4"
TIME_SIGNATURES = [tuple(int(v) for v in meter.split("/")) for meter in _COMMON.split()]
N_KEYS = 24  # 12 major then 12 minor keys, by tonic pitch class
PITCH_CLASSES = "C C# D Eb E F F# G Ab A Bb B".split()  # token names only
TICKS_PER_BEAT = 480  # resolution of decoded files (a multiple of the grid)
assert TICKS_PER_BEAT % STEPS_PER_QUARTER == 0

# -----------------------------------------------------------------------------
# the vocabulary: (block name, size), in id order

BLOCKS = [
    ("PAD", 1),
    ("UNK", 1),
    ("START", 1),
    ("END", 1),
    ("SEMANTIC", N_SEMANTIC),
    ("UNCOND", 1),
    ("TEMPO_COARSE", TEMPO_COARSE_LEVELS),
    ("TEMPO_FINE", TEMPO_FINE_LEVELS),
    ("TIMESIG_NUM", MAX_NUMERATOR),  # numerator 1..MAX_NUMERATOR
    ("TIMESIG_DEN", len(DENOMINATORS)),
    ("VELOCITY", N_VELOCITY),
    ("PROGRAM", 129),  # GM programs 0..127, then drums
    ("NOTE", 128),  # MIDI pitch
    ("DURATION", MAX_DURATION),  # 1..MAX_DURATION steps
    ("TIME_ON", MAX_TIME_ON),  # 1..MAX_TIME_ON steps
    # the attribute prefix's own (attributes.py): a key, and "unspecified" for each attribute
    ("KEY", N_KEYS),  # 12 * minor + tonic pitch class: KEY_C_MAJOR .. KEY_B_MINOR
    ("KEY_NONE", 1),
    ("METER_NONE", 1),
    ("TEMPO_NONE", 1),
    ("INSTRUMENTS_NONE", 1),
    ("INSTRUMENTS_END", 1),  # pads a named instrument set to its slots
    ("CHORD_NONE", 1),  # a bar's chord not given (its chord is a KEY token: root and triad class)
]
OFFSET, SIZE = {}, {}
for _name, _size in BLOCKS:
    OFFSET[_name], SIZE[_name] = sum(SIZE.values()), _size
VOCAB_SIZE = sum(SIZE.values())
assert VOCAB_SIZE <= 512, f"vocabulary of {VOCAB_SIZE}: the design caps it at 512"
assert VOCAB_SIZE < 2**16, "token ids are stored as uint16"
assert SIZE["TEMPO_COARSE"] * SIZE["TEMPO_FINE"] == TEMPO_LEVELS

PAD, UNK, START, END, UNCOND = (OFFSET[n] for n in ("PAD", "UNK", "START", "END", "UNCOND"))
# {block: [first id, size]}: how meta.json and checkpoints record the vocabulary, to check either
LAYOUT = {name: [OFFSET[name], SIZE[name]] for name, _ in BLOCKS}
TYPE_NAMES = [name for name, _ in BLOCKS]
TYPE = {name: i for i, name in enumerate(TYPE_NAMES)}
TOKEN_TYPE = np.repeat(np.arange(len(BLOCKS)), [size for _, size in BLOCKS])  # (VOCAB_SIZE,) block


def semantic_token(k):
    """Semantic id k (a cluster of cluster.py) -> the id of SEMANTIC_TOKEN_k."""
    if not 0 <= k < N_SEMANTIC:
        raise ValueError(f"semantic id {k} out of range 0..{N_SEMANTIC - 1}")
    return OFFSET["SEMANTIC"] + k


def semantic_name(k):
    """Semantic id k -> 'SEMANTIC_TOKEN_k', the one place that spells it."""
    return f"SEMANTIC_TOKEN_{int(k)}"


def token_name(token_id):
    token_id = int(token_id)
    if not 0 <= token_id < VOCAB_SIZE:
        return f"<out of vocabulary {token_id}>"
    block = TYPE_NAMES[TOKEN_TYPE[token_id]]
    k = token_id - OFFSET[block]
    if SIZE[block] == 1:
        return "SEMANTIC_UNCOND" if block == "UNCOND" else block
    if block == "SEMANTIC":
        return semantic_name(k)
    if block == "KEY":
        return f"KEY_{PITCH_CLASSES[k % 12]}_{'MINOR' if k >= 12 else 'MAJOR'}"
    if block == "TIMESIG_DEN":
        return f"TIMESIG_DEN_{DENOMINATORS[k]}"
    if block == "PROGRAM" and k == DRUMS:
        return "PROGRAM_DRUMS"
    if block in ("DURATION", "TIME_ON", "TIMESIG_NUM"):
        k += 1  # these blocks count from 1
    return f"{block}_{k}"


NAME_TO_ID = {token_name(i): i for i in range(VOCAB_SIZE)}
assert len(NAME_TO_ID) == VOCAB_SIZE, "token names must be unique"


def token_id(name):
    if name not in NAME_TO_ID:
        raise ValueError(
            f"unknown token {name!r}; token names look like {semantic_name(0)}..{N_SEMANTIC - 1}, "
            "NOTE_60, TIME_ON_12, PROGRAM_DRUMS, TIMESIG_NUM_3 TIMESIG_DEN_4"
        )
    return NAME_TO_ID[name]


# -----------------------------------------------------------------------------
# the grammar: which token type may follow which. It drives decode (what does
# not fit is skipped) and constrained sampling (GRAMMAR_MASK).

EVENT_START = ["TIMESIG_NUM", "TEMPO_COARSE", "VELOCITY", "PROGRAM", "TIME_ON", "END"]
FOLLOWS = {
    "PAD": ["PAD"],
    "UNK": EVENT_START,
    "START": EVENT_START,
    "END": ["PAD"],
    "SEMANTIC": ["START"] + EVENT_START,  # a training window starts on an event boundary
    "UNCOND": ["START"] + EVENT_START,
    "TIMESIG_NUM": ["TIMESIG_DEN"],  # a meter is always both halves
    "TIMESIG_DEN": ["TEMPO_COARSE", "VELOCITY", "PROGRAM", "TIME_ON", "END"],
    "TEMPO_COARSE": ["TEMPO_FINE"],
    "TEMPO_FINE": ["VELOCITY", "PROGRAM", "TIME_ON", "END"],
    "VELOCITY": ["PROGRAM"],
    "PROGRAM": ["NOTE"],
    "NOTE": ["DURATION"],
    "DURATION": ["DURATION"] + EVENT_START,
    "TIME_ON": ["TIME_ON", "TIMESIG_NUM", "TEMPO_COARSE", "VELOCITY", "PROGRAM", "END"],
    # The attribute prefix has a fixed layout and is always given, never sampled: in the event
    # stream its own tokens (the blocks from KEY on) fit nowhere, and decode skips it as a whole.
    **{name: [] for name in TYPE_NAMES[TYPE["KEY"] :]},
}
assert set(FOLLOWS) == set(TYPE_NAMES), "every token type needs a grammar rule"
TYPE_FOLLOWS = np.zeros((len(TYPE_NAMES), len(TYPE_NAMES)), dtype=bool)  # [prev type, next type]
for _prev, _nexts in FOLLOWS.items():
    TYPE_FOLLOWS[TYPE[_prev], [TYPE[n] for n in _nexts]] = True
GRAMMAR_MASK = TYPE_FOLLOWS[TOKEN_TYPE][:, TOKEN_TYPE]  # (VOCAB_SIZE, VOCAB_SIZE) [prev, next id]
# A training window may start right after these types (a complete event), on a non-DURATION token.
WINDOW_START_AFTER = ["START", "DURATION"]
# A sequence that starts with a semantic token is led by the attribute prefix, this many tokens,
# which decode skips; attributes.py declares its slots and checks that they add up to it.
PREFIX_LEN = 20


def next_token_mask(prev_id):
    """Boolean (VOCAB_SIZE,) mask of the ids the grammar allows after prev_id."""
    return GRAMMAR_MASK[int(prev_id)]


# -----------------------------------------------------------------------------
# value <-> bin helpers


def tempo_level(bpm):
    level = TEMPO_LEVEL_OF_DEFAULT + round(
        TEMPO_LEVELS_PER_OCTAVE * math.log2(max(bpm, 1e-6) / DEFAULT_BPM)
    )
    return min(max(level, 0), TEMPO_LEVELS - 1)


def level_bpm(level):
    return DEFAULT_BPM * 2 ** ((level - TEMPO_LEVEL_OF_DEFAULT) / TEMPO_LEVELS_PER_OCTAVE)


def fit_meter(numerator, denominator):
    """n/d as the vocabulary writes it, with the same bar length (32/16 -> 16/8); None if it can't
    be."""
    while (
        (numerator > MAX_NUMERATOR or denominator > DENOMINATORS[-1])
        and numerator % 2 == 0
        and denominator > 1
    ):
        numerator, denominator = numerator // 2, denominator // 2
    return (
        (numerator, denominator)
        if 1 <= numerator <= MAX_NUMERATOR and denominator in DENOMINATORS
        else None
    )


def velocity_bin(velocity):
    return min(max(velocity - 1, 0) // 16, N_VELOCITY - 1)


def bin_velocity(b):
    return 16 * b + 8  # middle of the bin, so re-encoding gives the same bin


def split_steps(steps, cap):
    """A gap or duration longer than the cap becomes several tokens that add up."""
    return [cap] * (steps // cap) + ([steps % cap] if steps % cap else [])


def meter_tokens(numerator, denominator):
    """A meter the vocabulary writes (fit_meter) -> [TIMESIG_NUM, TIMESIG_DEN]."""
    return [
        OFFSET["TIMESIG_NUM"] + numerator - 1,
        OFFSET["TIMESIG_DEN"] + DENOMINATORS.index(denominator),
    ]


def tempo_tokens(bpm):
    """bpm -> [TEMPO_COARSE, TEMPO_FINE] of its nearest tempo level."""
    level = tempo_level(bpm)
    return [
        OFFSET["TEMPO_COARSE"] + level // TEMPO_FINE_LEVELS,
        OFFSET["TEMPO_FINE"] + level % TEMPO_FINE_LEVELS,
    ]


def header_tokens(meter=None, tempo_bpm=None):
    """What a file that starts in this meter and tempo has right after START: [TIMESIG pair] [TEMPO
    pair]."""
    fitted = meter and fit_meter(*meter)
    return (meter_tokens(*fitted) if fitted else []) + (
        [] if tempo_bpm is None else tempo_tokens(tempo_bpm)
    )


# -----------------------------------------------------------------------------
# MIDI -> Score: midifile.py reads the events, read_midi puts them on the grid


@dataclass
class Note:
    onset: int  # grid steps from the start
    duration: int  # grid steps, >= 1
    pitch: int
    program: int  # GM program 0..127, or DRUMS
    velocity: int


@dataclass
class Score:
    notes: list = field(default_factory=list)  # Note, sorted by (onset, program, pitch, duration)
    tempos: list = field(default_factory=list)  # (step, bpm)
    time_signatures: list = field(default_factory=list)  # (step, numerator, denominator)
    key_signatures: list = field(default_factory=list)  # (step, collection, minor); not in tokens
    end_step: int = 0
    notes_in: int = 0  # notes found in the file
    dropped: Counter = field(default_factory=Counter)  # reason -> notes left out
    changed: Counter = field(default_factory=Counter)  # reason -> other events left out or changed


def seconds_at(ticks, tempos, ticks_per_beat=STEPS_PER_QUARTER):
    """Ticks (int or array) -> seconds, through a tempo map [(tick, bpm)] sorted by tick, with
    120 bpm before the first change. In grid steps by default: a Score's own tempo map."""
    starts = np.array([0] + [tick for tick, _ in tempos], dtype=np.float64)
    seconds_per_tick = 60.0 / (
        np.array([DEFAULT_BPM] + [bpm for _, bpm in tempos]) * ticks_per_beat
    )
    seconds_at_start = np.concatenate([[0.0], np.cumsum(np.diff(starts) * seconds_per_tick[:-1])])
    ticks = np.asarray(ticks, dtype=np.float64)
    i = np.searchsorted(starts, ticks, side="right") - 1  # the last change at or before each tick
    return seconds_at_start[i] + (ticks - starts[i]) * seconds_per_tick[i]


def grid_tempos(tempos, ticks_per_beat, score):
    """The tempo map on the grid, [(step, bpm)], into score.tempos.

    Each change keeps the mean tempo up to the next change (or the end), so the
    seconds at every change are the file's however many changes fall within one
    grid step (performances have fast tempo maps); rounding to a tempo level then
    moves the timeline by at most half a level, 0.5%."""
    to_step = STEPS_PER_QUARTER / ticks_per_beat
    steps = {0}
    for tick, _ in tempos:
        if round(tick * to_step) > score.end_step:
            score.changed["tempo changes after the end of the music"] += 1
        else:
            steps.add(round(tick * to_step))
    steps = sorted(steps)
    ends = steps[1:] + [score.end_step]
    starts = np.array(steps) / to_step  # in ticks
    seconds = seconds_at(
        np.concatenate([starts, np.array(ends) / to_step, starts + 1]), tempos, ticks_per_beat
    )
    lowest, highest = level_bpm(0), level_bpm(TEMPO_LEVELS - 1)
    for i, (step, next_step) in enumerate(zip(steps, ends)):
        if next_step > step:
            elapsed = seconds[len(steps) + i] - seconds[i]
            bpm = 60 * (next_step - step) / STEPS_PER_QUARTER / max(elapsed, 1e-12)
        else:  # a change at the very end sets no time: its own tempo
            bpm = 60 / max(seconds[2 * len(steps) + i] - seconds[i], 1e-12) / ticks_per_beat
        if not lowest / 1.005 <= bpm <= highest * 1.005:
            score.changed[f"tempos clamped to {lowest:.0f}..{highest:.0f} bpm"] += 1
        if not score.tempos or tempo_level(bpm) != tempo_level(score.tempos[-1][1]):
            score.tempos.append((step, bpm))


# The longest music a file may hold (its events and bytes are bounded in midifile.py): what a file
# costs, in tokens and in the measures taken per grid step, grows with its length, and one note or
# gap of 2**28 ticks is years. Bounded in the file's own seconds, and on the grid at the fastest
# tempo the tokens hold (a file's tempo can be 60 million bpm).
MAX_HOURS = 4
MAX_STEPS = round(MAX_HOURS * 3600 * level_bpm(TEMPO_LEVELS - 1) / 60 * STEPS_PER_QUARTER)


def check_length(raw, tempos, ticks_per_beat):
    """MidiError where read_raw's notes run past MAX_HOURS (trailing silence is cut anyway)."""
    last = max((end for _, end, *_ in raw), default=0)
    hours = float(seconds_at(last, tempos, ticks_per_beat)) / 3600
    steps = last * STEPS_PER_QUARTER / ticks_per_beat
    limit = f"longer than the limit of {MAX_HOURS} hours"
    if hours > MAX_HOURS:
        raise MidiError(f"{limit} ({hours:,.0f} hours: a note or a gap that long)")
    if steps > MAX_STEPS:
        raise MidiError(f"{limit} at the fastest tempo the tokens hold ({steps:,.0f} grid steps)")


def read_midi(src):
    """Read a MIDI file (path, its bytes, mido.MidiFile or MidiEvents) onto the grid. Raises
    MidiError, for a file over a limit too (midifile.py's, MAX_HOURS)."""
    midi = load_midi(src)
    try:
        raw, tempos, time_signatures, end_tick, repeats, zero_length, keys = read_raw(midi)
    except Exception as e:
        raise MidiError(f"malformed MIDI events ({type(e).__name__}: {e})") from None
    check_length(raw, tempos, midi.ticks_per_beat)
    to_step = STEPS_PER_QUARTER / midi.ticks_per_beat
    score = Score(notes_in=len(raw))
    if repeats:
        score.changed["repeated note-ons of a sounding key at the same tick (not new notes)"] = (
            repeats
        )
    if zero_length:
        score.changed[
            "zero-length notes (note-off at the note-on's tick) kept at one grid step"
        ] = zero_length
    if midi.type == 2 and len(midi.tracks) > 1:
        score.changed["sequences of a type 2 file, played one after another"] = len(midi.tracks)

    # Notes onto the grid. The end is rounded, not the length, so legato stays legato; a note
    # shorter than a step (zero-length ones too) keeps one step. Unison doublings (two tracks of one
    # instrument) are kept: decode gives them channels of their own.
    for onset, end, pitch, program, velocity in raw:
        on = round(onset * to_step)
        score.notes.append(Note(on, max(round(end * to_step) - on, 1), pitch, program, velocity))
    score.notes.sort(key=lambda n: (n.onset, n.program, n.pitch, n.duration))
    last_note_end = max((n.onset + n.duration for n in score.notes), default=0)
    score.end_step = max(
        last_note_end, min(round(end_tick * to_step), last_note_end + MAX_TRAILING_STEPS)
    )

    grid_tempos(tempos, midi.ticks_per_beat, score)
    # Meters: the last one set at a step wins; repeats of the same meter go.
    last = {}
    for tick, numerator, denominator in sorted(time_signatures, key=lambda e: e[0]):
        if round(tick * to_step) > score.end_step:
            score.changed["time signatures after the end of the music"] += 1
        else:
            last[round(tick * to_step)] = (numerator, denominator)
    for step, (numerator, denominator) in sorted(last.items()):
        meter = fit_meter(numerator, denominator)
        if meter is None:
            score.changed[f"time signature {numerator}/{denominator} not in the vocabulary"] += 1
            continue
        if meter != (numerator, denominator):
            written = f"written as {meter[0]}/{meter[1]} (the same bar)"
            score.changed[f"time signature {numerator}/{denominator} {written}"] += 1
        if not score.time_signatures or score.time_signatures[-1][1:] != meter:
            score.time_signatures.append((step, *meter))
    score.key_signatures = sorted((round(tick * to_step), c, m) for tick, c, m in keys)
    return score


# -----------------------------------------------------------------------------
# Score <-> tokens


def score_to_tokens(score):
    events = defaultdict(lambda: ([], [], []))  # step -> (time signature, tempo, notes)
    for step, num, den in score.time_signatures:
        events[step][0][:] = meter_tokens(num, den)
    for step, bpm in score.tempos:
        events[step][1][:] = tempo_tokens(bpm)
    for note in score.notes:
        events[note.onset][2].append(note)

    # The note loop runs for every note of a corpus (prepare.py): ids are looked up once, and
    # the common case (one DURATION, one TIME_ON) skips split_steps.
    program_id, note_id = OFFSET["PROGRAM"], OFFSET["NOTE"]
    duration_id, time_on_id = OFFSET["DURATION"] - 1, OFFSET["TIME_ON"] - 1  # they count from 1
    tokens, time, velocity = [START], 0, None
    append = tokens.append
    for step in sorted(events):
        time_signature, tempo, notes = events[step]
        if step - time <= MAX_TIME_ON:
            tokens += [time_on_id + step - time] if step > time else []
        else:
            tokens += [time_on_id + k for k in split_steps(step - time, MAX_TIME_ON)]
        time = step
        tokens += time_signature + tempo
        for note in notes:
            if velocity_bin(note.velocity) != velocity:
                velocity = velocity_bin(note.velocity)
                append(OFFSET["VELOCITY"] + velocity)
            append(program_id + note.program)
            append(note_id + note.pitch)
            if note.duration <= MAX_DURATION:
                append(duration_id + note.duration)
            else:
                tokens += [duration_id + k for k in split_steps(note.duration, MAX_DURATION)]
    tokens += [time_on_id + k for k in split_steps(score.end_step - time, MAX_TIME_ON)]
    tokens.append(END)
    return np.array(tokens, dtype=np.uint16)


def encode(src):
    """MIDI (path or mido.MidiFile) -> uint16 tokens START ... END. Raises MidiError."""
    return score_to_tokens(read_midi(src))


def tokens_to_score(tokens):
    """Tokens -> (Score, n_skipped). Never raises: what does not fit the grammar is skipped.

    A leading attribute prefix (a sequence that starts with a semantic token) and trailing PADs are
    fine. An event cut short (say PROGRAM NOTE with no DURATION) is dropped when the next event
    starts."""
    score, skipped = Score(), 0
    prev, time, velocity = "SEMANTIC", 0, 80
    program = pitch = coarse = numerator = None
    tokens = [int(t) for t in tokens]
    first = TYPE_NAMES[TOKEN_TYPE[tokens[0]]] if tokens and 0 <= tokens[0] < VOCAB_SIZE else None
    if first in ("SEMANTIC", "UNCOND"):
        tokens = tokens[PREFIX_LEN:]
    for tok in tokens:
        kind = TYPE_NAMES[TOKEN_TYPE[tok]] if 0 <= tok < VOCAB_SIZE else "UNK"
        if kind == "PAD":
            continue
        if not TYPE_FOLLOWS[TYPE[prev], TYPE[kind]]:
            skipped += 1
            if kind not in EVENT_START:
                continue  # this token does not fit here: skip it
            pitch = None  # it starts a new event: drop the unfinished one before it
        prev = kind
        k = tok - OFFSET[kind]
        if kind == "END":
            break
        elif kind == "TIME_ON":
            time += k + 1
        elif kind == "TIMESIG_NUM":
            numerator = k + 1
        elif kind == "TIMESIG_DEN":
            if score.time_signatures and score.time_signatures[-1][0] == time:
                score.time_signatures.pop()
            score.time_signatures.append((time, numerator, DENOMINATORS[k]))
        elif kind == "TEMPO_COARSE":
            coarse = k
        elif kind == "TEMPO_FINE":
            if score.tempos and score.tempos[-1][0] == time:
                score.tempos.pop()
            score.tempos.append((time, level_bpm(coarse * TEMPO_FINE_LEVELS + k)))
        elif kind == "VELOCITY":
            velocity = bin_velocity(k)
        elif kind == "PROGRAM":
            program = k
        elif kind == "NOTE":
            pitch = k
        elif kind == "DURATION":
            if pitch is not None:  # the first DURATION completes the note
                score.notes.append(Note(time, k + 1, pitch, program, velocity))
                pitch = None
            else:  # later ones lengthen it
                score.notes[-1].duration += k + 1
    if not score.tempos or score.tempos[0][0] > 0:
        score.tempos.insert(0, (0, DEFAULT_BPM))
    score.end_step = max([time] + [n.onset + n.duration for n in score.notes])
    return score, skipped


def score_to_midi(score):
    """A type 1 file: a conductor track (tempo, meter), then one track per instrument."""
    to_tick = TICKS_PER_BEAT // STEPS_PER_QUARTER
    mid = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT)

    def track_of(events, name):  # events: (tick, order, message); notes off before on at a tick
        mid.tracks.append(track_from_events(events, name, end_tick=score.end_step * to_tick))

    conductor = [
        (s * to_tick, 0, mido.MetaMessage("time_signature", numerator=n, denominator=d))
        for s, n, d in score.time_signatures
    ]
    conductor += [
        (s * to_tick, 1, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm)))
        for s, bpm in score.tempos
    ]
    track_of(conductor, "tempo")

    # One track and channel per instrument. A note that would overlap a sounding
    # note of the same pitch and instrument (a unison doubling) goes to another
    # layer of that instrument, with a channel of its own, so no note is lost.
    layers = defaultdict(list)  # (program, layer) -> [Note]
    busy_until = defaultdict(list)  # (program, pitch) -> end step of each layer's last note
    for note in sorted(score.notes, key=lambda n: (n.onset, n.program, n.pitch, n.duration)):
        ends = busy_until[note.program, note.pitch]
        layer = next((i for i, end in enumerate(ends) if end <= note.onset), len(ends))
        ends[layer : layer + 1] = [note.onset + note.duration]
        layers[note.program, layer].append(note)
    melodic_channels = [c for c in range(16) if c != 9]
    n_melodic = sum(program != DRUMS for program, _ in layers)
    for i, ((program, layer), notes) in enumerate(sorted(layers.items())):
        # Past 15 melodic tracks, tracks share channels and each note re-sends its program.
        channel = 9 if program == DRUMS else melodic_channels[i % 15]
        shared = program != DRUMS and n_melodic > 15
        change = program != DRUMS and mido.Message(
            "program_change", channel=channel, program=program
        )
        events = [] if program == DRUMS or shared else [(0, 0, change)]
        for note in notes:
            on, off = note.onset * to_tick, (note.onset + note.duration) * to_tick
            events += [(on, 1, change)] if shared else []
            key = dict(channel=channel, note=note.pitch)
            events.append((on, 2, mido.Message("note_on", **key, velocity=note.velocity)))
            events.append((off, 0, mido.Message("note_off", **key, velocity=0)))
        name = "drums" if program == DRUMS else f"program {program}"
        track_of(events, name + (f" ({layer + 1})" if layer else ""))
    return mid


def decode(tokens):
    """Tokens -> mido.MidiFile. Never raises on a malformed sequence."""
    return score_to_midi(tokens_to_score(tokens)[0])
