"""words.py, the readers of prompts and captions: tempo words (Italian terms at the middle of their
ranges, speed words in the class the control report measures them as), instruments by caption name,
family and player, and a set of MidiCaps-style captions read through prompt.parse_prompt. Pure
parsing: no model, no embedder."""

import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import chords  # noqa: E402
import describe  # noqa: E402
import prompt  # noqa: E402
import words  # noqa: E402
from files import UserError  # noqa: E402

DRUMS = describe.DRUMS
TEMPO_CLASSES = {word.capitalize(): word for _, word in describe.TEMPO_WORDS}


def tempo_of(text):
    return prompt.parse_prompt(text)["tempo_bpm"]


# -----------------------------------------------------------------------------
# tempo


def test_italian_terms_sit_at_the_middle_of_their_documented_range():
    for term, (low, high) in describe.ITALIAN_TEMPI.items():
        assert words.TEMPO_TERMS[term] == (low + high) / 2
        assert tempo_of(f"A {term.title()} piece.") == (low + high) / 2, term
    middles = list(words.TEMPO_TERMS.values())
    assert middles == sorted(middles), "ITALIAN_TEMPI is listed in the order of its middles"


def test_speed_words_read_back_as_the_tempo_word_the_control_report_measures():
    for word, bpm in words.TEMPO_WORDS_IN.items():
        named = word.removesuffix(" tempo")
        if named in TEMPO_CLASSES.values():
            assert describe.tempo_word(bpm) == named, word
    for text, word in [
        ("Slow", "slow"),
        ("a slow tempo", "slow"),
        ("Very slow", "very slow"),
        ("Moderate tempo", "moderate"),
        ("a medium tempo", "moderate"),
        ("Fast", "fast"),
        ("a fast tempo", "fast"),
        ("Very fast", "very fast"),
        ("at a very fast tempo", "very fast"),
    ]:
        assert describe.tempo_word(tempo_of(text)) == word, text


def test_very_fast_beats_fast_and_the_whole_phrase_is_read():
    got = prompt.parse_prompt("played at a very fast tempo")
    assert got["tempo_bpm"] == words.TEMPO_WORDS_IN["very fast"] and not got["notes"]
    assert got["unused"] == [], "'tempo' belongs to the phrase"


def test_longer_italian_terms_win_over_their_parts():
    assert tempo_of("Allegro moderato") == words.TEMPO_TERMS["allegro moderato"]
    assert tempo_of("an Andante moderato") == words.TEMPO_TERMS["andante moderato"]
    assert tempo_of("Allegro vivace") == words.TEMPO_TERMS["allegro vivace"]


def test_a_speed_word_beats_a_mood_word_and_an_italian_term_beats_both():
    got = prompt.parse_prompt("a calm, relaxing piece at a Fast tempo")
    assert got["tempo_bpm"] == 120 and not got["notes"], "a mood word gives way without a note"
    got = prompt.parse_prompt("a calm and lively tune")
    assert got["tempo_bpm"] == words.TEMPO_MOODS["calm"] and got["notes"]
    assert tempo_of("an energetic Adagio, slow") == words.TEMPO_TERMS["adagio"]
    assert tempo_of("a calm song") == words.TEMPO_MOODS["calm"]
    assert words.parse_tempo("moderate tempo") == words.TEMPO_WORDS_IN["moderate"]
    assert words.parse_tempo("Larghetto") == 63


# -----------------------------------------------------------------------------
# instruments


def instruments_of(text):
    return prompt.parse_prompt(text)["instruments"]


@pytest.mark.parametrize(
    "text, programs",
    [
        ("electric piano", [4]),
        ("Electric Piano 2", [5]),
        ("string ensemble", [48]),
        ("synth strings", [50]),
        ("SynthStrings", [50]),
        ("slap bass", [36]),
        ("synth bass", [38]),
        ("bass", [33]),
        ("double bass", [43]),
        ("electric bass guitar", [33]),
        ("nylon guitar", [24]),
        ("Acoustic Guitar (nylon)", [24]),
        ("steel guitar", [25]),
        ("jazz guitar", [26]),
        ("clean electric guitar", [27]),
        ("electric guitar", [27]),
        ("overdriven guitar", [29]),
        ("distortion guitar", [30]),
        ("distorted guitar", [30]),
        ("acoustic bass", [32]),
        ("electric bass", [33]),
        ("fretless bass", [35]),
        ("grand piano", [0]),
        ("acoustic grand piano", [0]),
        ("electric grand piano", [2]),
        ("honky-tonk piano", [3]),
        ("honky tonk piano", [3]),
        ("hammond organ", [16]),
        ("drawbar organ", [16]),
        ("rock organ", [18]),
        ("church organ", [19]),
        ("timpani", [47]),
        ("tremolo strings", [44]),
        ("pizzicato strings", [45]),
        ("orchestral harp", [46]),
        ("choir aahs", [52]),
        ("choir", [52]),
        ("voice oohs", [53]),
        ("synth voice", [54]),
        ("orchestra hit", [55]),
        ("brass section", [61]),
        ("synth brass", [62]),
        ("soprano saxophone", [64]),
        ("alto saxophone", [65]),
        ("tenor saxophone", [66]),
        ("baritone saxophone", [67]),
        ("tenor sax", [66]),
        ("synth lead", [80]),
        ("Lead 1 (square)", [80]),
        ("square lead", [80]),
        ("synth pad", [88]),
        ("warm pad", [89]),
        ("Pad 1 (new age)", [88]),
        ("synth effects", [96]),
        ("sound effects", [96]),
        ("fx", [96]),
        ("FX 1 (rain)", [96]),
        ("drums", [DRUMS]),
        ("drum kit", [DRUMS]),
        ("drum set", [DRUMS]),
        ("percussion", [DRUMS]),
        ("steel drums", [114]),
    ],
)
def test_caption_names_of_the_general_midi_instruments(text, programs):
    assert instruments_of(f"featuring {text}.") == programs
    assert words.parse_instruments(text) == programs


def test_every_general_midi_name_reads_as_its_program_and_its_caption_forms_too():
    for program, name in enumerate(describe.GM_NAMES):
        if name == "Fiddle":  # the everyday word wins: a fiddle is a violin
            assert instruments_of(name) == [40]
            continue
        assert instruments_of(f"a piece for {name} alone") == [program], name
        numbered = re.fullmatch(r"(.+) ([12])", name)  # 'Slap Bass 2': 'slap bass' is Slap Bass 1
        if numbered:
            assert instruments_of(numbered.group(1)) == [program - int(numbered.group(2)) + 1]
        part = re.fullmatch(r"(\w+)(?: \d)? \((\w+)\)", name)  # 'Pad 3 (polysynth)'
        if part:
            assert instruments_of(f"a {part.group(2)} {part.group(1)}") == [program], name


def test_a_longer_name_wins_over_its_parts():
    assert instruments_of("electric piano and piano") == [0, 4]
    assert instruments_of("a string ensemble") == [48], "not the strings family"
    assert instruments_of("strings") == [40, 41, 42]
    assert instruments_of("synth bass") == [38], "not synth 80 plus bass 33"
    assert instruments_of("bass clarinet") == [71]
    assert instruments_of("lead guitar") == [24], "'lead' alone names no instrument"


def test_bright_inside_an_instrument_name_asks_for_no_mode():
    got = prompt.parse_prompt("a bright acoustic piano")
    assert got["instruments"] == [1] and got["mode"] is None and not got["unused"]
    assert prompt.parse_prompt("a bright tune on the piano")["mode"] == "major"


@pytest.mark.parametrize(
    "text, programs",
    [
        ("guitars", [24]),
        ("electric guitars", [27]),
        ("synth pads", [88]),
        ("violins", [40]),
        ("basses", [33]),
        ("synth basses", [38]),
        ("brass sections", [61]),
        ("strings", [40, 41, 42]),
        ("string ensembles", [48]),
        ("tenor saxophones", [66]),
    ],
)
def test_plurals_read_as_their_singular(text, programs):
    assert instruments_of(text) == programs
    assert words.parse_instruments(text) == programs


@pytest.mark.parametrize(
    "player, program",
    [
        ("bassist", 33),
        ("drummer", DRUMS),
        ("pianist", 0),
        ("violinist", 40),
        ("guitarist", 24),
        ("cellist", 42),
        ("violist", 41),
        ("trumpeter", 56),
        ("saxophonist", 65),
        ("flautist", 73),
        ("flutist", 73),
        ("organist", 19),
        ("harpist", 46),
        ("percussionist", DRUMS),
        ("clarinetist", 71),
    ],
)
def test_a_player_plays_their_instrument(player, program):
    assert instruments_of(f"a {player} plays") == [program]
    assert instruments_of(f"two {player}s") == [program]


@pytest.mark.parametrize(
    "text, programs",
    [
        ("acoustic and fretless bass", [32, 35]),
        ("electric and acoustic guitars", [25, 27]),
        ("overdriven and distorted guitars", [29, 30]),
        ("violin and viola", [40, 41]),
        ("tenor, alto and baritone saxophones", [65, 66, 67]),
        ("tenor, alto, and baritone saxophones", [65, 66, 67]),
        ("clean or distorted guitar", [27, 30]),
        ("piano, electric and acoustic guitars", [0, 25, 27]),
        ("drums and bass guitar", [33, DRUMS]),
        ("happy and acoustic guitar", [25]),
    ],
)
def test_names_that_share_a_noun_are_each_read(text, programs):
    got = prompt.parse_prompt(text)
    assert got["instruments"] == programs and got["unused"] == []


def test_unknown_words_never_crash_any_reader():
    for text in ["glorp", "zzyzx and quux guitars", ", and bass", "and", "s", "es", "(", ") and ("]:
        got = prompt.parse_prompt(text)
        assert isinstance(got["instruments"], list)
    with pytest.raises(UserError, match="not an instrument"):
        words.parse_instruments("glorpophone")
    with pytest.raises(UserError, match="names no instrument"):
        words.parse_instruments(" , ")


# -----------------------------------------------------------------------------
# captions in the style of MidiCaps, read the user's way (prompt.parse_prompt)

CAPTIONS = [json.loads(line) for line in (ROOT / "tests/data/captions.jsonl").open()]


def tempo_range(word):
    """(low, high) bpm of an Italian term, or of a tempo word the control report measures."""
    if word in describe.ITALIAN_TEMPI:
        return describe.ITALIAN_TEMPI[word]
    limits = [0] + [limit for limit, _ in describe.TEMPO_WORDS]
    at = [w for _, w in describe.TEMPO_WORDS].index(word)
    return limits[at], limits[at + 1]


def test_the_caption_set_covers_what_it_is_for():
    assert len(CAPTIONS) >= 25
    text = " ".join(c["caption"].lower() for c in CAPTIONS)
    for phrase in [
        "acoustic and fretless bass",
        "overdriven and distorted guitars",
        "slap bass",
        "hammond organ",
        "church organ",
        "electric piano",
        "clean electric guitar",
        "brass section",
        "tenor saxophone",
        "synth strings",
        "synth lead",
        "synth voice",
        "synth effects",
        "bassist",
        "drummer",
        "pianist",
        "drums",
        "percussion",
        "bright acoustic piano",
    ]:
        assert phrase in text, phrase
    tempi = {c["tempo"] for c in CAPTIONS}
    assert {"slow", "moderate", "fast", "very fast"} <= tempi
    assert len(tempi & set(describe.ITALIAN_TEMPI)) >= 10


@pytest.mark.parametrize("entry", CAPTIONS, ids=lambda c: c["caption"][:40])
def test_a_caption_reads_as_its_instruments_tempo_meter_and_key(entry):
    got = prompt.parse_prompt(entry["caption"])
    expected = sorted({p for programs in entry["instruments"].values() for p in programs})
    assert got["instruments"] == expected
    low, high = tempo_range(entry["tempo"])
    assert got["tempo_bpm"] is not None and low <= got["tempo_bpm"] <= high, entry["tempo"]
    assert (got["meter"], got["key"], got["mode"]) == (entry["meter"], entry["key"], entry["mode"])
    assert got["notes"] == [], "a caption that says each thing once settles no contradiction"
    assert [chords.symbol(c) for c in got["chords"] or []] == [
        chords.symbol(chords.parse_symbol(c)) for c in entry["chords"]
    ], "its chord progression is read, and read as chords only"
    assert not set(entry["chords"]) & set(got["unused"])
    bare = prompt.parse_prompt(", ".join(entry["chords"]))
    assert bare["key"] is bare["mode"] is None and bare["instruments"] == []


def test_at_least_95_percent_of_the_captions_instrument_mentions_map_right():
    right, wrong = 0, []
    for entry in CAPTIONS:
        got = set(prompt.parse_prompt(entry["caption"])["instruments"])
        for mention, programs in entry["instruments"].items():
            if set(programs) <= got:
                right += 1
            else:
                wrong.append(f"{mention!r} -> {sorted(got)}, not {programs}")
        said = {p for programs in entry["instruments"].values() for p in programs}
        wrong += [f"{p} read from {entry['caption'][:50]!r}, not said" for p in got - said]
    share = right / (right + len(wrong))
    assert share >= 0.95, f"{share:.1%} right; wrong: {'; '.join(wrong)}"


def test_chord_symbols_are_not_keys_or_instruments():
    got = prompt.parse_prompt("The chords are Am, Bb, E7, F#m7, Cmaj7, Dm and G/B.")
    assert got["key"] is got["mode"] is None and got["instruments"] == []
    assert [chords.symbol(c) for c in got["chords"]] == "Am Bb E7 F#m7 Cmaj7 Dm G".split()
