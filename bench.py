"""Speed of what train.py and sample.py do, side by side with Hugging Face's GPT-2, in one run.

    python bench.py                        # every section
    python bench.py --only train,sample    # some of them

Each section prints a markdown table for BENCHMARKS.md; bench_data.py and bench_runs.py print the
others. Ratios are taken within one run on one machine, because absolute numbers on a shared
machine are noisy.

    train     training tokens/s against HF GPT2LMHeadModel, and MFU against a bf16 matmul
    generate  a 2,048-token sample through model.stream, the engine of every sample
    sample    sampling tokens/s against HF generate(use_cache=True), real-time factor, int8
    render    render.py's WAV rendering (sample.py --audio), as a real-time factor
"""

import argparse
import os
import runpy
import tempfile
import time

import numpy as np

import attributes
import benchlib
import dataset
import midifile
import tokenizer
from files import UserError, run_script
from render import markdown_table

# -----------------------------------------------------------------------------
# the model: ours against Hugging Face's GPT-2 of the same shape, same weights, same dtype

# 19M parameters
BENCH_MODEL = dict(n_layer=6, n_head=8, n_embd=512, block_size=256, vocab_size=512)


def hf_twin(ours):
    """GPT2LMHeadModel with our GPT's shape and weights (transformers is bench/test only)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    c = ours.config
    config = GPT2Config(
        vocab_size=c.vocab_size,
        n_positions=c.block_size,
        n_embd=c.n_embd,
        n_layer=c.n_layer,
        n_head=c.n_head,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    config._attn_implementation = "sdpa"  # the same fused attention kernel as ours
    hf = GPT2LMHeadModel(config)
    state = ours.state_dict()
    transposed = (
        "attn.c_attn.weight",
        "attn.c_proj.weight",
        "mlp.c_fc.weight",
        "mlp.c_proj.weight",
    )
    with torch.no_grad():
        for name, p in hf.state_dict().items():
            if name in state:
                p.copy_(state[name].t() if name.endswith(transposed) else state[name])
    return hf


def time_training(model, step, dtype, steps):
    """Median seconds of a training step with AdamW, after two that warm up allocators and
    kernels."""
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times = []
    for _ in range(steps + 2):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            loss = step(model)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return np.median(times[2:])


def bench_train(args):
    import torch

    from model import GPT, GPTConfig, measure_peak_flops

    torch.manual_seed(0)
    batch, steps = 8, args.train_steps
    ours = GPT(GPTConfig(**BENCH_MODEL))
    hf = hf_twin(ours)
    T = BENCH_MODEL["block_size"]
    x = torch.randint(0, BENCH_MODEL["vocab_size"], (batch, T + 1))
    flops_per_token = ours.flops_per_token(T)
    rows = []
    for dtype in (torch.bfloat16, torch.float32):
        peak = measure_peak_flops("cpu", str(dtype).removeprefix("torch."))
        for name, model, step in (
            ("AMT model.py", ours, lambda m: m(x[:, :-1], x[:, 1:])[1]),
            (
                "HF GPT2LMHeadModel (sdpa)",
                hf,
                lambda m: m(input_ids=x[:, :-1], labels=x[:, :-1]).loss,
            ),
        ):
            tokens_per_s = batch * T / time_training(model, step, dtype, steps)
            rows.append(
                (
                    name,
                    str(dtype).removeprefix("torch."),
                    f"{tokens_per_s:,.0f}",
                    f"{100 * flops_per_token * tokens_per_s / peak:.1f}%",
                    f"{peak / 1e9:.0f}",
                )
            )
    print(
        f"### Training throughput on CPU ({ours.num_params() / 1e6:.1f}M parameters, "
        f"batch {batch} x {T}, AdamW, median of {steps} steps)\n"
    )
    print(
        markdown_table(
            [
                "model",
                "dtype",
                "tokens/s",
                "MFU",
                "matmul GFLOP/s (2048², same dtype, same run, best of 1 s)",
            ],
            rows,
        )
    )
    for i in (0, 2):
        ours, theirs = (float(rows[j][2].replace(",", "")) for j in (i, i + 1))
        print(f"- {rows[i][1]}: AMT at **{ours / theirs:.2f}x** the HF model's tokens/s")
    print()


# -----------------------------------------------------------------------------
# generation


def timed_generate(fn, reps=5, warmup=True):
    """Best of reps wall times of fn(), after one untimed call that warms up (unless warmup is
    False)."""
    if warmup:
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def random_model(config, **overrides):
    """A GPT of a config file's shape (vocab_size from overrides or the config), random weights,
    in eval mode."""
    from model import GPT, GPTConfig

    return GPT(GPTConfig.from_settings(runpy.run_path(config), **overrides)).eval()


def demo_model(args):
    """The demo run's checkpoint (args.out_dir), else random weights of config/amt_cpu.py's shape ->
    (model in eval mode, its checkpoint dict or None, what it is in words)."""
    import checkpoints

    try:
        model, ckpt = checkpoints.load_model(args.out_dir)
        return model, ckpt, f"checkpoint {ckpt['path']}"
    except UserError:
        model = random_model("config/amt_cpu.py", vocab_size=512)
        return model, None, "random weights of config/amt_cpu.py's shape (no checkpoint)"


def start_prompt(batch):
    """(batch, PREFIX_LEN + 1): the attribute prefix of SEMANTIC_TOKEN_0, then START."""
    import torch

    return torch.tensor(
        [attributes.attribute_prefix(tokenizer.semantic_token(0)) + [tokenizer.START]] * batch
    )


def without_end(hook):
    """A logits hook that also forbids END, so that every timed sample runs to its full length."""

    def no_end(tokens, logits):
        logits = hook(tokens, logits)
        logits[:, tokenizer.END] = float("-inf")
        return logits

    return no_end


def stream(model, prompt, n_new, *, logits_hook, seed):
    """n_new tokens through model.stream, as generation.generate_tokens drives it: one KV cache for
    the whole sample, rebuilt only when the context slides."""
    import torch

    steps = model.stream(
        prompt,
        logits_hook=logits_hook,
        keep_first=tokenizer.PREFIX_LEN,
        generator=torch.Generator().manual_seed(seed),
    )
    return torch.cat([prompt] + [next(steps) for _ in range(n_new)], dim=1)


def bench_generate(args):
    """One long sample through generation's engine, model.stream, for the demo model and
    config/amt.py's shape. BENCHMARKS.md's table of it beside the loop it replaced (model.generate
    restarted every 128 tokens) was made by bench.py at commit e7adc56, which still had that
    loop."""
    import torch

    import generation

    torch.manual_seed(0)
    demo, _, source = demo_model(args)
    big = random_model("config/amt.py")
    n_new, rows = args.generate_tokens, []
    for name, model, batches in (
        (f"demo ({source})", demo, (1, 8)),
        ("config/amt.py's shape, random weights", big, (1,)),
    ):
        hook = without_end(generation.grammar_hook(model.config.vocab_size, "cpu"))
        for batch in batches:
            prompt = torch.tensor([generation.prompt_row(tokenizer.semantic_token(0))] * batch)
            with torch.no_grad():
                seconds = timed_generate(
                    lambda: stream(model, prompt, n_new, logits_hook=hook, seed=0),
                    reps=args.generate_reps,
                    warmup=False,
                )
            tokens_per_s = f"{batch * n_new / seconds:,.0f}"
            rows.append((name, model.config.block_size, batch, tokens_per_s))
    print(
        f"### Generation: a {n_new:,}-token sample per row on CPU, fp32, with the grammar mask, "
        f"best of {args.generate_reps}\n"
    )
    print(markdown_table(["model", "block_size", "batch", "tokens/s"], rows))


def sampling_rows(model, hf, n_new):
    """Tokens/s of our sampling (with and without the grammar mask) and of HF's generate, at
    batch 1 and 8."""
    import torch

    import generation

    rows = []
    with torch.no_grad():
        for batch in (1, 8):
            prompt = start_prompt(batch)
            ours = timed_generate(lambda: model.generate(prompt, n_new, top_k=None))
            theirs = timed_generate(
                lambda: hf.generate(
                    prompt,
                    do_sample=True,
                    top_k=0,
                    max_new_tokens=n_new,
                    min_new_tokens=n_new,
                    use_cache=True,
                    pad_token_id=0,
                )
            )
            hook = generation.grammar_hook(model.config.vocab_size, "cpu")
            grammar = timed_generate(lambda: model.generate(prompt, n_new, logits_hook=hook))
            rows.append(
                (
                    batch,
                    f"{batch * n_new / ours:,.0f}",
                    f"{batch * n_new / grammar:,.0f}",
                    f"{batch * n_new / theirs:,.0f}",
                    f"**{theirs / ours:.2f}x**",
                )
            )
    return rows


def real_time_factor(model, source):
    """Seconds of music per second of compute, as sample.py makes it: 3 samples of 60 s."""
    import generation

    music, compute = 0.0, 0.0
    for k in range(3):
        t0 = time.perf_counter()
        pieces = generation.generate_tokens(
            model,
            [generation.prompt_row(tokenizer.semantic_token(k))],
            generation.Sampling(max_new_tokens=1024, top_p=0.95, seed=k, seconds=60.0),
        )
        compute += time.perf_counter() - t0
        score = tokenizer.tokens_to_score(pieces[0])[0]
        music += tokenizer.seconds_at(score.end_step, score.tempos)
    print(
        f"- real-time factor of {source} on {os.cpu_count()} cores: **{music / compute:.1f}x** "
        f"({music:.0f} s of music in {compute:.1f} s, 3 samples at batch 1 with the grammar mask)"
    )


def int8_line(model, data_dir, n_new):
    """INT8 dynamic quantisation of the Linear layers: speed against val loss."""
    import torch

    import generation

    quantized, prompt = generation.quantize(model), start_prompt(1)
    with torch.no_grad():
        fp32_s = timed_generate(lambda: model.generate(prompt, n_new))
        int8_s = timed_generate(lambda: quantized.generate(prompt, n_new))
        data = dataset.load_dataset(data_dir)
        windows = dataset.covering_windows(data, "val", model.config.block_size, 32)
        x, y = (
            torch.from_numpy(a)
            for a in dataset.build_windows(
                data,
                "val",
                windows,
                np.tile(attributes.UNCOND_PREFIX, (len(windows), 1)),
                block_size=model.config.block_size,
            )
        )
        loss_fp32 = model(x, y)[1].item()
        loss_int8 = quantized(x, y)[1].item()
    print(
        f"- INT8 dynamic quantisation (batch 1): {n_new / int8_s:,.0f} tokens/s against "
        f"{n_new / fp32_s:,.0f} in fp32 (**{fp32_s / int8_s:.2f}x**), val loss {loss_int8:.4f} "
        f"against {loss_fp32:.4f} (**{100 * (loss_int8 / loss_fp32 - 1):+.2f}%**) on 32 fixed val "
        "windows led by the unconditional prefix"
    )


def bench_sample(args):
    import torch

    torch.manual_seed(0)
    model, ckpt, source = demo_model(args)
    hf = hf_twin(model).eval()
    n_prompt = tokenizer.PREFIX_LEN + 1  # the attribute prefix and START
    # HF's positions end at block_size
    n_new = min(args.sample_tokens, model.config.block_size - n_prompt)
    rows = sampling_rows(model, hf, n_new)
    print(f"### Sampling on CPU, fp32, {n_new} new tokens, {source}\n")
    print(
        markdown_table(
            [
                "batch",
                "AMT tokens/s",
                "AMT + grammar mask tokens/s",
                "HF generate(use_cache=True) tokens/s",
                "AMT / HF",
            ],
            rows,
        )
    )
    if ckpt is not None:
        real_time_factor(model, source)
        int8_line(model, args.data_dir, n_new)
    print()


# -----------------------------------------------------------------------------
# rendering


def band_midi(path, seconds=60, bpm=120, seed=0):
    """A busy test piece, `seconds` long: piano chords, a bass line, a flute melody, a drum kit."""
    import mido

    rng, tpb, beats = np.random.default_rng(seed), 480, int(seconds * bpm / 60)
    mid = mido.MidiFile(ticks_per_beat=tpb)
    parts = [  # (channel, program, pitches at beat b, beats per note)
        (0, 0, lambda b: [48 + int(x) for x in rng.choice(12, 3, replace=False)], 1.0),  # chords
        (1, 33, lambda b: [36 + int(rng.integers(12))], 1.0),  # bass
        (2, 73, lambda b: [72 + int(rng.integers(12))], 0.5),  # flute
        (9, 0, lambda b: [36 if b % 2 == 0 else 38, 42], 0.5),  # drums
    ]
    for channel, program, pitches, step in parts:
        events = [(0, -1, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm)))]
        if channel != 9:
            events.append((0, 0, mido.Message("program_change", channel=channel, program=program)))
        notes = []
        for b in np.arange(0, beats, step):
            on, off = int(b * tpb), int((b + step * 0.9) * tpb)
            notes += [(on, off - on, pitch) for pitch in pitches(int(b))]
        mid.tracks.append(midifile.track_from_events(events + benchlib.note_events(notes, channel)))
    mid.save(path)


def bench_render(args):
    import render

    with tempfile.TemporaryDirectory() as tmp:
        pieces = []
        for i in range(3):
            pieces.append(os.path.join(tmp, f"band_{i}.mid"))
            band_midi(pieces[-1], seed=i)
        render.render_wav(pieces[0])  # reads the SoundFont once, as a batch of samples does
        t0, audio = time.perf_counter(), 0.0
        for path in pieces:
            audio += render.render_wav(path)[1]
        seconds = time.perf_counter() - t0
    print(
        f"### Audio rendering (sample.py --audio: midirenderer, TimGM6mb.sf2, {render.SAMPLE_RATE} "
        "Hz stereo WAV)\n"
    )
    print(
        markdown_table(
            ["pieces", "audio seconds", "render seconds", "real-time factor"],
            [
                (
                    f"{len(pieces)} x 60 s, 4 parts with drums",
                    f"{audio:.0f}",
                    f"{seconds:.2f}",
                    f"**{audio / seconds:.0f}x**",
                )
            ],
        )
    )


# -----------------------------------------------------------------------------

# section -> (the function that runs it, the dev packages it imports: requirements-dev.txt)
SECTIONS = {
    "train": (bench_train, ("transformers",)),
    "generate": (bench_generate, ()),
    "sample": (bench_sample, ("transformers",)),
    "render": (bench_render, ()),
}
# flag -> (default, help)
FLAGS = {
    "data_dir": (dataset.DEFAULT_DATA_DIR, "the val windows of the sample section's int8 line"),
    "out_dir": ("out/amt_cpu", "checkpoint used by the sample section"),
    "train_steps": (6, "timed training steps per model and dtype"),
    "sample_tokens": (256, "new tokens per timed generation"),
    "generate_tokens": (2048, "new tokens per sample in the generate section"),
    "generate_reps": (2, "timed runs per row in the generate section"),
}


def main():
    parser = argparse.ArgumentParser(description="AMT benchmarks; prints markdown tables")
    args = benchlib.parse_args(parser, "bench.py", SECTIONS, FLAGS)
    benchlib.run("bench.py", SECTIONS, args)


if __name__ == "__main__":
    run_script(main)
