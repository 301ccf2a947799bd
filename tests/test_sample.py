"""sample.py: grammar-constrained sampling, repeatability, the pinned semantic token, guidance,
primes, the --seconds cut and the CLI. Hermetic and CPU only: a tiny random GPT saved as a
checkpoint in train.py's format."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import mido
import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from midi_factory import midi_file, notes, tempo, track  # noqa: E402

import checkpoints  # noqa: E402
import generation  # noqa: E402
import prompt  # noqa: E402
import sample  # noqa: E402
import tokenizer  # noqa: E402
from attributes import UNCOND_PREFIX, attribute_prefix  # noqa: E402
from files import UserError  # noqa: E402
from generation import Sampling, prompt_row  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402

torch.set_num_threads(1)  # other jobs share the cores; a model this small gains nothing from more
MODEL_ARGS = dict(
    block_size=64, vocab_size=512, n_layer=2, n_head=2, n_embd=32, dropout=0.0, bias=True
)
LABELS = ["slow strings", "fast piano", "drums"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # the CLI runs: one thread each, as above
SPECIAL = [tokenizer.PAD, tokenizer.UNK, tokenizer.START, tokenizer.UNCOND] + [
    tokenizer.semantic_token(k) for k in range(tokenizer.N_SEMANTIC)
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder holding one checkpoint of an untrained (random) model, and its data."""
    root = tmp_path_factory.mktemp("run")
    data_dir, out_dir = root / "data", root / "out"
    data_dir.mkdir()
    out_dir.mkdir()
    (data_dir / "clusters.json").write_text(json.dumps({"k": 3, "labels": LABELS}))
    torch.manual_seed(0)
    model = GPT(GPTConfig(**MODEL_ARGS))
    # weights well off the init, so the first token clearly moves the logits (guidance)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    meta = dict(vocab_size=tokenizer.VOCAB_SIZE, blocks=tokenizer.LAYOUT)
    ckpt = dict(
        model=model.state_dict(),
        model_args=MODEL_ARGS,
        iter_num=10,
        best_val_loss=float("inf"),
        config=dict(data_dir=str(data_dir), out_dir=str(out_dir)),
        meta=meta,
        labels=LABELS,
    )
    torch.save(ckpt, out_dir / "ckpt_0000010.pt")
    return out_dir


@pytest.fixture(scope="module")
def model(run):
    return checkpoints.load_model(str(run))[0]


def gen(model, k, n, *, attributes=None, header=True, prime=None, programs=None, **sampling):
    """n samples of semantic token k through generation.generate_tokens; sampling:
    generation.Sampling's fields."""
    rows = [prompt_row(tokenizer.semantic_token(k), attributes, header=header, prime=prime)] * n
    return generation.generate_tokens(
        model, rows, Sampling(**sampling), programs=programs and [programs] * n
    )


def cli(*args):
    return subprocess.run(
        [sys.executable, "sample.py", "--device=cpu", *map(str, args)],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
    )


def test_constrained_samples_decode_with_nothing_skipped(model):
    attributes = dict(key=3, meter=(6, 8), tempo_bpm=140, instruments=[40, tokenizer.DRUMS])
    samples = gen(model, 1, 100, attributes=attributes, max_new_tokens=120, seed=0)
    assert len(samples) == 100
    prefix, P = (attribute_prefix(tokenizer.semantic_token(1), **attributes), tokenizer.PREFIX_LEN)
    for tokens in samples:
        assert (
            list(tokens[:P]) == prefix
            and tokens[P] == tokenizer.START
            and tokens[-1] == tokenizer.END
        )
        assert tokens.max() < tokenizer.VOCAB_SIZE, (
            "ids past the tokenizer's vocabulary were sampled"
        )
        assert not np.isin(tokens[P + 1 : -1], SPECIAL + [tokenizer.END]).any(), (
            "a special token mid-stream"
        )
        score, skipped = tokenizer.tokens_to_score(tokens)
        assert skipped == 0
        onsets = [n.onset for n in score.notes]  # in token order
        assert onsets == sorted(onsets), "time ran backwards"
    assert sum(len(tokenizer.tokens_to_score(t)[0].notes) for t in samples) > 500, (
        "too few notes to mean much"
    )
    # the same model sampled without the grammar does break it: the check above has teeth
    free = model.generate(
        torch.tensor([prefix + [tokenizer.START]]), 120, generator=torch.Generator().manual_seed(0)
    )
    assert tokenizer.tokens_to_score(free[0].numpy())[1] > 0


def test_same_seed_same_files(run, tmp_path):
    common = [
        "--out_dir",
        str(run),
        "--token",
        "SEMANTIC_TOKEN_2",
        "--num_samples",
        "2",
        "--max_new_tokens",
        "80",
        "--device",
        "cpu",
        "--dtype",
        "float32",
    ]
    a = sample.main(common + ["--seed", "5", "--sample_dir", str(tmp_path / "a")])
    b = sample.main(common + ["--seed", "5", "--sample_dir", str(tmp_path / "b")])
    c = sample.main(common + ["--seed", "6", "--sample_dir", str(tmp_path / "c")])
    assert [Path(p).name for p in a] == ["SEMANTIC_TOKEN_2_s5_0.mid", "SEMANTIC_TOKEN_2_s5_1.mid"]
    for pa, pb in zip(a, b):
        assert Path(pa).read_bytes() == Path(pb).read_bytes()
        assert (
            Path(pa).with_suffix(".png").read_bytes() == Path(pb).with_suffix(".png").read_bytes()
        )
    assert Path(a[0]).read_bytes() != Path(c[0]).read_bytes(), (
        "another seed should give another piece"
    )


def test_semantic_token_stays_pinned_past_the_context(model, monkeypatch):
    """Generate past block_size with guidance and record what the model saw at every (re)fill of its
    cache."""
    seen = []
    forward = model.forward

    def spy(idx, *args, kv_cache=None, **kwargs):
        if kv_cache is None or kv_cache.pos == 0:  # a fresh context, not one new token
            seen.append(idx[:, : tokenizer.PREFIX_LEN].tolist())
            assert idx.size(1) <= model.config.block_size
        return forward(idx, *args, kv_cache=kv_cache, **kwargs)

    monkeypatch.setattr(model, "forward", spy)
    samples = gen(
        model, 2, 3, attributes=dict(key=20, tempo_bpm=60), max_new_tokens=200, guidance=2.0, seed=1
    )
    assert max(len(t) for t in samples) > 2 * model.config.block_size, (
        "did not get past the context"
    )
    assert len(seen) >= 4, "the window never slid"
    prefix = attribute_prefix(tokenizer.semantic_token(2), key=20, tempo_bpm=60)
    # conditional rows, then unconditional ones (as many of each: rows whose sample ended leave the
    # batch)
    assert all(
        first == [prefix] * (len(first) // 2) + [UNCOND_PREFIX.tolist()] * (len(first) // 2)
        for first in seen
    )
    assert all(list(t[: tokenizer.PREFIX_LEN]) == prefix for t in samples)


def test_guidance_1_is_plain_sampling_and_other_guidance_is_not(model):
    prompt = torch.tensor([attribute_prefix(tokenizer.semantic_token(0)) + [tokenizer.START]] * 4)
    plain = model.generate(
        prompt,
        40,
        logits_hook=generation.grammar_hook(model.config.vocab_size, "cpu"),
        generator=generation.row_generators(9, 4),
    ).numpy()
    ours = gen(model, 0, 4, max_new_tokens=40, guidance=1.0, seed=9)
    for row, ref in zip(ours, plain):
        # ours is trimmed at END (or closed with one)
        assert np.array_equal(row[:-1], ref[: len(row) - 1])
    guided = gen(model, 0, 4, max_new_tokens=40, guidance=3.0, seed=9)
    assert any(not np.array_equal(a, b) for a, b in zip(ours, guided))


def test_seconds_at_agrees_with_mido():
    score = tokenizer.Score(
        notes=[tokenizer.Note(0, 30, 60, 0, 80), tokenizer.Note(100, 77, 64, 0, 80)],
        tempos=[(0, 90.0), (24, 150.0), (61, 47.0)],
        end_step=177,
    )
    assert tokenizer.seconds_at(score.end_step, score.tempos) == pytest.approx(
        tokenizer.score_to_midi(score).length
    )
    assert tokenizer.seconds_at([0, 24], score.tempos) == pytest.approx([0, 24 / 12 * 60 / 90])


def time_on_steps(tokens):
    return sum(
        int(t) - tokenizer.OFFSET["TIME_ON"] + 1
        for t in tokens
        if tokenizer.TOKEN_TYPE[t] == tokenizer.TYPE["TIME_ON"]
    )


def test_seconds_cuts_where_the_music_reaches_that_time(model):
    full = gen(model, 1, 6, max_new_tokens=200, seed=3)
    cut = gen(model, 1, 6, max_new_tokens=200, seed=3, seconds=4.0)
    n_cut = n_own_tempo = 0
    for long, short in zip(full, cut):
        assert np.array_equal(short[:-1], long[: len(short) - 1]), (
            "the cut sample is a prefix of the full one"
        )
        score, skipped = tokenizer.tokens_to_score(short)
        assert skipped == 0 and short[-1] == tokenizer.END
        # cut before its own END: the token it was cut at takes time past 4 s
        if len(short) < len(long):
            n_cut += 1
            tempos, at = tokenizer.tokens_to_score(long)[0].tempos, len(short) - 1
            assert tokenizer.seconds_at(time_on_steps(long[:at]), tempos) < 4.0
            assert tokenizer.seconds_at(time_on_steps(long[: at + 1]), tempos) >= 4.0
            n_own_tempo += tempos != [(0, tokenizer.DEFAULT_BPM)]
    assert n_cut >= 3 and n_own_tempo >= 1, (
        "too few samples cut, or none with a tempo of its own: a weak check"
    )


def test_prime_is_kept_and_continued(model, tmp_path):
    # 120 bpm: a beat is 0.5 s, so the first 2 s are the notes on beats 0..3
    spec = [(beat, 1, 60 + beat) for beat in range(12)]
    path = tmp_path / "song.mid"
    midi_file([track([tempo(0, 120)] + notes(0, spec, program=40))]).save(str(path))
    prime = generation.prime_tokens(str(path), 2.0)
    assert prime[0] == tokenizer.START and tokenizer.END not in prime
    kept = [(n.onset, n.pitch, n.program) for n in tokenizer.tokens_to_score(prime)[0].notes]
    assert kept == [(beat * 12, 60 + beat, 40) for beat in range(4)]
    for tokens in gen(model, 0, 3, max_new_tokens=60, seed=2, prime=prime):
        P = tokenizer.PREFIX_LEN
        assert np.array_equal(tokens[P : P + len(prime)], prime)
        score, skipped = tokenizer.tokens_to_score(tokens)
        assert skipped == 0 and [(n.onset, n.pitch, n.program) for n in score.notes[:4]] == kept
    (tmp_path / "bad.mid").write_bytes(b"MThd garbage")
    with pytest.raises(tokenizer.MidiError, match="bad.mid"):
        generation.prime_tokens(str(tmp_path / "bad.mid"), 2.0)


def test_newest_checkpoint_that_loads_and_unknown_token_in_process(run, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "ckpt_0000010.pt").write_bytes((run / "ckpt_0000010.pt").read_bytes())
    # cut short by a crash
    (out / "ckpt_0000020.pt").write_bytes((run / "ckpt_0000010.pt").read_bytes()[:1000])
    assert checkpoints.load_model(str(out))[1]["path"] == str(out / "ckpt_0000010.pt")
    with pytest.raises(UserError, match="valid tokens: SEMANTIC_TOKEN_0 \\(slow strings\\)"):
        prompt.semantic_token_id("SEMANTIC_TOKEN_3", LABELS)  # only 3 clusters were trained
    last = tokenizer.N_SEMANTIC - 1
    # no labels: all of them
    assert prompt.semantic_token_id(f"SEMANTIC_TOKEN_{last}") == tokenizer.semantic_token(last)


def test_prompt_maps_to_the_nearest_token(run, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(
        prompt,
        "nearest_tokens",
        lambda text, data_dir, top=3: [(2, "drums", 0.61), (0, "slow strings", 0.2)],
    )
    paths = sample.main(
        [
            "--out_dir",
            str(run),
            "--prompt",
            "pounding drums",
            "--num_samples",
            "1",
            "--seed",
            "0",
            "--max_new_tokens",
            "20",
            "--sample_dir",
            str(tmp_path),
            "--device",
            "cpu",
        ]
    )
    assert Path(paths[0]).name == "SEMANTIC_TOKEN_2_s0_0.mid"
    assert "-> SEMANTIC_TOKEN_2 (drums), cosine 0.610" in capsys.readouterr().out
    monkeypatch.undo()
    with pytest.raises(UserError, match="python cluster.py --data_dir"):
        sample.main(["--out_dir", str(run), "--prompt", "x", "--data_dir", str(tmp_path)])


def test_cli_user_errors_are_one_line(run, tmp_path):
    (tmp_path / "bad.mid").write_bytes(b"not a midi file at all")
    procs = {
        name: subprocess.Popen(
            [sys.executable, "sample.py", "--device=cpu", *args],
            cwd=ROOT,
            env=ENV,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for name, args in dict(
            token=["--out_dir", run, "--token", "SEMANTIC_TOKEN_9"],
            ckpt=["--out_dir", tmp_path / "nothing"],
            prime=["--out_dir", run, "--prime", tmp_path / "bad.mid"],
        ).items()
    }
    errors = {}
    for name, proc in procs.items():
        _, stderr = proc.communicate()
        assert (
            proc.returncode != 0
            and "Traceback" not in stderr
            and len(stderr.strip().splitlines()) == 1
        ), stderr
        errors[name] = stderr
    assert "SEMANTIC_TOKEN_9" in errors["token"] and "SEMANTIC_TOKEN_2 (drums)" in errors["token"]
    assert "python train.py config/amt_cpu.py" in errors["ckpt"]
    assert "bad.mid" in errors["prime"] and "not a readable MIDI file" in errors["prime"]


def test_cli_writes_midi_and_png(run, tmp_path):
    r = cli(
        "--out_dir",
        run,
        "--token",
        "SEMANTIC_TOKEN_0",
        "--num_samples",
        2,
        "--max_new_tokens",
        100,
        "--seed",
        4,
        "--sample_dir",
        tmp_path,
    )
    assert r.returncode == 0, r.stderr
    mids = sorted(tmp_path.glob("*.mid"))
    assert [p.name for p in mids] == ["SEMANTIC_TOKEN_0_s4_0.mid", "SEMANTIC_TOKEN_0_s4_1.mid"]
    for path in mids:
        assert str(path) in r.stdout
        mido.MidiFile(str(path))  # reads back
        assert path.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob("*.tmp")), "temporary files left behind"
    assert "tokens/s" in r.stdout


def test_cli_quantize_samples_valid_midi(run, tmp_path):
    r = cli(
        "--out_dir",
        run,
        "--token",
        "SEMANTIC_TOKEN_0",
        "--num_samples",
        1,
        "--max_new_tokens",
        60,
        "--seed",
        5,
        "--sample_dir",
        tmp_path,
        "--quantize",
        "--device",
        "cpu",
    )
    assert r.returncode == 0, r.stderr
    (path,) = tmp_path.glob("*.mid")
    assert tokenizer.tokens_to_score(tokenizer.encode(str(path)))[1] == 0
    assert "(float32)" in r.stdout  # int8 kernels run with fp32 activations


def test_a_checkpoint_from_before_the_attribute_prefix_is_refused_in_one_line(run, tmp_path):
    ckpt = torch.load(run / "ckpt_0000010.pt", map_location="cpu", weights_only=True)
    old_blocks = {
        name: span
        for name, span in ckpt["meta"]["blocks"].items()
        if name
        not in (
            "KEY",
            "KEY_NONE",
            "METER_NONE",
            "TEMPO_NONE",
            "INSTRUMENTS_NONE",
            "INSTRUMENTS_END",
        )
    }
    # what a checkpoint of the 480-id vocabulary records
    ckpt["meta"] = dict(ckpt["meta"], blocks=old_blocks)
    torch.save(ckpt, tmp_path / "ckpt_0000010.pt")
    result = subprocess.run(
        [sys.executable, "sample.py", "--device=cpu", "--out_dir", str(tmp_path)],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert (
        "predates the attribute prefix" in result.stderr
        and "python train.py config/amt_cpu.py" in result.stderr
    )


def test_only_the_instruments_asked_for_play_unless_any_instrument(model):
    attributes = dict(instruments=[40, 42])
    strict = gen(
        model,
        1,
        20,
        attributes=attributes,
        max_new_tokens=100,
        seed=3,
        programs=attributes["instruments"],
    )
    free = gen(model, 1, 20, attributes=attributes, max_new_tokens=100, seed=3)
    played = lambda rows: {n.program for t in rows for n in tokenizer.tokens_to_score(t)[0].notes}
    assert played(strict) == {40, 42}
    assert played(free) - {40, 42}, (
        "the random model plays other instruments when left free: the check has teeth"
    )


def test_each_row_of_a_batch_keeps_its_own_instruments(model):
    """evaluate.py samples many prompts in one batch: each row is held to its own instruments, or
    left free."""
    rows = [
        prompt_row(tokenizer.semantic_token(1), dict(instruments=p)) for p in ([40], [0, 73], None)
    ] * 8
    programs = [[40], [0, 73], None] * 8
    pieces = generation.generate_tokens(
        model, rows, Sampling(max_new_tokens=100, seed=4), programs=programs
    )
    played = [{n.program for n in tokenizer.tokens_to_score(t)[0].notes} for t in pieces]
    assert all(p <= {40} for p in played[0::3]) and all(p <= {0, 73} for p in played[1::3])
    assert set().union(*played[2::3]) - {0, 40, 73}, (
        "the free rows play what they like: the check has teeth"
    )


def test_key_strength_keeps_notes_on_the_asked_scale_and_leaves_drums_and_keyless_rows_alone(model):
    """A row that asks A minor loses key_strength nats on each note off A harmonic minor; its drums
    and a row that asks no key keep the model's own pitches (the random model plays all twelve pitch
    classes)."""
    a_minor = 12 + 9  # KEY ids: 12 * minor + tonic
    rows = [
        prompt_row(None, dict(key=a_minor, instruments=[0, tokenizer.DRUMS])),
        prompt_row(None, {}),
    ] * 6
    penalty = generation.scale_penalty(rows, 3.0, model.config.vocab_size)
    off = [
        tokenizer.OFFSET["NOTE"] + p for p in range(128) if p % 12 not in (9, 11, 0, 2, 4, 5, 7, 8)
    ]
    off_triad = [tokenizer.OFFSET["NOTE"] + p for p in range(128) if p % 12 not in (9, 0, 4)]
    assert (
        (penalty[0, 0, off] == -3).all()
        and penalty[0, 0].sum() == -3 * len(off)
        and not penalty[1].any()
    )
    assert (penalty[0, 1, off_triad] <= -3).all() and penalty[0, 1].sum() == -3 * (
        len(off) + len(off_triad)
    )
    pitched = lambda sampling: [
        [
            n.pitch % 12
            for n in tokenizer.tokens_to_score(t)[0].notes  # noqa: E731
            if n.program != tokenizer.DRUMS
        ]
        for t in generation.generate_tokens(model, rows, sampling)
    ]
    held = pitched(Sampling(max_new_tokens=200, seed=5, key_strength=30.0))
    free = [Counter(p) for p in pitched(Sampling(max_new_tokens=200, seed=5))]
    assert all(set(p[: generation.OPENING_NOTES]) <= {9, 0, 4} for p in held[0::2]), (
        "it opens on the tonic triad"
    )
    held = [Counter(p) for p in held]
    scale = {9, 11, 0, 2, 4, 5, 7, 8}
    assert (
        all(set(c) <= scale for c in held[0::2]) and sum(sum(c.values()) for c in held[0::2]) > 20
    )
    assert set().union(*held[0::2]) - {9, 0, 4}, "past the opening the whole scale plays"
    assert any(set(c) - scale for c in held[1::2]), (
        "the keyless rows stay free: the check has teeth"
    )
    assert any(set(c) - scale for c in free[0::2]), (
        "without key_strength the random model leaves the scale"
    )
    drums = [
        n
        for t in generation.generate_tokens(
            model,
            rows[:1] * 4,
            Sampling(max_new_tokens=200, seed=5, key_strength=30.0),
            programs=[[tokenizer.DRUMS]] * 4,
        )
        for n in tokenizer.tokens_to_score(t)[0].notes
    ]
    assert {n.pitch % 12 for n in drums} - scale, (
        "drum notes are sounds, not pitches: no scale holds them"
    )


def test_each_asked_instrument_gets_its_turn():
    """An instrument asked beside others that has not played yet comes in at least as likely as the
    likeliest asked one; one that has played, a row that asks one instrument and a free row keep the
    model's logits."""
    program = lambda p: tokenizer.OFFSET["PROGRAM"] + p  # noqa: E731
    brass = [program(p) for p in (56, 57, 58, 60)]
    time_on = tokenizer.OFFSET["TIME_ON"]  # after a TIME_ON any PROGRAM may come
    tokens = torch.tensor(
        [
            [
                tokenizer.START,
                program(57),
                program(56),
                tokenizer.OFFSET["NOTE"] + 60,
                tokenizer.OFFSET["DURATION"],
                time_on,
            ]
        ]
        * 3
    )
    logits = torch.zeros(3, 512)
    # 60 is likelier than the played 56, 58 never heard
    logits[:, brass] = torch.tensor([3.0, 1.0, -9.0, 5.0])
    hook = generation.grammar_hook(512, "cpu", programs=[[56, 57, 58, 60], [56], None])
    hook.start = 2  # 57 played before the start, 56 after it
    out = hook(tokens, logits.clone())
    assert out[0, brass].tolist() == [3.0, 5.0, 5.0, 5.0], (
        "the unheard 57, 58 and 60 come in as likely as 60"
    )
    assert out[0, program(40)] == float("-inf") and out[1, program(56)] == 3.0
    assert out[2, brass].tolist() == [3.0, 1.0, -9.0, 5.0]
    off = generation.grammar_hook(512, "cpu", programs=[[56, 57, 58, 60], [56], None], turns=False)
    off.start = 2
    assert off(tokens, logits.clone())[0, brass].tolist() == [3.0, 1.0, -9.0, 5.0]


def test_a_new_piece_opens_with_the_meter_and_tempo_asked_unless_header_is_off(model):
    attributes, P = dict(meter=(3, 4), tempo_bpm=72), tokenizer.PREFIX_LEN
    opening = [tokenizer.START] + tokenizer.header_tokens((3, 4), 72)
    for tokens in gen(model, 0, 4, attributes=attributes, max_new_tokens=30, seed=1):
        assert list(tokens[P : P + 5]) == opening
    free = gen(model, 0, 20, attributes=attributes, max_new_tokens=30, seed=1, header=False)
    assert any(list(t[P : P + 5]) != opening for t in free), "the model writes its own opening"


def naive_generate_tokens(model, prompts, sampling, programs=None):
    """generate_tokens the slow way: every step runs the whole window (the pinned prefix and the
    newest tokens, by the same rule as model.stream) through the model from scratch, with guidance,
    the grammar, the instrument constraint and the key's scale, for all max_new_tokens steps, then
    cuts each row as generate_tokens does."""
    from model import sample_logits

    P, block, B = tokenizer.PREFIX_LEN, model.config.block_size, len(prompts)
    seq = torch.tensor(prompts)
    uncond = seq.clone()
    uncond[:, :P] = torch.from_numpy(UNCOND_PREFIX)
    both, n_prompt = torch.cat([seq, uncond]), seq.size(1)  # (2B, T)
    penalty = generation.scale_penalty(prompts, sampling.key_strength, model.config.vocab_size)
    hook = generation.grammar_hook(model.config.vocab_size, "cpu", programs, penalty=penalty)
    hook.start = n_prompt  # a row's own notes begin after its prompt
    generator, ctx_len = generation.row_generators(sampling.seed, B), min(n_prompt, block)
    with torch.no_grad():
        for _ in range(sampling.max_new_tokens):
            # (2B, ctx_len)
            window = torch.cat([both[:, :P], both[:, both.size(1) - (ctx_len - P) :]], 1)
            cond, unc = model(window)[0][:, -1].float().split(B)  # (B, V) each
            logits = hook(both[:B], unc + sampling.guidance * (cond - unc))
            both = torch.cat(
                [
                    both,
                    sample_logits(
                        logits,
                        temperature=sampling.temperature,
                        top_k=sampling.top_k,
                        top_p=sampling.top_p,
                        generator=generator,
                    ).repeat(2, 1),
                ],
                1,
            )
            ctx_len = ctx_len + 1 if ctx_len < block else P + (block - P) // 2
    return [generation.finish(row, n_prompt, sampling.seconds) for row in both[:B].numpy()]


def test_generation_past_the_window_equals_a_full_recompute_and_rebuilds_the_cache_on_a_slide(
    model, monkeypatch
):
    """The one generation engine: a sample three times the context long, guided, grammar- and
    instrument- constrained, gives the tokens of running every step from scratch; and the KV cache
    is rebuilt only when the window slides (every (block_size - prefix) / 2 tokens), never on a
    schedule of its own."""
    rows = [
        prompt_row(tokenizer.semantic_token(2), dict(key=4, meter=(3, 4), instruments=[0, 40]))
    ] * 6
    sampling = Sampling(
        max_new_tokens=4 * model.config.block_size,
        guidance=2.0,
        top_p=0.95,
        seed=9,
        key_strength=4.0,
    )
    fresh, steps, forward = [], [], model.forward

    def spy(idx, *args, kv_cache=None, **kwargs):
        (fresh if kv_cache is None or kv_cache.pos == 0 else steps).append(idx.size(1))
        return forward(idx, *args, kv_cache=kv_cache, **kwargs)

    monkeypatch.setattr(model, "forward", spy)
    ours = generation.generate_tokens(model, rows, sampling, programs=[[0, 40]] * 6)
    monkeypatch.undo()
    expected = naive_generate_tokens(model, rows, sampling, programs=[[0, 40]] * 6)
    assert max(len(t) for t in ours) > 3 * model.config.block_size, (
        "no sample got far past the context"
    )
    for a, b in zip(ours, expected):
        assert np.array_equal(a, b)
    ctx_len, refills = len(rows[0]), 1  # the cache is filled once, then rebuilt at each slide
    for _ in range(len(fresh) + len(steps) - 1):
        ctx_len += 1
        if ctx_len > model.config.block_size:
            ctx_len, refills = (
                tokenizer.PREFIX_LEN + (model.config.block_size - tokenizer.PREFIX_LEN) // 2,
                refills + 1,
            )
    assert len(fresh) == refills >= 4 and set(steps) == {1}


def test_a_sample_is_its_own_whatever_its_batch_and_finished_rows_leave_it(model, monkeypatch):
    """Each row draws from its own generator (generation.row_generators: the seed and the row's
    place), so a sample does not change with what else is in the batch; rows whose piece has ended
    leave the batch, so the model runs on fewer rows as samples finish."""
    rows = [prompt_row(tokenizer.semantic_token(k), dict(key=3)) for k in (0, 1, 2, 0, 1, 2)]
    # they end at 35 to 400 tokens
    sampling = Sampling(max_new_tokens=400, guidance=1.5, top_p=0.95, seed=21)
    batch_sizes, forward = [], model.forward

    def spy(idx, *args, **kwargs):
        batch_sizes.append(idx.size(0))
        return forward(idx, *args, **kwargs)

    monkeypatch.setattr(model, "forward", spy)
    together = generation.generate_tokens(model, rows, sampling)
    monkeypatch.undo()
    assert batch_sizes[0] == 12 and min(batch_sizes) < 12, (
        "finished rows (and their guidance twins) left the batch"
    )
    other = [
        prompt_row(tokenizer.semantic_token(9), dict(key=20))
    ] * 6  # other batch-mates in every other place
    mixed = [rows[i] if i % 2 == 0 else other[i] for i in range(6)]
    apart = generation.generate_tokens(model, mixed, sampling)
    for i in (0, 2, 4):
        assert np.array_equal(apart[i], together[i])
    assert any(not np.array_equal(apart[i], together[i]) for i in (1, 3, 5)), (
        "the others did change"
    )
