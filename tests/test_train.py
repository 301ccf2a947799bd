"""train.py: config parsing, batches, checkpoints, exact resume, DDP. Hermetic and CPU only: every
test builds a tiny dataset that follows the dataset folder contract, from random scores and
tokenizer.py."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import attributes  # noqa: E402
import augment  # noqa: E402
import checkpoints  # noqa: E402
import dataset  # noqa: E402
import describe  # noqa: E402
import prepare  # noqa: E402
import tokenizer  # noqa: E402
import train  # noqa: E402
from checkpoints import latest_checkpoint  # noqa: E402
from files import UserError  # noqa: E402
from model import GPT, GPTConfig, autocast  # noqa: E402

# tiny models gain nothing from a second thread, and lose a lot when the cores are busy
torch.set_num_threads(1)

# a model small enough that a few iterations take well under a second
TINY = [
    "--n_layer=2",
    "--n_head=2",
    "--n_embd=32",
    "--block_size=32",
    "--batch_size=4",
    "--eval_iters=2",
    "--dropout=0.1",
    "--learning_rate=1e-3",
    "--min_lr=1e-4",
    "--warmup_iters=2",
    "--log_interval=1",
    "--tensorboard=false",
    "--peak_flops=1e12",
    "--device=cpu",
    "--seed=7",
]


def make_dataset(root, n_files=16, seed=0):
    """A dataset folder: random scores encoded by tokenizer.py, a quarter of them in val, most with
    a semantic id. Files range from shorter than a window to several windows; long notes give
    DURATION runs."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    index, semantic, tokens, offset = [], {}, {"train": [], "val": []}, {"train": 0, "val": 0}
    for i in range(n_files):
        n_notes = int(rng.integers(2, 50))
        notes = [
            tokenizer.Note(
                onset=int(rng.integers(0, 6 * n_notes)),
                duration=int(rng.integers(1, 120)),
                pitch=int(rng.integers(30, 90)),
                program=int(rng.choice([0, 40, 128])),
                velocity=int(rng.integers(1, 128)),
            )
            for _ in range(n_notes)
        ]
        notes.sort(key=lambda n: (n.onset, n.program, n.pitch))
        score = tokenizer.Score(
            notes=notes,
            tempos=[(0, 100.0)],
            time_signatures=[(0, 3, 4)],
            end_step=max(n.onset + n.duration for n in notes),
        )
        file_tokens = tokenizer.score_to_tokens(score)
        split, name = ("val" if i % 4 == 0 else "train"), f"piece_{i}.mid"
        # the attributes prepare.py stores, so windows get a full prefix
        measured = describe.measure(score)
        index.append(
            dict(
                midi_file=name,
                split=split,
                start=offset[split],
                end=offset[split] + len(file_tokens),
                notes=n_notes,
                **{k: measured[k] for k in dataset.INDEX_ATTRIBUTES},
            )
        )
        offset[split] += len(file_tokens)
        tokens[split].append(file_tokens)
        if i % 5:  # files 0, 5, 10, 15 have no semantic id
            semantic[name] = i % 3
    for split in tokens:
        np.concatenate(tokens[split]).astype(np.uint16).tofile(root / f"{split}.bin")
    (root / "index.jsonl").write_text("".join(json.dumps(row) + "\n" for row in index))
    (root / "semantic.json").write_text(json.dumps(semantic))
    (root / "clusters.json").write_text(
        json.dumps({"k": 3, "labels": ["slow strings", "fast piano", "drums"]})
    )
    # the real producer's meta
    (root / "meta.json").write_text(json.dumps(prepare.meta_for(0.25, {})))
    return root


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data") / "tiny")


def read_log(out_dir):
    return [json.loads(line) for line in (Path(out_dir) / "log.jsonl").read_text().splitlines()]


def run_train(data_dir, out_dir, *args):
    return train.train(
        train.parse_config(TINY + [f"--data_dir={data_dir}", f"--out_dir={out_dir}", *args])
    )


# -----------------------------------------------------------------------------
# config


def test_config_rejects_unknown_keys_with_the_valid_list(tmp_path):
    with pytest.raises(UserError, match=r"unknown config key 'n_layers'.*valid keys: .*n_layer"):
        train.parse_config(["--n_layers=4"])
    config_file = tmp_path / "typo.py"
    # a module import is fine
    config_file.write_text("import math\nn_layer = 2\nlearning_rat = 1e-3\n")
    with pytest.raises(UserError, match=r"'learning_rat'.*typo.py.*valid keys"):
        train.parse_config([str(config_file)])


def test_config_converts_to_the_defaults_types(tmp_path):
    cfg = train.parse_config(
        ["--dropout=0", "--compile=false", "--batch_size", "4", "--max_iters=1e3"]
    )
    assert (cfg.dropout, cfg.compile, cfg.batch_size, cfg.max_iters) == (0.0, False, 4, 1000)
    assert type(cfg.dropout) is float and type(cfg.batch_size) is int
    assert train.parse_config(["--compile", "true"]).compile is True
    assert train.parse_config(["--compile=auto"]).compile is None
    config_file = tmp_path / "small.py"
    config_file.write_text("n_layer = 2\nlearning_rate = 1\nout_dir = 'out/x'\n")
    # the command line wins over the file
    cfg = train.parse_config([str(config_file), "--n_layer=3"])
    assert (cfg.n_layer, cfg.learning_rate, cfg.out_dir) == (3, 1.0, "out/x")
    for bad in (["--batch_size=four"], ["--batch_size=2.5"], ["--bias=maybe"], ["--n_layer"]):
        with pytest.raises(UserError):
            train.parse_config(bad)
    config_file.write_text("n_layer = '2'\n")
    with pytest.raises(UserError, match="n_layer"):
        train.parse_config([str(config_file)])


# -----------------------------------------------------------------------------
# batches


def find_window(tokens, window):
    """Positions where `window` occurs in tokens."""
    views = np.lib.stride_tricks.sliding_window_view(tokens, len(window))
    return np.flatnonzero((views == window).all(axis=1))


def test_training_windows_prefix_shift_and_padding(data_dir):
    data = dataset.load_dataset(str(data_dir))
    meta, block, P = data["meta"], 32, tokenizer.PREFIX_LEN
    index = [json.loads(line) for line in (data_dir / "index.jsonl").read_text().splitlines()]
    semantic = json.loads((data_dir / "semantic.json").read_text())
    rng = np.random.default_rng(0)
    padded_rows = mid_file_rows = 0
    for split in ("train", "val"):
        tokens = np.fromfile(data_dir / f"{split}.bin", dtype=np.uint16).astype(np.int64)
        files = [f for f in index if f["split"] == split]
        for _ in range(10):
            x, y = dataset.get_batch(data, split, rng, batch_size=8, block_size=block)
            assert x.shape == y.shape == (8, block) and x.dtype == y.dtype == np.int64
            for row_x, row_y in zip(x, y):
                assert (row_y[: P - 1] == -1).all(), "the prefix's own tokens are never targets"
                n = int((row_y >= 0).sum())  # file tokens in the window
                assert (
                    n > 0
                    and (row_y[P - 1 + n :] == -1).all()
                    and (row_y[P - 1 : P - 1 + n] >= 0).all()
                )
                assert (row_x[P + n :] == meta["pad_token"]).all(), "padding only at the end"
                assert (row_y[P - 1 : P - 2 + n] == row_x[P : P - 1 + n]).all(), (
                    "y is x shifted by one"
                )
                # where the window is in the file
                hits = find_window(tokens, row_y[P - 1 : P - 1 + n])
                assert len(hits) == 1, "random scores make every window unique"
                i = int(hits[0])
                f = next(f for f in files if f["start"] <= i < f["end"])
                assert i + n == f["end"] or n == block - P + 1, "a window stops at its file's end"
                padded_rows += n < block - P + 1
                # not the file's START: the token before ends an event, this one begins one
                if i > f["start"]:
                    mid_file_rows += 1
                    assert tokenizer.TYPE_NAMES[tokenizer.TOKEN_TYPE[tokens[i - 1]]] in (
                        "START",
                        "DURATION",
                    )
                    assert tokenizer.TYPE_NAMES[tokenizer.TOKEN_TYPE[tokens[i]]] != "DURATION"
                else:
                    assert tokens[i] == meta["start_token"]
                # the prefix is the file's own: its semantic token and the attributes measured from
                # its notes
                got, sem = attributes.read_prefix(row_x), semantic.get(f["midi_file"])
                assert got["semantic"] == (None if sem is None else tokenizer.semantic_token(sem))
                assert (
                    describe.KEY_NAMES[got["key"]] == f["key"]
                    and "%d/%d" % got["meter"] == f["meter"] == "3/4"
                )
                assert (
                    abs(got["tempo_bpm"] / f["tempo_bpm"] - 1) < 0.006
                    and got["instruments"] == f["instruments"]
                )
    assert padded_rows > 0 and mid_file_rows > 0, (
        "the dataset should exercise both short and long files"
    )


def test_training_windows_attribute_dropout(data_dir):
    data = dataset.load_dataset(str(data_dir))
    x, _ = dataset.get_batch(
        data, "train", np.random.default_rng(1), batch_size=64, block_size=32, dropout=dict(all=1.0)
    )
    assert (x[:, : tokenizer.PREFIX_LEN] == attributes.UNCOND_PREFIX).all()
    x, _ = dataset.get_batch(
        data,
        "train",
        np.random.default_rng(1),
        batch_size=400,
        block_size=32,
        dropout=dict(key=0.5, instruments=1.0),
    )
    read = [attributes.read_prefix(row) for row in x]
    assert all(
        r["instruments"] is None and r["meter"] == (3, 4) and r["tempo_bpm"] for r in read
    ), "only the slots asked for are dropped"
    dropped = np.mean([r["key"] is None for r in read])
    assert 0.4 < dropped < 0.6, f"about half the keys are dropped: {dropped}"
    assert any(r["semantic"] is not None for r in read)


def test_transposition_moves_pitched_notes_the_key_and_the_chords_together(data_dir):
    data = dataset.load_dataset(str(data_dir))
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    plain, _ = dataset.get_batch(data, "train", rng_a, batch_size=200, block_size=32)
    moved, _ = dataset.get_batch(data, "train", rng_b, batch_size=200, block_size=32, transpose=6)
    is_note = tokenizer.TOKEN_TYPE[plain] == tokenizer.TYPE["NOTE"]
    drum = np.zeros_like(is_note)
    drum[:, 1:] = is_note[:, 1:] & (plain[:, :-1] == tokenizer.OFFSET["PROGRAM"] + tokenizer.DRUMS)
    assert drum.any() and (moved[drum] == plain[drum]).all(), "drums stay"
    shifts = set()
    slots = attributes.PREFIX_SLOTS
    held = np.zeros(32, dtype=bool)
    held[slots["key"]] = held[slots["chords"]] = True  # the slots that hold KEY tokens
    moved_chords = 0
    for p, m, notes in zip(plain, moved, is_note & ~drum):
        assert ((m == p) | held | notes).all(), "nothing else changes but the key and chords"
        if not notes.any():
            continue
        shift = set((m[notes] - p[notes]).tolist())
        assert len(shift) == 1, "a window moves as a whole"
        s = shift.pop()
        assert -6 <= s <= 6 and 0 <= (m[notes] - tokenizer.OFFSET["NOTE"]).min() <= 127
        assert (m[notes] - tokenizer.OFFSET["NOTE"]).max() <= 127
        kp, km = attributes.read_prefix(p)["key"], attributes.read_prefix(m)["key"]
        assert km // 12 == kp // 12 and km % 12 == (kp + s) % 12, (
            "the key moves with the notes, its mode stays"
        )
        cp, cm = attributes.read_prefix(p)["chords"], attributes.read_prefix(m)["chords"]
        if cp:
            assert cm == [c and ((c[0] + s) % 12, c[1]) for c in cp], "so do the chords"
            moved_chords += s != 0
        shifts.add(s)
    assert moved_chords > 20, "windows with chords were moved"
    assert len(shifts) >= 10, f"shifts spread over -6..6: {sorted(shifts)}"


def test_balanced_windows_pick_each_semantic_token_equally(data_dir):
    data = dataset.load_dataset(str(data_dir))
    d = data["train"]
    files_of = lambda x: [attributes.read_prefix(row)["semantic"] for row in x]  # noqa: E731
    counts = {}
    for balance in (False, True):
        x, _ = dataset.get_batch(
            data, "train", np.random.default_rng(5), batch_size=3000, block_size=32, balance=balance
        )
        values, n = np.unique([-1 if s is None else s for s in files_of(x)], return_counts=True)
        counts[balance] = n / n.sum()
    groups = len(np.unique(d["semantic"]))
    assert np.abs(counts[True] - 1 / groups).max() < 0.03, counts[True]
    assert np.abs(counts[False] - 1 / groups).max() > np.abs(counts[True] - 1 / groups).max()


def test_missing_dataset_is_one_line_that_says_how_to_make_it(tmp_path):
    result = subprocess.run(
        [sys.executable, "train.py", f"--data_dir={tmp_path / 'nope'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, (
        result.stderr
    )
    assert "python prepare.py --data_dir" in result.stderr


# -----------------------------------------------------------------------------
# training, checkpoints and resume


@pytest.fixture(scope="module")
def run_a(data_dir, tmp_path_factory):
    """8 uninterrupted iterations, a checkpoint every 2, eval every 4, TensorBoard on."""
    out_dir = tmp_path_factory.mktemp("run_a")
    run_train(
        data_dir,
        out_dir,
        "--max_iters=8",
        "--lr_decay_iters=8",
        "--save_interval=2",
        "--eval_interval=4",
        "--tensorboard=true",
    )
    return out_dir


def test_training_writes_logs_and_checkpoints_that_load_weights_only(run_a):
    names = sorted(p.name for p in run_a.glob("ckpt_*.pt"))
    assert names == ["ckpt_0000004.pt", "ckpt_0000006.pt", "ckpt_0000008.pt", "ckpt_best.pt"], (
        "keep the last 3"
    )
    ckpt = torch.load(run_a / "ckpt_0000008.pt", map_location="cpu", weights_only=True)
    assert ckpt["iter_num"] == 8 and ckpt["config"]["max_iters"] == 8
    assert not any(k.startswith("_orig_mod.") for k in ckpt["model"])
    model = GPT(GPTConfig(**ckpt["model_args"]))
    model.load_state_dict(ckpt["model"])  # strict: every weight is there
    assert json.loads((run_a / "config.json").read_text())["n_layer"] == 2
    log = read_log(run_a)
    losses = [r["loss"] for r in log if "loss" in r]
    assert len(losses) == 8 and all(np.isfinite(losses))
    assert all(
        r["tokens_per_s"] > 0 and r["mfu"] > 0 and r["grad_norm"] > 0 for r in log if "loss" in r
    )
    evals = [r for r in log if "val_loss" in r]
    assert [r["iter"] for r in evals] == [4, 8]
    assert ckpt["best_val_loss"] == min(r["val_loss"] for r in evals)
    assert {
        "val_loss_NOTE",
        "val_loss_DURATION",
        "val_cond_gain",
        "val_loss_SEMANTIC_UNCOND",
    } <= set(evals[-1])
    assert abs(evals[-1]["val_loss"] - np.log(tokenizer.VOCAB_SIZE)) < 1.5, (
        "8 steps from init: near ln(V)"
    )
    assert list((run_a / "tb").glob("events.out.tfevents.*")), "TensorBoard scalars are written"


def test_the_last_eval_gives_the_val_figure_of_every_window(run_a, data_dir):
    """One val figure: the last eval also scores every window of the val split
    (checkpoints.split_loss, what evaluate.py reports), named apart from the estimate that every
    eval gives; the checkpoint saved there scores the same."""
    log = read_log(run_a)
    assert all("val_nats_per_note_est" in r for r in log if "val_loss" in r)
    final = [r for r in log if "val_nats_per_note" in r]
    assert [r["iter"] for r in final] == [8], "the figure of the whole split, at the last eval"
    model, ckpt = checkpoints.load_model(str(run_a / "ckpt_0000008.pt"))
    data = dataset.load_dataset(str(data_dir))
    split = checkpoints.split_loss(model, data, ctx=autocast("cpu", ckpt["config"]["dtype"]))
    assert (split["nats_per_note"], split["loss"]) == (
        final[0]["val_nats_per_note"],
        final[0]["val_split_loss"],
    )
    assert split["windows"] == len(dataset.covering_windows(data, "val", 32))
    scored, val_tokens = split["overall"]["tokens"][0], len(data["val"]["tokens"])
    assert 0.8 * val_tokens < scored <= val_tokens, "nearly every val token, each once"


def test_ckpt_names_best_a_file_or_a_run_folder(tmp_path):
    assert checkpoints.chosen(str(tmp_path), "best") == str(tmp_path / "ckpt_best.pt")
    assert checkpoints.chosen(str(tmp_path)) == str(tmp_path)
    assert checkpoints.chosen(str(tmp_path), "other/ckpt_0000002.pt") == "other/ckpt_0000002.pt"


def test_latest_checkpoint_skips_files_cut_short(tmp_path):
    torch.save({"iter_num": 2}, tmp_path / "ckpt_0000002.pt")
    good = (tmp_path / "ckpt_0000002.pt").read_bytes()
    (tmp_path / "ckpt_0000003.pt").write_bytes(good[: len(good) // 2])  # a crash mid-write
    (tmp_path / "ckpt_0000004.pt.tmp").write_bytes(good)  # a write that never got renamed
    torch.save({"iter_num": 1}, tmp_path / "ckpt_best.pt")  # an older best: the numbered one wins
    path, ckpt = latest_checkpoint(str(tmp_path))
    assert Path(path).name == "ckpt_0000002.pt" and ckpt["iter_num"] == 2
    # saved at an eval after the last numbered
    torch.save({"iter_num": 3}, tmp_path / "ckpt_best.pt")
    path, ckpt = latest_checkpoint(str(tmp_path))
    assert Path(path).name == "ckpt_best.pt" and ckpt["iter_num"] == 3
    (tmp_path / "ckpt_0000002.pt").write_bytes(good[:100])  # no numbered one loads: best still does
    assert Path(latest_checkpoint(str(tmp_path))[0]).name == "ckpt_best.pt"
    assert latest_checkpoint(str(tmp_path / "empty")) == (None, None)


def test_resume_after_a_crash_matches_the_uninterrupted_run(run_a, data_dir, tmp_path, capsys):
    common = ["--lr_decay_iters=8", "--save_interval=2", "--eval_interval=4"]
    # as if killed right after iter 4's checkpoint
    run_train(data_dir, tmp_path, "--max_iters=4", *common)
    good = (tmp_path / "ckpt_0000004.pt").read_bytes()
    (tmp_path / "ckpt_0000006.pt").write_bytes(good[: len(good) // 3])  # newer, but cut short
    (tmp_path / "ckpt_0000005.pt.tmp").write_bytes(good)
    capsys.readouterr()
    # nothing left to train
    run_train(data_dir, tmp_path, "--max_iters=4", "--init_from=resume", *common)
    out = capsys.readouterr().out
    assert re.search(r"last checkpoint +\S*ckpt_0000004\.pt", out), (
        "the summary names the file it resumed, not the newer one that was skipped as cut short"
    )
    run_train(data_dir, tmp_path, "--max_iters=8", "--init_from=resume", *common)
    out = capsys.readouterr().out
    assert re.search(r"last checkpoint +\S*ckpt_0000008\.pt", out)
    assert "skipping" in out and "ckpt_0000006.pt" in out and "ckpt_0000004.pt at iter 4" in out
    resumed = {r["iter"]: r["loss"] for r in read_log(tmp_path) if "loss" in r and r["iter"] > 4}
    uninterrupted = {r["iter"]: r["loss"] for r in read_log(run_a) if "loss" in r and r["iter"] > 4}
    assert sorted(resumed) == [5, 6, 7, 8]
    for it in resumed:
        assert abs(resumed[it] - uninterrupted[it]) <= 1e-6, (it, resumed[it], uninterrupted[it])
    with pytest.raises(UserError, match="no checkpoint"):
        run_train(data_dir, tmp_path / "fresh", "--init_from=resume")
    # a new run never mixes with an old one
    with pytest.raises(UserError, match="already holds checkpoints"):
        run_train(data_dir, tmp_path, "--max_iters=8")


def test_ddp_two_processes_on_gloo(data_dir, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "train.py",
        *TINY,
        f"--data_dir={data_dir}",
        f"--out_dir={tmp_path}",
        "--max_iters=3",
        "--gradient_accumulation_steps=2",
        "--eval_interval=100",
        "--save_interval=100",
    ]
    result = subprocess.run(
        cmd,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.glob("ckpt_0*.pt")) == ["ckpt_0000003.pt"]
    ckpt = torch.load(tmp_path / "ckpt_0000003.pt", map_location="cpu", weights_only=True)
    assert len(ckpt["rng"]) == 2, "one random state per process"
    assert not torch.equal(ckpt["rng"][0]["torch"], ckpt["rng"][1]["torch"]), (
        "each process has its own dropout"
    )
    assert [r["iter"] for r in read_log(tmp_path) if "loss" in r] == [1, 2, 3], "only rank 0 logs"


def test_max_iters_derived_from_epochs(data_dir, tmp_path):
    run_train(data_dir, tmp_path, "--max_iters=0", "--epochs=0.2", "--eval_iters=1")
    train_tokens = (data_dir / "train.bin").stat().st_size // 2
    # batch_size * block_size tokens per iter
    expected = int(np.ceil(0.2 * train_tokens / (4 * 32)))
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["max_iters"] == saved["lr_decay_iters"] == expected > 1
    assert (tmp_path / f"ckpt_{expected:07d}.pt").exists()


def test_tempo_jitter_moves_every_tempo_and_the_prefix_together(data_dir):
    data = dataset.load_dataset(str(data_dir))
    plain, _ = dataset.get_batch(
        data, "train", np.random.default_rng(4), batch_size=600, block_size=32
    )
    moved, _ = dataset.get_batch(
        data, "train", np.random.default_rng(4), batch_size=600, block_size=32, tempo_jitter=0.5
    )
    factors, streams = [], 0
    for p, m in zip(plain, moved):
        is_tempo = np.isin(
            tokenizer.TOKEN_TYPE[p], [tokenizer.TYPE["TEMPO_COARSE"], tokenizer.TYPE["TEMPO_FINE"]]
        )
        assert (m[~is_tempo] == p[~is_tempo]).all(), "only tempo tokens change"
        before, after = (
            attributes.read_prefix(p)["tempo_bpm"],
            attributes.read_prefix(m)["tempo_bpm"],
        )
        factor = after / before
        assert 2**-0.51 < factor < 2**0.51
        # the stream's own tempo tokens (a file's START sets one) move by the same factor
        has = tokenizer.TOKEN_TYPE[p[tokenizer.PREFIX_LEN : -1]] == tokenizer.TYPE["TEMPO_COARSE"]
        if has.any():
            streams += 1
            stream = [tokenizer.tokens_to_score(row[:-1])[0].tempos for row in (p, m)]
            for (_, a), (_, b) in zip(*stream):
                assert b / a == pytest.approx(factor, rel=1e-9)
        factors.append(factor)
    assert streams >= 5 and np.std(np.log2(factors)) > 0.2, (
        "windows with tempo tokens, factors over the range"
    )


def test_resuming_a_checkpoint_of_another_vocabulary_is_refused(run_a, data_dir, tmp_path):
    ckpt = torch.load(run_a / "ckpt_0000008.pt", map_location="cpu", weights_only=True)
    ckpt["meta"] = dict(
        ckpt["meta"], blocks={k: v for k, v in ckpt["meta"]["blocks"].items() if k != "KEY"}
    )
    torch.save(ckpt, tmp_path / "ckpt_0000008.pt")
    with pytest.raises(UserError, match=f"another vocabulary.*delete {tmp_path}"):
        run_train(data_dir, tmp_path, "--max_iters=10", "--init_from=resume")


def test_packed_windows_fill_the_row_with_pieces_each_led_by_its_own_prefix(data_dir):
    """pack=true: where a piece ends, the row goes on with another one, led by its own attribute
    prefix (never a loss target), every segment a contiguous run of its file, and transposition
    moves every segment's key."""
    data = dataset.load_dataset(str(data_dir))
    # longer than most pieces here: unpacked rows are mostly padding
    P, block = (tokenizer.PREFIX_LEN, 512)
    plain, _ = dataset.get_batch(
        data, "train", np.random.default_rng(2), batch_size=64, block_size=block
    )
    x, y = dataset.get_batch(
        data,
        "train",
        np.random.default_rng(2),
        batch_size=64,
        block_size=block,
        pack=True,
        transpose=5,
    )
    pad = tokenizer.PAD
    assert (x == pad).mean() < (plain == pad).mean() / 2, (
        "packing should remove most of the padding"
    )
    starts = [
        np.flatnonzero(
            np.isin(
                tokenizer.TOKEN_TYPE[row], [tokenizer.TYPE["SEMANTIC"], tokenizer.TYPE["UNCOND"]]
            )
        )
        for row in x
    ]
    assert max(len(s) for s in starts) >= 2, "no row holds a second piece"
    for row, targets, segment_starts in zip(x, y, starts):
        # a prefix: its tokens are never predicted, and its key names a key or none
        for at in segment_starts:
            assert (targets[max(at - 1, 0) : at + P - 1] == -1).all()
            key = row[at + attributes.PREFIX_SLOTS["key"].start]
            assert tokenizer.TOKEN_TYPE[key] in (tokenizer.TYPE["KEY"], tokenizer.TYPE["KEY_NONE"])
        score, skipped = tokenizer.tokens_to_score(row[segment_starts[-1] :])
        assert skipped == 0, "the last segment decodes as a piece of its own"
    # D major, A minor
    before = np.array([[tokenizer.OFFSET["KEY"] + 2, tokenizer.OFFSET["KEY"] + 21]])
    augment.transpose(before, np.array([3]))
    # F major, C minor
    assert before.tolist() == [[tokenizer.OFFSET["KEY"] + 5, tokenizer.OFFSET["KEY"] + 12]]


def test_resume_with_every_speedrun_option_matches_the_uninterrupted_run(data_dir, tmp_path):
    """The options a config can choose (rotary positions, squared ReLU, QK-norm, an untied
    zero-initialised head, Muon, packed windows) survive a checkpoint: resuming gives the losses of
    the run that never stopped."""
    options = [
        "--pos=rope",
        "--mlp=relu2",
        "--qk_norm=true",
        "--tie_head=false",
        "--zero_init=true",
        "--muon_lr=0.02",
        "--pack=true",
        "--lr_decay_iters=6",
        "--save_interval=3",
        "--eval_interval=3",
    ]
    run_train(data_dir, tmp_path / "straight", "--max_iters=6", *options)
    run_train(data_dir, tmp_path / "stopped", "--max_iters=3", *options)
    run_train(data_dir, tmp_path / "stopped", "--max_iters=6", "--init_from=resume", *options)
    straight = {r["iter"]: r["loss"] for r in read_log(tmp_path / "straight") if "loss" in r}
    resumed = {
        r["iter"]: r["loss"]
        for r in read_log(tmp_path / "stopped")
        if "loss" in r and r["iter"] > 3
    }
    assert sorted(resumed) == [4, 5, 6]
    for it in resumed:
        assert abs(resumed[it] - straight[it]) <= 1e-6, (it, resumed[it], straight[it])
    ckpt = torch.load(
        tmp_path / "stopped" / "ckpt_0000006.pt", map_location="cpu", weights_only=True
    )
    assert ckpt["model_args"]["pos"] == "rope" and "transformer.wpe.weight" not in ckpt["model"]


def test_revoicing_plays_a_window_on_other_instruments_and_the_prefix_follows():
    """augment.revoice: a four-part chorale on one program becomes a string quartet (violins on
    top, the cello lowest), a melody goes to a soloist whose range holds it, every note keeps its
    pitch and time, drums stay, and the prefix's instrument slots name what now plays (an
    unspecified slot stays unspecified)."""
    T = tokenizer
    chords = [(0, [48, 55, 64, 72]), (12, [50, 57, 65, 74]), (24, [52, 59, 67, 76])]
    body = []
    for step, pitches in chords:
        body += [T.OFFSET["TIME_ON"] + 11] if step else []
        for p in pitches:
            body += [T.OFFSET["PROGRAM"] + 52, T.OFFSET["NOTE"] + p, T.OFFSET["DURATION"] + 11]
    body += [T.OFFSET["PROGRAM"] + T.DRUMS, T.OFFSET["NOTE"] + 36, T.OFFSET["DURATION"]]
    prefix = attributes.attribute_prefix(T.semantic_token(1), key=0, instruments=[52, T.DRUMS])
    rows = np.array(
        [
            prefix + [T.START] + body,
            attributes.attribute_prefix(T.semantic_token(1)) + [T.START] + body,
        ]
    )
    before = [T.tokens_to_score(r)[0] for r in rows]
    augment.revoice(rows, np.array([0.0, 0.0]))  # draw 0: the first ensemble, the string quartet
    after = [T.tokens_to_score(r)[0] for r in rows]
    for old, new in zip(before, after):
        assert [(n.onset, n.pitch, n.duration) for n in old.notes] == [
            (n.onset, n.pitch, n.duration) for n in new.notes
        ]
    voiced = {n.pitch: n.program for n in after[0].notes}
    assert voiced[48] == voiced[50] == 42 and voiced[55] == 41 and voiced[64] == voiced[76] == 40, (
        voiced
    )
    assert voiced[36] == T.DRUMS
    assert attributes.read_prefix(rows[0])["instruments"] == [40, 41, 42, T.DRUMS], (
        "most notes first: two violin parts"
    )
    assert attributes.read_prefix(rows[1])["instruments"] is None, (
        "an unspecified instrument slot stays unspecified"
    )
    melody = (
        attributes.attribute_prefix(T.semantic_token(1), instruments=[0])
        + [T.START]
        + [
            tok
            for p in (62, 64, 66, 67)
            for tok in (
                T.OFFSET["PROGRAM"],
                T.OFFSET["NOTE"] + p,
                T.OFFSET["DURATION"] + 5,
                T.OFFSET["TIME_ON"] + 5,
            )
        ]
    )
    for u in np.linspace(0, 0.99, 12):
        row = np.array([melody])
        augment.revoice(row, np.array([u]))
        (program,) = {n.program for n in T.tokens_to_score(row[0])[0].notes}
        low, high = augment.SOLOISTS[program]
        assert (
            low <= 62 and 67 <= high and attributes.read_prefix(row[0])["instruments"] == [program]
        )
    kept = np.array([melody])
    augment.revoice(kept, np.array([np.nan]))
    assert (kept == np.array([melody])).all(), "nan: as written"


# -----------------------------------------------------------------------------
# fine-tuning: init_from=PATH


def test_fine_tune_starts_from_the_checkpoints_weights_with_a_fresh_run(run_a, tmp_path, capsys):
    other = make_dataset(tmp_path / "other", n_files=12, seed=3)  # another prepared folder
    out = tmp_path / "ft"
    capsys.readouterr()
    # a run folder means its ckpt_best.pt; a learning rate of 1e-30 (0 is refused): after one step
    # the weights are still the source's, to the last bit
    # block_size at its default: the checkpoint's (32) is kept, not refused
    run_train(
        other,
        out,
        f"--init_from={run_a}",
        "--max_iters=1",
        "--learning_rate=1e-30",
        "--min_lr=0",
        "--block_size=1024",
    )
    said = capsys.readouterr().out
    assert f"fine-tuning {run_a / 'ckpt_best.pt'}" in said and "a fresh optimizer" in said
    source = torch.load(run_a / "ckpt_best.pt", map_location="cpu", weights_only=True)
    tuned = torch.load(out / "ckpt_0000001.pt", map_location="cpu", weights_only=True)
    assert tuned["iter_num"] == 1 and source["iter_num"] > 1, "the iteration count starts again"
    assert tuned["model_args"] == source["model_args"] and tuned["config"]["block_size"] == 32
    assert all(torch.equal(tuned["model"][k], source["model"][k]) for k in source["model"])
    # one Adam step: fresh moments
    assert len(tuned["optimizer"]["state"]) == len(source["optimizer"]["state"])
    step = {v["step"].item() for v in tuned["optimizer"]["state"].values()}
    assert step == {1.0}, "a fresh optimizer: its step count is this run's, not the source's"
    assert [r["iter"] for r in read_log(out) if "loss" in r] == [1], "a fresh log"
    assert tuned["config"]["data_dir"] == str(other) and tuned["labels"] == [
        "slow strings",
        "fast piano",
        "drums",
    ]
    # a file works too, training moves the weights, and the fine-tuned run resumes like any other
    run_train(
        other,
        tmp_path / "ft2",
        f"--init_from={run_a / 'ckpt_0000008.pt'}",
        "--max_iters=2",
        "--eval_interval=2",
    )
    moved = torch.load(tmp_path / "ft2" / "ckpt_0000002.pt", map_location="cpu", weights_only=True)
    assert not torch.equal(moved["model"]["lm_head.weight"], source["model"]["lm_head.weight"])
    run_train(other, tmp_path / "ft2", "--init_from=resume", "--max_iters=4", "--eval_interval=2")
    assert (tmp_path / "ft2" / "ckpt_0000004.pt").exists()


def test_fine_tune_mistakes_are_one_line_each(run_a, data_dir, tmp_path):
    with pytest.raises(
        UserError, match=r"init_from='nowhere/ckpt.pt': use 'scratch', 'resume', or"
    ):
        train.parse_config(["--init_from=nowhere/ckpt.pt"])
    with pytest.raises(
        UserError, match=r"has n_layer=2 but the config asks for n_layer=3.*leave those"
    ):
        run_train(data_dir, tmp_path / "a", f"--init_from={run_a}", "--n_layer=3")
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(UserError, match="no checkpoint in .*empty_run to fine-tune from"):
        run_train(data_dir, tmp_path / "b", f"--init_from={tmp_path / 'empty_run'}")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="junk.pt does not load as a checkpoint"):
        run_train(data_dir, tmp_path / "c", f"--init_from={tmp_path / 'junk.pt'}")
    ckpt = torch.load(run_a / "ckpt_best.pt", map_location="cpu", weights_only=True)
    ckpt["meta"] = dict(
        ckpt["meta"], blocks={k: v for k, v in ckpt["meta"]["blocks"].items() if k != "KEY"}
    )
    torch.save(ckpt, tmp_path / "old_vocab.pt")
    with pytest.raises(
        UserError, match="another vocabulary.*fine-tune from a checkpoint that this"
    ):
        run_train(data_dir, tmp_path / "d", f"--init_from={tmp_path / 'old_vocab.pt'}")
    ckpt = torch.load(run_a / "ckpt_best.pt", map_location="cpu", weights_only=True)
    # says 48 wide; its weights are 32
    ckpt["model_args"] = dict(ckpt["model_args"], n_embd=48, n_head=2)
    torch.save(ckpt, tmp_path / "misfit.pt")
    with pytest.raises(UserError, match="weights do not fit its own model shape"):
        run_train(data_dir, tmp_path / "e", f"--init_from={tmp_path / 'misfit.pt'}", "--n_embd=48")
    # never over the run it starts from
    with pytest.raises(UserError, match="already holds checkpoints"):
        run_train(data_dir, run_a, f"--init_from={run_a}")
    result = subprocess.run(
        [
            sys.executable,
            "train.py",
            *TINY,
            f"--data_dir={data_dir}",
            f"--out_dir={tmp_path}/f",
            f"--init_from={run_a}",
            "--n_layer=3",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
