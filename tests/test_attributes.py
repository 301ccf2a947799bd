"""The attribute table: what is derived from it, pinned to the layout that meta.json files,
checkpoints and configs rely on, and the test of the design: a new attribute is one entry in the
table, and the prefix, the flags, the dropout settings and the report's rows all have it."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import attributes as A
import dataset
import tokenizer as T

ROOT = Path(__file__).resolve().parent.parent


def test_the_derived_layout_is_the_one_prepared_folders_and_checkpoints_hold():
    assert {name: [s.start, s.stop] for name, s in A.PREFIX_SLOTS.items()} == dict(
        semantic=[0, 1],
        key=[1, 2],
        meter=[2, 4],
        tempo=[4, 6],
        instruments=[6, 12],
        chords=[12, 20],
    )
    assert A.PREFIX_LEN == T.PREFIX_LEN == 20
    none = [T.OFFSET[b] for b in ["UNCOND", "KEY_NONE"] + ["METER_NONE"] * 2 + ["TEMPO_NONE"] * 2]
    assert (
        A.UNCOND_PREFIX.tolist()
        == none + [T.OFFSET["INSTRUMENTS_NONE"]] * 6 + [T.OFFSET["CHORD_NONE"]] * 8
    )
    assert dataset.INDEX_ATTRIBUTES == (
        "key",
        "meter",
        "tempo_bpm",
        "instruments",
        "chords",
        "texture",
        "key_source",
        "bar_steps",
    )
    assert A.FLAGS == ("tempo", "meter", "key", "instruments", "chords")
    assert A.ASKED_FIELDS == ("tempo_bpm", "meter", "key", "mode", "instruments", "chords")
    assert A.DROPOUTS == dict(
        cond_dropout=0.1,
        key_dropout=0.3,
        meter_dropout=0.3,
        tempo_dropout=0.3,
        instruments_dropout=0.3,
        chords_dropout=0.3,
        prefix_dropout=0.1,
    )
    assert A.CONTROL_ROWS[:5] == ("key", "key (music21)", "mode", "mode (music21)", "meter")
    assert A.TOKEN_ROWS == ("tempo token",) and set(A.PER_PROMPT_ROWS) <= set(A.CONTROL_ROWS)


def test_words_flags_and_the_index_become_the_same_prefix_arguments():
    said = dict(key="A minor", meter="3/4", tempo_bpm=72.0, instruments=[40, 42])
    assert A.prefix_arguments(said) == dict(
        key=21, meter=(3, 4), tempo_bpm=72.0, instruments=[40, 42], chords=None
    )
    # the index's chords per bar (None: no chord) and a prompt's progression, which is cycled
    row = A.prefix_arguments(dict(said, chords=["Am", None, "E7"] + ["Am"] * 9))["chords"]
    assert row == [(9, "minor"), None, (4, "dominant 7")] + [(9, "minor")] * 5
    asked = A.prefix_arguments(dict(said, chords=[(0, "major"), (7, "dominant 7")]))["chords"]
    assert asked == [(0, "major"), (7, "dominant 7")] * 4
    back = A.read_prefix(A.attribute_prefix(None, chords=row))["chords"]
    assert back == [(9, "minor"), None, (4, "major")] + [(9, "minor")] * 5, "root and triad class"
    nothing = dict(key=None, meter=None, tempo_bpm=None, instruments=[])
    assert A.attribute_prefix(None, **A.prefix_arguments(nothing)) == A.UNCOND_PREFIX.tolist()
    config = type("Config", (), {name: i / 10 for i, name in enumerate(A.DROPOUTS)})
    assert A.dropout_of(config) == dict(
        semantic=0.0, key=0.1, meter=0.2, tempo=0.3, instruments=0.4, chords=0.5, all=0.6
    ), "slot name -> its config's probability, in slot order (the order of the draws)"


# The toy: one entry and its own functions. Its value is a number 0..127, held in one slot as a
# NOTE id (a real attribute has token blocks of its own in tokenizer.py, and the prefix length that
# decode skips there grows with them); it is read from "toy 7" in a prompt or from --toy 7.
TOY = """
import re

ATTRIBUTES += (
    Attribute(
        name="toy",
        field="toy",
        unspecified=("UNK",),
        encode=lambda value: [OFFSET["NOTE"] + int(value)],
        decode=lambda ids: ids[0] - OFFSET["NOTE"] if kind(ids[0]) == "NOTE" else None,
        dropout=("toy_dropout", 0.25),
        argument=lambda words: None if words is None else int(words),
        asked=("toy",),
        words=lambda text, notes: (
            lambda m: ({"toy": m and m.group(1)}, [m.span()] if m else [])
        )(re.search(r"toy (\\d+)", text)),
        read_flag=lambda text: {"toy": text},
        help="a toy number",
        placeholder="7",
        said=lambda asked: asked["toy"],
        rows=("toy realised",),
        per_prompt=("toy realised",),
    ),
)
ASKED_ORDER += ("toy",)
"""

CHECKS = """
import numpy as np
import app, attributes as A, dataset, prompt, sample, tokenizer as T

assert A.__file__.startswith(sys.argv[1]), "the patched table is the one imported"
assert A.PREFIX_LEN == 21 and A.PREFIX_SLOTS["toy"] == slice(20, 21)
assert A.UNCOND_PREFIX[20] == T.UNK, "its slot holds its unspecified token"
given = A.attribute_prefix(T.semantic_token(1), key=3, toy=60)
assert given[20] == T.OFFSET["NOTE"] + 60 and A.read_prefix(given)["toy"] == 60
assert A.read_prefix(A.UNCOND_PREFIX)["toy"] is None
dropped = dataset.drop_attributes(np.array([given] * 4), dict(toy=1.0), np.random.default_rng(0))
assert (dropped[:, 20] == T.UNK).all() and (dropped[:, :20] == given[:20]).all()
assert T.tokens_to_score(given + [T.START, T.END])[1] == 0, "decode skips the longer prefix"

args = sample.parse_args(["--toy", "7", "--dry_run"])
assert args.toy == "7" and "toy" in A.FLAGS and app.FIELDS[1 : len(A.FLAGS) + 1] == A.FLAGS
asked = prompt.asked_attributes("a waltz with toy 5", {"toy": "7"})
assert asked["toy"] == "7" and asked["meter"] == "3/4", asked
assert "--toy overrides the prompt's toy" in asked["notes"], asked["notes"]
assert prompt.parse_prompt("toy 5 please")["unused"] == ["please"], "its words are read"
assert A.prefix_arguments(asked)["toy"] == 7
request = prompt.Request("SEMANTIC_UNCOND", "", None, asked, A.prefix_arguments(asked), 0)
assert request.understood()["toy"] == "7"
assert prompt.said_of({"toy": 7, "key": 3}) == "E flat major, 7", "a followed toy is said too"

assert "toy" in dataset.INDEX_ATTRIBUTES and A.DROPOUTS["toy_dropout"] == 0.25
assert A.dropout_of(type("C", (), A.DROPOUTS))["toy"] == 0.25
assert A.CONTROL_ROWS[-1] == "toy realised" and A.PER_PROMPT_ROWS[-1] == "toy realised"
print("toy found")
"""


def test_a_new_attribute_is_one_entry_in_the_table(tmp_path):
    """A copy of attributes.py with the toy added where the table ends, before anything is derived
    from it, imported (in a fresh process) in place of the real one by tokenizer.py, dataset.py,
    prompt.py, sample.py and app.py as they are."""
    source = (ROOT / "attributes.py").read_text()
    end = "\n# " + "-" * 77 + "\n# derived from the table"
    assert source.count(end) == 1, "the table ends where the derived constants start"
    (tmp_path / "attributes.py").write_text(source.replace(end, TOY + end))
    # the toy's one token on decode's prefix length (tokenizer.py), before attributes.py checks it
    grow = "import tokenizer; tokenizer.PREFIX_LEN += 1\n"
    run = subprocess.run(
        [sys.executable, "-c", "import sys\n" + grow + CHECKS, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=f"{tmp_path}:{ROOT}"),
    )
    assert run.returncode == 0 and "toy found" in run.stdout, run.stderr[-3000:]


def test_the_real_table_has_no_toy():
    assert "toy" not in A.PREFIX_SLOTS and np.array_equal(
        A.UNCOND_PREFIX, np.array(A.attribute_prefix())
    )
