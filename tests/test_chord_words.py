"""Chords read from words (chordwords.py): the progression a caption or prompt names, and the
strict --chords flag. Cases are captions in the style MidiCaps writes (genre, mood, instruments,
key, meter, tempo and the chords, several sentences), the project's own prompts, and the forms
lead sheets and theory books write."""

import json
import random
import re
from pathlib import Path

import pytest

import chords
import chordwords
import control
import describe
import words
from files import UserError

ROOT = Path(__file__).resolve().parent.parent
CAPTIONS = [json.loads(line) for line in (ROOT / "tests/data/captions.jsonl").open()]


def read(text):
    notes = []
    asked, spans = chordwords.read_chords(text, notes)
    return asked["chords"], spans, notes


def symbols(chord_list):
    return None if chord_list is None else [chords.symbol(c) for c in chord_list]


def expected_of(entry):
    return entry["chords"]


# -----------------------------------------------------------------------------
# captions


@pytest.mark.parametrize("entry", CAPTIONS, ids=lambda c: c["caption"][:40])
def test_a_caption_reads_as_the_chords_it_names(entry):
    got, spans, notes = read(entry["caption"])
    expected = [chords.parse_symbol(s) for s in expected_of(entry)] or None
    assert got == expected, (symbols(got), expected_of(entry))
    assert notes == []
    # what was read is the symbols as written, nothing around them (the key, the meter)
    assert [entry["caption"][a:b] for a, b in spans] == expected_of(entry)


def without_chord_clauses(entry):
    """The caption less its clauses that name a chord (a symbol it lists, not as a key's tonic:
    'in G major' stays); its key, meter, tempo and instruments stay."""
    named = [s for s in expected_of(entry) if s != "A"]  # the article is in other clauses too
    clauses = re.split(r"(?<=\.)\s+|,\s+and\s+", entry["caption"])
    mention = r"(?<![\w#]){}(?![\w#])(?!\s+(?:major|minor|flat|sharp))"
    kept = [
        s for s in clauses if not any(re.search(mention.format(re.escape(c)), s) for c in named)
    ]
    return " ".join(kept)


@pytest.mark.parametrize("entry", CAPTIONS, ids=lambda c: c["caption"][:40])
def test_a_caption_without_its_chord_clause_names_no_chords(entry):
    text = without_chord_clauses(entry)
    assert entry["key"] is None or entry["key"].split()[0].upper() in text  # the key is still there
    assert read(text) == (None, [], [])


def test_the_captions_cover_the_forms_the_reader_is_for():
    text = " ".join(c["caption"] for c in CAPTIONS)
    for phrase in ["chord progression", "alternates between", "revolves around", "Power chords"]:
        assert phrase in text, phrase
    assert sum(not c["chords"] for c in CAPTIONS) >= 1
    assert sum(c["key"] is not None and c["key"][0] == "A" for c in CAPTIONS) >= 3


# -----------------------------------------------------------------------------
# the forms, one at a time

FORMS = [
    ("The song uses the chords A, E7, A7, D.", "A E7 A7 D"),
    ("The main chord progression is A, E7, A7, D.", "A E7 A7 D"),
    ("The chord progression is Bb, Cm7, Abmaj7, Bb, and Cm7.", "Bb Cm7 Abmaj7 Bb Cm7"),
    ("The music alternates between C and G.", "C G"),
    ("It alternates between the C and G chords.", "C G"),
    ("A fiddle tune over Dm, Gm and A7.", "Dm Gm A7"),
    ("The harmony revolves around D and A.", "D A"),
    ("A folk song with the chords C G Am F.", "C G Am F"),
    ("A pop song: C - G - Am - F.", "C G Am F"),
    ("A pop song on C G Am F, at a Fast tempo.", "C G Am F"),
    ("A sad ballad: Am, F, C, G, for piano.", "Am F C G"),
    ("A brass fanfare on Bb Eb F in 2/4.", "Bb Eb F"),
    ("A punk song, C–G–Am–F, loud and fast.", "C G Am F"),
    ("Power chords on D5, C5 and Bb5.", "D C Bb"),
    ("The chords F#m, Bm7b5, G6, Dsus4 and D/F# repeat.", "F#m Bm7b5 G6 Dsus4 D"),
    ("The chords are C♯m, F♯ and B♭maj7.", "C#m F# Bbmaj7"),
    ("E♭, A♭ and B♭7 are the main chords.", "Eb Ab Bb7"),
    ("This song features Am and E7 chords.", "Am E7"),
    ("Harmonically, the song moves between Em and B7 throughout.", "Em B7"),
    ("The chord progression of Am, G, F and E repeats.", "Am G F E"),
    ("The chords are Am, Bb, E7, F#m7, Cmaj7, Dm and G/B.", "Am Bb E7 F#m7 Cmaj7 Dm G"),
    ("A solo over C7 for a chorus.", "C7"),
    ("The harmony stays on an A chord.", "A"),
    # a root and its mode in words is a chord in a list of chords, a key elsewhere
    (
        "It is in C major and uses the chord progression A minor, C major, A minor, D major.",
        "Am C Am D",
    ),
    ("The chords C, G and A minor close each verse, in C major.", "C G Am"),
]


@pytest.mark.parametrize("text, expected", FORMS)
def test_each_form_reads(text, expected):
    got, _, notes = read(text)
    assert " ".join(symbols(got)) == expected and notes == []


NUMERALS = [  # (text, the same progression as symbols)
    ("A blues shuffle, a I-IV-V in G.", "G C D"),
    ("A folk tune in A major, 6/8, on a I-IV-V.", "A D E"),
    ("A ballad in E flat major with a I–vi–IV–V progression.", "Eb Cm Ab Bb"),
    ("A tango, i-iv-V in A minor, at a Moderate tempo.", "Am Dm E"),
    ("A jazz standard built on ii-V-I in the key of Bb.", "Cm F Bb"),
    ("A jazz waltz in F major over a ii7-V7-Imaj7.", "Gm7 C7 Fmaj7"),
    ("A twelve-bar blues with I7, IV7 and V7 chords in E.", "E7 A7 B7"),
    ("A rock song, I-bVII-IV in D.", "D C G"),
    ("A minor-key lament: iiø7-V7-i in D minor.", "Em7b5 A7 Dm"),
    ("A hymn in F sharp minor with the progression i, iv, V, i.", "F#m Bm C# F#m"),
    ("A march, I-V7-I in C, then vii°-I.", "C G7 C Bdim C"),
    (
        "A bluesy rock song featuring an overdriven guitar, a Hammond organ and drums. It is in E"
        " major with a 12/8 time signature and a Slow tempo. It follows a I7-IV7-I7-V7 shuffle,"
        " gritty and soulful.",
        "E7 A7 E7 B7",
    ),
    (
        "A melancholic film cue for a string ensemble and a piano, in G minor and 3/4 at a Lento"
        " tempo. The progression i-VI-III-VII gives it a haunting, epic feel.",
        "Gm Eb Bb F",
    ),
]


@pytest.mark.parametrize("text, expected", NUMERALS)
def test_roman_numerals_read_in_their_key(text, expected):
    got, _, notes = read(text)
    assert " ".join(symbols(got)) == expected
    assert notes == [] or notes == [
        "Roman numerals 'vii°-I' in no named key: read in C major"
    ]  # the last: its own key is not said again


def test_numerals_with_no_key_are_read_in_c_major_with_a_note():
    got, _, notes = read("A pop song on the four chords, I–V–vi–IV, at a Fast tempo.")
    assert symbols(got) == ["C", "G", "Am", "F"]
    assert notes == ["Roman numerals 'I–V–vi–IV' in no named key: read in C major"]
    got, _, notes = read("A ii-V-I.")
    assert symbols(got) == ["Dm", "G", "C"] and len(notes) == 1


def test_the_key_named_elsewhere_is_the_one_words_py_reads():
    for entry in CAPTIONS + [{"caption": p} for p, _ in NUMERALS]:
        key = words.read_key(entry["caption"], [])[0]["key"]
        got = chordwords.named_key(entry["caption"])
        index = describe.KEY_NAMES.index(key) if key else None
        assert got == (None if key is None else (index % 12, index >= 12)), entry["caption"]


@pytest.mark.parametrize("tonic", range(12))
@pytest.mark.parametrize("minor", [False, True])
def test_numerals_move_with_their_key(tonic, minor):
    mode = "minor" if minor else "major"
    key = describe.key_name(tonic, mode)
    numerals = "i-iv-V-VI-III" if minor else "I-vi-ii-V7-IV"
    got, _, notes = read(f"A piece on {numerals} in {key}.")
    in_c = [chords.parse_symbol(s) for s in ("Cm Fm G Ab Eb" if minor else "C Am Dm G7 F").split()]
    assert notes == [] and got == [chords.transpose(c, tonic) for c in in_c]


# -----------------------------------------------------------------------------
# what is not a chord

WRITTEN_WITHOUT_CHORDS = [
    "A slow waltz in A minor for strings, with a gentle, melancholic feel.",
    "A melodic song in E flat major, played at a Moderate tempo in 4/4.",
    "A Bb clarinet and an F horn play a duet over a walking bass, in B flat major.",
    "An A major key tune for the fiddle. A lively jig in 6/8.",
    "This song is set in a minor key and its B-side is a slow ballad.",
    "The B section is in 6/8 and the A section in 4/4, in A-B-A form.",
    "A pianist plays chords over a bassist and a drummer, in D minor, at a Fast tempo.",
    "A clean electric guitar adds chords. The song is in F major, 4/4, at an Allegro tempo.",
    "A chord progression in G gives it a warm feel, with an acoustic guitar and strings.",
    "Section A features piano chords; Section B features strings in E minor.",
    "I think this piece sounds happy. I hear a C trumpet and a D whistle.",
    "A sonata in four movements, Movements I-IV, for violin and piano, in G major.",
    "The song changes key from C major to A minor, with tempo changes from Andante to Presto.",
    "An E piano and a B3 organ over a drum groove, in C sharp minor at 120 bpm.",
    "A cheerful polka played Allegro in 2/4 by an accordion and a tuba, in F major.",
    "An ambient piece with a synth pad over A gentle drone, slow, in D major.",
    "The song changes key from C major to A minor, and its chords are bright.",
    "The harmony is in C major and A minor, with a choir and an organ.",
    "The chord progression of this E minor song is simple, in 3/4.",
    "An A major key tune with strummed chords, in 6/8.",
    "The harmony centers on A minor, with a slow cello line.",
    "Soft chords on an E piano and a warm pad, in C sharp minor.",
    "A slow waltz on a B-C button accordion, in G major, with guitar chords.",
    "Guitar chords ring out in open D-A-D-G-A-D tuning, in D major.",
    "Chords on the organ open a slow hymn sung by a choir in four parts, with verses A, B and C.",
    "A rondo on themes A, B, A, C and A, in G major, for a string quartet.",
    "The melody climbs through the notes C5, E5 and G5 and falls back, in C major.",
    "Plan A, B and C: a slow intro, a fast middle and a quiet end, at 90 bpm.",
    "Strummed chords, A steady beat and a bass guitar give it a relaxed, happy mood.",
    "A dark cinematic piece in C minor with harmony from a string ensemble and a choir.",
]


def project_prompts():
    """The prompts the project itself samples and documents: the control set, the demo's, the
    README's, one for each General MIDI name, and the caption set's one without chords."""
    out = [p for prompts in control.prompt_sets("fixed,demo,readme").values() for p, _ in prompts]
    out += re.findall(r'--prompt "([^"]+)"', (ROOT / "README.md").read_text())
    out += [f"a piece for {name}" for name in describe.GM_NAMES]
    return out + [c["caption"] for c in CAPTIONS if not c["chords"]]


def test_prompts_without_chords_read_none():
    prompts = project_prompts() + WRITTEN_WITHOUT_CHORDS
    assert len(prompts) >= 30 + len(describe.GM_NAMES)
    read_some = {p: symbols(read(p)[0]) for p in prompts if read(p)[0] or read(p)[2]}
    assert read_some == {}


def test_words_that_cannot_be_read_never_crash_it():
    rng = random.Random(0)
    pieces = "A B C D E F G b # ♭ ♯ m 7 maj7 / - – , and chords over in minor major I IV V ii . "
    pieces = pieces.split(" ") + [" ", "  "]
    for _ in range(500):
        text = "".join(rng.choice(pieces) + rng.choice(["", " ", ", "]) for _ in range(30))
        got, spans, notes = read(text)
        assert got is None or 1 <= len(got) <= chordwords.LIMIT
        assert all(c in [(r, q) for r in range(12) for q in chords.QUALITIES] for c in got or [])
        assert all(0 <= a < b <= len(text) for a, b in spans)


# -----------------------------------------------------------------------------
# notes for what is left out


def test_more_chords_than_the_prefix_cycles_are_cut_with_a_note():
    progression = "C G Am F " * 5
    got, _, notes = read(f"A long pop song on the chords {progression.strip()}.")
    assert symbols(got) == progression.split()[: chordwords.LIMIT]
    assert notes == [f"20 chords named: keeping the first {chordwords.LIMIT}"]


def test_a_chord_shaped_word_it_cannot_read_is_left_out_with_a_note():
    got, spans, notes = read("A jazz tune in F major. The chords are Fmaj7, Gsus7 and C7.")
    assert symbols(got) == ["Fmaj7", "C7"]
    assert len(notes) == 1 and "'Gsus7'" in notes[0] and chords.VALID_FORMS in notes[0]


# -----------------------------------------------------------------------------
# --chords


@pytest.mark.parametrize(
    "value, expected",
    [
        ("C G Am F", "C G Am F"),
        ("Bb, Cm7, Abmaj7, Bb, Cm7", "Bb Cm7 Abmaj7 Bb Cm7"),
        ("C - G - Am - F", "C G Am F"),
        ("C-G-Am-F", "C G Am F"),
        ("F♯m B♭ D/F#", "F#m Bb D"),
        ("I-IV-V in G", "G C D"),
        ("i iv V in A minor", "Am Dm E"),
        ("ii-V-I in the key of Bb", "Cm F Bb"),
    ],
)
def test_the_flag_reads_symbols_and_numerals(value, expected):
    assert " ".join(symbols(chordwords.parse_chords(value))) == expected


@pytest.mark.parametrize("entry", [c for c in CAPTIONS if c["chords"]], ids=lambda c: c["key"])
def test_the_flag_reads_back_what_the_words_read(entry):
    got, _, _ = read(entry["caption"])
    assert chordwords.parse_chords(chords.progression_text(got)) == got


@pytest.mark.parametrize(
    "value, named",
    [
        ("C G H7", "'H7' is not a chord"),
        ("C, Gsus7, F", "'Gsus7' is not a chord"),
        ("C-Q-G", "'Q' is not a chord"),
        ("I-IV-Q in G", "'Q' is not a Roman numeral"),
        ("ii-V-I", "need their key"),
        ("", "no chord given"),
        ("  , - ", "no chord given"),
        ("C " * 17, "17 chords"),
    ],
)
def test_a_malformed_flag_is_one_line_naming_it_with_the_valid_forms(value, named):
    with pytest.raises(UserError) as caught:
        chordwords.parse_chords(value)
    message = str(caught.value)
    assert "\n" not in message and named in message
    assert chords.VALID_FORMS in message and "I-IV-V in G" in message
