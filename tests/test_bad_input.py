"""Nothing lost, nothing cryptic: one test per class of bad input, each built for real
where it can be: two processes for the folder lock, a real symlink loop, a real read-only folder and
a real write that fails for lack of room. Every refusal is one line on stderr (exit 1, no
traceback), and what was already written stays."""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from midi_factory import midi_file, notes, track  # noqa: E402
from test_prepare import make_folder  # noqa: E402
from test_train import TINY, make_dataset, run_train  # noqa: E402

import cluster  # noqa: E402
import dataset  # noqa: E402
import evaluate  # noqa: E402
import files  # noqa: E402
import prepare  # noqa: E402
import runconfig  # noqa: E402
import sample  # noqa: E402
import train  # noqa: E402
from files import UserError  # noqa: E402

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
EXPORT = ROOT / "data" / "music21" / "export.py"


def script(*args, **kwargs):
    """Start a script (or any command) from the repository root -> the Popen, output as text."""
    return subprocess.Popen(
        [sys.executable, *map(str, args)],
        cwd=ROOT,
        env=ENV,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kwargs,
    )


def one_line_error(proc, *words):
    """A finished script refused in one line on stderr, exit 1, no traceback, the line holding every
    word."""
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, (proc.args, out[-2000:], err[-2000:])
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for word in words:
        assert str(word) in err, (word, err)
    return err


def snapshot(folder):
    """Every file under folder but a lock -> its bytes, to show that nothing was lost or changed."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(Path(folder).rglob("*"))
        if p.is_file() and p.name != files.LOCK_NAME
    }


def namespace_works():
    """Whether this machine lets a process make its own mounts (an unprivileged user namespace): a
    read-only bind and a tiny tmpfs are then real, for root too (whom chmod does not stop)."""
    if not shutil.which("unshare"):
        return False
    r = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True
    )
    return r.returncode == 0


def in_namespace(mount, *command):
    """Run command in a user and mount namespace after the shell lines in mount -> the Popen."""
    return subprocess.Popen(
        [
            "unshare",
            "--user",
            "--map-root-user",
            "--mount",
            "sh",
            "-c",
            f'{mount} && exec "$@"',
            "sh",
            *map(str, command),
        ],
        cwd=ROOT,
        env=ENV,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


# -----------------------------------------------------------------------------
# 1. one writer per folder


def test_a_second_writer_stops_at_once_naming_the_first_and_a_dead_ones_lock_is_taken_over(
    tmp_path,
):
    data = tmp_path / "data"
    make_folder(data, 6)
    prepare.prepare(str(data), workers=1, quiet=True)
    (data / "midi" / "descriptions.jsonl").write_text("")
    out_dir, export_dir = tmp_path / "out", tmp_path / "export"
    for folder in (out_dir, export_dir):
        folder.mkdir()
    before = snapshot(data)
    # the first writer: a real process that takes each folder's lock the way every writing script
    # does
    first = tmp_path / "first_writer.py"
    first.write_text(
        f"import contextlib, sys\nsys.path.insert(0, {str(ROOT)!r})\nimport files\n"
        "with contextlib.ExitStack() as stack:\n"
        "    for folder in sys.argv[1:]:\n"
        "        stack.enter_context(files.folder_lock(folder))\n"
        "    print('holding', flush=True)\n"
        "    sys.stdin.read()\n"
    )
    holder = script(first, data, out_dir, export_dir, stdin=subprocess.PIPE)
    assert holder.stdout.readline().strip() == "holding"
    second = [
        script("prepare.py", "--data_dir", data, "--workers", 1),
        script("cluster.py", "--data_dir", data, "--k", 2),
        script("train.py", *TINY, f"--data_dir={data}", f"--out_dir={out_dir}", "--max_iters=2"),
        script(EXPORT, "--out", export_dir, "--collections", "oneills1850", "--limit", 1),
    ]
    for proc in second:
        one_line_error(
            proc, "is being written by", f"pid {holder.pid}", f"{first} {data} {out_dir}"
        )
    assert snapshot(data) == before and os.listdir(out_dir) == [files.LOCK_NAME]

    # dies holding it: the lock file stays, naming a process that is gone
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (data / files.LOCK_NAME).exists()
    r = script("prepare.py", "--data_dir", data, "--workers", 1)
    out, err = r.communicate(timeout=120)
    assert r.returncode == 0, err
    assert f"taking over the lock left by pid {holder.pid}" in out and "files used" in out
    assert not (data / files.LOCK_NAME).exists(), "a finished writer leaves no lock behind"
    assert not list(data.glob("*.tmp"))


def test_two_runs_into_one_gallery_each_keep_their_card(tmp_path):
    import threading

    import render

    def card(name):
        return dict(
            midi=f"{name}.mid",
            title=name,
            made="2026-01-01 00:00:00",
            understood={},
            facts={},
            png=None,
            wav=None,
        )

    for name in ("first", "second"):
        (tmp_path / f"{name}.mid").write_bytes(b"MThd")
    # the first run: a real process in the middle of its read-modify-write of the cards when the
    # second starts
    first = tmp_path / "first_run.py"
    first.write_text(
        f"import json, sys\nsys.path.insert(0, {str(ROOT)!r})\nimport files\n"
        f"with files.folder_lock({str(tmp_path)!r}, wait=True):\n"
        "    print('reading', flush=True)\n"
        "    sys.stdin.readline()\n"
        f"    files.write_atomic({str(tmp_path / render.GALLERY_CARDS)!r},\n"
        f"                       json.dumps([{card('first')!r}]))\n"
    )
    proc = script(first, stdin=subprocess.PIPE)
    assert proc.stdout.readline().strip() == "reading"
    second = threading.Thread(target=render.write_gallery, args=(str(tmp_path), [card("second")]))
    second.start()
    second.join(timeout=1.0)
    assert second.is_alive(), "the second run waits for the first to finish writing"
    proc.stdin.write("go\n")
    proc.stdin.flush()
    assert proc.wait(timeout=60) == 0
    second.join(timeout=60)
    cards = json.loads((tmp_path / render.GALLERY_CARDS).read_text())
    assert sorted(c["midi"] for c in cards) == ["first.mid", "second.mid"]


# -----------------------------------------------------------------------------
# 2. a command that only reads never writes


def test_an_empty_query_is_an_error_and_writes_nothing(tmp_path):
    # clusterable: under the old `if args.query`, "" re-clustered and wrote both files
    make_folder(tmp_path, 3)
    (tmp_path / "semantic.json").write_text('{"set0/piece0.mid": 1}')
    (tmp_path / "clusters.json").write_text('{"the user\'s": "clusters"}')
    before = snapshot(tmp_path)
    one_line_error(
        script("cluster.py", "--data_dir", tmp_path, "--query", ""), "--query=''", "is empty"
    )
    with pytest.raises(UserError, match="--query=' ' is empty"):
        cluster.main(["--data_dir", str(tmp_path), "--query", " "])
    assert snapshot(tmp_path) == before


# -----------------------------------------------------------------------------
# 3. export merges, never drops


def test_an_export_of_some_collections_keeps_the_others_descriptions(tmp_path):
    def described():
        lines = (tmp_path / "midi" / "descriptions.jsonl").read_text().splitlines()
        return {json.loads(line)["midi_file"]: json.loads(line)["description"] for line in lines}

    r = script(EXPORT, "--out", tmp_path, "--collections", "oneills1850,airdsAirs", "--limit", 1)
    assert r.wait(timeout=300) == 0, r.stderr.read()
    both = described()
    assert {name.split("/")[0] for name in both} == {"oneills1850", "airdsAirs"} and len(both) == 2
    r = script(EXPORT, "--out", tmp_path, "--collections", "oneills1850", "--limit", 1)
    out, err = r.communicate(timeout=300)
    assert r.returncode == 0, err
    assert described() == both, "the airdsAirs description is still there, word for word"
    assert "1 of other collections kept" in out


# -----------------------------------------------------------------------------
# 4. each real folder walked once; a file reached twice is trained on once


def test_a_symlink_loop_is_walked_once_and_duplicates_are_reported_never_trained_twice(tmp_path):
    midi = tmp_path / "midi"
    make_folder(tmp_path, 12)  # set0..set2, 4 pieces each, plus 2 bad files
    extra = midi / "zz"  # walked last, after the files it repeats
    extra.mkdir()
    os.symlink("..", midi / "set0" / "loop")  # a loop: set0/loop/set0/loop/... is midi/ again
    os.symlink("set1", midi / "set1_again")  # a folder by a second name
    os.symlink("../set2/piece2.mid", extra / "alias.mid")  # a file by a second name
    os.link(midi / "set2" / "piece5.mid", extra / "hardlink.mid")  # the same file, hard-linked
    shutil.copy(midi / "set0" / "piece0.mid", extra / "copy.mid")  # the same bytes
    walked = list(dataset.iter_midi(str(midi)))
    # each real folder once; the three extra names once
    assert len(walked) == len(set(walked)) == 12 + 2 + 3, walked
    assert not [f for f in walked if "loop" in f or "set1_again" in f]

    counts = prepare.prepare(str(tmp_path), val_fraction=0.3, workers=2, quiet=True)
    index = dataset.read_index(str(tmp_path))
    pieces = [row["midi_file"] for row in index]
    assert counts["files"] == len(pieces) == 12 and counts["skipped_by_reason"]["duplicate"] == 3
    assert {p.split("/")[0] for p in pieces} == {"set0", "set1", "set2"}, (
        "each piece once, under its first name"
    )
    contents = [(midi / p).read_bytes() for p in pieces]
    assert len(set(contents)) == 12, "no piece is trained on twice"
    splits = {row["midi_file"]: row["split"] for row in index}
    assert set(splits.values()) == {"train", "val"}
    skipped = dict(line.split("\t") for line in (tmp_path / "skipped.tsv").read_text().splitlines())
    assert {name for name, why in skipped.items() if why.startswith("duplicate")} == {
        "zz/alias.mid",
        "zz/hardlink.mid",
        "zz/copy.mid",
    }
    assert "set0/piece0.mid" in skipped["zz/copy.mid"], "the report names the file it duplicates"


# -----------------------------------------------------------------------------
# 5. every setting range-checked before any work, in one line naming it, its value and what is
#    allowed

BAD_TRAIN = [
    "--eval_interval=0",
    "--log_interval=0",
    "--save_interval=0",
    "--n_head=0",
    "--batch_size=0",
    "--eval_iters=0",
    "--learning_rate=-1e-3",
    "--learning_rate=nan",
    "--learning_rate=1e38",
    "--min_lr=inf",
    "--dropout=2",
    "--dropout=1",
    "--block_size=12",
    "--device=gpu",
    "--gradient_accumulation_steps=0",
    "--max_iters=-5",
    "--keep_last=0",
    "--key_dropout=1.5",
    "--prefix_dropout=-0.1",
    "--beta2=1",
    "--seed=-1",
    "--epochs=0",
    "--transpose=-2",
    "--tempo_jitter=nan",
    "--warmup_iters=-1",
    "--grad_clip=-1",
    "--n_layer=0",
    "--out_dir=",
]
BAD_SAMPLE = [
    ["--top_k", "-1"],
    ["--top_p", "-0.5"],
    ["--top_p", "0"],
    ["--top_p", "1.5"],
    ["--temperature", "nan"],
    ["--temperature", "-1"],
    ["--guidance", "nan"],
    ["--guidance", "inf"],
    ["--seconds", "0"],
    ["--seconds", "-3"],
    ["--tempo", ""],
    ["--key", " "],
    ["--prompt", ""],
    ["--num_samples", "0"],
    ["--prime_seconds", "0"],
    ["--device", "gpu"],
    ["--seed", "-4"],
    ["--key_strength", "-1"],
    ["--key_strength", "nan"],
]
BAD_EVALUATE = [
    ["--control_samples", "-1"],
    ["--control_guidance", "nan"],
    ["--guidance", "1,nan"],
    ["--top_p", "2"],
    ["--temperature", "-0.5"],
    ["--num_samples", "0"],
    ["--device", "tpu"],
    ["--key_strength", "-2"],
    ["--user_guidance", "-1"],
    ["--min_cosine", "2"],
]


def test_every_bad_setting_is_one_line_naming_it_before_any_work(tmp_path):
    kinds = {f.name: f.type for f in dataclasses.fields(train.Config)}
    for arg in BAD_TRAIN:
        name, value = arg[2:].split("=")
        with pytest.raises(UserError) as e:
            train.parse_config([arg])
        # as typed, converted
        shown = f"{name}={runconfig.convert(name, value, kinds[name], 'command line')!r}"
        assert str(e.value).startswith(shown) and (
            "must be" in str(e.value) or "use " in str(e.value) or "give a value" in str(e.value)
        ), (arg, e.value)
    for args in BAD_SAMPLE:
        with pytest.raises(UserError, match=rf"^{args[0]}="):
            sample.parse_args(args)
    for args in BAD_EVALUATE:  # refused before a checkpoint is looked for: out_dir has none
        with pytest.raises(UserError, match=rf"^{args[0]}="):
            evaluate.main(["--out_dir", str(tmp_path / "no_run"), *args])
    assert not (tmp_path / "no_run").exists()
    config = tmp_path / "bad.py"
    config.write_text("n_layer = 2\nbatch_size = 4 +\n")
    with pytest.raises(UserError, match=rf"^{config}, line 2: invalid syntax"):
        train.parse_config([str(config)])
    config.write_text("n_layer = 2\nbatch_size = undefined_name\n")
    with pytest.raises(UserError, match=rf"^{config}, line 2: NameError"):
        train.parse_config([str(config)])

    folder = tmp_path / "data"
    make_folder(folder, 3)
    before = snapshot(folder)
    for value in ("2", "0", "1", "nan"):
        with pytest.raises(UserError, match="^--val_fraction="):
            prepare.main(["--data_dir", str(folder), "--val_fraction", value])
    for args in (
        ["--k", "0"],
        ["--k", "33"],
        ["--top", "0", "--query", "x"],
        ["--batch_size", "0"],
        ["--seed", "-1"],
    ):
        with pytest.raises(UserError, match=f"^{args[0]}"):
            cluster.main(["--data_dir", str(folder), *args])
    # no traceback
    procs = [
        script("train.py", str(config)),
        script("sample.py", "--tempo", "", "--dry_run"),  # on the command
        script("prepare.py", "--data_dir", folder, "--val_fraction", "2"),  # line: one line,
        script("roundtrip.py", folder / "midi" / "set0" / "piece0.mid", "--show", "-1"),
    ]
    for proc, word in zip(
        procs, [f"{config}, line 2", "--tempo=''", "--val_fraction=2.0", "--show=-1"]
    ):
        one_line_error(proc, word)
    assert snapshot(folder) == before, "nothing written"


# -----------------------------------------------------------------------------
# 6. output paths: the input, a file where a folder goes, a read-only or full place; names that are
#    not UTF-8


def test_bad_output_paths_are_one_line_and_lose_nothing(tmp_path):
    make_folder(tmp_path, 3)
    song = tmp_path / "midi" / "set0" / "piece0.mid"
    os.symlink(song, tmp_path / "same_song.mid")
    original = song.read_bytes()
    a_file, a_pipe = tmp_path / "a_file", tmp_path / "a_pipe"
    a_file.write_text("precious")
    os.mkfifo(a_pipe)  # not a regular file (as /dev/null is): never replaced by one
    procs = [
        script("roundtrip.py", song, "-o", song),
        script("roundtrip.py", song, "-o", tmp_path / "same_song.mid"),
        script("roundtrip.py", song, "-o", tmp_path / "midi"),
        script("roundtrip.py", song, "-o", a_pipe),
        script("prepare.py", "--data_dir", a_file),
        script(EXPORT, "--out", a_file),
        script("train.py", *TINY, f"--data_dir={tmp_path}", f"--out_dir={a_file / 'run'}"),
    ]
    for proc, word in zip(
        procs,
        [
            "is the input",
            "is the input",
            "is a folder",
            "not a regular file",
            "is a file",
            "is a file",
            "is a file",
        ],
    ):
        one_line_error(proc, word)
    assert song.read_bytes() == original and a_file.read_text() == "precious" and a_pipe.is_fifo()
    with pytest.raises(UserError, match="is a file"):  # before the checkpoint is even looked for
        sample.main(["--out_dir", str(tmp_path / "no_run"), "--sample_dir", str(a_file)])


def test_a_write_that_fails_midway_is_one_line_and_the_previous_output_stays(tmp_path):
    make_folder(tmp_path, 6)
    prepare.prepare(str(tmp_path), workers=1, quiet=True)
    before = snapshot(tmp_path)
    make_folder(tmp_path / "more", 24)
    # the new train.bin outgrows the limit
    shutil.move(tmp_path / "more" / "midi", tmp_path / "midi" / "more")
    limit = (tmp_path / "train.bin").stat().st_size + 64
    before = {k: v for k, v in before.items() if not k.startswith("midi/")}

    # a file may not grow past `limit` bytes: the write fails (EFBIG) as on a full disk (ENOSPC)
    def no_room():
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    err = one_line_error(
        script("prepare.py", "--data_dir", tmp_path, "--workers", 1, preexec_fn=no_room),
        "File too large",
    )
    assert str(tmp_path) in err, "it names where it was writing"
    after = {k: v for k, v in snapshot(tmp_path).items() if not k.startswith("midi/")}
    assert after == before, (
        "train.bin, val.bin, index.jsonl, meta.json: all as they were, no .tmp left over"
    )


@pytest.mark.skipif(
    not namespace_works(),
    reason="no user namespaces here (unshare), so no read-only mount "
    "or tiny tmpfs can be made without privileges",
)
def test_a_read_only_or_full_folder_is_one_line_before_any_work(tmp_path):
    make_folder(tmp_path, 3)
    prepare.prepare(str(tmp_path), workers=1, quiet=True)
    before = snapshot(tmp_path)
    read_only = f'mount --bind "{tmp_path}" "{tmp_path}" && mount -o remount,ro,bind "{tmp_path}"'
    full = tmp_path / "full"
    full.mkdir()
    fill = (
        f'mount -t tmpfs -o size=256k tmpfs "{full}" && '
        f'(head -c 1000000 /dev/zero > "{full}/filler" 2>/dev/null || true)'
    )
    procs = [
        in_namespace(
            read_only, sys.executable, "prepare.py", "--data_dir", tmp_path, "--workers", 1
        ),
        in_namespace(read_only, sys.executable, "cluster.py", "--data_dir", tmp_path, "--k", 2),
        in_namespace(
            fill,
            sys.executable,
            "roundtrip.py",
            tmp_path / "midi" / "set0" / "piece0.mid",
            "-o",
            full / "heard.mid",
        ),
    ]
    for proc, words in zip(
        procs, [["can't write in", "read-only"], ["can't write in", "read-only"], ["is full"]]
    ):
        one_line_error(proc, *words)
    assert snapshot(tmp_path) == before


def test_file_names_that_are_not_utf8_are_prepared_and_clustered(tmp_path):
    make_folder(tmp_path, 3)
    # latin-1 bytes: not UTF-8
    odd = os.path.join(os.fsencode(tmp_path / "midi"), b"caf\xe9 \xff.mid")
    midi_file([track(notes(0, [(0, 1, 70), (1, 1, 72), (2, 2, 75)], program=40))]).save(
        os.fsdecode(odd)
    )
    with open(os.path.join(os.fsencode(tmp_path / "midi"), b"bad \xfe.mid"), "wb") as f:
        f.write(b"MThd broken")  # unreadable, so its name goes into skipped.tsv and onto the screen
    r = script("prepare.py", "--data_dir", tmp_path, "--workers", 2)
    out, err = r.communicate(timeout=120)
    assert r.returncode == 0 and "Traceback" not in err, err
    names = [row["midi_file"] for row in dataset.read_index(str(tmp_path))]
    assert os.fsdecode(b"caf\xe9 \xff.mid") in names
    assert b"bad \xfe.mid" in (tmp_path / "skipped.tsv").read_bytes(), (
        "skipped.tsv keeps the name's own bytes"
    )
    cluster.run(tmp_path, k=2, seed=0)
    assert os.fsdecode(b"caf\xe9 \xff.mid") in json.loads((tmp_path / "semantic.json").read_text())


# -----------------------------------------------------------------------------
# 7. broken dataset files: one line naming the file and the command that rebuilds it


def test_broken_dataset_files_name_themselves_and_the_command_that_rebuilds_them(tmp_path):
    good = make_dataset(tmp_path / "good")
    train_bin = (good / "train.bin").read_bytes()
    breakage = {  # file -> (new content, the script that rebuilds it)
        "meta.json": [
            (b'{"vocab_size": 512, ', "prepare.py"),
            (b"[1, 2]", "prepare.py"),
            (b"{}", "prepare.py"),
            (b"\xff\xfe", "prepare.py"),
        ],
        "index.jsonl": [
            (b'{"midi_file": "a.mid", "split": "tr\n', "prepare.py"),
            (b"[]\n", "prepare.py"),
            (
                (good / "index.jsonl").read_bytes().replace(b'"start": 0', b'"start": "zero"', 1),
                "prepare.py",
            ),
        ],
        "semantic.json": [
            (b"{'piece_1.mid': 1}", "cluster.py"),
            (b'{"piece_1.mid": "one"}', "cluster.py"),
            (b'["piece_1.mid"]', "cluster.py"),
        ],
        "clusters.json": [(b'{"labels": "not a list"}', "cluster.py"), (b"nul", "cluster.py")],
        "train.bin": [
            (train_bin[:-1], "prepare.py"),
            (train_bin[: len(train_bin) // 2], "prepare.py"),
            (b"", "prepare.py"),
            ((good / "val.bin").read_bytes(), "prepare.py"),
            (np.full(len(train_bin) // 2, 60000, dtype=np.uint16).tobytes(), "prepare.py"),
        ],
    }
    for name, cases in breakage.items():
        for content, rebuild in cases:
            broken = tmp_path / "broken"
            shutil.rmtree(broken, ignore_errors=True)
            shutil.copytree(good, broken)
            (broken / name).write_bytes(content)
            with pytest.raises(
                UserError, match=rf"{broken}.*(python {rebuild} --data_dir {broken})"
            ) as e:
                dataset.load_dataset(str(broken))
            assert name in str(e.value), (name, content[:40], e.value)
    one_line_error(
        script("train.py", *TINY, f"--data_dir={broken}", f"--out_dir={tmp_path / 'run'}"),
        "train.bin",
        "python prepare.py --data_dir",
    )
    assert not (tmp_path / "run").exists(), "a run refused before it began leaves no folder behind"
    (broken / "clusters.json").write_text('{"embedder": "x", "labels": ["a"], "centroids": "no"}')
    one_line_error(
        script("cluster.py", "--data_dir", broken, "--query", "a jig"),
        "clusters.json is corrupt",
        "python cluster.py --data_dir",
    )


# -----------------------------------------------------------------------------
# 8. resume advice that ends somewhere; the run's shape recorded


def test_resume_finds_the_newest_checkpoint_that_loads_and_no_advice_goes_round_in_circles(
    tmp_path,
):
    data = make_dataset(tmp_path / "data", seed=1)
    common = ["--eval_interval=2", "--save_interval=4", "--lr_decay_iters=8"]
    run_train(data, tmp_path / "run", "--max_iters=4", *common)
    numbered, best = tmp_path / "run" / "ckpt_0000004.pt", tmp_path / "run" / "ckpt_best.pt"
    best_iter = torch.load(best, weights_only=True)["iter_num"]
    # the only numbered checkpoint, cut short by a crash
    numbered.write_bytes(numbered.read_bytes()[:500])
    # goes on from ckpt_best.pt
    run_train(data, tmp_path / "run", "--max_iters=6", "--init_from=resume", *common)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in log if "loss" in r][-2:] == [5, 6] and best_iter in (2, 4)
    assert torch.load(tmp_path / "run" / "ckpt_0000006.pt", weights_only=True)["iter_num"] == 6

    # now nothing loads: both ways say to delete, never each other
    for path in (tmp_path / "run").glob("ckpt_*.pt"):
        path.write_bytes(b"cut")
    for init in ("resume", "scratch"):
        with pytest.raises(UserError, match="none of the checkpoints .* loads .*delete them") as e:
            run_train(data, tmp_path / "run", "--max_iters=8", f"--init_from={init}", *common)
        assert "--init_from=resume" not in str(e.value)
    (tmp_path / "run_best").mkdir()
    # only a best checkpoint: scratch keeps it
    torch.save({"iter_num": 3}, tmp_path / "run_best" / "ckpt_best.pt")
    with pytest.raises(UserError, match="already holds checkpoints; go on with --init_from=resume"):
        run_train(data, tmp_path / "run_best", "--max_iters=8")


def test_a_resume_with_another_shape_counts_tokens_and_epochs_at_the_shape_each_part_ran(
    tmp_path, capsys
):
    data = make_dataset(tmp_path / "data", seed=2)
    train_tokens = (data / "train.bin").stat().st_size // 2
    common = ["--eval_interval=100", "--save_interval=3", "--max_iters=0", "--epochs=2"]
    run_train(data, tmp_path / "run", "--max_iters=3", "--save_interval=3", "--eval_interval=100")
    first = torch.load(tmp_path / "run" / "ckpt_0000003.pt", weights_only=True)
    assert first["tokens_seen"] == 3 * 4 * 32  # iters x batch_size x block_size
    capsys.readouterr()
    run_train(
        data, tmp_path / "run", "--init_from=resume", "--block_size=64", "--batch_size=8", *common
    )
    out = capsys.readouterr().out
    assert "keeps its shape: block_size=32 (not 64)" in out
    assert f"{8 * 32:,} per iter" in out, "tokens per iter at the block size the model really has"
    last = json.loads((tmp_path / "run" / "config.json").read_text())
    ckpt = torch.load(tmp_path / "run" / f"ckpt_{last['max_iters']:07d}.pt", weights_only=True)
    assert 2 * train_tokens <= ckpt["tokens_seen"] < 2 * train_tokens + 8 * 32, (
        "2 epochs, not more or less"
    )
    assert ckpt["tokens_seen"] == 3 * 4 * 32 + (last["max_iters"] - 3) * 8 * 32
    assert f"{last['max_iters']} iters = {ckpt['tokens_seen'] / train_tokens:.1f} epochs" in out
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert all(r["tokens_per_s"] > 0 for r in log if "loss" in r)


def test_a_run_that_diverges_stops_before_it_replaces_the_good_checkpoints(tmp_path, monkeypatch):
    import checkpoints

    data = make_dataset(tmp_path / "data", seed=3)
    common = ["--eval_interval=100", "--save_interval=2", "--keep_last=1"]
    run_train(data, tmp_path / "run", "--max_iters=2", *common)
    good = (tmp_path / "run" / "ckpt_0000002.pt").read_bytes()
    step = train.train_step

    # iteration 3 blows up, as a too-large learning rate would
    def diverging_step(model, state, data, **kwargs):
        loss = step(model, state, data, **kwargs)
        if state.iter_num == 2:
            with torch.no_grad():
                next(state.model.parameters()).fill_(float("inf"))
        return loss

    monkeypatch.setattr(train, "train_step", diverging_step)
    with pytest.raises(UserError, match="not finite at iter 4 .*checkpoints before it are kept"):
        run_train(data, tmp_path / "run", "--max_iters=8", "--init_from=resume", *common)
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "run").glob("ckpt_0*.pt")) == ["ckpt_0000002.pt"], (
        "keep_last=1 would have deleted the last good checkpoint for a diverged one"
    )
    assert (tmp_path / "run" / "ckpt_0000002.pt").read_bytes() == good

    ckpt = torch.load(tmp_path / "run" / "ckpt_0000002.pt", weights_only=True)
    # a diverged checkpoint from elsewhere: one line
    next(iter(ckpt["model"].values())).fill_(float("nan"))
    torch.save(ckpt, tmp_path / "nan.pt")
    with pytest.raises(UserError, match="nan.pt holds weights that are not finite"):
        checkpoints.load_model(str(tmp_path / "nan.pt"))
    # loads, but is no checkpoint: one line, not a KeyError
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(UserError, match="list.pt is not a checkpoint of train.py"):
        checkpoints.load_model(str(tmp_path / "list.pt"))
