"""
The AMT tokenizer: MIDI <-> a stream of event tokens, with mido.

The vocabulary is declared once, below, as contiguous blocks of ids. Every range,
mask and grammar rule is derived from those blocks, never from literal ids.

A file encodes as

    START [TIMESIG] TEMPO_COARSE TEMPO_FINE
      [VELOCITY] PROGRAM NOTE DURATION+        one note (several DURATIONs add up)
      ...                                      more notes at the same time
      TIME_ON+ [TIMESIG] [TEMPO_COARSE TEMPO_FINE] notes ...   time moves on
    END

Time is beat-relative: STEPS_PER_QUARTER grid steps per quarter note, so tempo is
the only thing that maps steps to seconds. TIME_ON_k moves time k steps forward
(a longer gap is several TIME_ONs), so time never runs backwards. PROGRAM comes
before every note so that any window starting on a note is self-contained;
VELOCITY only when it changes. The semantic token (SEMANTIC_TOKEN_k, or
SEMANTIC_UNCOND) is not part of a file's tokens: train.py puts it in front of
every training window.

    python tokenizer.py IN.mid -o OUT.mid    # writes the round trip, prints what was kept
"""

import argparse
import math
import os
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import mido
import numpy as np

# -----------------------------------------------------------------------------
# settings

STEPS_PER_QUARTER = 12      # grid: sixteenths (3), eighth triplets (4), sixteenth triplets (2)
MAX_TIME_ON = 48            # TIME_ON_1..48: up to 4 quarters per token
MAX_DURATION = 48           # DURATION_1..48: up to 4 quarters per token
MAX_TRAILING_STEPS = 64 * MAX_TIME_ON  # silence kept after the last note: 256 beats (longer tails are cut)
N_SEMANTIC = 64             # SEMANTIC_TOKEN_0..63: cluster.py's k may be at most this
TEMPO_LEVELS = 256          # tempo = TEMPO_COARSE * 16 + TEMPO_FINE, log-spaced,
TEMPO_LEVELS_PER_OCTAVE = 64  # so error <= 0.55%; 30, 60, 120 and 240 bpm are exact
TEMPO_MIN_BPM = 30.0        # levels span 30..473 bpm; tempos outside are clamped
DEFAULT_BPM = 120.0         # MIDI's default when a file sets no tempo
N_VELOCITY = 8              # velocity bins of 16
DRUMS = 128                 # the program number we give to channel 10 (index 9)
TIME_SIGNATURES = [(2, 4), (3, 4), (4, 4), (5, 4), (6, 4), (7, 4), (2, 2), (3, 2),
                   (4, 2), (3, 8), (5, 8), (6, 8), (7, 8), (9, 8), (12, 8), (1, 4)]
TICKS_PER_BEAT = 480        # resolution of decoded files (a multiple of the grid)
assert TICKS_PER_BEAT % STEPS_PER_QUARTER == 0

# -----------------------------------------------------------------------------
# the vocabulary: (block name, size), in id order

BLOCKS = [
    ("PAD", 1), ("UNK", 1), ("START", 1), ("END", 1),
    ("SEMANTIC", N_SEMANTIC), ("UNCOND", 1),
    ("TEMPO_COARSE", 16), ("TEMPO_FINE", TEMPO_LEVELS // 16),
    ("TIMESIG", len(TIME_SIGNATURES)),
    ("VELOCITY", N_VELOCITY),
    ("PROGRAM", 129),        # GM programs 0..127, then drums
    ("NOTE", 128),           # MIDI pitch
    ("DURATION", MAX_DURATION),  # 1..MAX_DURATION steps
    ("TIME_ON", MAX_TIME_ON),    # 1..MAX_TIME_ON steps
]
OFFSET, SIZE = {}, {}
for _name, _size in BLOCKS:
    OFFSET[_name], SIZE[_name] = sum(SIZE.values()), _size
VOCAB_SIZE = sum(SIZE.values())
assert VOCAB_SIZE <= 512, f"vocabulary of {VOCAB_SIZE} exceeds the reference design's 512"
assert VOCAB_SIZE < 2 ** 16, "token ids are stored as uint16"
assert SIZE["TEMPO_COARSE"] * SIZE["TEMPO_FINE"] == TEMPO_LEVELS

PAD, UNK, START, END, UNCOND = (OFFSET[n] for n in ("PAD", "UNK", "START", "END", "UNCOND"))
TYPE_NAMES = [name for name, _ in BLOCKS]
TYPE = {name: i for i, name in enumerate(TYPE_NAMES)}
TOKEN_TYPE = np.repeat(np.arange(len(BLOCKS)), [size for _, size in BLOCKS])  # (VOCAB_SIZE,) block index of each id


def semantic_token(k):
    if not 0 <= k < N_SEMANTIC:
        raise ValueError(f"semantic id {k} out of range 0..{N_SEMANTIC - 1}")
    return OFFSET["SEMANTIC"] + k


def token_name(token_id):
    token_id = int(token_id)
    if not 0 <= token_id < VOCAB_SIZE:
        return f"<out of vocabulary {token_id}>"
    block = TYPE_NAMES[TOKEN_TYPE[token_id]]
    k = token_id - OFFSET[block]
    if SIZE[block] == 1:
        return "SEMANTIC_UNCOND" if block == "UNCOND" else block
    if block == "SEMANTIC":
        return f"SEMANTIC_TOKEN_{k}"
    if block == "TIMESIG":
        return "TIMESIG_%d/%d" % TIME_SIGNATURES[k]
    if block == "PROGRAM" and k == DRUMS:
        return "PROGRAM_DRUMS"
    if block in ("DURATION", "TIME_ON"):
        k += 1  # these blocks count from 1
    return f"{block}_{k}"


NAME_TO_ID = {token_name(i): i for i in range(VOCAB_SIZE)}
assert len(NAME_TO_ID) == VOCAB_SIZE, "token names must be unique"


def token_id(name):
    if name not in NAME_TO_ID:
        raise ValueError(f"unknown token {name!r}; token names look like "
                         f"SEMANTIC_TOKEN_0..{N_SEMANTIC - 1}, NOTE_60, TIME_ON_12, PROGRAM_DRUMS")
    return NAME_TO_ID[name]


# -----------------------------------------------------------------------------
# the grammar: which token type may follow which. It drives decode (what does
# not fit is skipped) and constrained sampling (GRAMMAR_MASK).

EVENT_START = ["TIMESIG", "TEMPO_COARSE", "VELOCITY", "PROGRAM", "TIME_ON", "END"]
FOLLOWS = {
    "PAD": ["PAD"],
    "UNK": EVENT_START,
    "START": EVENT_START,
    "END": ["PAD"],
    "SEMANTIC": ["START"] + EVENT_START,   # a training window starts on an event boundary
    "UNCOND": ["START"] + EVENT_START,
    "TIMESIG": ["TEMPO_COARSE", "VELOCITY", "PROGRAM", "TIME_ON", "END"],
    "TEMPO_COARSE": ["TEMPO_FINE"],
    "TEMPO_FINE": ["VELOCITY", "PROGRAM", "TIME_ON", "END"],
    "VELOCITY": ["PROGRAM"],
    "PROGRAM": ["NOTE"],
    "NOTE": ["DURATION"],
    "DURATION": ["DURATION"] + EVENT_START,
    "TIME_ON": ["TIME_ON", "TIMESIG", "TEMPO_COARSE", "VELOCITY", "PROGRAM", "END"],
}
assert set(FOLLOWS) == set(TYPE_NAMES), "every token type needs a grammar rule"
TYPE_FOLLOWS = np.zeros((len(TYPE_NAMES), len(TYPE_NAMES)), dtype=bool)  # [prev type, next type]
for _prev, _nexts in FOLLOWS.items():
    TYPE_FOLLOWS[TYPE[_prev], [TYPE[n] for n in _nexts]] = True
GRAMMAR_MASK = TYPE_FOLLOWS[TOKEN_TYPE][:, TOKEN_TYPE]  # (VOCAB_SIZE, VOCAB_SIZE) [prev id, next id]
# A training window may start right after these types (a complete event), on a non-DURATION token.
WINDOW_START_AFTER = ["START", "DURATION"]


def next_token_mask(prev_id):
    """Boolean (VOCAB_SIZE,) mask of the ids the grammar allows after prev_id."""
    return GRAMMAR_MASK[int(prev_id)]


# -----------------------------------------------------------------------------
# value <-> bin helpers

def tempo_level(bpm):
    level = round(TEMPO_LEVELS_PER_OCTAVE * math.log2(max(bpm, 1e-6) / TEMPO_MIN_BPM))
    return min(max(level, 0), TEMPO_LEVELS - 1)


def level_bpm(level):
    return TEMPO_MIN_BPM * 2 ** (level / TEMPO_LEVELS_PER_OCTAVE)


def velocity_bin(velocity):
    return min(max(velocity - 1, 0) // 16, N_VELOCITY - 1)


def bin_velocity(b):
    return 16 * b + 8  # middle of the bin, so re-encoding gives the same bin


def split_steps(steps, cap):
    """A gap or duration longer than the cap becomes several tokens that add up."""
    return [cap] * (steps // cap) + ([steps % cap] if steps % cap else [])


# -----------------------------------------------------------------------------
# MIDI -> Score

class UserError(Exception):
    """A mistake the user can fix (a bad flag, a missing file, an unknown token). Every script prints it as
    one line, with what to do, and no traceback. The one such class in the project."""


class MidiError(UserError):
    """A file that can't be read as MIDI; the message is a one-line reason."""


def write_atomic(path, data):
    """Write data (bytes, str, or a function that writes into a binary file object) to path through a
    temporary name and os.replace: a crash leaves the previous file whole, never a half-written one."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


MIDI_SUFFIXES = (".mid", ".midi", ".kar")  # .kar: karaoke MIDI, a standard MIDI file with lyrics


def midi_root(data_dir):
    """Where a dataset folder keeps its MIDI: DATA_DIR/midi/ if it exists, else DATA_DIR itself.
    Every script finds the MIDI through this one function."""
    sub = os.path.join(data_dir, "midi")
    return sub if os.path.isdir(sub) else data_dir


def iter_midi(root):
    """Relative paths (with / separators) of the MIDI files under root, recursively, in a fixed order
    (folders and names sorted as they are walked), one at a time so no list grows with the corpus."""
    for folder, dirs, names in os.walk(root, followlinks=True):
        dirs.sort()
        for name in sorted(names):
            if name.lower().endswith(MIDI_SUFFIXES):
                yield os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/")


@dataclass
class Note:
    onset: int      # grid steps from the start
    duration: int   # grid steps, >= 1
    pitch: int
    program: int    # GM program 0..127, or DRUMS
    velocity: int


@dataclass
class Score:
    notes: list = field(default_factory=list)            # Note, sorted by (onset, program, pitch, duration)
    tempos: list = field(default_factory=list)           # (step, bpm)
    time_signatures: list = field(default_factory=list)  # (step, numerator, denominator)
    end_step: int = 0
    notes_in: int = 0                                    # notes found in the file
    dropped: Counter = field(default_factory=Counter)    # reason -> notes left out
    changed: Counter = field(default_factory=Counter)    # reason -> other events left out or changed


def load_midi(src):
    """A mido.MidiFile from a path or a MidiFile; MidiError with a one-line reason otherwise."""
    if isinstance(src, mido.MidiFile):
        return src
    try:
        mid = mido.MidiFile(src, clip=True)
    except Exception as e:  # mido raises OSError, EOFError, ValueError, KeyError... on bad bytes
        raise MidiError(f"not a readable MIDI file ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no detail'})") from None
    if mid.ticks_per_beat <= 0:
        raise MidiError("SMPTE or zero time division is not supported")
    return mid


READ_TYPES = {"note_on", "note_off", "program_change", "set_tempo", "time_signature"}


def read_raw(mid):
    """Notes as (onset_tick, end_tick, pitch, program, velocity) plus tempo, meter and length, in ticks.

    Tracks are merged in time order because channel state (program) is shared
    across tracks. A note-on of a key already sounding on that channel ends the
    earlier note, as a synthesizer does. A second note-on of a sounding key at
    the very same tick is not a new note (a key can't be struck twice at once):
    it is counted in `repeats`."""
    notes, tempos, time_signatures, dropped, repeats = [], [], [], Counter(), 0
    events = []  # (tick, message) of the kinds we read, from all tracks
    for track in mid.tracks:
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type in READ_TYPES:
                events.append((tick, msg))
    events.sort(key=lambda e: e[0])  # stable: at one tick, earlier tracks first, as mido.merge_tracks
    program = [0] * 16
    sounding = {}  # (channel, pitch) -> (onset_tick, velocity, program)
    tick = max((sum(msg.time for msg in track) for track in mid.tracks), default=0)  # the file's end
    for at, msg in events:
        kind = msg.type
        if kind == "note_on" and msg.velocity > 0:
            key = (msg.channel, msg.note)
            if key in sounding:
                onset, vel, prog = sounding[key]
                if at == onset:
                    repeats += 1
                    continue
                notes.append((onset, at, msg.note, prog, vel))
            sounding[key] = (at, msg.velocity, DRUMS if msg.channel == 9 else program[msg.channel])
        elif kind == "note_off" or kind == "note_on":  # note_on with velocity 0 is a note-off
            started = sounding.pop((msg.channel, msg.note), None)
            if started is None:
                continue  # a stray note-off: nothing to end
            onset, vel, prog = started
            if at > onset:
                notes.append((onset, at, msg.note, prog, vel))
            else:
                dropped["zero length (note-off at the note-on's tick)"] += 1
        elif kind == "program_change":
            program[msg.channel] = msg.program
        elif kind == "set_tempo":
            tempos.append((at, mido.tempo2bpm(msg.tempo)))
        else:  # time_signature
            time_signatures.append((at, msg.numerator, msg.denominator))
    for (_, pitch), (onset, vel, prog) in sounding.items():  # never ended: end them with the file
        if tick > onset:
            notes.append((onset, tick, pitch, prog, vel))
        else:
            dropped["zero length (note-off at the note-on's tick)"] += 1
    return notes, tempos, time_signatures, tick, dropped, repeats


def read_midi(src):
    """Read a MIDI file (path or mido.MidiFile) onto the grid. Raises MidiError."""
    mid = load_midi(src)
    try:
        raw, tempos, time_signatures, end_tick, dropped, repeats = read_raw(mid)
    except Exception as e:
        raise MidiError(f"malformed MIDI events ({type(e).__name__}: {e})") from None
    to_step = STEPS_PER_QUARTER / mid.ticks_per_beat
    score = Score(notes_in=len(raw) + sum(dropped.values()), dropped=dropped)
    if repeats:
        score.changed["repeated note-ons of a sounding key at the same tick (not new notes)"] = repeats

    # Notes onto the grid. The end is rounded, not the length, so legato stays legato.
    # Unison doublings (two tracks of one instrument) are kept: decode gives them channels of their own.
    for onset, end, pitch, program, velocity in raw:
        on = round(onset * to_step)
        score.notes.append(Note(on, max(round(end * to_step) - on, 1), pitch, program, velocity))
    score.notes.sort(key=lambda n: (n.onset, n.program, n.pitch, n.duration))
    last_note_end = max((n.onset + n.duration for n in score.notes), default=0)
    score.end_step = max(last_note_end, min(round(end_tick * to_step), last_note_end + MAX_TRAILING_STEPS))

    # Tempo and meter: the last one set at a step wins; repeats of the same value go.
    def on_grid(events, what):
        last = {}
        for tick, *value in sorted(events, key=lambda e: e[0]):
            if round(tick * to_step) > score.end_step:
                score.changed[f"{what} after the end of the music"] += 1
            else:
                last[round(tick * to_step)] = tuple(value)
        return sorted(last.items())

    for step, (bpm,) in on_grid(tempos, "tempo changes"):
        if not TEMPO_MIN_BPM <= bpm <= level_bpm(TEMPO_LEVELS - 1):
            score.changed[f"tempos clamped to {TEMPO_MIN_BPM:.0f}..{level_bpm(TEMPO_LEVELS - 1):.0f} bpm"] += 1
        if not score.tempos or tempo_level(bpm) != tempo_level(score.tempos[-1][1]):
            score.tempos.append((step, bpm))
    if not score.tempos or score.tempos[0][0] > 0:
        score.tempos.insert(0, (0, DEFAULT_BPM))
    for step, meter in on_grid(time_signatures, "time signatures"):
        if meter not in TIME_SIGNATURES:
            score.changed["time signature %d/%d not in the vocabulary" % meter] += 1
        elif not score.time_signatures or score.time_signatures[-1][1:] != meter:
            score.time_signatures.append((step, *meter))
    return score


# -----------------------------------------------------------------------------
# Score <-> tokens

def score_to_tokens(score):
    events = defaultdict(lambda: ([], [], []))  # step -> (time signatures, tempos, notes)
    for step, num, den in score.time_signatures:
        events[step][0].append(OFFSET["TIMESIG"] + TIME_SIGNATURES.index((num, den)))
    for step, bpm in score.tempos:
        level = tempo_level(bpm)
        events[step][1][:] = [OFFSET["TEMPO_COARSE"] + level // 16, OFFSET["TEMPO_FINE"] + level % 16]
    for note in score.notes:
        events[note.onset][2].append(note)

    tokens, time, velocity = [START], 0, None
    for step in sorted(events):
        time_signature, tempo, notes = events[step]
        tokens += [OFFSET["TIME_ON"] + k - 1 for k in split_steps(step - time, MAX_TIME_ON)]
        time = step
        tokens += time_signature[-1:] + tempo
        for note in notes:
            if velocity_bin(note.velocity) != velocity:
                velocity = velocity_bin(note.velocity)
                tokens.append(OFFSET["VELOCITY"] + velocity)
            tokens += [OFFSET["PROGRAM"] + note.program, OFFSET["NOTE"] + note.pitch]
            tokens += [OFFSET["DURATION"] + k - 1 for k in split_steps(note.duration, MAX_DURATION)]
    tokens += [OFFSET["TIME_ON"] + k - 1 for k in split_steps(score.end_step - time, MAX_TIME_ON)]
    tokens.append(END)
    return np.array(tokens, dtype=np.uint16)


def encode(src):
    """MIDI (path or mido.MidiFile) -> uint16 tokens START ... END. Raises MidiError."""
    return score_to_tokens(read_midi(src))


def tokens_to_score(tokens):
    """Tokens -> (Score, n_skipped). Never raises: what does not fit the grammar is skipped.

    A leading semantic token and trailing PADs are fine. An event cut short (say
    PROGRAM NOTE with no DURATION) is dropped when the next event starts."""
    score, skipped = Score(), 0
    prev, time, velocity = "SEMANTIC", 0, 80
    program = pitch = coarse = None
    for i, tok in enumerate(int(t) for t in tokens):
        kind = TYPE_NAMES[TOKEN_TYPE[tok]] if 0 <= tok < VOCAB_SIZE else "UNK"
        if kind in ("SEMANTIC", "UNCOND") and i == 0 or kind == "PAD":
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
        elif kind == "TIMESIG":
            score.time_signatures.append((time, *TIME_SIGNATURES[k]))
        elif kind == "TEMPO_COARSE":
            coarse = k
        elif kind == "TEMPO_FINE":
            if score.tempos and score.tempos[-1][0] == time:
                score.tempos.pop()
            score.tempos.append((time, level_bpm(coarse * 16 + k)))
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
            else:                  # later ones lengthen it
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
        track = mido.MidiTrack([mido.MetaMessage("track_name", name=name, time=0)])
        now = 0
        for tick, _, msg in sorted(events, key=lambda e: (e[0], e[1])):
            track.append(msg.copy(time=tick - now))
            now = tick
        track.append(mido.MetaMessage("end_of_track", time=score.end_step * to_tick - now))
        mid.tracks.append(track)

    conductor = [(s * to_tick, 0, mido.MetaMessage("time_signature", numerator=n, denominator=d))
                 for s, n, d in score.time_signatures]
    conductor += [(s * to_tick, 1, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm)))
                  for s, bpm in score.tempos]
    track_of(conductor, "tempo")

    # One track and channel per instrument. A note that would overlap a sounding
    # note of the same pitch and instrument (a unison doubling) goes to another
    # layer of that instrument, with a channel of its own, so no note is lost.
    layers = defaultdict(list)    # (program, layer) -> [Note]
    busy_until = defaultdict(list)  # (program, pitch) -> end step of each layer's last note
    for note in sorted(score.notes, key=lambda n: (n.onset, n.program, n.pitch, n.duration)):
        ends = busy_until[note.program, note.pitch]
        layer = next((i for i, end in enumerate(ends) if end <= note.onset), len(ends))
        ends[layer:layer + 1] = [note.onset + note.duration]
        layers[note.program, layer].append(note)
    melodic_channels = [c for c in range(16) if c != 9]
    n_melodic = sum(program != DRUMS for program, _ in layers)
    for i, ((program, layer), notes) in enumerate(sorted(layers.items())):
        # Past 15 melodic tracks, tracks share channels and each note re-sends its program.
        channel = 9 if program == DRUMS else melodic_channels[i % 15]
        shared = program != DRUMS and n_melodic > 15
        events = [] if program == DRUMS or shared else [(0, 0, mido.Message("program_change", channel=channel, program=program))]
        for note in notes:
            on, off = note.onset * to_tick, (note.onset + note.duration) * to_tick
            if shared:
                events.append((on, 1, mido.Message("program_change", channel=channel, program=program)))
            events.append((on, 2, mido.Message("note_on", channel=channel, note=note.pitch, velocity=note.velocity)))
            events.append((off, 0, mido.Message("note_off", channel=channel, note=note.pitch, velocity=0)))
        name = "drums" if program == DRUMS else f"program {program}"
        track_of(events, name + (f" ({layer + 1})" if layer else ""))
    return mid


def decode(tokens):
    """Tokens -> mido.MidiFile. Never raises on a malformed sequence."""
    return score_to_midi(tokens_to_score(tokens)[0])


# -----------------------------------------------------------------------------
# round-trip check: what the model will "hear" against what the file holds

def round_trip(src):
    """Encode and decode a file, and measure what survived.

    A note is kept when the decoded file has a note of the same pitch and
    instrument whose onset and duration are each within one grid step."""
    mid = load_midi(src)
    raw = read_raw(mid)[0]
    score = read_midi(mid)
    tokens = score_to_tokens(score)
    out = decode(tokens)
    before = defaultdict(list)
    for onset, end, pitch, program, _ in raw:
        before[program, pitch].append((onset / mid.ticks_per_beat, (end - onset) / mid.ticks_per_beat))
    after = defaultdict(list)
    for onset, end, pitch, program, _ in read_raw(out)[0]:
        after[program, pitch].append((onset / TICKS_PER_BEAT, (end - onset) / TICKS_PER_BEAT))
    tolerance = 1 / STEPS_PER_QUARTER + 1e-9
    kept = 0
    for voice, notes in before.items():
        candidates = sorted(after.get(voice, []))
        used = [False] * len(candidates)
        for onset, duration in sorted(notes):
            for j, (o, d) in enumerate(candidates):
                if not used[j] and abs(o - onset) <= tolerance and abs(d - duration) <= tolerance:
                    used[j] = True
                    kept += 1
                    break
                if o > onset + tolerance:
                    break
    return dict(notes_in=score.notes_in, notes_kept=kept, tokens=len(tokens), dropped=score.dropped, changed=score.changed,
                seconds_in=mid.length, seconds_out=out.length, midi=out)


# -----------------------------------------------------------------------------

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Round-trip a MIDI file through the AMT tokens.")
    parser.add_argument("midi", help="input .mid")
    parser.add_argument("-o", "--out", help="where to write the decoded round trip (.mid)")
    parser.add_argument("--show", type=int, default=0, help="print the first N tokens by name")
    args = parser.parse_args()
    try:
        result = round_trip(args.midi)
    except MidiError as e:
        sys.exit(f"{args.midi}: {e}")
    except OSError as e:
        sys.exit(f"{args.midi}: {e.strerror or e}")
    if args.out:
        write_atomic(args.out, lambda f: result["midi"].save(file=f))
    n_in, n_kept = result["notes_in"], result["notes_kept"]
    print(f"notes in     {n_in}")
    print(f"notes kept   {n_kept} ({100 * n_kept / max(n_in, 1):.2f}%: same pitch and instrument, onset and duration within 1/{STEPS_PER_QUARTER} beat)")
    print(f"tokens       {result['tokens']} ({result['tokens'] / max(n_kept, 1):.2f} per note)")
    print(f"length       {result['seconds_in']:.2f} s in, {result['seconds_out']:.2f} s out")
    for reason, count in result["dropped"].most_common():
        print(f"dropped      {count}: {reason}")
    if n_in - n_kept > sum(result["dropped"].values()):
        print(f"moved        {n_in - n_kept - sum(result['dropped'].values())} notes by more than a grid step "
              f"(notes shorter than a step that end up overlapping the next note of the same key)")
    for reason, count in result["changed"].most_common():
        print(f"also         {count} {reason}")
    if args.show:
        print(" ".join(token_name(t) for t in encode(args.midi)[:args.show]))
    if args.out:
        print(f"wrote        {args.out}")
