"""What a prompt asks for (prompt.parse_prompt and the strict flag parsers), sample.py --dry_run,
and the attributes describe.measure reads back from notes."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import describe  # noqa: E402
import metrics  # noqa: E402
import prompt  # noqa: E402
import tokenizer  # noqa: E402
import words  # noqa: E402
from files import UserError  # noqa: E402

DRUMS = tokenizer.DRUMS


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "a slow waltz in A minor for strings",
            dict(tempo_bpm=66, meter="3/4", key="A minor", mode="minor", instruments=[40, 41, 42]),
        ),
        (
            "sad slow waltz in a minor key",
            dict(tempo_bpm=66, meter="3/4", key=None, mode="minor", instruments=[]),
        ),
        (
            "upbeat pop song with drums and bass",
            dict(tempo_bpm=128, meter=None, key=None, mode=None, instruments=[33, DRUMS]),
        ),
        (
            "a lively Irish jig on the fiddle",
            dict(tempo_bpm=140, meter="6/8", key=None, mode=None, instruments=[40]),
        ),
        (
            "an adagio in E flat major for Acoustic Grand Piano",
            dict(tempo_bpm=71, meter=None, key="E flat major", mode="major", instruments=[0]),
        ),
        (
            "march in 7/8 at 132 bpm, f# minor, brass",
            dict(
                tempo_bpm=132,
                meter="7/8",
                key="F sharp minor",
                mode="minor",
                instruments=[56, 57, 58, 60],
            ),
        ),
        ("a gentle lullaby", dict(tempo_bpm=76, meter=None, key=None, mode=None, instruments=[])),
        (
            "a slip jig for tin whistle",
            dict(tempo_bpm=None, meter="9/8", key=None, mode=None, instruments=[78]),
        ),
    ],
)
def test_prompt_words_become_attributes(text, expected):
    got = prompt.parse_prompt(text)
    assert {k: got[k] for k in expected} == expected


def test_contradictions_pick_one_and_say_which_and_unknown_words_never_fail():
    got = prompt.parse_prompt("a fast adagio")
    assert got["tempo_bpm"] == 71 and any("'adagio'" in n and "'fast'" in n for n in got["notes"])
    got = prompt.parse_prompt("a jig in 3/4")
    assert got["meter"] == "3/4" and got["notes"], (
        "an explicit meter wins over a dance word, and says so"
    )
    got = prompt.parse_prompt("glorp zzyzx 🎻 quux!")
    assert got["tempo_bpm"] is got["meter"] is got["key"] is None and got["instruments"] == []
    assert got["unused"] == ["glorp", "zzyzx", "quux"]
    assert prompt.parse_prompt("happy birthday")["mode"] == "major"  # a documented mood word


def test_flags_accept_the_documented_forms_and_reject_others_with_the_valid_ones():
    assert words.parse_tempo("96") == words.parse_tempo("96 bpm") == 96
    assert words.parse_tempo("Adagio") == 71  # the middle of adagio's 66-76
    for term, bpm in words.TEMPO_TERMS.items():  # an Italian term reads back at its own bpm
        assert words.TEMPO_TERMS[describe.italian_tempo(words.parse_tempo(term))] == bpm
    assert words.parse_meter("23/16") == "23/16" and words.parse_meter("waltz") == "3/4"
    assert words.parse_key("e flat major") == ("E flat major", "major")
    assert words.parse_key("Bb minor") == ("B flat minor", "minor") and words.parse_key(
        "minor"
    ) == (None, "minor")
    assert words.parse_instruments("violin, Cello,drums") == [40, 42, DRUMS]
    for parse, bad, hint in [
        (words.parse_tempo, "fastish", "adagio"),
        (words.parse_tempo, "5", "10 to 1000"),
        (words.parse_meter, "3/5", "6/8"),
        (words.parse_key, "H major", "E flat major"),
        (words.parse_instruments, "kazoo2", "GM program numbers"),
    ]:
        with pytest.raises(UserError, match=hint):
            parse(bad)


@pytest.fixture(scope="module")
def clustered_dir(tmp_path_factory):
    """A data folder with only clusters.json: two centroids from real embeddings (no checkpoint
    anywhere)."""
    root = tmp_path_factory.mktemp("prompt")
    centroids = prompt.embed(["a slow sad waltz for strings", "a fast Irish jig for fiddle"])
    (root / "clusters.json").write_text(
        json.dumps(
            dict(
                embedder=prompt.DEFAULT_EMBEDDER,
                k=2,
                labels=["waltz", "jig"],
                centroids=centroids.tolist(),
            )
        )
    )
    return root


def sample_cli(*args):
    return subprocess.run(
        [sys.executable, "sample.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
    )


def test_dry_run_prints_one_json_line_without_a_checkpoint(clustered_dir, tmp_path):
    r = sample_cli(
        "--prompt",
        "a slow waltz in A minor for strings",
        "--dry_run",
        "--data_dir",
        str(clustered_dir),
        "--out_dir",
        str(tmp_path / "no_run_here"),
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1
    got = json.loads(lines[0])
    assert list(got) == [
        "token", "cosine", "tempo_bpm", "meter", "key", "mode", "instruments", "chords"
    ]  # fmt: skip
    assert got["token"] == "SEMANTIC_TOKEN_0" and 0.3 < got["cosine"] <= 1.0
    assert (got["tempo_bpm"], got["meter"], got["key"], got["mode"]) == (
        66,
        "3/4",
        "A minor",
        "minor",
    )
    assert got["instruments"] == [40, 41, 42]
    r = sample_cli(
        "--prompt",
        "a lively jig",
        "--tempo",
        "adagio",
        "--key",
        "D major",
        "--instruments",
        "flute",
        "--dry_run",
        "--data_dir",
        str(clustered_dir),
    )
    got = json.loads(r.stdout)
    assert got["token"] == "SEMANTIC_TOKEN_1" and got["tempo_bpm"] == 71 and got["key"] == "D major"
    assert got["instruments"] == [73], "flags override the text"


@pytest.mark.parametrize(
    "flag, value", [("--key", "H major"), ("--meter", "3/5"), ("--tempo", "zippy")]
)
def test_malformed_flags_are_one_line_errors(flag, value, tmp_path):
    r = sample_cli(flag, value, "--out_dir", str(tmp_path))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("error: " + flag)


def test_measure_reads_the_attributes_back_from_notes():
    spq = tokenizer.STEPS_PER_QUARTER
    Note = tokenizer.Note
    # a waltz-like tune in A minor at 70 bpm: melody over a bass, 3/4
    melody = [69, 72, 76, 74, 72, 71, 69, 68, 69, 64, 69, 72] * 2
    notes = [Note(i * spq, spq, p, 40, 80) for i, p in enumerate(melody)]
    notes += [
        Note(3 * spq * b, 3 * spq, 45 if b % 2 == 0 else 40, 42, 70)
        for b in range(len(melody) // 3)
    ]
    score = tokenizer.Score(
        notes=sorted(notes, key=lambda n: (n.onset, n.program, n.pitch)),
        tempos=[(0, 70.0)],
        time_signatures=[(0, 3, 4)],
        end_step=len(melody) * spq,
    )
    m = describe.measure(score)
    assert m["key"] == "A minor" and m["mode"] == "minor"
    assert m["meter"] == "3/4" and m["tempo_bpm"] == 70 and m["tempo_italian"] == "adagio"
    assert m["tempo_word"] == "slow" and m["instruments"] == [40, 42]
    assert m["texture"] == "two voices" and m["register"] == "middle"
    assert m["seconds"] == pytest.approx(len(melody) * 60 / 70, abs=0.01)
    solo = tokenizer.Score(notes=notes[:8], tempos=[(0, 120.0)], end_step=8 * spq)
    assert describe.measure(solo)["texture"] == "solo line"
    assert np.isclose(describe.measure(solo)["notes_per_second"], 2.0)
    # notes at once per instrument: a melody and a bass line are one each; a four-note chord on one
    # program is four
    assert m["voices_per_instrument"] == 1.0 and metrics.music21_key(score.notes) == "A minor"
    chords = [Note(0, spq, p, 19, 80) for p in (48, 55, 64, 72)] + [
        Note(spq, spq, p, 19, 80) for p in (50, 57)
    ]
    assert describe.voices_per_instrument(chords) == pytest.approx((4 * spq + 2 * spq) / (2 * spq))


def test_prefix_attributes_from_what_was_asked():
    asked = prompt.parse_prompt("a sad slow waltz for violin, flute and banjo")
    seen = {0: 12000, 40: 14, 73: 500}
    attributes, notes = prompt.prefix_attributes(asked, seed=3, programs_seen=seen)
    assert (
        attributes["meter"] == (3, 4)
        and attributes["tempo_bpm"] == 66
        and attributes["instruments"] == [40, 73, 105]
    )
    key = describe.KEY_NAMES[attributes["key"]]
    assert key.endswith("minor") and attributes == prompt.prefix_attributes(asked, 3, seen)[0], (
        "the seed picks it"
    )
    assert {
        describe.KEY_NAMES[prompt.prefix_attributes(asked, s, seen)[0]["key"]] for s in range(40)
    } != {key}
    assert any("Banjo" in n and "never heard" in n for n in notes), notes
    assert any("Violin (14)" in n and "few training files" in n for n in notes) and not any(
        "Flute" in n for n in notes
    )
    attributes, notes = prompt.prefix_attributes(prompt.parse_prompt("in E flat major"), 0, seen)
    assert describe.KEY_NAMES[attributes["key"]] == "E flat major" and not notes
    assert attributes["meter"] is attributes["tempo_bpm"] is attributes["instruments"] is None
