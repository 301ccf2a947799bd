"""words.py, the readers of prompts and captions: tempo words (Italian terms at the middle of their
ranges, speed words in the class the control report measures them as), instruments by caption name,
family and player, and a set of MidiCaps-style captions read through prompt.parse_prompt. Pure
parsing: no model, no embedder."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import describe  # noqa: E402
import prompt  # noqa: E402
import words  # noqa: E402

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
    assert got["tempo_bpm"] == 120 and any("'calm'" in n for n in got["notes"])
    assert tempo_of("an energetic Adagio, slow") == words.TEMPO_TERMS["adagio"]
    assert tempo_of("a calm song") == words.TEMPO_MOODS["calm"]
    assert words.parse_tempo("moderate tempo") == words.TEMPO_WORDS_IN["moderate"]
    assert words.parse_tempo("Larghetto") == 63
