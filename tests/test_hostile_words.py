"""Hostile words, text and fields: what a prompt or a flag is reported to ask for is what the
attribute prefix gets; text beyond ASCII (a '²', an 'İ', a byte that is not UTF-8, a Latin-1 file of
prompts) is read or refused in one line; the app's fields take the command line's checks; the app's
copies of what it serves are deleted; samples are never written into a dataset's MIDI; and a cluster
label stays a short line whatever the descriptions hold. Real prompts, real files, a real dataset
prepared by prepare.py, and the app served on 127.0.0.1."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import mido
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from midi_factory import midi_file, notes, track  # noqa: E402
from test_sample import ENV, run  # noqa: E402, F401 (run: the tiny random checkpoint fixture)

import app  # noqa: E402
import attributes  # noqa: E402
import cluster  # noqa: E402
import control  # noqa: E402
import dataset  # noqa: E402
import describe  # noqa: E402
import evaluate  # noqa: E402
import prepare  # noqa: E402
import prompt  # noqa: E402
import sample  # noqa: E402
import words  # noqa: E402
from files import UserError  # noqa: E402


def given(text, flags=None):
    """A prompt and flags -> (what they ask for, the notes, the prefix's values read back from its
    ids: what the model gets)."""
    asked = prompt.asked_attributes(text, flags)
    prefix, notes = prompt.prefix_attributes(asked, seed=1)
    got = attributes.read_prefix(attributes.attribute_prefix(**prefix))
    return asked, asked["notes"] + notes, got


def cli(*args):
    """A script run as a user runs it -> (exit status, stderr)."""
    r = subprocess.run([sys.executable, *args], cwd=ROOT, env=ENV, capture_output=True, timeout=300)
    return r.returncode, r.stderr.decode("utf-8", "replace")


def one_line(rc, err):
    assert rc == 1 and err.strip().count("\n") == 0 and "Traceback" not in err, err
    return err


# -----------------------------------------------------------------------------
# what is reported is what the prefix gets


@pytest.mark.parametrize(
    "text, meter, tempo, noted",
    [
        ("a march in 0/4", (2, 4), None, "'0/4' is not a meter"),
        ("a piece in 99/4", None, None, "'99/4' is not a meter"),
        ("a jig at 0 bpm", (6, 8), None, "'0 bpm' is outside 10..1000 bpm"),
        ("a reel at 9999 bpm", (4, 4), None, "'9999 bpm' is outside"),
        ("a waltz at 10000 bpm, slow", (3, 4), words.TEMPO_WORDS_IN["slow"], "'10000 bpm'"),
        ("a chorale in 3/64", (4, 4), None, "'3/64' is not a meter"),
        ("a piece in 32/16 at 96 bpm", (16, 8), 96, "as 16/8, the same bar"),
    ],
)
def test_a_meter_or_tempo_the_model_cannot_get_is_left_out_with_a_note(text, meter, tempo, noted):
    asked, notes, got = given(text)
    said_meter = asked["meter"] and tuple(int(v) for v in asked["meter"].split("/"))
    assert said_meter == got["meter"] == meter, (asked, got)
    assert (asked["tempo_bpm"] is None) == (got["tempo_bpm"] is None) == (tempo is None)
    if tempo:
        assert asked["tempo_bpm"] == tempo and abs(got["tempo_bpm"] / tempo - 1) < 0.005
    assert any(noted in note for note in notes), notes
    assert not asked["unused"], "a number refused was still read: it chooses no token"


def test_flags_refuse_what_the_vocabulary_cannot_hold_and_share_the_words_range(tmp_path):
    for flags, named in [
        (dict(meter="32/1"), "--meter '32/1'"),
        (dict(meter="0/4"), "--meter '0/4'"),
        (dict(meter="99/4"), "--meter '99/4'"),
        (dict(tempo="0"), "--tempo '0'"),
        (dict(tempo="9999"), "--tempo '9999'"),
    ]:
        with pytest.raises(UserError, match=named) as e:
            prompt.asked_attributes("", flags)
        if "tempo" in flags:  # the flag's range is the one the words' note gives
            low, high = words.TEMPO_RANGE
            assert f"from {low} to {high}" in str(e.value)
            _, notes, _ = given(f"at {flags['tempo']} bpm")
            assert notes == [f"'{flags['tempo']} bpm' is outside {low}..{high} bpm: left out"]
    # on sample.py's path: refused before a checkpoint is looked for (there is none here)
    with pytest.raises(UserError, match="--meter '32/1'"):
        sample.main(["--meter", "32/1", "--out_dir", str(tmp_path)])
    assert words.parse_meter("32/16") == "16/8" and given("", dict(meter="32/16"))[2]["meter"] == (
        16,
        8,
    )


def test_no_instrument_name_asks_for_a_mode_a_tempo_or_a_meter():
    """Every GM name, its caption forms and every everyday instrument word, read as a prompt, asks
    for instruments and nothing else: 'bright acoustic piano' is a piano, not a major key."""
    texts = [
        text
        for name in describe.GM_NAMES
        for form in words.caption_forms(name)
        for text in (form, form.title(), f"a piece for {form}", f"A {name}.")
    ] + list(words.INSTRUMENT_WORDS)
    for text in texts:
        asked = prompt.parse_prompt(text)
        assert asked["instruments"], text
        for field in ("tempo_bpm", "meter", "key", "mode"):
            assert asked[field] is None, (text, field, asked[field])
    assert prompt.parse_prompt("bright acoustic piano")["instruments"] == [1]
    assert prompt.parse_prompt("a bright tune for bright acoustic piano")["mode"] == "major", (
        "a mood word outside the name still asks"
    )


def test_more_instruments_than_the_prefix_holds_are_noted():
    asked, notes, got = given("for strings, brass and woodwinds")
    assert len(asked["instruments"]) > attributes.PREFIX_INSTRUMENTS
    kept = got["instruments"]
    assert kept == asked["instruments"][: attributes.PREFIX_INSTRUMENTS]
    note = next(n for n in notes if n.startswith("the prefix holds"))
    assert ", ".join(map(describe.instrument_name, kept)) in note


# -----------------------------------------------------------------------------
# text beyond ASCII


def test_unicode_in_prompts_and_flags_is_read_or_refused_in_one_line():
    # 'İ' lowers to two characters; the readers' places in the text are the prompt's
    for text, key, meter, unused in [
        ("İstanbul waltz in A minor", "A minor", "3/4", ["İstanbul"]),
        ("xİ a minor jig", "A minor", "6/8", ["xİ"]),
        ("İİİ in 5/4 in D major", "D major", "5/4", ["İİİ"]),
        ("İA minor", None, None, ["İA", "minor"]),
    ]:
        asked = prompt.parse_prompt(text)
        assert (asked["key"], asked["meter"], asked["unused"]) == (key, meter, unused), text
    # numbers in other scripts are numbers; a superscript is not
    assert prompt.parse_prompt("a waltz at ١٢٠ bpm")["tempo_bpm"] == 120
    assert words.parse_instruments("٤٠") == [40]
    for flag in attributes.FLAGS:
        with pytest.raises(UserError, match=f"--{flag}"):
            prompt.asked_attributes("", {flag: "²"})
    # a byte that is not UTF-8 reaches Python as a lone surrogate
    for text, flags in [("\udcffwaltz", None), ("a jig", dict(key="A\udcff minor"))]:
        with pytest.raises(UserError, match="is not UTF-8 text"):
            prompt.asked_attributes(text, flags)
    with pytest.raises(UserError, match="10,000"):
        prompt.asked_attributes("waltz " * 5000)


def test_sample_py_refuses_unreadable_text_in_one_line(tmp_path):
    out = str(tmp_path)
    err = one_line(*cli("sample.py", "--instruments", "²", "--out_dir", out))
    assert "'²' is not an instrument" in err
    err = one_line(*cli("sample.py", "--prompt", b"\xffwaltz", "--out_dir", out))
    assert "not UTF-8" in err
    err = one_line(*cli("sample.py", "--seed", "²", "--out_dir", out))
    assert "--seed '²'" in err


def test_a_latin1_file_of_prompts_is_one_line_naming_its_line(tmp_path):
    latin1, utf8 = tmp_path / "latin1.txt", tmp_path / "utf8.txt"
    latin1.write_bytes("a waltz for piano\nune valse à Paris\n".encode("latin-1"))
    utf8.write_text("# mine\nune valse à Paris\nİstanbul jig\n", encoding="utf-8")
    out = ["--out_dir", str(tmp_path / "out")]
    with pytest.raises(UserError, match=r"latin1.txt: line 2 is not UTF-8 \(byte 0xe0\)"):
        evaluate.parse_settings(["--prompts", str(latin1), *out])
    sets = control.prompt_sets(f"fixed,{utf8}")
    assert sets["utf8.txt"] == [("une valse à Paris", {}), ("İstanbul jig", {})]
    err = one_line(*cli("evaluate.py", "--prompts", str(latin1), *out))
    assert "save the file as UTF-8" in err
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "utf8.txt").write_text("a jig\n")
    with pytest.raises(UserError, match="two sets named 'utf8.txt'"):
        control.prompt_sets(f"{utf8},{tmp_path / 'sub' / 'utf8.txt'}")


def test_evaluate_refuses_an_unknown_path_before_any_work(tmp_path):
    out = ["--out_dir", str(tmp_path)]  # no checkpoint there: work would fail otherwise
    for paths, words_ in [
        ("bogus", "no path 'bogus'"),
        ("user,bogus", "'bogus'"),
        (",", "no path"),
    ]:
        with pytest.raises(UserError, match=words_) as e:
            evaluate.parse_settings(["--paths", paths, *out])
        assert all(path in str(e.value) for path in control.PATHS)
    err = one_line(*cli("evaluate.py", "--paths", "bogus", *out))
    assert "--paths 'bogus'" in err and "no checkpoint" not in err


# -----------------------------------------------------------------------------
# the app's fields: the command line's checks


def fields(**given_fields):
    """The app's FIELDS, in order, as the page sends them."""
    values = dict(prompt="a jig", guidance=1.0, temperature=1.0, seconds=5, seed="")
    values |= {name: "" for name in attributes.FLAGS} | given_fields
    return [values[f] for f in app.FIELDS]


def test_the_apps_fields_give_the_command_lines_one_line_messages(tmp_path):
    for value in ["²", str(2**64), str(2**40), "-1", "one", "\udcff"]:
        with pytest.raises(UserError) as on_page:
            app.read_fields(*fields(seed=value))
        with pytest.raises(UserError) as on_cli:
            sample.parse_args(["--seed", value])
        assert str(on_cli.value) == str(on_page.value).replace("seed", "--seed", 1), value
        assert "\n" not in str(on_page.value)
    for name in attributes.FLAGS:
        with pytest.raises(UserError) as on_page:
            app.read_fields(*fields(**{name: "²"}))
        with pytest.raises(UserError) as on_cli:
            sample.main([f"--{name}", "²", "--out_dir", str(tmp_path)])
        assert str(on_page.value) == str(on_cli.value)
    with pytest.raises(UserError, match="seconds"):
        app.read_fields(*fields(seconds="²"))
    text, asked, settings = app.read_fields(*fields(seed=" 7 ", tempo="96"))
    assert settings["seed"] == 7 == sample.parse_args(["--seed", "7"]).seed
    assert asked["tempo_bpm"] == 96 and text == "a jig"
    assert app.read_fields(*fields())[2]["seed"] is None, "empty: a new seed each time"


def test_app_refuses_a_port_out_of_range_before_loading_anything(tmp_path):
    for port in ["99999", "0", "-5"]:
        with pytest.raises(UserError, match=f"--port={port}"):
            app.parse_args(["--port", port])
    # no checkpoint in out_dir: loading would have said so
    err = one_line(*cli("app.py", "--port", "99999", "--out_dir", str(tmp_path)))
    assert "--port=99999" in err and "[1, 65535]" in err


def test_the_apps_copies_of_served_files_are_deleted_when_it_stops(run, tmp_path):  # noqa: F811
    """app.py as a user runs it, its system temp folder its own: one piece made through the page,
    then Ctrl+C. Gradio's copies were in the results folder, and are gone."""
    pytest.importorskip("gradio", reason="the app needs gradio")
    from gradio_client import Client
    from test_app import app_data, generate

    results, system = tmp_path / "results", tmp_path / "system_temp"
    system.mkdir()
    env = {k: v for k, v in ENV.items() if k != "GRADIO_TEMP_DIR"} | {"TMPDIR": str(system)}
    args = ["--out_dir", str(run), "--data_dir", str(app_data(tmp_path / "data"))]
    served = subprocess.Popen(
        [sys.executable, "app.py", *args, "--results_dir", str(results), "--device", "cpu"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # Ctrl+C reaches it even where this test runs with SIGINT ignored (a background job)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        line = next((line for line in served.stdout if line.startswith("AMT app: ")), "")
        assert line, "the app did not start"
        client = Client(line.split()[2], download_files=str(tmp_path), verbose=False)
        out = generate(client, prompt="drums", seed="3")
        name = Path(out["midi"]).name
        copies = [p.parent.parent for p in results.glob(f".served-*/*/{name}")]
        assert out["status"].startswith("Made ") and copies, (out["status"], copies)
    finally:
        served.send_signal(signal.SIGINT)
        served.communicate(timeout=120)
    assert served.returncode == 0
    assert not copies[0].exists(), "the copies are deleted when the page stops"
    assert (results / name).is_file(), "the pieces themselves are kept"
    assert not [p for p in system.rglob("*") if p.is_file()], "nothing in the system temp folder"


# -----------------------------------------------------------------------------
# outputs inside a dataset's MIDI


def a_dataset(root):
    """A real dataset: two MIDI files with their captions, prepared by prepare.py."""
    midi = root / "midi"
    midi.mkdir(parents=True)
    for i, pitch in enumerate((60, 67)):
        spec = [(beat, 1, pitch + beat % 5) for beat in range(16)]
        midi_file([track(notes(0, spec, program=0))]).save(midi / f"tune{i}.mid")
    captions = [dict(midi_file=f"tune{i}.mid", description="a piano tune") for i in range(2)]
    (midi / "descriptions.jsonl").write_text("\n".join(map(json.dumps, captions)) + "\n")
    prepare.prepare(str(root), val_fraction=0.5, workers=1, quiet=True)
    assert (root / "meta.json").is_file()
    return root


def test_samples_are_never_written_into_a_datasets_midi(run, tmp_path):  # noqa: F811
    data = a_dataset(tmp_path / "data")
    (tmp_path / "link").symlink_to(data / "midi")
    before = sorted(p.name for p in (data / "midi").rglob("*"))
    common = ["--out_dir", str(run), "--num_samples", "1", "--max_new_tokens", "8"]
    for inside in [data / "midi", data / "midi" / "gen", tmp_path / "link" / "gen"]:
        with pytest.raises(UserError, match="next prepare.py would train on"):
            sample.main([*common, "--sample_dir", str(inside), "--device", "cpu"])
        with pytest.raises(UserError, match="--results_dir"):
            app.load(app.parse_args([*common[:2], "--results_dir", str(inside)]))
    assert sorted(p.name for p in (data / "midi").rglob("*")) == before, "nothing written there"
    # beside the MIDI, and in a folder of MIDI that is no dataset, samples are written
    made = sample.main([*common, "--sample_dir", str(data / "samples"), "--device", "cpu"])
    assert made and mido.MidiFile(made[0]).type in (0, 1)
    dataset.check_outside_midi(tmp_path / "mine", "--sample_dir")
    raw = tmp_path / "raw"  # not prepared yet: its captions mark it, and its MIDI is the folder
    raw.mkdir()
    (raw / "descriptions.jsonl").write_text("")
    with pytest.raises(UserError, match="the MIDI of the dataset"):
        dataset.check_outside_midi(raw / "out", "--sample_dir")


# -----------------------------------------------------------------------------
# cluster labels


def test_a_huge_description_makes_a_short_label():
    descriptions = [
        "a lively jig for fiddle " + "x" * 20_000_000,
        "jig fiddle " + " ".join(["strathspey"] * 100_000),
        "a slow waltz for strings",
        "waltz strings " + "y" * 5_000_000 + " waltz",
    ]
    ids = np.array([0, 0, 1, 1])
    labels = cluster.cluster_labels(descriptions, ids, 2)
    longest = 3 * cluster.LABEL_WORD_MAX + 2
    assert all(len(label) <= longest for label in labels), [len(label) for label in labels]
    assert "fiddle" in labels[0] and "waltz" in labels[1], labels
