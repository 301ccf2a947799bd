"""train.py's wall-clock budget (max_minutes, runconfig.Clock): a run stops by time and still ends
with its final eval and save; the learning rate follows the share of the budget spent; a resumed run
goes on with the time its budget has left, and one whose budget is spent does nothing; under DDP
both processes stop at the same step. Tiny models on test_train.py's tiny dataset, budgets of
seconds."""

import contextlib
import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from test_train import TINY, make_dataset, read_log, run_train  # noqa: E402

import runconfig  # noqa: E402
import train  # noqa: E402
from files import UserError  # noqa: E402

BUDGET = 0.05  # minutes: 3 seconds of training, evals and saves
CAP = ["--max_iters=20000"]  # far more steps than 3 seconds hold: the budget must stop the run
RARE = ["--eval_interval=100000", "--save_interval=100000"]  # the final eval and save alone
TOKENS_PER_STEP = 4 * 32  # TINY's batch_size x block_size


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data") / "tiny")


def train_printing(data_dir, out_dir, *args):
    """run_train -> what it printed."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        run_train(data_dir, out_dir, *args)
    return printed.getvalue()


def numbered(out_dir):
    return sorted(p.name for p in Path(out_dir).glob("ckpt_0*.pt"))


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def step_records(out_dir):
    return [r for r in read_log(out_dir) if "loss" in r]


@pytest.fixture(scope="module")
def budget_run(data_dir, tmp_path_factory):
    """A 3-second budget; the schedule's warm-up is its first 2/20, its decay the rest."""
    out_dir = tmp_path_factory.mktemp("budget")
    schedule = ["--warmup_iters=2", "--lr_decay_iters=20"]
    printed = train_printing(data_dir, out_dir, f"--max_minutes={BUDGET}", *CAP, *RARE, *schedule)
    return out_dir, printed


def test_a_budget_stops_the_run_by_time_and_it_ends_as_a_fixed_run_does(budget_run):
    out_dir, printed = budget_run
    [name] = numbered(out_dir)
    ckpt = load(out_dir / name)
    steps = ckpt["iter_num"]
    assert name == f"ckpt_{steps:07d}.pt" and 10 < steps < 20000, "time, not max_iters, stopped it"
    assert ckpt["time_spent"] == 60 * BUDGET, "a run its budget stopped has spent all of it"
    assert ckpt["tokens_seen"] == steps * TOKENS_PER_STEP
    assert (out_dir / "ckpt_best.pt").exists()
    assert [r["iter"] for r in step_records(out_dir)] == list(range(1, steps + 1))
    # the final eval of a fixed-step run: the estimate and every window of the val split
    [final] = [r for r in read_log(out_dir) if "val_loss" in r]
    assert final["iter"] == steps and "val_nats_per_note" in final and "val_split_loss" in final
    tokens = f"{steps * TOKENS_PER_STEP:,}"
    assert f"the {BUDGET:g}-minute budget bought {steps:,} steps, {tokens} tokens" in printed
    assert re.search(rf"iterations +0 -> {steps:,} of 20,000", printed)
    assert re.search(rf"tokens +{tokens} trained on", printed)
    assert re.search(rf"budget +0.05 of {BUDGET:g} min spent: it bought the steps", printed)
    assert re.search(r"val nats/note +\d", printed)


def test_the_learning_rate_follows_the_share_of_the_budget():
    cfg = train.parse_config(
        [
            "--learning_rate=1e-3",
            "--min_lr=1e-4",
            "--warmup_iters=10",
            "--lr_decay_iters=100",
            "--max_iters=1000",
            f"--max_minutes={BUDGET}",
        ]
    )
    lr, min_lr = cfg.learning_rate, cfg.min_lr
    # the steps taken do not matter while their share of max_iters is behind the time's
    assert train.get_lr(0, cfg, 0.5) == train.get_lr(400, cfg, 0.5)
    # warm-up is warmup_iters / lr_decay_iters = the first 10% of the budget, then a cosine decay
    # that ends with the budget
    assert train.get_lr(0, cfg, 0.0) == pytest.approx(lr / 11)
    assert train.get_lr(0, cfg, 0.05) == pytest.approx(lr * 6 / 11)
    assert train.get_lr(0, cfg, 0.1) == pytest.approx(lr)
    assert train.get_lr(0, cfg, 0.55) == pytest.approx((lr + min_lr) / 2)
    assert train.get_lr(0, cfg, 1.0) == pytest.approx(min_lr)
    shares = [i / 100 for i in range(101)]
    lrs = [train.get_lr(0, cfg, s) for s in shares]
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11])), "rising through the warm-up"
    assert all(a > b for a, b in zip(lrs[10:-1], lrs[11:])), "falling after it"
    # when the steps run out first (max_iters), their share leads
    assert train.get_lr(900, cfg, 0.2) == pytest.approx(train.get_lr(0, cfg, 0.9))
    # without a budget, the step schedule
    assert train.get_lr(55, cfg) == pytest.approx((lr + min_lr) / 2)
    with pytest.raises(UserError, match="max_minutes"):
        train.parse_config(["--max_minutes=-1"])


def test_a_budget_runs_its_schedule_over_the_time_not_the_steps(budget_run):
    """The budget run's schedule was 20 steps long: followed by steps, its learning rate would sit
    at min_lr from step 20 on; over the budget it is still falling half way through."""
    out_dir, _ = budget_run
    lrs = [r["lr"] for r in step_records(out_dir)]
    lr, min_lr, steps = 1e-3, 1e-4, len(lrs)  # TINY's
    assert steps > 40
    assert max(lrs) == pytest.approx(lr, rel=0.1), "warm-up reaches the peak"
    assert lrs[steps // 2] > 1.05 * min_lr and lrs[steps // 2] > lrs[-1]
    assert lrs[-1] - min_lr < 0.1 * (lr - min_lr), "the decay ends with the budget"


def test_the_clock_sets_the_final_eval_and_save_aside():
    """Training stops once the next step would reach into the time the final eval (its estimate
    and the val split's windows) and save will take, at what the last ones cost."""
    clock = runconfig.Clock(10.0, 1.0, eval_windows=60, val_windows=40, step_windows=4)
    clock.step_s, clock.save_s = 0.3, 0.2
    # no eval timed yet: a window's forward pass is a third of its share of a step
    assert clock.reserve() == pytest.approx(100 * 0.3 / 12 + 0.2)
    clock.window_s = 0.01  # then the last eval's
    assert clock.reserve() == pytest.approx(1.2)
    clock.started = time.time() - 7.0  # 8 s spent, resumes included; 8 + 0.3 + 1.2 < 10
    assert not clock.out_of_time()
    assert clock.share() == pytest.approx(8.0 / 8.8, abs=0.01), "of the budget less the reserve"
    clock.started = time.time() - 8.6  # 9.6 s spent: the next step would eat into the reserve
    assert clock.out_of_time() and clock.share() == 1.0
    # the progress bar shows the budget's seconds, the steps beside
    shown = io.StringIO()
    settings = clock.bar(20000, 12, True) | dict(disable=False, file=shown)
    with train.tqdm(**settings) as bar:
        clock.step_done(0.3, runconfig.setup(train.parse_config(["--device=cpu"])), bar, 13)
    assert re.search(r"\d+%\|.*\| 10/10 s \[.*iter 13\]", shown.getvalue()), shown.getvalue()


def test_resume_goes_on_with_the_time_left_and_a_spent_budget_does_nothing(data_dir, tmp_path):
    # warm-up over 90% of the budget: the learning rate grows with the share spent
    common = [f"--max_minutes={BUDGET}", "--warmup_iters=90", "--lr_decay_iters=100", *RARE]
    printed = train_printing(data_dir, tmp_path, "--max_iters=20", *common)
    assert "max_iters came first" in printed
    before = load(tmp_path / "ckpt_0000020.pt")["time_spent"]
    assert 0 < before < 60 * BUDGET
    printed = train_printing(data_dir, tmp_path, "--init_from=resume", *CAP, *common)
    left = (60 * BUDGET - before) / 60
    assert f"a {BUDGET:g}-minute budget ({left:.3g} min left)" in printed
    ckpt = load(tmp_path / numbered(tmp_path)[-1])
    steps = ckpt["iter_num"]
    assert 20 < steps < 20000 and ckpt["time_spent"] == 60 * BUDGET
    resumed = [r for r in step_records(tmp_path) if r["iter"] > 20]
    assert [r["iter"] for r in resumed] == list(range(21, steps + 1))
    # the schedule goes on from the share the first process spent, not from the start
    cfg = train.parse_config(TINY + CAP + common)
    assert (
        resumed[0]["lr"] >= train.get_lr(0, cfg, before / (60 * BUDGET)) > train.get_lr(0, cfg, 0)
    )
    # resumed once its budget is spent: nothing trains, nothing is written
    files = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("ckpt_*.pt")}
    printed = train_printing(data_dir, tmp_path, "--init_from=resume", *CAP, *common)
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("ckpt_*.pt")} == files
    assert step_records(tmp_path)[-1]["iter"] == steps
    assert re.search(rf"iterations +{steps:,} -> {steps:,} of", printed)
    assert "bought" in printed and "0 min left" in printed
    # a larger budget goes on for the difference
    train_printing(
        data_dir, tmp_path, "--init_from=resume", *CAP, *common[1:], "--max_minutes=0.07"
    )
    ckpt = load(tmp_path / numbered(tmp_path)[-1])
    assert ckpt["iter_num"] > steps and ckpt["time_spent"] == pytest.approx(60 * 0.07)


def test_under_ddp_every_process_stops_at_the_same_step(data_dir, tmp_path):
    """Rank 0's clock decides for both: a process that stepped on alone would wait in its
    all-reduce, and the run would not end."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["train.py", *TINY, f"--data_dir={data_dir}", f"--out_dir={tmp_path}", *CAP, *RARE]
    cmd += [f"--max_minutes={BUDGET}", "--gradient_accumulation_steps=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    [name] = numbered(tmp_path)
    ckpt = load(tmp_path / name)
    steps = ckpt["iter_num"]
    assert 0 < steps < 20000 and ckpt["time_spent"] == 60 * BUDGET and len(ckpt["rng"]) == 2
    assert [r["iter"] for r in step_records(tmp_path)] == list(range(1, steps + 1))
    assert f"bought {steps:,} steps" in result.stdout
