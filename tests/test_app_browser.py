"""The app in a real browser: `python app.py` starts, headless Chromium opens its page, a prompt is
typed, Generate is pressed, and an audio element appears with links that download a WAV and a MIDI
file (tests/browser_check.py). Chromium is Debian's package, driven over a pipe by the DevTools
protocol: nothing to download at test time. Skipped, with the reason, where gradio or Chromium is
missing (apt-get install -y chromium)."""

import os
import sys
from pathlib import Path

import pytest

pytest.importorskip(
    "gradio", reason="the app needs gradio: pip install -c constraints.txt -r requirements-app.txt"
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import browser_check  # noqa: E402
from test_app import app_data  # noqa: E402
from test_sample import ENV, run  # noqa: E402,F401  (run: the tiny random checkpoint fixture)


@pytest.mark.skipif(
    not browser_check.chromium_path(),
    reason="no Chromium on this machine: apt-get install -y chromium",
)
def test_typing_a_prompt_and_pressing_generate_shows_a_player_and_a_download(run, tmp_path):
    data = app_data(tmp_path / "data")
    env = ENV | {"GRADIO_TEMP_DIR": str(tmp_path / "gradio")}
    proc, url = browser_check.start_app(
        [
            "--out_dir",
            str(run),
            "--data_dir",
            str(data),
            "--results_dir",
            str(tmp_path / "results"),
            "--device",
            "cpu",
        ],
        env=env,
    )
    try:
        shown = browser_check.check(
            url, prompt="a gentle waltz for strings", screenshot=tmp_path / "page.png"
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert shown["status"].startswith("Made "), shown
    assert shown["audio"].startswith("<audio"), shown
    assert shown["wav_head"][:4] == "RIFF" and shown["wav_head"][8:12] == "WAVE", (
        "the player's file is a WAV"
    )
    assert shown["midi_head"][:4] == "MThd", "the download is a MIDI file"
    made = sorted(p.name for p in (tmp_path / "results").glob("*.mid"))
    assert made == [shown["midi"].rsplit("/", 1)[-1]], "the page offers the file the app wrote"
    assert (tmp_path / "page.png").read_bytes()[:4] == b"\x89PNG" and os.path.getsize(
        tmp_path / "page.png"
    ) > 10_000
