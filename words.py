"""
Reading a prompt: the words a person types, or a caption says, for tempo, meter, key and mode, and
instruments, and the strict forms the flags take. Its consumers:

- attributes.py: `read_tempo`, `read_meter`, `read_key`, `read_instruments` read what a prompt
  asks for (each returns ({what it asks: value}, [(start, end) read])), and the strict
  `parse_tempo`, `parse_meter`, `parse_key`, `parse_instruments` what a flag asks for;
- prompt.py: `STOP_WORDS`, the words that choose nothing, not even the semantic token.

The names it reads with come from describe.py (GM_NAMES, key_name, the Italian TEMPO_TERMS), so a
word read here and the same attribute measured from notes are spelled one way.
"""

import re

import tokenizer
from describe import DRUMS, GM_NAMES, TEMPO_TERMS, key_name
from files import UserError

# Everyday words -> bpm (lower priority than a number or an Italian term). The words that name a
# speed, as captions say it ("Slow", "Moderate tempo", "Fast", "Very fast"), sit inside the class
# describe.tempo_word measures them back as (very slow < 60 <= slow < 76 <= moderate < 108 <= fast <
# 132 <= very fast); they win over the mood words below them, which only suggest a speed.
TEMPO_WORDS_IN = {
    "very slow": 50,
    "very slow tempo": 50,
    "slow": 66,
    "slowly": 66,
    "slow tempo": 66,
    "moderate": 96,
    "moderately": 96,
    "moderate tempo": 96,
    "medium": 96,
    "medium tempo": 96,
    "mid-tempo": 96,
    "fast": 120,
    "fast tempo": 120,
    "quick": 120,
    "quickly": 120,
    "very fast": 160,
    "very fast tempo": 160,
}
TEMPO_MOODS = {  # mood words that suggest a speed: used only where no speed word is said
    "leisurely": 80,
    "calm": 72,
    "gentle": 76,
    "relaxed": 80,
    "walking": 96,
    "upbeat": 128,
    "lively": 140,
    "brisk": 140,
    "energetic": 150,
    "frantic": 200,
}
METER_WORDS = {  # dance or style -> meter
    **dict.fromkeys(["waltz", "minuet", "mazurka", "polonaise", "sarabande"], "3/4"),
    "slip jig": "9/8",
    **dict.fromkeys(["jig", "tarantella", "barcarolle"], "6/8"),
    "siciliano": "12/8",
    **dict.fromkeys(["march", "polka"], "2/4"),
    **dict.fromkeys(["reel", "hornpipe", "gavotte", "chorale"], "4/4"),
    **dict.fromkeys(["triple time", "triple meter"], "3/4"),
    "duple time": "2/4",
    "common time": "4/4",
    "cut time": "2/2",
}
# a short documented list: mood words that ask for a mode
MOOD_MODES = dict.fromkeys(
    "sad melancholy melancholic mournful dark gloomy tragic sorrowful somber sombre".split(),
    "minor",
) | dict.fromkeys("happy cheerful joyful bright sunny triumphant".split(), "major")
INSTRUMENT_WORDS = {  # everyday names and families -> GM programs (DRUMS for the drum kit)
    "piano": [0],
    "keyboard": [0],
    "harpsichord": [6],
    "organ": [19],
    "accordion": [21],
    "harmonica": [22],
    "guitar": [24],
    "acoustic guitar": [25],
    "electric guitar": [27],
    "bass guitar": [33],
    "bass": [33],
    "violin": [40],
    "fiddle": [40],
    "viola": [41],
    "cello": [42],
    "double bass": [43],
    "contrabass": [43],
    "harp": [46],
    "timpani": [47],
    "strings": [40, 41, 42],
    "string quartet": [40, 41, 42],
    "string orchestra": [48],
    "choir": [52],
    "voices": [52],
    "voice": [53],
    "singer": [53],
    "trumpet": [56],
    "trombone": [57],
    "tuba": [58],
    "horn": [60],
    "french horn": [60],
    "brass": [56, 57, 60, 58],
    "saxophone": [65],
    "sax": [65],
    "oboe": [68],
    "bassoon": [70],
    "clarinet": [71],
    "flute": [73],
    "recorder": [74],
    "tin whistle": [78],
    "whistle": [78],
    "woodwinds": [73, 68, 71, 70],
    "winds": [73, 68, 71, 70],
    "bagpipes": [109],
    "bagpipe": [109],
    "banjo": [105],
    "synth": [80],
    "drums": [DRUMS],
    "drum kit": [DRUMS],
    "percussion": [DRUMS],
    "drum set": [DRUMS],
    "drum machine": [DRUMS],
    "bass drum": [DRUMS],
    "kick drum": [DRUMS],
    "snare drum": [DRUMS],
    "cymbal": [DRUMS],
    "hi-hat": [DRUMS],
}
CAPTION_WORDS = {  # what captions call the GM instruments that their GM names don't give by rule
    "grand piano": [0],
    "acoustic piano": [0],
    "upright piano": [0],
    "rhodes": [4],
    "hammond organ": [16],
    "electric organ": [16],
    "pipe organ": [19],
    "nylon guitar": [24],
    "classical guitar": [24],
    "steel guitar": [25],
    "electric guitar": [27],
    "distorted guitar": [30],
    "distorted electric guitar": [30],
    "overdriven electric guitar": [29],
    "electric bass": [33],
    "electric bass guitar": [33],
    "acoustic bass guitar": [32],
    "upright bass": [43],
    "bass clarinet": [71],
    "string section": [48],
    "synthstrings": [50],
    "synth voice": [54],
    "synth brass": [62],
    "synth lead": [80],
    "saw lead": [81],
    "synth pad": [88],
    "synth effects": [96],
    "sound effects": [96],
    "fx": [96],
    "synthesizer": [80],
    "vocals": [53],
    "vocalist": [53],
}
PLAYERS = {  # a player named for an instrument plays it
    "pianist": [0],
    "keyboardist": [0],
    "organist": [19],
    "guitarist": [24],
    "bassist": [33],
    "violinist": [40],
    "fiddler": [40],
    "violist": [41],
    "cellist": [42],
    "harpist": [46],
    "trumpeter": [56],
    "trombonist": [57],
    "saxophonist": [65],
    "oboist": [68],
    "bassoonist": [70],
    "clarinetist": [71],
    "clarinettist": [71],
    "flautist": [73],
    "flutist": [73],
    "drummer": [DRUMS],
    "percussionist": [DRUMS],
}
# what --instruments' error suggests
INSTRUMENT_EXAMPLES = "piano, electric piano, guitar, bass, strings, brass, synth pad, drums".split(
    ", "
)
NOT_ALONE = {"lead"}  # a GM name's head that alone names no instrument ('lead guitar', 'the lead')


def caption_forms(name):
    """The ways a caption writes a GM name, lower-cased: as it is, without its number ('Electric
    Piano 1' -> 'electric piano'), its parenthesised part before it ('Acoustic Guitar (nylon)' ->
    'nylon acoustic guitar', 'nylon guitar'), 'saxophone' for 'sax', and hyphens as spaces."""
    name = name.lower()
    m = re.fullmatch(r"(.+?)(?: \d)?(?: \((.+)\))?", name)
    base, part = m.group(1), m.group(2)
    forms = [name, base] if base not in NOT_ALONE else [name]
    if part and "+" not in part:
        forms += [f"{part} {base}", f"{part} {base.split()[-1]}"]
    forms += [f.replace("sax", "saxophone") for f in forms if f.endswith("sax")]
    forms += [f.replace("-", " ") for f in forms if "-" in f]
    return list(dict.fromkeys(forms))


# GM's own names and their caption forms (a numbered pair's first takes the unnumbered name:
# 'synth bass' is Synth Bass 1); the everyday words, caption words and players win where they
# overlap ('fiddle' is a violin, 'acoustic guitar' the steel-strung one)
INSTRUMENT_WORDS = (
    {
        form: [program]
        for program, name in reversed(list(enumerate(GM_NAMES)))
        for form in caption_forms(name)
    }
    | INSTRUMENT_WORDS
    | CAPTION_WORDS
    | PLAYERS
)
# n/d with d a power of two ('in 99/4' is read, then refused with a note: the vocabulary holds
# tokenizer.fit_meter's meters), and a number of bpm (9999 bpm too, refused as out of TEMPO_RANGE)
METER_RE = r"\b(\d+)/(1|2|4|8|16|32|64|128)\b"
KEY_RE = r"\b([A-Ga-g])(?:\s*(#|♯|b|♭|-|\s+sharp|\s+flat))?\s+(major|minor|maj|min)\b(\s+key)?"
LIST_RE = r"\b((?:[\w-]+\s*,\s*)*[\w-]+)\s*,?\s+(?:and|or|&)\s+$"  # 'a, b and ' before a name
BPM_RE = r"\b(\d+(?:\.\d+)?)\s*(?:bpm|beats per minute)\b"
METER_DENOMINATORS = "1, 2, 4, 8, 16 or 32"  # tokenizer.DENOMINATORS, as a message says them
TEMPO_RANGE = (10, 1000)  # bpm a prompt or --tempo may ask for: what real files use
assert (
    tokenizer.TEMPO_MIN_BPM < TEMPO_RANGE[0]
    and tokenizer.level_bpm(tokenizer.TEMPO_LEVELS - 1) > TEMPO_RANGE[1]
), "the tempo tokens hold every tempo a prompt may ask for"
# the one character whose lower case is two (İ -> i + a dot above): lowered on its own, so that a
# place in the lowered text is the same place in the prompt
ONE_CHAR_LOWER = {ord("İ"): "i"}
STOP_WORDS = set(
    "a an the in of for with and or on to at by from into some piece song music tune tunes "
    "played playing style sounding like feel time key that is it tempo signature".split()
)


def find_terms(text, terms):
    """[(start, end, term)] of the terms found in text as whole words, plural or not ('guitars',
    'basses'), longest first so that 'slip jig' wins over 'jig' and 'electric piano' over 'piano'; a
    found term's words are not matched again."""
    found, taken = [], [False] * len(text)
    for term in sorted(terms, key=lambda t: (-len(t), t)):
        for m in re.finditer(r"(?<!\w)" + re.escape(term) + r"(?:s|es)?(?!\w)", text):
            if not any(taken[m.start() : m.end()]):
                found.append((m.start(), m.end(), term))
                taken[m.start() : m.end()] = [True] * (m.end() - m.start())
    return sorted(found)


def disagreement(what, text, spans, using):
    """The note a reader makes when the words it found ask for different values: 'meter words
    disagree ('3/4', 'jig'): using 3/4'."""
    found = ", ".join(repr(text[a:b]) for a, b, _ in spans)
    return f"{what} words disagree ({found}): using {using}"


def read_tempo(text, notes):
    """Tempo from a number with bpm, else an Italian term, else a speed word, else a mood word; the
    first of each kind. Like every reader of a prompt here: -> ({what it asks: value}, [(start, end)
    read]), with a note for each contradiction settled. A number outside TEMPO_RANGE, which --tempo
    refuses, is read but left out with a note."""
    text = text.translate(ONE_CHAR_LOWER).lower()
    numbers = [(m.start(), m.end(), float(m.group(1))) for m in re.finditer(BPM_RE, text)]
    for a, b, bpm in numbers:
        if not TEMPO_RANGE[0] <= bpm <= TEMPO_RANGE[1]:
            notes.append(
                f"{text[a:b]!r} is outside {TEMPO_RANGE[0]}..{TEMPO_RANGE[1]} bpm: left out"
            )
    spans = [(a, b) for a, b, _ in numbers]
    numbers = [n for n in numbers if TEMPO_RANGE[0] <= n[2] <= TEMPO_RANGE[1]]
    kinds = [numbers] + [
        [(a, b, table[t]) for a, b, t in find_terms(text, table)]
        for table in (TEMPO_TERMS, TEMPO_WORDS_IN, TEMPO_MOODS)
    ]
    spans = sorted(spans + [(a, b) for kind in kinds[1:] for a, b, _ in kind])
    chosen = next((kind[0] for kind in kinds if kind), None)
    # a mood word gives way to a named tempo without a note ('a calm piece at a slow tempo')
    named = sorted(s for kind in kinds[:3] for s in kind) or kinds[3]
    if chosen and len({bpm for _, _, bpm in named}) > 1:
        using = f"{text[chosen[0] : chosen[1]]!r} ({chosen[2]:g} bpm)"
        notes.append(disagreement("tempo", text, named, using))
    return {"tempo_bpm": chosen[2] if chosen else None}, spans


def read_meter(text, notes):
    """A meter from 'n/d', else a dance or style word. An n/d the vocabulary can't hold ('0/4',
    '99/4') is read but left out with a note, so a dance named beside it keeps its meter; one it
    writes with the same bar ('32/16' as 16/8) is asked for as it is written."""
    text = text.translate(ONE_CHAR_LOWER).lower()
    explicit, spans = [], []
    for m in re.finditer(METER_RE, text):
        spans.append((m.start(), m.end()))
        n, d = m.group(1), int(m.group(2))
        fitted = len(n) < 6 and tokenizer.fit_meter(int(n), d)
        if fitted:
            explicit.append((m.start(), m.end(), "%d/%d" % fitted))
            if fitted != (int(n), d):
                notes.append(
                    f"{m.group(0)!r} is asked for as {fitted[0]}/{fitted[1]}, the same bar"
                )
        else:
            notes.append(
                f"{m.group(0)!r} is not a meter the model knows (n from 1 to "
                f"{tokenizer.MAX_NUMERATOR} over {METER_DENOMINATORS}): left out"
            )
    dances = [(a, b, METER_WORDS[t]) for a, b, t in find_terms(text, METER_WORDS)]
    found = explicit + dances
    chosen = (explicit or dances or [None])[0]
    if chosen and len({m for _, _, m in found}) > 1:
        notes.append(disagreement("meter", text, found, chosen[2]))
    return {"meter": chosen[2] if chosen else None}, spans + [(a, b) for a, b, _ in dances]


def read_key(original, notes):
    """A key and its mode: 'A minor', 'E flat major', 'f# minor'; a lowercase 'a minor key' is the
    article ('in a minor key': minor, no tonic); mood words give a mode when no key is named."""
    text, key, mode = original.translate(ONE_CHAR_LOWER).lower(), None, None
    spans = []
    for m in re.finditer(KEY_RE, text):
        letter = original[m.start()]
        if letter == "a" and m.group(4) and not m.group(2):  # "a minor key": an article, not A
            mode = mode or ("minor" if m.group(3).startswith("min") else "major")
        elif key is None:
            accidental = {"#": "#", "♯": "#", "b": "b", "♭": "b", "-": "b"}.get(
                (m.group(2) or "").strip()[:1], ""
            )
            if (m.group(2) or "").strip() in ("sharp", "flat"):
                accidental = "#" if m.group(2).strip() == "sharp" else "b"
            key = key_name(
                letter.upper() + accidental, "minor" if m.group(3).startswith("min") else "major"
            )
        else:
            notes.append(f"more than one key named: using {key}")
        spans.append((m.start(), m.end()))
    # a word inside an instrument's name is not a mood ('bright acoustic piano')
    moods = [
        m for m in find_terms(text, set(MOOD_MODES) | set(INSTRUMENT_WORDS)) if m[2] in MOOD_MODES
    ]
    if key:
        mode = key.split()[-1]
    elif moods and mode is None:
        mode = MOOD_MODES[moods[0][2]]
        if len({MOOD_MODES[t] for _, _, t in moods}) > 1:
            notes.append(f"mood words disagree: using {mode} from {moods[0][2]!r}")
    return {"key": key, "mode": mode}, spans + [(a, b) for a, b, _ in moods]


def instrument_term(word):
    """The INSTRUMENT_WORDS term a word or name is, plural or not; None for no instrument."""
    word = word.strip().translate(ONE_CHAR_LOWER).lower()
    return next(
        (
            w
            for w in (word, word.removesuffix("s"), word.removesuffix("es"))
            if w in INSTRUMENT_WORDS
        ),
        None,
    )


def elliptical(text, found):
    """[(start, end, term)] of the modifiers that share a found name's noun: 'acoustic and fretless
    bass' is an acoustic bass and a fretless bass, 'tenor, alto and baritone saxophones' three. A
    modifier counts where it is no instrument alone and, with the noun, a known name; the list is
    read back from the 'and' (or 'or', '&') until a word fails."""
    taken = [False] * len(text)
    for a, b, _ in found:
        taken[a:b] = [True] * (b - a)
    out = []
    for start, _, term in found:
        noun, before = term.partition(" ")[2], max(0, start - 200)  # a list is a line at most
        head = re.search(LIST_RE, text[before:start])
        if not noun or not head:
            continue
        for m in reversed(list(re.finditer(r"[\w-]+", head.group(1)))):
            a, b = before + head.start(1) + m.start(), before + head.start(1) + m.end()
            name = f"{m.group(0)} {noun}"
            if any(taken[a:b]) or instrument_term(m.group(0)) or name not in INSTRUMENT_WORDS:
                break
            out.append((a, b, name))
    return out


def read_instruments(text, notes):
    """Instruments by name, family or player, with the names that share a noun ('electric and
    acoustic guitars'): GM programs, sorted."""
    text = text.translate(ONE_CHAR_LOWER).lower()
    found = find_terms(text, INSTRUMENT_WORDS)
    found = sorted(found + elliptical(text, found))
    programs = sorted({p for _, _, term in found for p in INSTRUMENT_WORDS[term]})
    return {"instruments": programs}, [(a, b) for a, b, _ in found]


# -----------------------------------------------------------------------------
# --tempo, --meter, --key and --instruments: the same words, strictly


def parse_tempo(value):
    """'96', '96 bpm' or a tempo word -> bpm; anything else is a one-line error with the valid
    forms."""
    text = value.strip().lower().removesuffix("bpm").strip()
    try:
        bpm = float(text)
    except ValueError:
        bpm = (TEMPO_TERMS | TEMPO_WORDS_IN | TEMPO_MOODS).get(text)
    if bpm is None or not TEMPO_RANGE[0] <= bpm <= TEMPO_RANGE[1]:
        raise UserError(
            f"--tempo {value!r}: give bpm from {TEMPO_RANGE[0]} to {TEMPO_RANGE[1]} ('96' or "
            "'96 bpm'), or one of "
            f"{', '.join(list(TEMPO_TERMS) + list(TEMPO_WORDS_IN) + list(TEMPO_MOODS))}"
        )
    return bpm


def parse_meter(value):
    """'3/4' or a dance word -> 'n/d', a meter the vocabulary holds (tokenizer.fit_meter: numerator
    1-31 over 1, 2, 4, 8, 16 or 32, or one written with the same bar, 32/16 as 16/8)."""
    text = value.strip().lower()
    m = re.fullmatch(METER_RE.replace("\\b", ""), text)
    fitted = m and len(m.group(1)) < 6 and tokenizer.fit_meter(int(m.group(1)), int(m.group(2)))
    if fitted:
        return "%d/%d" % fitted
    if text in METER_WORDS:
        return METER_WORDS[text]
    raise UserError(
        f"--meter {value!r}: give n/d with n from 1 to {tokenizer.MAX_NUMERATOR} over "
        f"{METER_DENOMINATORS} ('3/4', '6/8'), or one of {', '.join(METER_WORDS)}"
    )


def parse_key(value):
    """'A minor', 'E flat major', 'F# minor', 'Bb major', or just 'major' / 'minor' -> (key or None,
    mode)."""
    text = value.strip()
    if text.lower() in ("major", "minor"):
        return None, text.lower()
    m = re.fullmatch(
        r"([A-Ga-g])\s*(#|b|-|\s+sharp|\s+flat)?\s+(major|minor)", text, flags=re.IGNORECASE
    )
    if not m:
        raise UserError(
            f"--key {value!r}: give a tonic and a mode ('A minor', 'E flat major', "
            f"'F# minor', 'Bb major'), or just 'major' or 'minor'"
        )
    accidental = {"sharp": "#", "flat": "b", "-": "b"}.get(
        (m.group(2) or "").strip().lower(), (m.group(2) or "").strip()
    )
    key = key_name(m.group(1).upper() + accidental, m.group(3).lower())
    return key, key.split()[-1]


def parse_instruments(value):
    """Comma-separated GM names, everyday names or families, GM program numbers 0-127, or 'drums' ->
    sorted programs (DRUMS = 128 for the drum kit)."""
    programs = set()
    for part in filter(None, (p.strip().lower() for p in value.split(","))):
        if part.isdecimal() and len(part) <= 3 and int(part) <= 128:  # "²" is a digit, no number
            programs.add(int(part))
        elif instrument_term(part):
            programs.update(INSTRUMENT_WORDS[instrument_term(part)])
        else:
            raise UserError(
                f"--instruments: {part!r} is not an instrument; give GM program numbers "
                f"0-127, 'drums', General MIDI names, or words such as "
                f"{', '.join(INSTRUMENT_EXAMPLES)}"
            )
    if not programs:  # "," or " , ": a flag that names nothing is a slip, not "no instruments"
        raise UserError(
            f"--instruments {value!r} names no instrument; give one or more, comma-separated"
        )
    return sorted(programs)
