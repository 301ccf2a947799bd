"""evaluate.py: the musical statistics on hand-made scores, then a whole evaluation of a tiny
trained model on a synthetic dataset of three clearly different styles (low slow piano, high fast
flute, drums). Hermetic, CPU only."""

import json
import math
import subprocess
import sys
from pathlib import Path

import mido
import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from midi_factory import midi_file, notes, tempo, track  # noqa: E402

import control  # noqa: E402
import evaluate  # noqa: E402
import metrics  # noqa: E402
import prepare  # noqa: E402
import prompt  # noqa: E402
import report  # noqa: E402
import tokenizer  # noqa: E402
import train  # noqa: E402
from files import UserError  # noqa: E402

torch.set_num_threads(1)  # other jobs share the cores; a model this small gains nothing from more
LABELS = ["low slow piano", "high fast flute", "drums"]
SPQ = tokenizer.STEPS_PER_QUARTER


def styled_piece(style, rng):
    """A few bars in one of three styles: 0 low slow piano chords in 4/4, 1 high fast flute runs in
    3/4, 2 drums."""
    bars = int(rng.integers(4, 8))
    if style == 0:
        spec = [
            (2 * i, 2, int(p))
            for i in range(2 * bars)
            for p in rng.choice([36, 40, 43, 45, 48], 2, replace=False)
        ]
        return midi_file([track([tempo(0, 60)] + notes(0, spec, program=0))])
    if style == 1:
        scale = [72, 74, 76, 77, 79, 81, 83, 84]
        spec = [(i / 4, 0.25, scale[int(rng.integers(8))]) for i in range(12 * bars)]
        meter = mido.MetaMessage("time_signature", numerator=3, denominator=4)
        return midi_file([track([tempo(0, 160), (0, meter)] + notes(0, spec, program=73))])
    spec = [(i / 2, 0.25, [36, 42, 38, 42][i % 4]) for i in range(8 * bars)]
    return midi_file([track([tempo(0, 120)] + notes(9, spec))])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A dataset of 48 pieces with semantic.json/clusters.json written by hand (the style is the
    id), and a run folder holding a tiny model trained on it for a few iterations by train.py."""
    root = tmp_path_factory.mktemp("eval")
    data_dir, out_dir = root / "data", root / "out"
    (data_dir / "midi").mkdir(parents=True)
    rng, semantic = np.random.default_rng(0), {}
    for i in range(48):
        name = f"piece_{i:02d}.mid"
        styled_piece(i % 3, rng).save(data_dir / "midi" / name)
        semantic[name] = i % 3
    prepare.prepare(str(data_dir), val_fraction=0.3, workers=1, quiet=True)
    (data_dir / "semantic.json").write_text(json.dumps(semantic))
    sizes = np.bincount(list(semantic.values())).tolist()
    centroids = prompt.embed(
        LABELS
    ).tolist()  # so that prompts find their nearest style, as sample.py's do
    (data_dir / "clusters.json").write_text(
        json.dumps(
            {
                "k": 3,
                "labels": LABELS,
                "sizes": sizes,
                "centroids": centroids,
                "embedder": prompt.DEFAULT_EMBEDDER,
            }
        )
    )
    train.train(
        train.parse_config(
            [
                f"--data_dir={data_dir}",
                f"--out_dir={out_dir}",
                "--n_layer=2",
                "--n_head=2",
                "--n_embd=32",
                "--block_size=64",
                "--batch_size=8",
                "--max_iters=150",
                "--eval_interval=150",
                "--eval_iters=1",
                "--save_interval=150",
                "--learning_rate=3e-3",
                "--warmup_iters=5",
                "--min_lr=3e-4",
                "--dropout=0",
                "--tensorboard=false",
                "--peak_flops=1e12",
                "--device=cpu",
                "--dtype=float32",
                "--seed=1",
            ]
        )
    )
    return data_dir, out_dir


def score(spec, meter=(4, 4), bpm=120.0, end=None):
    """A Score from (onset, duration, pitch[, program]) in grid steps."""
    ns = [tokenizer.Note(o, d, p, rest[0] if rest else 0, 80) for o, d, p, *rest in spec]
    return tokenizer.Score(
        notes=ns,
        tempos=[(0, bpm)],
        time_signatures=[(0, *meter)],
        end_step=end or max(n.onset + n.duration for n in ns),
    )


def test_statistics_of_hand_made_scores():
    c_major = metrics.piece_stats(
        score([(SPQ * i, SPQ, p) for i, p in enumerate([60, 62, 64, 65, 67, 69, 71, 72])])
    )
    assert c_major["scale"] == 1.0 and c_major["polyphony"] == 1.0 and c_major["density"] == 1.0
    assert c_major["pc_entropy"] == pytest.approx(
        -sum(s * math.log2(s) for s in [2 / 8] + [1 / 8] * 6)
    )
    assert c_major["empty_beats"] == 0.0 and c_major["all_bars"]
    chromatic = metrics.piece_stats(score([(0, SPQ, 60 + p) for p in range(12)]))
    assert chromatic["pc_entropy"] == pytest.approx(math.log2(12)) and chromatic[
        "scale"
    ] == pytest.approx(7 / 12)
    assert chromatic["polyphony"] == 12.0
    # a chord of 3 for a beat, then three silent beats, then a note: in 4/4 the second bar is empty,
    # in 2/4 not
    gap = [(0, SPQ, 60), (0, SPQ, 64), (0, SPQ, 67), (4 * SPQ + 4 * SPQ, SPQ, 60)]
    four = metrics.piece_stats(score(gap))
    assert four["polyphony"] == pytest.approx((3 * SPQ + SPQ) / (2 * SPQ))
    assert four["empty_beats"] == pytest.approx(7 / 9) and not four["all_bars"]
    two = metrics.piece_stats(
        score([(0, SPQ, 60), (2 * SPQ, SPQ, 62), (4 * SPQ, SPQ, 64)], meter=(2, 4))
    )
    assert two["all_bars"]
    drums = metrics.piece_stats(score([(0, 6, 36, tokenizer.DRUMS), (6, 6, 42, tokenizer.DRUMS)]))
    # 6 steps
    assert (
        np.isnan(drums["pc_entropy"]) and np.isnan(drums["scale"]) and drums["durations"][4] == 1.0
    )
    assert len(drums["features"]) == len(c_major["features"])
    assert np.isfinite(metrics.feature_matrix([drums, c_major])).all(), "the classifier gets no nan"


def test_closeness_is_zero_for_the_same_pieces_and_grows_with_the_difference():
    rng = np.random.default_rng(0)
    real = [
        metrics.piece_stats(
            score([(3 * i, 3, int(p)) for i, p in enumerate(rng.integers(60, 72, 16))])
        )
        for _ in range(10)
    ]
    slower = [
        metrics.piece_stats(
            score([(12 * i, 12, int(p)) for i, p in enumerate(rng.integers(60, 72, 16))])
        )
        for _ in range(10)
    ]
    scale = {k: 1.0 for k in metrics.METRICS}
    same = metrics.closeness(real, real, scale)
    assert all(same[k] == 0 for k in metrics.METRICS) and same["durations"] == pytest.approx(1.0)
    other = metrics.closeness(real, slower, scale)
    assert other["density"] == pytest.approx(4 - 1)  # 4 notes a beat against 1
    assert other["durations"] == pytest.approx(0.0)  # quarter notes against sixteenths: no overlap


PROMPTS = [
    "a slow piece for piano",
    "a fast flute melody in 3/4",
    "a march in C major for piano and drums",
]


def test_evaluation_writes_the_report_with_numbers_in_range(run_dir, tmp_path):
    data_dir, out_dir = run_dir
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    res = evaluate.main(
        [
            "--out_dir",
            str(out_dir),
            "--num_samples",
            "3",
            "--guidance",
            "1,2",
            "--max_new_tokens",
            "64",
            "--device",
            "cpu",
            "--dtype",
            "float32",
            "--audio",
            "--prompts",
            str(tmp_path / "prompts.txt"),
        ]
    )
    o = res.likelihood["overall"]
    loss, unigram = float(o["loss"][0]), float(o["baseline_loss"][0])
    assert loss > 0 and unigram > 0 and o["loss_uncond"][0] > 0
    assert 0 <= o["acc"][0] <= 1 and 0 <= o["baseline_acc"][0] <= 1
    assert loss < unigram, "150 iterations on three rigid styles should beat token frequencies"
    # every val token is scored once: the windows cover val.bin except the tails of events cut at a
    # window's end
    val_tokens = json.loads((data_dir / "meta.json").read_text())["counts"]["val_tokens"]
    assert 0.9 * val_tokens <= o["tokens"][0] <= val_tokens
    types = res.likelihood["type"]
    assert types["tokens"].sum() == o["tokens"][0]
    assert np.nansum(types["loss"] * types["tokens"]) / types["tokens"].sum() == pytest.approx(
        loss, rel=1e-5
    )
    assert res.ceiling.chance < res.ceiling.ceiling <= 1, (
        "the classifier must tell three clearly different styles apart"
    )
    assert res.ceiling.tokens == [0, 1, 2] and set(res.adherence.share) == {1.0, 2.0}
    assert all(
        0 <= a <= 1 for a in res.adherence.share.values()
    ) and res.adherence.chance == pytest.approx(1 / 3)
    cl = res.closeness
    assert cl.valid_decode == 1.0 and 0 <= cl.valid_bars <= 1 and cl.real_bars > 0.5
    for c, (gen, ref) in cl.distance.items():  # pitch metrics do not apply to drums: nan there
        assert (
            all(gen[k] >= 0 for k in ("polyphony", "density", "empty_beats"))
            and 0 <= gen["durations"] <= 1 + 1e-9
        )
        assert (c == LABELS.index("drums")) == np.isnan(ref["pc_entropy"]), (
            "real drums have no pitch classes"
        )
    text = Path(res.report).read_text()
    for section in (
        "## 1. Likelihood",
        "## 2. Conditioning adherence",
        "## 3. Closeness",
        "## 4. Validity",
    ):
        assert section in text
    assert (
        f"{math.exp(loss):.2f}" in text
        and "python evaluate.py --out_dir" in text
        and LABELS[1] in text
    )
    # the control report: every prompt on the user's path, the model alone and unconditioned
    c = res.control
    assert (
        "## 5. Control" in text
        and c.seen == [0, 73, tokenizer.DRUMS]
        and list(c.sets) == ["prompts.txt"]
    )
    assert len(c.rows) == len(control.PATHS) * 4 * len(PROMPTS)
    for key, v in c.summary.items():
        assert (
            v["n"] > 0
            and 0 <= v["ci"][0] <= v["mean"] + 1e-9
            and v["mean"] <= v["ci"][1] + 1e-9 <= 1 + 2e-9
        ), v
    measured = {m for _, path, m in c.summary if path == "user"}
    assert {
        "key",
        "key (music21)",
        "mode",
        "meter",
        "tempo word",
        "instruments exact",
        "polyphony outlier",
    } <= measured
    # the user's path is sample.py's: notes only on the instruments asked for, whatever the model
    # would rather play; where it is not exact, an asked instrument is missing (every one asked here
    # is in the training data)
    user = [
        row["hits"]
        for row in c.rows
        if row["path"] == "user" and "instruments exact" in row["hits"]
    ]
    assert all(h["instruments exact"] or h["instrument recall"] < 1 for h in user) and any(
        h["instruments exact"] for h in user
    )
    for path in ("user", "model"):
        assert set(c.closeness["prompts.txt"][path]) == set(metrics.METRICS)
    # dropping the single lines (1 voice, the least) can only raise it
    parts, every = c.polyphony_p95
    assert (
        parts >= every >= 1 and "### Prompt set: prompts.txt" in text and "long CPU preset" in text
    )
    print({k: round(v["mean"], 3) for k, v in c.summary.items()})
    for png in ("likelihood.png", "adherence.png", "closeness.png"):
        assert (out_dir / "eval" / png).read_bytes()[:4] == b"\x89PNG"
        assert f"({png})" in text
    # the page beside the report: its tables, plots and a few samples per token, every link a file
    # on disk
    from test_audio_gallery import page_links  # here: that module imports this one

    page = page_links(res.page)
    assert len(page.cards) == 3 * report.EXAMPLES_PER_TOKEN
    assert [t for t, _ in page.links].count("audio") == 3 * report.EXAMPLES_PER_TOKEN
    assert {u for t, u in page.links if t == "img"} >= {
        "likelihood.png",
        "adherence.png",
        "closeness.png",
    }
    assert "<table>" in Path(res.page).read_text() and LABELS[1] in Path(res.page).read_text()


def test_missing_inputs_are_one_line_that_say_what_to_run(run_dir, tmp_path):
    data_dir, out_dir = run_dir
    r = subprocess.run(
        [sys.executable, "evaluate.py", "--out_dir", str(tmp_path / "nothing")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr and "python train.py" in r.stderr
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("meta.json", "index.jsonl", "train.bin", "val.bin"):
        (bare / name).write_bytes((data_dir / name).read_bytes())
    with pytest.raises(
        UserError, match=r"semantic.json; make it with: python cluster.py --data_dir"
    ):
        evaluate.run(evaluate.Settings(out_dir=str(out_dir), data_dir=str(bare), device="cpu"))


def test_realised_reads_key_mode_and_instruments_from_the_notes():
    # a classifier that always names one label: realised() must compare it with what was asked
    class Fixed:
        def __init__(self, label):
            self.label = label

        def predict(self, x):
            return np.array([self.label] * len(x))

    classifiers = {"meter": {"model": Fixed("3/4")}, "tempo word": {"model": Fixed("slow")}}
    c_major = [
        (SPQ * i, SPQ, p, 0) for i, p in enumerate([60, 62, 64, 65, 67, 69, 71, 72, 67, 64, 60])
    ]
    piece = score(c_major, bpm=66)
    asked = prompt.parse_prompt("a slow waltz in C major for piano and violin")
    hits = metrics.realised(piece, asked, key="C major", classifiers=classifiers, seen={0, 40})
    assert hits == {
        "key": True,
        "key (music21)": True,
        "mode": True,
        "mode (music21)": True,
        "meter": True,
        "tempo word": True,
        "tempo token": True,
        "instruments exact": False,
        "instrument recall": 0.5,
        "instrument precision": 1.0,
    }
    asked = prompt.parse_prompt("a fast march in F sharp minor for flute and drums")
    # no drums
    hits = metrics.realised(
        piece, asked, key="F sharp minor", classifiers=classifiers, seen={0, 73}
    )
    assert hits == {
        "key": False,
        "key (music21)": False,
        "mode": False,
        "mode (music21)": False,
        "meter": False,
        "tempo word": False,
        "tempo token": False,
        "instruments exact": False,
        "instrument recall": 0.0,
        "instrument precision": 0.0,
    }
    hits = metrics.realised(
        piece, prompt.parse_prompt("a piano piece"), key=None, classifiers=classifiers, seen={0}
    )
    assert hits == {
        "instruments exact": True,
        "instrument recall": 1.0,
        "instrument precision": 1.0,
    }
    assert "instrument recall" not in metrics.realised(
        piece, prompt.parse_prompt("for drums"), key=None, classifiers=classifiers, seen={0}
    )


def test_wilson_interval():
    low, high = metrics.wilson(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-3) and high == pytest.approx(0.9433, abs=1e-3)
    assert metrics.wilson(0, 20)[0] == 0 and metrics.wilson(20, 20)[1] == pytest.approx(1)


def test_the_readme_and_demo_prompts_scored_are_the_ones_users_see():
    readme, makefile = (ROOT / "README.md").read_text(), (ROOT / "Makefile").read_text()
    for text, flags in control.README_PROMPTS:
        line = next((line for line in readme.splitlines() if f'"{text}"' in line), None)
        assert line is not None, f"README has no example {text!r}"
        assert all(f"--{k} {v}" in line or f'--{k} "{v}"' in line for k, v in flags.items()), line
    assert control.DEMO_PROMPTS_FILE in makefile
    assert len(control.prompt_sets("demo")["demo"]) == 3
