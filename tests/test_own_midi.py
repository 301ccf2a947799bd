"""The README's "Your own MIDI" steps, run as written: the four command lines are read from
README.md itself and run in a scratch folder that holds the project's scripts, a tiny generated MIDI
folder in data/my_midi/midi/ and a tiny random checkpoint in out/amt_cpu/ (test_sample.py's),
standing in for the demo's. Only `python` is replaced, by this interpreter."""

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from test_evaluate import styled_piece  # noqa: E402
from test_sample import ENV, MODEL_ARGS, run  # noqa: F401 (run: the tiny random checkpoint fixture)


def readme_steps():
    """The command lines of the code block under the README's "Your own MIDI" heading."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Your own MIDI\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_the_readme_steps_run_as_written(run, tmp_path):
    steps = readme_steps()
    assert [shlex.split(s)[1] for s in steps] == [
        "prepare.py",
        "cluster.py",
        "train.py",
        "sample.py",
    ]
    for path in ROOT.glob("*.py"):  # the project, as a clone has it: scripts, libraries and config/
        (tmp_path / path.name).symlink_to(path)
    (tmp_path / "config").symlink_to(ROOT / "config")
    midi = tmp_path / "data" / "my_midi" / "midi"
    midi.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(16):
        styled_piece(i % 3, rng).save(midi / f"tune_{i:02d}.mid")
    (tmp_path / "out" / "amt_cpu").mkdir(parents=True)
    shutil.copy(run / "ckpt_0000010.pt", tmp_path / "out" / "amt_cpu")  # "after make demo"
    for step in steps:
        argv = shlex.split(step)
        assert argv[0] == "python", step
        r = subprocess.run(
            [sys.executable, *argv[1:]],
            cwd=tmp_path,
            env=ENV,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert r.returncode == 0, f"{step}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    tuned = torch.load(
        tmp_path / "out" / "my_midi" / "ckpt_best.pt", map_location="cpu", weights_only=True
    )
    assert (
        tuned["config"]["init_from"] == "out/amt_cpu"
        and tuned["config"]["data_dir"] == "data/my_midi"
    )
    assert {k: tuned["model_args"][k] for k in ("n_layer", "n_embd", "block_size")} == {
        k: MODEL_ARGS[k] for k in ("n_layer", "n_embd", "block_size")
    }, "the shape of the model it started from"
    samples = tmp_path / "out" / "my_midi" / "samples"
    # sample.py's default count
    assert len(list(samples.glob("*.mid"))) == len(list(samples.glob("*.wav"))) == 3
    assert (samples / "index.html").is_file()
