"""Chords from words: the progression a prompt or caption names, and `--chords`' strict form. Its
consumers: attributes.py, through `read_chords` (the shape of words.py's readers: (text, notes) ->
({"chords": [chord, ...] or None}, [(start, end) read])) and `parse_chords` for the flag.

A chord is chords.py's (root pitch class, quality). The words name one as a symbol ("Am", "Bb7",
"F#m", "E♭maj7", "D/F#", the bass dropped) or as a Roman numeral in a key ("I-IV-V in G", "ii-V-I",
"i-iv-V in A minor"): the numeral's case gives the quality (upper major, lower minor, ° diminished,
ø half-diminished, + augmented, 7 dominant on upper and minor 7 on lower numerals).

Capital letters are words too ("A slow waltz", "the B section", "a Bb clarinet"), so symbols are
read only where the text speaks of chords: a list of them after a chord word ("the chords A, E7, A7,
D", "the chord progression is ...") or a verb that moves between chords ("alternates between C and
G", "revolves around D and A", "over Dm, Gm and A7"); a list before one ("the C and G chords"); or
three or more joined by dashes ("C - G - Am - F"), or three or more of which one is more than a
letter ("a pop song on C G Am F"). Numerals need two or more, so "I" alone stays
the pronoun. A root with its mode in words is a key ("in A minor", "E flat major") except in a list
of two or more chords ("the chord progression A minor, C major, D major").

This library sits beside words.py (one layer, so neither imports the other), and so reads the key
that numerals are played in itself: their own ("in G", "in the key of D"), else the first key the
text names, else C major with a note.
"""

import re

import chords
from files import UserError

# a chord symbol as written: a root, its accidental, a suffix, perhaps a slash bass
SYMBOL_TOKEN = r"(?<![\w#♯♭/'’])[A-G][#b♯♭]?[\w+°øΔ#♯♭]*(?:/[A-G][#b♯♭]?)?(?![\w/])"
NUMERAL_TOKEN = (
    r"(?<![\w#♯♭])([b♭#♯]?)(VII|VI|IV|V|III|II|I|vii|vi|iv|v|iii|ii|i)"
    r"(°7|o7|°|o|ø7|ø|\+|maj7|M7|7|6|sus4|dim)?(?![\w°ø+])"
)
DASH = r"\s*(?:->|[-–—→|])\s*"
SEPARATOR = re.compile(rf"{DASH}|\s*(?:,\s*)?(?:(?:and|or|then|to|&)\s+)*(?:the\s+)?", re.I)
# a key or, in a list of chords, a chord: 'A minor', 'E flat major', 'F# Minor', 'D min'
KEY_NAMED = r"(?<![\w#♯♭])([A-G])(\s*[#♯b♭]|\s+sharp|\s+flat)?\s+((?i:major|minor|maj|min))\b"
# where numerals say their own key: 'I-IV-V in G', 'i-iv-V progression in A minor'
OWN_KEY = re.compile(
    r"(?:\s+(?:chords|(?:chord\s+)?(?:progressions?|changes|cadence|turnaround|vamp|pattern)))?"
    r"\s+in\s+(?:the\s+key\s+of\s+)?([A-G])(\s*[#♯b♭](?![\w])|\s+sharp|\s+flat)?"
    r"(?:\s+((?i:major|minor)))?(?![\w#♯♭])"
)
# words after which a list of symbols is chords, and how many words may come between
NOUNS = r"(?:chords?|progressions?|harmony|harmonies|changes|triads|voicings|vamp)"
NOUN_TRIGGER = rf"(?<!key )(?<!tempo )(?<!meter )\b{NOUNS}\b"
VERB_TRIGGER = (
    r"\b(?:(?:alternat|mov|switch|shift|oscillat|go|swing)\w*\s+between|(?:revolv|cent(?:er|r))\w*"
    r"\s+(?:around|on)|cycl\w*\s+through|(?:rest|stay|built|based|land)\w*\s+on|over)\b"
)
# a list before its chord word: 'the C and G chords', 'C, F and G are the main chords'
FOLLOWED_BY_NOUN = (
    rf"\s+(?:(?:is|are|were|was|as|form|make up)\s+)?(?:the\s+)?(?:main\s+|only\s+)?{NOUNS}\b"
)
NOUN_GAP_WORDS = 6  # 'The chord progression of the verse revolves around ...'
SENTENCE_END = r"[.!?;\n]"
# what a single symbol may be followed by and still be a chord ('revolves around C for a while')
AFTER_ONE = (
    r"\s*(?:$|[.,;:!?)\]]|" + NOUNS + r"\b|(?:for|with|throughout|in|at|until|while|as|then|and|"
    r"or|before|under|behind|which|that)\b)"
)
# a list followed by these names no chords: 'the A and B sections', 'the A and E strings', 'a Bb
# clarinet', 'E-A-D-G-B-E tuning', 'an A major key'
NOT_CHORDS_AFTER = (
    r"\s+(?:keys?|scales?|tonality|modes?|tunings?|sections?|parts?|themes?|forms?|structure|"
    r"strains?|sides?|strings?|clarinets?|horns?|trumpets?|flutes?|whistles?|harmonicas?|"
    r"saxophones?|sax)\b"
)
NOT_NUMERALS_AFTER = r"(?:movements?|parts?|acts?|books?|chapters?|volumes?|vol\.|op\.|no\.)\s*$"
MAJOR_STEPS = (0, 2, 4, 5, 7, 9, 11)  # the scale degree each numeral names, in a major key
MINOR_STEPS = (0, 2, 3, 5, 7, 8, 10)  # and in a (natural) minor one: III, VI, VII a flat above
DEGREES = ("i", "ii", "iii", "iv", "v", "vi", "vii")
NUMERAL_SUFFIXES = {  # suffix -> quality, upper-case numeral first, lower-case second
    "": ("major", "minor"),
    "7": ("dominant 7", "minor 7"),
    "6": ("6", "minor"),
    "maj7": ("major 7", "major 7"),
    "M7": ("major 7", "major 7"),
    "sus4": ("sus4", "sus4"),
    "+": ("augmented", "augmented"),
    **dict.fromkeys(["°", "o", "dim", "°7", "o7"], ("diminished", "diminished")),
    **dict.fromkeys(["ø", "ø7"], ("half-diminished", "half-diminished")),
}
NUMERAL_FORM = "Roman numerals in a key ('I-IV-V in G', 'ii-V-I in A minor', 'I vi IV V in D')"
LIMIT = chords.MAX_CHORDS * 2  # chords kept from the words: the prefix cycles them bar by bar


def tonic_of(letter, accidental):
    """'B', ' flat' -> 10."""
    accidental = (accidental or "").strip()
    accidental = {"sharp": "#", "flat": "b"}.get(accidental, accidental)
    return chords.pitch_class(letter + accidental)


def spelled_chord(match):
    """A KEY_NAMED match ('E flat major') -> the chord (3, 'major')."""
    minor = match.group(3).lower().startswith("min")
    return tonic_of(match.group(1), match.group(2)), "minor" if minor else "major"


def named_key(text):
    """The first key the text names ('E flat major', 'F# minor') -> (tonic, minor?) or None."""
    m = re.search(KEY_NAMED, text)
    return (spelled_chord(m)[0], spelled_chord(m)[1] == "minor") if m else None


def own_key(own, numerals):
    """An OWN_KEY match after NUMERAL_TOKEN matches -> (tonic, minor?): a key named without its
    mode is minor where the numerals' tonic is a lower-case i ('i-iv-V in A'), else major."""
    written = [m.group(2) for m in numerals]
    mode = (own.group(3) or "").lower() or (
        "minor" if "i" in written and "I" not in written else "major"
    )
    return tonic_of(own.group(1), own.group(2)), mode == "minor"


def numeral_chord(match, tonic, minor):
    """A NUMERAL_TOKEN match, in the key (tonic, minor?) -> a chord."""
    accidental, numeral, suffix = match.group(1), match.group(2), match.group(3) or ""
    degree = DEGREES.index(numeral.lower())
    shift = {"b": -1, "♭": -1, "#": 1, "♯": 1}.get(accidental, 0)
    root = (tonic + (MINOR_STEPS if minor else MAJOR_STEPS)[degree] + shift) % 12
    return root, NUMERAL_SUFFIXES[suffix][numeral.islower()]


def unreadable(token):
    """Whether a token that is no chord symbol here is shaped like one ('Gsus7', 'Cm11b9', 'C/H'),
    so that a list goes on past it with a note; a capitalised word ('Fender') ends the list."""
    return bool(re.search(r"[\d+°øΔ/]", token[1:]))


def items(text):
    """The symbols and numerals of a text, in order: [(start, end, kind, match)], kind 'symbol',
    'spelled' (a root and its mode in words: 'A minor', 'E flat major') or 'numeral'."""
    spelled = [(m.start(), m.end(), "spelled", m) for m in re.finditer(KEY_NAMED, text)]
    keys = {start for start, *_ in spelled}
    found = spelled + [
        (m.start(), m.end(), "symbol", m)
        for m in re.finditer(SYMBOL_TOKEN, text)
        if m.start() not in keys and (chords.parse_symbol(m.group(0)) or unreadable(m.group(0)))
    ]
    found += [(m.start(), m.end(), "numeral", m) for m in re.finditer(NUMERAL_TOKEN, text)]
    return sorted(found, key=lambda item: item[0])


def runs(text):
    """The lists of a text: [(items, dashed)] of consecutive items of one kind with only separators
    (commas, 'and', 'or', 'then', 'to', dashes) between; dashed where every separator is a dash."""
    out, run, dashed = [], [], True
    for item in items(text):
        between = text[run[-1][1] : item[0]] if run else ""
        if (
            run
            and (run[-1][2] == "numeral") == (item[2] == "numeral")
            and SEPARATOR.fullmatch(between)
        ):
            run.append(item)
            dashed = dashed and bool(re.fullmatch(DASH, between))
            continue
        if run:
            out.append((run, dashed))
        run, dashed = [item], True
    return out + [(run, dashed)] if run else out


def after_trigger(text, start):
    """Whether a list starting at `start` follows a chord word or verb in its sentence."""
    sentence = re.split(SENTENCE_END, text[:start])[-1]
    for m in re.finditer(NOUN_TRIGGER, sentence, re.I):
        if len(re.findall(r"[\w'#]+", sentence[m.end() :])) <= NOUN_GAP_WORDS:
            return True
    return any(
        re.fullmatch(r"\s+(?:the\s+)?", sentence[m.end() :])
        for m in re.finditer(VERB_TRIGGER, sentence, re.I)
    )


def chord_like(written):
    """Whether symbols listed with no chord word around them are chords: each one reads, and one
    is more than a letter and an octave ('C G Am F', 'Bb Eb F'; not 'A, B, C' or 'C5 E5 G5')."""
    suffixes = [
        chords.SYMBOL.match(w).group(2, 3) if chords.parse_symbol(w) else None for w in written
    ]
    return None not in suffixes and any(a or not s.isdigit() and s for a, s in suffixes)


def is_chord_list(text, run, dashed):
    """Whether a list of symbols or numerals names chords, by the words around it."""
    start, end = run[0][0], run[-1][1]
    before, after = text[:start], text[end:]
    followed = re.match(FOLLOWED_BY_NOUN, after, re.I)
    if re.match(NOT_CHORDS_AFTER, after):
        return False
    if run[0][2] == "numeral":
        if len(run) < 2 or re.search(NOT_NUMERALS_AFTER, before, re.I):
            return False
        return dashed or followed or after_trigger(text, start)
    written = [m.group(0) for _, _, kind, m in run if kind == "symbol"]
    if len(written) == len(run) >= 3 and (dashed or chord_like(written)):
        return True  # 'C G Am F', 'C - G - Am - F'; not 'A, B and C'
    if (len(run) == 1 or run[0][2] == "spelled") and re.search(r"\b(?:in|of|key|from)\s+$", before):
        return False  # 'in G', 'in C major and A minor', 'from C major': keys
    if len(run) == 1 and run[0][2] == "spelled":  # 'A minor' alone is a key
        return False
    if len(run) == 1:
        if run[0][3].group(0) == "A" and not re.search(r"\b(?:the|an|a)\s+$", before):
            return bool(after_trigger(text, start) and re.match(r"\s*(?:$|[.,;:!?])", after))
        if not re.match(AFTER_ONE, after):  # 'over C throughout', not 'a Bb clarinet'
            return False
    return bool(followed or after_trigger(text, start))


def list_chords(text, run, notes):
    """An accepted list -> its chords and the spans it read (a numeral's own key among them)."""
    if run[0][2] != "numeral":
        out = []
        for _, _, kind, m in run:
            chord = spelled_chord(m) if kind == "spelled" else chords.parse_symbol(m.group(0))
            if chord is None:
                notes.append(
                    f"chord {m.group(0)!r} not read (chords are written {chords.VALID_FORMS}): "
                    "left out"
                )
            else:
                out.append(chord)
        return out, [(a, b) for a, b, _, _ in run]
    spans = [(a, b) for a, b, _, _ in run]
    own = OWN_KEY.match(text, run[-1][1])
    if own:
        key = own_key(own, [m for *_, m in run])
        spans.append((own.start(1), own.end()))
    else:
        key = named_key(text)
    if key is None:
        notes.append(
            f"Roman numerals {text[run[0][0] : run[-1][1]]!r} in no named key: read in C major"
        )
        key = 0, False
    return [numeral_chord(m, *key) for *_, m in run], spans


def read_chords(text, notes):
    """The chords a text names, in order as written, repeats kept: symbols and Roman numerals in
    the lists that is_chord_list accepts; at most LIMIT, the rest cut with a note."""
    found, spans = [], []
    for run, dashed in runs(text):
        if is_chord_list(text, run, dashed):
            got, read = list_chords(text, run, notes)
            found += got
            spans += read
    if len(found) > LIMIT:
        notes.append(f"{len(found)} chords named: keeping the first {LIMIT}")
        found = found[:LIMIT]
    return {"chords": found or None}, spans


# -----------------------------------------------------------------------------
# --chords: symbols or numerals, strictly


def flag_error(value, what):
    return UserError(
        f"--chords {value!r}: {what}; give chord symbols separated by spaces or commas "
        f"({chords.VALID_FORMS}), or {NUMERAL_FORM}"
    )


def parse_numerals(value):
    """'I-IV-V in G' -> its chords; None where the value is not numerals in a key."""
    text = value.strip()
    own = re.search(OWN_KEY.pattern + r"\s*$", text)
    head = text[: own.start()] if own else text
    parts = [p for p in re.split(rf"{DASH}|[\s,]+", head) if p]
    matches = [re.fullmatch(NUMERAL_TOKEN, p) for p in parts]
    if not any(matches):
        return None
    if own and not all(matches):
        bad = parts[matches.index(None)]
        raise flag_error(value, f"{bad!r} is not a Roman numeral")
    if own is None and all(matches):
        raise flag_error(value, "Roman numerals need their key ('ii-V-I in C')")
    if own is None:  # symbols: 'C I G' fails there, naming 'I'
        return None
    return [numeral_chord(m, *own_key(own, matches)) for m in matches]


def parse_chords(value):
    """'C G Am F', 'Bb, Cm7, Abmaj7', 'C - G - Am - F' or 'I-IV-V in G' -> [chord, ...]; a
    malformed chord or an empty value is a one-line error with the valid forms."""
    if not value.strip():
        raise flag_error(value, "no chord given")
    found = parse_numerals(value)
    if found is None:
        found = []
        for part in re.split(r"[\s,|]+", value.strip()):
            if not part or re.fullmatch(r"->|[-–—→]+", part):  # 'C - G - Am': dashes between
                continue
            pieces = [part] if chords.parse_symbol(part) else re.split(DASH, part)  # 'C-G-Am'
            for piece in filter(None, pieces):
                if chords.parse_symbol(piece) is None:
                    raise flag_error(value, f"{piece!r} is not a chord")
                found.append(chords.parse_symbol(piece))
    if not found:
        raise flag_error(value, "no chord given")
    if len(found) > LIMIT:
        raise flag_error(value, f"{len(found)} chords, more than the {LIMIT} a piece can ask for")
    return found
