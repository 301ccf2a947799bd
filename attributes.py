"""The attribute prefix, declared once. Each attribute that leads a window (the semantic token, key,
meter, tempo, instruments) is one entry of ATTRIBUTES below, and every list of them is derived from
that table: the prefix's slots and length, its unconditional form, the index fields, the per-slot
dropout and its config names, the prompt's flags and the app's fields, and the control report's
rows. A window starts

    SEMANTIC  KEY  TIMESIG_NUM TIMESIG_DEN  TEMPO_COARSE TEMPO_FINE  PROGRAM x 6  CHORD x 8

Every slot has a fixed place and its own "unspecified" tokens (UNCOND, KEY_NONE, METER_NONE twice,
TEMPO_NONE twice, INSTRUMENTS_NONE six times, CHORD_NONE eight times), so the prefix is always
PREFIX_LEN tokens: any subset can be given, the unconditional prefix of classifier-free guidance
lines up with the conditional one, and decode drops the first PREFIX_LEN tokens of a sequence that
starts with a semantic token. A named instrument set shorter than six is padded with
INSTRUMENTS_END. The chord slots hold the chords of a window's bars, from the one it starts in.

An attribute's value has two forms: as words, flags and index.jsonl say it ("A minor", "3/4", 96.0,
[40, 42]) and as the prefix takes it (key 21, meter (3, 4), tempo_bpm 96.0, instruments [40, 42]);
prefix_arguments turns the one into the other.

A new attribute is its token blocks in tokenizer.py (among the prefix's own, from KEY on, which the
event grammar places nowhere) and its width added to tokenizer.PREFIX_LEN, the length decode skips;
its word and flag readers in words.py and its measure in describe.py; its entry here; and what its
report rows measure in metrics.py's `realised`.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

import chords
import chordwords
import describe
import tokenizer
import words
from tokenizer import OFFSET, TOKEN_TYPE, TYPE_NAMES


@dataclass(frozen=True)
class Attribute:
    name: str  # its slot: meta.json's prefix_slots, its dropout's key, the likelihood report's rows
    field: str  # its value: attribute_prefix's keyword, read_prefix's key, the index.jsonl field
    unspecified: tuple  # the vocabulary block of each of its tokens when it is not given: its width
    encode: Callable  # prefix argument -> its ids; [] where the vocabulary can't write it
    decode: Callable  # its ids -> the prefix argument, or None where it is unspecified
    dropout: tuple  # (train.py's config name, default): how often training drops it to unspecified
    # what words, flags and the index say -> the prefix argument; None for the semantic token, which
    # cluster.py gives a file and the nearest cluster gives a prompt. With it, the attribute is
    # measured from the notes into the index (describe.measure's entry of its field).
    argument: Callable | None = None
    asked: tuple = ()  # what a prompt is read into: prompt.parse_prompt's keys
    words: Callable | None = None  # a prompt -> ({asked: value}, spans read): words.read_*
    read_flag: Callable | None = None  # --NAME's text -> {asked: value}, or a UserError
    help: str = ""  # --NAME's help in sample.py
    placeholder: str = ""  # an example in the app's field NAME
    said: Callable | None = None  # asked -> how print_understood says it, or None
    spoken: Callable = str  # prefix argument -> how a person reads it ('3/4'): what was followed
    rows: tuple = ()  # the control report's measures of it in the notes (metrics.realised)
    per_prompt: tuple = ()  # those of its rows that the per-prompt tables show
    token_rows: tuple = ()  # rows that read the tokens the model wrote, shown after the others


kind = lambda token: TYPE_NAMES[TOKEN_TYPE[token]]
PREFIX_INSTRUMENTS = 6  # instrument slots in the prefix: the six with the most notes


def bpm_of(ids):
    coarse, fine = ids
    if kind(coarse) != "TEMPO_COARSE":
        return None
    level = (coarse - OFFSET["TEMPO_COARSE"]) * tokenizer.TEMPO_FINE_LEVELS
    return tokenizer.level_bpm(level + fine - OFFSET["TEMPO_FINE"])


def instrument_ids(programs):
    """GM programs (DRUMS for drums), the most prominent first -> the instrument slots: the first
    PREFIX_INSTRUMENTS of them, once each, padded with INSTRUMENTS_END; [] for none."""
    named = [OFFSET["PROGRAM"] + int(p) for p in list(dict.fromkeys(programs))[:PREFIX_INSTRUMENTS]]
    return named + [OFFSET["INSTRUMENTS_END"]] * (PREFIX_INSTRUMENTS - len(named)) if named else []


def chord_slots(progression):
    """Chords ((root, quality) pairs, or symbols as index.jsonl writes them; None for a bar without
    one) -> the chord slots' values: the first MAX_CHORDS bars, a shorter progression cycled."""
    read = [chords.parse_symbol(c) if isinstance(c, str) else c and tuple(c) for c in progression]
    return chords.cycled(read[: chords.MAX_CHORDS]) if any(read) else None


def chord_ids(slots):
    """Each bar's chord as the KEY token of its root and triad class (so transposition moves it
    with the notes), CHORD_NONE for a bar without one."""
    return [
        OFFSET["KEY"] + 12 * (chords.triad(c)[1] == "minor") + c[0] if c else OFFSET["CHORD_NONE"]
        for c in slots
    ]


def chords_of(ids):
    read = [(t - OFFSET["KEY"]) % 12 if kind(t) == "KEY" else None for t in ids]
    minor = [kind(t) == "KEY" and t - OFFSET["KEY"] >= 12 for t in ids]
    out = [None if r is None else (r, "minor" if m else "major") for r, m in zip(read, minor)]
    return out if any(out) else None


ATTRIBUTES = (
    Attribute(
        name="semantic",
        field="semantic",
        unspecified=("UNCOND",),
        encode=lambda token: [int(token)],
        decode=lambda ids: None if ids[0] == tokenizer.UNCOND else ids[0],
        dropout=("cond_dropout", 0.1),  # the semantic token -> SEMANTIC_UNCOND
    ),
    Attribute(
        name="key",
        field="key",  # 12 * minor + tonic pitch class
        unspecified=("KEY_NONE",),
        encode=lambda key: [OFFSET["KEY"] + int(key)],
        decode=lambda ids: ids[0] - OFFSET["KEY"] if kind(ids[0]) == "KEY" else None,
        dropout=("key_dropout", 0.3),
        argument=lambda name: (
            describe.KEY_NAMES.index(name) if name in describe.KEY_NAMES else None
        ),
        asked=("key", "mode"),
        words=words.read_key,
        read_flag=lambda text: dict(zip(("key", "mode"), words.parse_key(text))),
        help="'A minor', 'E flat major', 'F# minor', or just 'major'/'minor'; overrides the prompt",
        placeholder="A minor",
        said=lambda asked: asked["key"] or asked["mode"],
        spoken=lambda key: describe.KEY_NAMES[key],
        rows=("key", "key (music21)", "mode", "mode (music21)"),
        per_prompt=("key", "key (music21)", "mode"),
    ),
    Attribute(
        name="meter",
        field="meter",  # (numerator, denominator)
        unspecified=("METER_NONE",) * 2,
        encode=lambda meter: tokenizer.header_tokens(meter=meter),  # the slots hold a file's header
        decode=lambda ids: (
            (
                ids[0] - OFFSET["TIMESIG_NUM"] + 1,
                tokenizer.DENOMINATORS[ids[1] - OFFSET["TIMESIG_DEN"]],
            )
            if kind(ids[0]) == "TIMESIG_NUM"
            else None
        ),
        dropout=("meter_dropout", 0.3),
        argument=lambda meter: tuple(int(v) for v in meter.split("/")) if meter else None,
        asked=("meter",),
        words=words.read_meter,
        read_flag=lambda text: {"meter": words.parse_meter(text)},
        help="n/d ('3/4', '6/8') or a dance (waltz, jig, march...); overrides the prompt",
        placeholder="3/4, or waltz",
        said=lambda asked: asked["meter"],
        spoken=lambda meter: "%d/%d" % tuple(meter),
        rows=("meter",),
        per_prompt=("meter",),
    ),
    Attribute(
        name="tempo",
        field="tempo_bpm",
        unspecified=("TEMPO_NONE",) * 2,
        encode=tokenizer.tempo_tokens,
        decode=bpm_of,
        dropout=("tempo_dropout", 0.3),
        argument=lambda bpm: bpm,
        asked=("tempo_bpm",),
        words=words.read_tempo,
        read_flag=lambda text: {"tempo_bpm": words.parse_tempo(text)},
        help="bpm ('96', '96 bpm') or a word (adagio, slow, fast...); overrides the prompt",
        placeholder="96, or adagio",
        said=lambda asked: asked["tempo_bpm"] and f"{asked['tempo_bpm']:g} bpm",
        spoken=lambda bpm: f"{round(bpm)} bpm",
        rows=("tempo word",),
        per_prompt=("tempo word",),
        token_rows=("tempo token",),
    ),
    Attribute(
        name="instruments",
        field="instruments",  # GM programs, DRUMS for drums
        unspecified=("INSTRUMENTS_NONE",) * PREFIX_INSTRUMENTS,
        encode=instrument_ids,
        decode=lambda ids: [t - OFFSET["PROGRAM"] for t in ids if kind(t) == "PROGRAM"] or None,
        dropout=("instruments_dropout", 0.3),
        argument=lambda programs: programs or None,
        asked=("instruments",),
        words=words.read_instruments,
        read_flag=lambda text: {"instruments": words.parse_instruments(text)},
        help="comma-separated GM names, families (strings, brass) or numbers, 'drums'",
        placeholder="violin, cello",
        said=lambda asked: ", ".join(map(describe.instrument_name, asked["instruments"])) or None,
        spoken=lambda programs: ", ".join(map(describe.instrument_name, programs)),
        rows=("instruments exact", "instrument recall", "instrument precision"),
        per_prompt=("instruments exact",),
    ),
    Attribute(
        name="chords",
        field="chords",  # per bar from the window's first: (root, quality) or None
        unspecified=("CHORD_NONE",) * chords.MAX_CHORDS,
        encode=chord_ids,
        decode=chords_of,
        dropout=("chords_dropout", 0.3),
        argument=lambda progression: chord_slots(progression) if progression else None,
        asked=("chords",),
        words=chordwords.read_chords,
        read_flag=lambda text: {"chords": chordwords.parse_chords(text)},
        help="a progression, cycled bar by bar: 'C G Am F', 'Am, Dm, E7', 'I-IV-V in G'; "
        "overrides the prompt",
        placeholder="C G Am F",
        said=lambda asked: asked["chords"] and chords.progression_text(asked["chords"]),
        spoken=lambda slots: chords.progression_text(chords.shortest_cycle(slots)),
        rows=("chords",),
        per_prompt=("chords",),
    ),
)
# The order a person meets the attributes in: sample.py's flags, the app's fields, what a prompt was
# read into (--dry_run's line).
ASKED_ORDER = ("tempo", "meter", "key", "instruments", "chords")
# Besides each slot's, the probability of dropping the whole prefix at once (classifier-free
# guidance).
PREFIX_DROPOUT = ("prefix_dropout", 0.1)

# -----------------------------------------------------------------------------
# derived from the table

PREFIX_SLOTS, _at = {}, 0  # name -> slice of the prefix
for _a in ATTRIBUTES:
    PREFIX_SLOTS[_a.name], _at = slice(_at, _at + len(_a.unspecified)), _at + len(_a.unspecified)
PREFIX_LEN = _at
assert PREFIX_LEN == tokenizer.PREFIX_LEN, (
    f"the table's slots are {PREFIX_LEN} tokens: set tokenizer.PREFIX_LEN (what decode skips) to it"
)
FIELDS = tuple(a.field for a in ATTRIBUTES)
INDEX_FIELDS = tuple(a.field for a in ATTRIBUTES if a.argument)  # measured into index.jsonl
ASKED = tuple(next(a for a in ATTRIBUTES if a.name == name) for name in ASKED_ORDER)
assert sorted(ASKED_ORDER) == sorted(a.name for a in ATTRIBUTES if a.read_flag), (
    "ASKED_ORDER lists every attribute a prompt and a flag can ask for, once"
)
FLAGS = tuple(a.name for a in ASKED)  # sample.py's --tempo ..., the app's fields
ASKED_FIELDS = tuple(field for a in ASKED for field in a.asked)  # what a prompt is read into
DROPOUTS = dict(a.dropout for a in ATTRIBUTES) | dict([PREFIX_DROPOUT])  # config name -> default
CONTROL_ROWS = tuple(row for a in ATTRIBUTES for row in a.rows)
PER_PROMPT_ROWS = tuple(row for a in ATTRIBUTES for row in a.per_prompt)
TOKEN_ROWS = tuple(row for a in ATTRIBUTES for row in a.token_rows)


def listed(names, last="and"):
    """('tempo', 'meter', 'key') -> 'tempo, meter and key'."""
    return ", ".join(names[:-1]) + f" {last} " + names[-1] if len(names) > 1 else "".join(names)


def attribute_prefix(semantic=None, **values):
    """The PREFIX_LEN ids that lead a window. semantic: a token id (None: UNCOND); values by field:
    key 0..23 (12 * minor + tonic pitch class), meter (numerator, denominator), tempo_bpm a number,
    instruments GM programs (DRUMS for drums), the most prominent first, cut at PREFIX_INSTRUMENTS.
    None leaves a slot unspecified, as does a value the vocabulary can't write (a meter 33/16)."""
    unknown = set(values) - set(FIELDS)
    if unknown:
        raise TypeError(
            f"attribute_prefix: no attribute {sorted(unknown)}; the attributes: {FIELDS}"
        )
    values["semantic"] = semantic
    ids = []
    for a in ATTRIBUTES:
        value = values.get(a.field)
        encoded = [] if value is None else a.encode(value)
        assert len(encoded) in (0, len(a.unspecified)), f"{a.name} encodes to {len(encoded)} ids"
        ids += encoded or [OFFSET[block] for block in a.unspecified]
    return ids


UNCOND_PREFIX = np.array(attribute_prefix(), dtype=np.int64)  # (PREFIX_LEN,) every slot unspecified


def blank_prefix(slots):
    """(PREFIX_LEN,) int64: the unspecified tokens in the named slots, -1 (keep what is there)
    elsewhere."""
    out = np.full(PREFIX_LEN, -1, dtype=np.int64)
    for name in slots:
        out[PREFIX_SLOTS[name]] = UNCOND_PREFIX[PREFIX_SLOTS[name]]
    return out


def read_prefix(ids):
    """A prefix (its first PREFIX_LEN ids) -> dict of each attribute's value by field (semantic: the
    token id), None where a slot is unspecified."""
    ids = [int(t) for t in ids[:PREFIX_LEN]]
    return {a.field: a.decode(ids[PREFIX_SLOTS[a.name]]) for a in ATTRIBUTES}


def prefix_arguments(values):
    """What words, flags or an index row say, by field ({"key": "A minor", "meter": "3/4",
    "tempo_bpm": 96.0, "instruments": [40, 42]}) -> attribute_prefix's keyword arguments. The one
    place that turns the one form into the other."""
    return {a.field: a.argument(values.get(a.field)) for a in ATTRIBUTES if a.argument}


def dropout_of(config):
    """A training config's dropout probabilities (the DROPOUTS names) -> dataset.drop_attributes'
    map: slot name -> probability, and "all" for the whole prefix."""
    slots = {a.name: getattr(config, a.dropout[0]) for a in ATTRIBUTES}
    return slots | {"all": getattr(config, PREFIX_DROPOUT[0])}
