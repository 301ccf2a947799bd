"""Hearing and seeing the samples: the SoundFont render (each instrument sounds, drums on the drum
kit, the length matches the MIDI), the gallery page (every picture, player and link resolves to a
file; re-running adds no duplicate card), and a log without progress-bar redraws when the output is
not a terminal. Hermetic, CPU only: the SoundFont is the one inside the pretty_midi wheel."""

import json
import os
import subprocess
import sys
import wave
from html.parser import HTMLParser
from pathlib import Path

import mido
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from midi_factory import midi_file, notes, tempo, track  # noqa: E402
from test_evaluate import styled_piece  # noqa: E402
from test_sample import ENV, run  # noqa: E402,F401  (run: the tiny random checkpoint fixture)
from test_train import TINY  # noqa: E402

import render  # noqa: E402
import sample  # noqa: E402
import tokenizer  # noqa: E402
from files import UserError  # noqa: E402

SR = render.SAMPLE_RATE
MELODY = [(beat, 0.5, 72 + 2 * i) for i, beat in enumerate([0, 1, 2, 3])]  # flute, beats 0-3.5
# kit, beats 8-11.25
DRUMS = [(beat, 0.25, pitch) for beat, pitch in zip([8, 9, 10, 11], [36, 38, 42, 38])]


def read_wav(path):
    with wave.open(str(path)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (SR, 2, 2)
        # (samples, 2)
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    return pcm.astype(np.float64) / 32768


def onset_rms(audio, beats, bpm=120, window=0.15):
    """RMS over the first `window` seconds after each onset (beats at bpm), both channels."""
    starts = [round(b * 60 / bpm * SR) for b in beats]
    return float(
        np.sqrt(np.mean(np.concatenate([audio[s : s + round(window * SR)] for s in starts]) ** 2))
    )


def test_drums_and_melody_each_sound_and_the_length_matches_the_midi(tmp_path):
    path = tmp_path / "duo.mid"
    midi_file([track([tempo(0, 120)] + notes(0, MELODY, program=73)), track(notes(9, DRUMS))]).save(
        path
    )
    wav, seconds = render.render_wav(str(path))
    audio = read_wav(wav)
    midi_seconds = mido.MidiFile(path).length  # 5.625 s: the last drum note ends
    assert abs(len(audio) / SR - seconds) < 1e-3
    assert abs(len(audio) / SR - midi_seconds) <= 0.5 + render.RELEASE_SECONDS
    silence = onset_rms(audio, [6.0, 6.5])  # between the parts, once the reverb has died away
    melody, drums = (
        onset_rms(audio, [b for b, _, _ in MELODY]),
        onset_rms(audio, [b for b, _, _ in DRUMS]),
    )
    assert silence < 0.005, f"sound where no note plays: RMS {silence}"
    assert min(melody, drums) > 0.05 and min(melody, drums) > 10 * silence, (melody, drums, silence)
    assert np.abs(audio).max() < 1.0, "clipped"


def spectral_centroid(audio):
    spectrum = np.abs(np.fft.rfft(audio.mean(axis=1)))
    return float((spectrum * np.fft.rfftfreq(len(audio), 1 / SR)).sum() / spectrum.sum())


def test_drums_play_on_the_drum_kit_not_a_piano(tmp_path):
    """The same key (42, closed hi-hat on a GM kit) on channel 10 and on a piano: a hi-hat is bright
    noise, the piano's F#2 a low tone."""
    hits = [(b, 0.25, 42) for b in range(4)]
    midi_file([track([tempo(0, 120)] + notes(9, hits))]).save(tmp_path / "kit.mid")
    midi_file([track([tempo(0, 120)] + notes(0, hits, program=0))]).save(tmp_path / "piano.mid")
    kit = spectral_centroid(read_wav(render.render_wav(str(tmp_path / "kit.mid"))[0]))
    piano = spectral_centroid(read_wav(render.render_wav(str(tmp_path / "piano.mid"))[0]))
    assert kit > 3000 and piano < 1500 and kit > 3 * piano, (kit, piano)


def test_a_synthesiser_that_fails_is_one_line_and_the_midi_is_written(
    run, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(
        render, "soundfont_path", lambda: (_ for _ in ()).throw(UserError("no SoundFont"))
    )
    monkeypatch.setattr(render, "_SOUNDFONT", {})
    paths = sample.main(
        [
            "--out_dir",
            str(run),
            "--token",
            "1",
            "--num_samples",
            "1",
            "--max_new_tokens",
            "40",
            "--seed",
            "3",
            "--sample_dir",
            str(tmp_path),
            "--device",
            "cpu",
            "--audio",
        ]
    )
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if line.startswith("no audio:")] == [
        "no audio: no SoundFont"
    ]
    assert os.path.isfile(paths[0]) and not os.path.exists(paths[0][:-4] + ".wav")
    assert "no audio: sample with --audio" in (tmp_path / "index.html").read_text()


class Links(HTMLParser):
    """The files a page points at: img src, audio src, a href; and the cards' ids."""

    def __init__(self):
        super().__init__()
        self.links, self.cards = [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("img", "audio") and "src" in a:
            self.links.append((tag, a["src"]))
        elif tag == "a" and "href" in a:
            self.links.append((tag, a["href"]))
        elif tag == "article":
            self.cards.append(a["id"])


def page_links(page):
    """Parse a gallery page; assert every link resolves to a file beside it -> the parser."""
    from urllib.parse import unquote

    parsed = Links()
    parsed.feed(Path(page).read_text(encoding="utf-8"))
    for tag, url in parsed.links:
        assert "://" not in url and not url.startswith("/"), (
            f"{tag} {url}: the page must open from disk"
        )
        assert (Path(page).parent / unquote(url)).is_file(), f"{tag} {url} does not resolve"
    return parsed


def test_gallery_links_resolve_newest_first_and_no_duplicates(run, tmp_path):
    common = [
        "--out_dir",
        str(run),
        "--num_samples",
        "2",
        "--max_new_tokens",
        "60",
        "--device",
        "cpu",
        "--sample_dir",
        str(tmp_path),
        "--audio",
    ]
    first = sample.main(common + ["--token", "0", "--seed", "1"])
    second = sample.main(common + ["--token", "2", "--seed", "2"])
    again = sample.main(common + ["--token", "2", "--seed", "2"])  # the same files once more
    assert again == second
    parsed = page_links(tmp_path / "index.html")
    assert parsed.cards == [os.path.basename(p) for p in second + first], (
        "newest first, each file once"
    )
    tags = [tag for tag, _ in parsed.links]
    assert tags.count("img") == tags.count("audio") == tags.count("a") == 4
    text = (tmp_path / "index.html").read_text()
    # LABELS[2] is "drums"
    for fact in ("estimated key", "instruments", "notes", "SEMANTIC_TOKEN_2", "drums"):
        assert fact in text
    # a card whose MIDI is gone leaves the page at the next run; the rest stay whole
    os.remove(first[0])
    sample.main(common + ["--token", "2", "--seed", "2"])
    assert len(page_links(tmp_path / "index.html").cards) == 3


def test_a_card_shows_every_field_the_prompt_was_understood_as(tmp_path):
    score = tokenizer.Score(
        notes=[tokenizer.Note(onset=0, duration=12, pitch=57, program=48, velocity=80)],
        tempos=[(0, 90.0)],
        time_signatures=[(0, 3, 4)],
        end_step=36,
    )
    path = tmp_path / "x.mid"
    tokenizer.score_to_midi(score).save(path)
    understood = {
        "prompt": "a slow waltz in A minor for strings",
        "token": "SEMANTIC_TOKEN_4",
        "cosine": 0.61234,
        "tempo_bpm": 72.0,
        "meter": "3/4",
        "key": "A minor",
        "instruments": [48, tokenizer.DRUMS],
    }
    card = render.sample_card(
        str(path), score, understood, "a waltz", folder=str(tmp_path), made="2026-01-01 00:00:00"
    )
    html = render.card_html(card)
    # 3 quarters at 90 bpm
    for shown in (
        "a slow waltz in A minor for strings",
        "0.612",
        "tempo bpm",
        "72",
        "3/4",
        "A minor",
        "90 bpm",
        "2.0 s",
    ):
        assert shown in html, shown
    # instruments asked for are named as "measured" names them, never as program numbers
    assert "<th>instruments</th><td>String Ensemble 1, drums</td>" in html, html
    assert "48" not in html and "72.000" not in html
    assert json.loads(json.dumps(card)) == card, "a card is plain types: it is kept in gallery.json"


def test_demo_pipeline_log_has_no_carriage_return_redraws(tmp_path):
    """prepare, cluster, train and sample as `make demo` runs them, with output to a pipe (not a
    terminal)."""
    data, out = tmp_path / "data", tmp_path / "out"
    (data / "midi").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(12):
        styled_piece(i % 3, rng).save(data / "midi" / f"piece_{i:02d}.mid")
    # a prompt loads the embedder once more
    steps = [
        ["prepare.py", "--data_dir", data, "--val_fraction", "0.3"],
        ["cluster.py", "--data_dir", data, "--k", "3"],
        [
            "train.py",
            *TINY,
            f"--data_dir={data}",
            f"--out_dir={out}",
            "--max_iters=2",
            "--eval_interval=2",
        ],
        [
            "sample.py",
            "--out_dir",
            out,
            "--prompt",
            "slow low piano chords",
            "--num_samples",
            "1",
            "--seed",
            "1",
            "--max_new_tokens",
            "64",
            "--device",
            "cpu",
            "--audio",
        ],
    ]
    log = b""
    for step in steps:  # bytes, not text=True: universal newlines would turn a redraw's \r into \n
        r = subprocess.run(
            [sys.executable, *map(str, step)],
            cwd=ROOT,
            env=ENV,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert r.returncode == 0, r.stdout.decode()
        log += r.stdout
    assert b"\r" not in log, "a progress bar redrew in a log file:\n" + log.decode()
    log = log.decode()
    assert "gallery: " in log and (out / "samples" / "index.html").is_file()
    assert len(log.splitlines()) < 120, log
