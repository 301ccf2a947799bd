"""app.py, the local page, driven in-process through Gradio's own client (gradio_client) on
127.0.0.1: a prompt in; a MIDI, a WAV and a piano roll out, with what was understood and measured,
and earlier results kept. A malformed field is its one-line message on the page. A tiny random
checkpoint, as test_sample.py's, and clusters embedded by the real local embedder; nothing leaves
the machine. Skipped without gradio, which requirements-dev.txt installs (through
requirements-app.txt)."""

import json
import os
import subprocess
import sys
import wave
from pathlib import Path

import mido
import pytest

pytest.importorskip(
    "gradio", reason="the app needs gradio: pip install -c constraints.txt -r requirements-app.txt"
)
from gradio_client import Client  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from test_sample import ENV, LABELS, run  # noqa: F401 (run: the tiny random checkpoint fixture)

import app  # noqa: E402
import prompt  # noqa: E402
import sample  # noqa: E402
import tokenizer  # noqa: E402
from files import UserError  # noqa: E402

OUTPUTS = ["status", "understood", "roll", "audio", "midi", "measured", "history", "files"]


def app_data(root):
    """A data folder with clusters.json whose centroids embed the run's labels for real."""
    root.mkdir(parents=True, exist_ok=True)
    centroids = prompt.embed(LABELS)
    (root / "clusters.json").write_text(
        json.dumps(
            dict(
                embedder=prompt.DEFAULT_EMBEDDER,
                k=len(LABELS),
                labels=LABELS,
                centroids=centroids.tolist(),
            )
        )
    )
    return root


@pytest.fixture(scope="module")
def served(run, tmp_path_factory):
    """The app on 127.0.0.1 (the first free port from 7860) -> (its address, the loaded dict, the
    results folder). Gradio's copies of served files go to a temporary folder, not /tmp/gradio."""
    root = tmp_path_factory.mktemp("app")
    os.environ["GRADIO_TEMP_DIR"] = str(root / "gradio")
    results = root / "results"
    loaded = app.load(
        app.parse_args(
            [
                "--out_dir",
                str(run),
                "--data_dir",
                str(app_data(root / "data")),
                "--results_dir",
                str(results),
                "--device",
                "cpu",
            ]
        )
    )
    page = app.build_page(loaded)
    url = app.serve(page, loaded)
    yield url, loaded, results
    page.close()
    del os.environ["GRADIO_TEMP_DIR"]


def generate(client, **fields):
    """One press of Generate through the client -> {output name: value}."""
    values = (
        dict(
            prompt="",
            tempo="",
            meter="",
            key="",
            instruments="",
            chords="",
            guidance=1.0,
            temperature=1.0,
            seconds=5,
            seed="",
        )
        | fields
    )
    return dict(
        zip(OUTPUTS, client.predict(*[values[f] for f in app.FIELDS], api_name="/generate"))
    )


def test_a_prompt_in_a_midi_a_wav_and_a_piano_roll_out(served, tmp_path):
    url, loaded, results = served
    client = Client(url, download_files=str(tmp_path), verbose=False)
    out = generate(
        client, prompt="a slow waltz in A minor for strings", tempo="72", guidance=2.0, seed="7"
    )
    assert out["status"].startswith("Made ") and "seed 7" in out["status"], out["status"]
    midi = mido.MidiFile(out["midi"])  # the file the page offers to download parses as MIDI
    served_bytes = Path(out["midi"]).read_bytes()
    assert served_bytes == (results / Path(out["midi"]).name).read_bytes(), (
        "the page serves what render wrote"
    )
    assert midi.length > 0
    score = tokenizer.read_midi(out["midi"])
    assert {n.program for n in score.notes} <= {40, 41, 42}, (
        "only the instruments asked for (strings)"
    )
    with wave.open(out["audio"]) as w:
        assert (w.getframerate(), w.getnchannels()) == (
            44100,
            2,
        ) and w.getnframes() > 44100 * midi.length * 0.9
    assert Path(out["roll"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # what was understood, as --dry_run reads it, with instrument names; the override of the tempo
    # noted
    for shown in (
        "| meter | 3/4 |",
        "| key | A minor |",
        "| tempo bpm | 72 |",
        "| instruments | Violin, Viola, Cello |",
    ):
        assert shown in out["understood"], out["understood"]
    assert "--tempo overrides the prompt's tempo bpm" in out["understood"]
    for fact in ("length", "tempo", "meter", "estimated key", "instruments", "notes"):
        assert f"| {fact} |" in out["measured"]
    assert (results / "index.html").is_file(), (
        "each piece also goes into the results folder's gallery"
    )


def test_the_page_makes_what_sample_py_makes(served, tmp_path):
    """The same prompt, flags, seed and settings give the same notes on the page as on the command
    line: one generation path, no second copy."""
    url, loaded, _ = served
    client = Client(url, download_files=str(tmp_path), verbose=False)
    out = generate(
        client,
        prompt="a lively jig",
        key="E minor",
        guidance=2.0,
        temperature=0.9,
        seconds=6,
        seed="11",
    )
    made = sample.main(
        [
            "--out_dir",
            str(Path(loaded["ckpt"]["path"]).parent),
            "--data_dir",
            loaded["data_dir"],
            "--prompt",
            "a lively jig",
            "--key",
            "E minor",
            "--guidance",
            "2",
            "--temperature",
            "0.9",
            "--seconds",
            "6",
            "--seed",
            "11",
            "--num_samples",
            "1",
            "--sample_dir",
            str(tmp_path / "cli"),
        ]
    )
    assert Path(made[0]).name == Path(out["midi"]).name
    assert tokenizer.read_midi(out["midi"]).notes, "a piece with notes, not two empty files"
    assert Path(made[0]).read_bytes() == Path(out["midi"]).read_bytes()


def test_earlier_results_stay_listed(served, tmp_path):
    url, loaded, _ = served
    client = Client(url, download_files=str(tmp_path), verbose=False)
    before = len(loaded["history"])
    first = generate(client, prompt="a fast piece for piano", seed="1")
    second = generate(client, prompt="drums", seed="2")
    assert len(loaded["history"]) == before + 2
    rows = [line for line in second["history"].splitlines() if line.startswith("| 20")]
    assert len(rows) == before + 2 and "drums" in rows[0] and "a fast piece for piano" in rows[1], (
        "newest first"
    )
    names = [Path(p).name for p in second["files"]]
    assert names[:2] == [Path(second["midi"]).name, Path(first["midi"]).name]


def test_a_malformed_field_is_one_line_on_the_page(served, tmp_path):
    url, loaded, _ = served
    client = Client(url, download_files=str(tmp_path), verbose=False)
    before = len(loaded["history"])
    for fields, words in [
        (dict(instruments="kazoo"), "'kazoo' is not an instrument"),
        (dict(key="H major"), "H major"),
        (dict(seed="one"), "whole number"),
    ]:
        out = generate(client, prompt="a jig", **fields)
        assert out["status"].startswith("**error:**") and words in out["status"], out["status"]
        assert "\n" not in out["status"] and "Traceback" not in out["status"]
        assert out["midi"] is None and out["audio"] is None and out["roll"] is None
    assert len(loaded["history"]) == before, "a refused request adds nothing"


def test_no_checkpoint_and_no_gradio_are_one_line_each(tmp_path, monkeypatch):
    r = subprocess.run(
        [sys.executable, "app.py", "--out_dir", str(tmp_path / "none")],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        r.returncode == 1 and r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    ), r.stderr
    assert "no checkpoint in" in r.stderr and "python train.py" in r.stderr
    # as if requirements-app.txt were not installed
    monkeypatch.setitem(sys.modules, "gradio", None)
    with pytest.raises(UserError, match="requirements-app.txt"):
        app.build_page({})


def test_ckpt_best_chooses_the_best_checkpoint_as_in_sample_py(run, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "ckpt_best.pt").write_bytes((run / "ckpt_0000010.pt").read_bytes())
    args = ["--out_dir", str(out), "--results_dir", str(tmp_path / "app"), "--device", "cpu"]
    loaded = app.load(app.parse_args([*args, "--ckpt", "best"]))
    assert loaded["ckpt"]["path"] == str(out / "ckpt_best.pt")
    with pytest.raises(UserError, match="ckpt_best.pt not found; make one with"):
        app.load(app.parse_args(["--out_dir", str(tmp_path), "--ckpt", "best", "--device", "cpu"]))
