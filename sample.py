"""Sample MIDI from a trained AMT checkpoint: a semantic token, a text prompt or a MIDI prime in,
.mid files with a piano-roll .png beside each out (and a .wav with --audio), and a card per sample
in the samples/index.html gallery. Sampling is constrained by tokenizer.py's grammar, so every
sample decodes with no token skipped.

python sample.py --token SEMANTIC_TOKEN_3                    # 3 samples from the newest checkpoint
python sample.py --prompt "a slow chorale in a minor key"    # the nearest semantic token
python sample.py --prime song.mid --prime_seconds 8          # continue the first 8 s of a piece
python sample.py --token 3 --seconds 30 --guidance 2 --seed 1 --ckpt best
"""

import argparse
import json
import os
import time

import attributes
import checkpoints
import dataset
import prompt
import render
from files import UserError, check_output_folder, check_range, check_text, run_script
from generation import (
    NUM_SAMPLES,
    SAMPLE_DEFAULTS,
    SECONDS_MAX_NEW_TOKENS,
    add_device_flags,
    check_device,
    generate_tokens,
    prime_tokens,
    quantize,
    user_sampling,
)
from model import pick_device


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Sample MIDI from an AMT checkpoint.")
    what = p.add_mutually_exclusive_group()
    what.add_argument(
        "--token", help="SEMANTIC_TOKEN_k (or k, or SEMANTIC_UNCOND); default unconditional"
    )
    what.add_argument(
        "--prompt", help="free text, mapped to the nearest semantic token (cluster.py)"
    )
    p.add_argument("--prime", help="a MIDI file whose beginning the samples continue")
    p.add_argument(
        "--prime_seconds", type=float, default=10.0, help="how much of the prime to keep"
    )
    p.add_argument("--out_dir", default=checkpoints.OUT_DIR, help="the training run's folder")
    p.add_argument("--ckpt", help=checkpoints.CKPT_HELP)
    p.add_argument("--data_dir", help="dataset folder with clusters.json; default the checkpoint's")
    p.add_argument("--sample_dir", help="where to write; default OUT_DIR/samples")
    p.add_argument("--num_samples", type=int, default=NUM_SAMPLES)
    add_sampling_flags(p)
    add_device_flags(p)
    p.add_argument(
        "--quantize",
        action="store_true",
        help="CPU only: INT8 dynamic quantisation of the Linear layers (bench.py: faster, same val "
        "loss)",
    )
    add_attribute_flags(p)
    p.add_argument(
        "--audio",
        action="store_true",
        help="also render each sample to a 44.1 kHz WAV (TimGM6mb SoundFont)",
    )
    p.add_argument(
        "--dry_run",
        action="store_true",
        help="print what the prompt and flags ask for as one JSON line and exit; loads no "
        "checkpoint",
    )
    args = p.parse_args(argv)
    check_args(args)
    return args


def add_sampling_flags(p):
    """How each piece is sampled: SAMPLE_DEFAULTS where a flag is left out (user_sampling)."""
    p.add_argument(
        "--max_new_tokens",
        type=int,
        help=f"default {SAMPLE_DEFAULTS.max_new_tokens}, or "
        f"{SECONDS_MAX_NEW_TOKENS} with --seconds",
    )
    p.add_argument(
        "--seconds",
        type=float,
        help="stop each sample once the music (prime included) is this long",
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=SAMPLE_DEFAULTS.temperature,
        help="0 = greedy (the most likely token each step)",
    )
    p.add_argument("--top_k", type=int, default=SAMPLE_DEFAULTS.top_k or 0, help="0 = off")
    p.add_argument("--top_p", type=float, default=SAMPLE_DEFAULTS.top_p, help="in (0, 1]; 1 = off")
    p.add_argument(
        "--guidance",
        type=float,
        default=SAMPLE_DEFAULTS.guidance,
        help="classifier-free guidance scale on the whole attribute prefix; 1 = off, 0 = "
        "unconditional",
    )
    p.add_argument(
        "--key_strength",
        type=float,
        default=SAMPLE_DEFAULTS.key_strength,
        help="when a key is asked: nats taken from each note off its scale (a soft constraint); 0 "
        "= off",
    )
    p.add_argument(
        "--chord_strength",
        type=float,
        default=SAMPLE_DEFAULTS.chord_strength,
        help="when chords are asked: nats taken from each note off its bar's chord on a beat, half "
        "between; 0 = off",
    )
    p.add_argument(
        "--seed", help="a whole number; default: a random one, printed and put in the file names"
    )


def add_attribute_flags(p):
    """What the pieces are asked to be, over what the prompt says (attributes.FLAGS)."""
    for a in attributes.ASKED:  # --tempo, --meter, --key, --instruments
        p.add_argument(f"--{a.name}", help=a.help)
    p.add_argument(
        "--any_instrument",
        action="store_true",
        help="let the model play instruments besides those asked for (by default, when a prompt or "
        "--instruments names some, notes are played on those only)",
    )


def check_args(args):
    """Every flag in its range before anything loads: one line that names the flag, its value and
    what is allowed."""
    for name in (
        "token",
        "prompt",
        "prime",
        "out_dir",
        "ckpt",
        "data_dir",
        "sample_dir",
        "seed",
        *attributes.FLAGS,
    ):
        check_text(f"--{name}", getattr(args, name))  # --tempo "" is a mistake, not "no tempo"
    check_range("--num_samples", args.num_samples, low=1)
    if args.max_new_tokens is not None:
        check_range("--max_new_tokens", args.max_new_tokens, low=1)
    if args.seconds is not None:
        check_range("--seconds", args.seconds, low=0, low_open=True)
    check_range("--prime_seconds", args.prime_seconds, low=0, low_open=True)
    check_range(
        "--temperature", args.temperature, low=0, note="0 = greedy: always the most likely token"
    )
    check_range("--top_k", args.top_k, low=0, note="0 = off")
    check_range("--top_p", args.top_p, low=0, high=1, low_open=True, note="1 = off")
    check_range("--guidance", args.guidance, low=0, note="1 = off, 0 = unconditional")
    check_range("--key_strength", args.key_strength, low=0, note="0 = off")
    check_range("--chord_strength", args.chord_strength, low=0, note="0 = off")
    args.seed = prompt.read_seed(args.seed)  # the app's seed field takes the same check
    check_device(args.device, "--device")


def sample_folder(args):
    """Where the samples go (--sample_dir, default OUT_DIR/samples), checked: a folder they can be
    written in, outside any dataset's MIDI."""
    sample_dir = args.sample_dir or os.path.join(args.out_dir, "samples")
    check_output_folder(sample_dir)
    dataset.check_outside_midi(sample_dir, "--sample_dir")
    return sample_dir


def print_table(rows, elapsed):
    width = max(len(r[0]) for r in rows)
    print(
        f"\n{'file':<{width}} {'notes':>6} {'seconds':>8}  {'instruments':<36} {'tokens':>7} "
        f"{'tok/s':>7}"
    )
    for path, notes, seconds, instruments, n in rows:
        print(
            f"{path:<{width}} {notes:>6} {seconds:>8.1f}  {instruments[:36]:<36} {n:>7} "
            f"{n / elapsed:>7.1f}"
        )
    total = sum(r[4] for r in rows)
    print(
        f"{len(rows)} samples, {total} tokens in {elapsed:.1f} s: {total / elapsed:.1f} tokens/s "
        "as one batch"
    )


def load(args):
    """The model (quantized with --quantize), its checkpoint dict, and the device and dtype to
    sample with."""
    device, device_type, dtype = pick_device(args.device, args.dtype)
    model, ckpt = checkpoints.load_model(checkpoints.chosen(args.out_dir, args.ckpt), device)
    if args.quantize:
        if device_type != "cpu":
            raise UserError("--quantize is for CPU sampling; leave it out on cuda or mps")
        model, dtype = quantize(model), "float32"  # int8 kernels take fp32 activations
    return model, ckpt, device, dtype


# the flags user_sampling reads (SAMPLE_DEFAULTS where one is left out)
SAMPLING_FLAGS = (
    "seconds",
    "max_new_tokens",
    "temperature",
    "top_k",
    "top_p",
    "guidance",
    "key_strength",
    "chord_strength",
)


def main(argv=None):
    args = parse_args(argv)
    flags = {name: getattr(args, name) for name in attributes.FLAGS}
    if args.dry_run:
        data_dir = args.data_dir or dataset.DEFAULT_DATA_DIR
        print(
            json.dumps(prompt.understand(args.prompt, flags, token=args.token, data_dir=data_dir))
        )
        return []
    # before the checkpoint loads: a malformed flag fails fast, and so does a folder it can't write
    asked = prompt.asked_attributes(args.prompt, flags)
    sample_dir = sample_folder(args)
    model, ckpt, device, dtype = load(args)
    data_dir = checkpoints.data_dir(ckpt, args.data_dir)
    req = prompt.request(
        ckpt, asked, text=args.prompt, token=args.token, seed=args.seed, data_dir=data_dir
    )
    if args.prompt or any(asked[k] for k in attributes.ASKED_FIELDS):
        prompt.print_understood(req.asked)
    if req.followed:
        print(req.followed_line())
    prime = prime_tokens(args.prime, args.prime_seconds) if args.prime else None
    print(
        f"{ckpt['path']} (iter {ckpt.get('iter_num', '?')}) on {device} ({dtype}); {req.token} "
        f"({req.label}), seed {req.seed}"
        + (f", continuing {args.prime} ({len(prime)} tokens)" if args.prime else "")
    )
    sampling = user_sampling(
        seed=req.seed, dtype=dtype, **{name: getattr(args, name) for name in SAMPLING_FLAGS}
    )
    rows = req.rows(args.num_samples, prime)
    programs = req.programs(args.num_samples, args.any_instrument)
    t0 = time.perf_counter()
    samples = generate_tokens(model, rows, sampling, programs=programs)
    elapsed = time.perf_counter() - t0
    table, written = render.write_samples(
        samples,
        sample_dir,
        token=req.token,
        label=req.label,
        seed=req.seed,
        prompt_len=len(rows[0]),
        prime=prime,
        prime_name=args.prime and os.path.splitext(os.path.basename(args.prime))[0],
    )
    print_table(table, elapsed)
    understood = req.understood(args.prompt, args.prime)
    render.audio_and_gallery(
        [(path, score, title, understood) for path, score, title in written], sample_dir, args.audio
    )
    return [r[0] for r in table]


if __name__ == "__main__":
    run_script(main)
