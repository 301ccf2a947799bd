"""
Sample MIDI from a trained AMT checkpoint: a semantic token, a text prompt or a MIDI prime in,
.mid files with a piano-roll .png beside each out. Sampling is constrained by tokenizer.py's
grammar, so every sample decodes with no token skipped.

    python sample.py --token SEMANTIC_TOKEN_3                    # 3 samples from the newest checkpoint
    python sample.py --prompt "a slow chorale in a minor key"    # the nearest semantic token
    python sample.py --prime song.mid --prime_seconds 8          # continue the first 8 s of a piece
    python sample.py --token 3 --seconds 30 --guidance 2 --seed 1 --ckpt best
"""

import argparse
import html
import importlib.util
import io
import json
import math
import os
import random
import sys
import time
import urllib.parse
import warnings
import wave
from dataclasses import replace

import mido
import numpy as np
import torch
from tqdm import tqdm

import cluster
import describe
import tokenizer
from model import GPT, autocast, latest_checkpoint, pick_device
from tokenizer import UserError, seconds_at, write_atomic

OUT_DIR = "out/amt_cpu"                  # the CPU demo's run
TRAIN_COMMAND = "python train.py config/amt_cpu.py"
CHUNK = 128  # tokens per model.generate call; between calls we check which samples are done


# -----------------------------------------------------------------------------
# checkpoint and tokens

def train_command(out_dir):
    return TRAIN_COMMAND + ("" if os.path.normpath(out_dir) == os.path.normpath(OUT_DIR) else f" --out_dir={out_dir}")


def load_model(path, device="cpu"):
    """A checkpoint file, or a run folder (its newest numbered checkpoint that loads) -> (model in eval mode,
    the checkpoint dict less its weights and optimizer state, plus "path"). GPT.from_checkpoint does the
    loading; this adds what a person needs to hear when there is nothing to load."""
    if os.path.isfile(path):
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)  # never unpickle code from a file
        except Exception as e:
            raise UserError(f"{path} does not load ({type(e).__name__}); it may be cut short, try another") from None
    elif path.endswith(".pt"):
        raise UserError(f"checkpoint {path} not found; make one with: {train_command(os.path.dirname(path) or '.')}")
    else:
        out_dir = path
        path, ckpt = latest_checkpoint(out_dir)  # skips files that a crash cut short
        if ckpt is None:
            raise UserError(f"no checkpoint in {out_dir}; make one with: {train_command(out_dir)}")
    if ckpt.get("meta", {}).get("blocks") != tokenizer.LAYOUT:
        raise UserError(f"{path} predates the attribute prefix (key, meter, tempo, instruments); retrain it: "
                        f"python prepare.py, then {train_command(os.path.dirname(path) or '.')}")
    if ckpt["model_args"]["vocab_size"] < tokenizer.VOCAB_SIZE:
        raise UserError(f"{path}: vocab_size {ckpt['model_args']['vocab_size']} < tokenizer.VOCAB_SIZE "
                        f"{tokenizer.VOCAB_SIZE}")
    model = GPT.from_checkpoint(ckpt, device)
    return model, {k: v for k, v in ckpt.items() if k not in ("model", "optimizer")} | {"path": path}


def token_labels(ckpt, data_dir):
    """Cluster labels of the semantic tokens: those the checkpoint was trained with, else clusters.json's."""
    path = os.path.join(data_dir, "clusters.json")
    on_disk = cluster.load_clusters(data_dir)["labels"] if os.path.exists(path) else []
    if ckpt.get("labels") and on_disk and on_disk != ckpt["labels"]:
        print(f"note: {path} differs from the clusters {ckpt['path']} was trained with (re-clustered since?)")
    return ckpt.get("labels") or on_disk


def semantic_token_id(token, labels=()):
    """'SEMANTIC_TOKEN_3', '3', 3 or 'SEMANTIC_UNCOND' -> token id. With labels, only the trained clusters count."""
    name = f"SEMANTIC_TOKEN_{token}" if str(token).isdigit() else str(token)
    k = len(labels) or tokenizer.N_SEMANTIC
    valid = [f"SEMANTIC_TOKEN_{i}" for i in range(k)] + ["SEMANTIC_UNCOND"]
    if name not in valid:
        listed = ", ".join(f"{v} ({label})" for v, label in zip(valid, labels)) if labels \
            else f"SEMANTIC_TOKEN_0..SEMANTIC_TOKEN_{k - 1}"
        raise UserError(f"unknown token {name!r}; valid tokens: {listed}, SEMANTIC_UNCOND (unconditional)")
    return tokenizer.token_id(name)


def prime_tokens(path, seconds):
    """The notes of a MIDI file that start in its first `seconds` -> tokens START ... (no END), the prompt
    that the model continues. Raises MidiError for a corrupt file, UserError if nothing is left."""
    if not os.path.isfile(path):
        raise UserError(f"prime {path} not found")
    try:
        score = tokenizer.read_midi(path)
    except tokenizer.MidiError as e:
        raise tokenizer.MidiError(f"prime {path}: {e}") from None
    notes = [n for n, t in zip(score.notes, seconds_at([n.onset for n in score.notes], score.tempos)) if t < seconds]
    if not notes:
        raise UserError(f"prime {path}: no note starts in its first {seconds:g} s; raise --prime_seconds")
    last = notes[-1].onset  # the prompt ends right after the last kept note, where the model goes on
    score = replace(score, notes=notes, end_step=last, tempos=[t for t in score.tempos if t[0] <= last],
                    time_signatures=[t for t in score.time_signatures if t[0] <= last])
    return tokenizer.score_to_tokens(score)[:-1]  # drop END: the piece goes on


# -----------------------------------------------------------------------------
# constrained generation

def grammar_hook(vocab_size, device, programs=None):
    """A model.generate logits_hook that leaves only the ids tokenizer.py's grammar allows after each row's last
    token. Ids >= tokenizer.VOCAB_SIZE (a model vocab rounded up) are never allowed. programs: if given, the only
    instruments (GM programs, DRUMS) a note may be played on."""
    V, T = tokenizer.VOCAB_SIZE, tokenizer.TYPE
    special = np.isin(tokenizer.TOKEN_TYPE, [T[n] for n in ("PAD", "UNK", "START", "SEMANTIC", "UNCOND")])  # (V,)
    mid_stream = ~np.isin(tokenizer.TOKEN_TYPE, [T[n] for n in ("PAD", "END", "SEMANTIC", "UNCOND")])       # (V,)
    assert not tokenizer.GRAMMAR_MASK[mid_stream][:, special].any(), "the grammar lets a special token in mid-stream"
    allowed = torch.zeros(vocab_size, vocab_size, dtype=torch.bool)  # (prev id, next id)
    allowed[:V, :V] = torch.from_numpy(tokenizer.GRAMMAR_MASK)
    if programs:
        others = np.setdiff1d(np.arange(129), list(programs))
        allowed[:, tokenizer.OFFSET["PROGRAM"] + others] = False
    allowed = allowed.to(device)

    def hook(tokens, logits):  # tokens (B, t), logits (B, vocab_size)
        return logits.masked_fill(~allowed[tokens[:, -1]], float("-inf"))  # (B, vocab_size)
    return hook


def stop_index(row, prompt_len, seconds=None):
    """Where a sample ends: just past its first END, or at the first TIME_ON that takes the music to
    `seconds`; None while it goes on."""
    ends = np.flatnonzero(row[prompt_len:] == tokenizer.END)
    stop = prompt_len + int(ends[0]) + 1 if len(ends) else None
    if seconds is not None:
        is_time = tokenizer.TOKEN_TYPE[row] == tokenizer.TYPE["TIME_ON"]                         # (t,)
        steps = np.cumsum(np.where(is_time, row - tokenizer.OFFSET["TIME_ON"] + 1, 0))  # (t,) time after each token
        late = np.flatnonzero(seconds_at(steps[prompt_len:], tokenizer.tokens_to_score(row)[0].tempos) >= seconds)
        if len(late) and (stop is None or prompt_len + late[0] < stop):
            stop = prompt_len + int(late[0])
    return stop


def finish(row, prompt_len, seconds=None):
    """Cut a sample where it ends and close it with END. A sample that ran out of tokens mid-event
    loses that event, so the file ends cleanly."""
    row = row[:stop_index(row, prompt_len, seconds) or len(row)]
    if row[-1] != tokenizer.END:
        while not tokenizer.GRAMMAR_MASK[row[-1], tokenizer.END]:
            row = row[:-1]
        row = np.append(row, tokenizer.END)
    return row


def generate_tokens(model, token, *, attributes=None, n_samples=1, max_new_tokens=512, temperature=1.0, top_k=None,
                    top_p=None, guidance=1.0, seed=None, prime_tokens=None, device=None, seconds=None, dtype="float32",
                    only_instruments=False, header=True):
    """Sample n_samples pieces -> list of int64 arrays [attribute prefix, START, ..., END]. The prefix holds the
    semantic token (name, semantic id, or 'SEMANTIC_UNCOND') and `attributes`, keyword arguments of
    tokenizer.attribute_prefix (key, meter, tempo_bpm, instruments; what is left out is unspecified), or a list
    of such dicts, one per sample (then n_samples is its length; all must give a meter, a tempo, or not alike).
    A new piece starts with the meter and tempo asked for (tokenizer.header_tokens); prime_tokens
    (START ...) are continued instead. Generation stops at max_new_tokens, or once every sample has
    reached END (or `seconds`). guidance != 1: classifier-free guidance against the same sequence led by
    the unconditional prefix (every slot unspecified). only_instruments: notes are played only on the
    instruments asked for (a decoding constraint, like the grammar; one attribute dict for all rows).
    header=False leaves the piece's opening meter and tempo to the model (evaluate.py measures control so)."""
    device = device or next(model.parameters()).device
    device_type = torch.device(device).type
    per_row = attributes if isinstance(attributes, list) else [attributes or {}] * n_samples
    semantic = semantic_token_id(token)
    semantic = None if semantic == tokenizer.UNCOND else semantic
    # A new piece opens in the meter and tempo asked for: the file says so (sample.py prints it); whether the
    # notes follow is the model's part, and what evaluate.py's control report measures.
    bodies = [[tokenizer.START] + (tokenizer.header_tokens(a.get("meter"), a.get("tempo_bpm")) if header else [])
              if prime_tokens is None
              else [int(t) for t in prime_tokens] for a in per_row]
    assert all(b[0] == tokenizer.START and tokenizer.END not in b for b in bodies), "a prompt is START ... without END"
    assert len({len(b) for b in bodies}) == 1, "one call's rows need headers of one length (meter and tempo or not)"
    prompt = torch.tensor([tokenizer.attribute_prefix(semantic, **a) + b for a, b in zip(per_row, bodies)],
                          device=device)                                                  # (B, T)
    generator = None if seed is None else torch.Generator(device).manual_seed(seed)
    programs = only_instruments and not isinstance(attributes, list) and per_row[0].get("instruments")
    hook = grammar_hook(model.config.vocab_size, device, programs or None)
    block, P = model.config.block_size, tokenizer.PREFIX_LEN
    ctx = autocast(device_type, dtype)
    seq, prompt_len = prompt, prompt.size(1)
    with tqdm(total=max_new_tokens, desc="sampling", unit="tok", disable=None, leave=False) as bar:
        while seq.size(1) - prompt_len < max_new_tokens:
            n = min(CHUNK, max_new_tokens - (seq.size(1) - prompt_len))
            # The model sees the prefix (pinned at the start, keep_first) and the newest tokens. A context
            # that is already full would slide at the first step, so hand generate the slid one.
            window = seq if seq.size(1) < block else torch.cat([seq[:, :P], seq[:, -((block - P) // 2):]], dim=1)
            uncond = window.clone()
            uncond[:, :P] = torch.from_numpy(tokenizer.UNCOND_PREFIX)                        # (B, t)
            with ctx:
                out = model.generate(window, n, temperature, top_k, top_p, logits_hook=hook, uncond_idx=uncond,
                                     guidance=guidance, keep_first=P, generator=generator)    # (B, t + n)
            seq = torch.cat([seq, out[:, window.size(1):]], dim=1)                            # (B, T + new)
            bar.update(n)
            if all(stop_index(row, prompt_len, seconds) is not None for row in seq.cpu().numpy()):
                break
    return [finish(row, prompt_len, seconds) for row in seq.cpu().numpy()]


# -----------------------------------------------------------------------------
# output

def piano_roll(score, path, title, prime_end=None):
    """A PNG of the notes: time (s) x pitch, a bar per note, coloured by instrument, and a dashed line at
    prime_end (seconds), where a prime's last note starts. Written atomically."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure  # no pyplot: no global backend state, renders with Agg
    fig = Figure(figsize=(12, 5), dpi=100, layout="constrained")
    ax = fig.subplots()
    programs = list(describe.program_counts(score.notes))  # most notes first: the legend names the top 12
    colors = colormaps["tab10" if len(programs) <= 10 else "tab20"]
    for i, program in enumerate(programs):
        notes = [n for n in score.notes if n.program == program]
        start = seconds_at([n.onset for n in notes], score.tempos)                      # (n,)
        end = seconds_at([n.onset + n.duration for n in notes], score.tempos)           # (n,)
        ax.barh([n.pitch for n in notes], end - start, left=start, height=0.8, color=colors(i % colors.N),
                label=describe.instrument_name(program) if i < 12 else "_")  # labels starting with _ stay out of the legend
    more = f" (+{len(programs) - 12} more instruments)" if len(programs) > 12 else ""
    ax.set(xlabel="time (s)", ylabel="MIDI pitch", title=title + more,
           xlim=(0, max(float(seconds_at(score.end_step, score.tempos)), 1.0)))
    if prime_end is not None:
        ax.axvline(prime_end, color="black", linestyle="--", linewidth=1, label="end of prime")
    if programs:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    write_atomic(path, lambda f: fig.savefig(f, format="png"))


def write_sample(tokens, path, title, prime_end=None):
    """tokens -> path (.mid) and its piano roll (.png); returns (score, png path)."""
    score, skipped = tokenizer.tokens_to_score(tokens)
    assert skipped == 0, f"{skipped} tokens of a grammar-constrained sample did not decode"
    midi = tokenizer.score_to_midi(score)
    write_atomic(path, lambda f: midi.save(file=f))
    png = os.path.splitext(path)[0] + ".png"
    piano_roll(score, png, title, prime_end)
    return score, png


# -----------------------------------------------------------------------------
# audio and the gallery page

SAMPLE_RATE = 44100        # CD rate: what every browser and player takes
RELEASE_SECONDS = 1.0      # rendered past the last note, so that the last notes ring out instead of stopping dead
GALLERY_CARDS = "gallery.json"  # beside index.html: the cards so far, so that a re-run adds to the page
_SOUNDFONT = {}            # read once per process: a sample batch renders several files


def soundfont_path():
    """TimGM6mb.sf2, the General MIDI bank (GPL-2, Tim Brechbill) that ships inside the pretty_midi wheel. Found
    on disk, never downloaded: pretty_midi itself is not imported."""
    spec = importlib.util.find_spec("pretty_midi")
    path = spec and spec.origin and os.path.join(os.path.dirname(spec.origin), "TimGM6mb.sf2")
    if not path or not os.path.isfile(path):
        raise UserError("no SoundFont for --audio: pip install pretty_midi (it ships TimGM6mb.sf2)")
    return path


def soundfont_bytes():
    if "sf2" not in _SOUNDFONT:
        with open(soundfont_path(), "rb") as f:
            _SOUNDFONT["sf2"] = f.read()
    return _SOUNDFONT["sf2"]


def with_release(midi_path):
    """The MIDI file's bytes, made RELEASE_SECONDS longer (a marker after its end, at its last tempo): the
    synthesiser stops where the file ends, and this lets the last notes ring out instead of stopping dead."""
    mid = mido.MidiFile(midi_path)
    tempos = [m.tempo for m in mido.merge_tracks(mid.tracks) if m.type == "set_tempo"]
    end = max((sum(m.time for m in t) for t in mid.tracks), default=0)                 # ticks
    tail = round(RELEASE_SECONDS * 1e6 / (tempos[-1] if tempos else 500000) * mid.ticks_per_beat)
    mid.tracks.append(mido.MidiTrack([mido.MetaMessage("marker", text="release", time=end + tail)]))
    buf = io.BytesIO()
    mid.save(file=buf)
    return buf.getvalue()


def render_audio(midi_path):
    """A MIDI file -> (2, samples) float32 stereo at SAMPLE_RATE, as long as the file plus RELEASE_SECONDS.
    midirenderer (rustysynth, a SoundFont synthesiser in Rust) plays drums (channel 10) on the drum kit."""
    try:
        import midirenderer
        wav = midirenderer.render_wave_from(soundfont_bytes(), with_release(midi_path))
    except (ImportError, ValueError, RuntimeError) as e:  # no wheel, or a SoundFont or file it cannot read
        raise UserError(f"the SoundFont synthesiser failed ({type(e).__name__}: {str(e)[:200]})") from None
    from scipy.signal import resample_poly  # scipy comes with scikit-learn
    with wave.open(io.BytesIO(wav)) as w:
        rate, channels = w.getframerate(), w.getnchannels()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, channels)  # (samples, ch)
    audio = pcm.T.astype(np.float32) / 32768                                                   # (ch, samples)
    if rate != SAMPLE_RATE:  # it renders at 48 kHz: polyphase resampling to 44.1 kHz (147/160)
        g = math.gcd(SAMPLE_RATE, rate)
        audio = resample_poly(audio, SAMPLE_RATE // g, rate // g, axis=1).astype(np.float32)
    return np.broadcast_to(audio, (2, audio.shape[1])) if channels == 1 else audio


def write_wav(audio, path):
    """(2, samples) float -> 16-bit stereo WAV, its peak at -1 dBFS (the synthesiser leaves a lone instrument
    near -18 dBFS, so samples play at one loudness). Written atomically."""
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    pcm = (audio * (0.89 / peak if peak else 1.0) * 32767).round().astype("<i2").T  # (samples, 2)

    def write(f):
        with wave.open(f, "wb") as w:
            w.setnchannels(2)
            w.setsampwidth(2)
            w.setframerate(SAMPLE_RATE)
            w.writeframes(pcm.tobytes())
    write_atomic(path, write)
    return audio.shape[1] / SAMPLE_RATE


def render_wav(midi_path):
    """midi_path -> the .wav beside it; returns (wav path, seconds of audio)."""
    wav = os.path.splitext(midi_path)[0] + ".wav"
    return wav, write_wav(render_audio(midi_path), wav)


def measured_facts(score):
    """What the notes of a tokenizer.Score say (describe.measure): length, tempo, meter, key, instruments, notes."""
    m = describe.measure(score)
    return {"length": f"{m['seconds']:.1f} s", "tempo": f"{m['tempo_bpm']:.0f} bpm ({m['tempo_italian']})",
            "meter": m["meter"], "estimated key": m["key"] or "none (no pitched notes)",
            "instruments": ", ".join(map(describe.instrument_name, describe.program_counts(score.notes))),
            "texture": m["texture"], "notes": str(len(score.notes))}


def sample_card(path, score, understood, title, *, folder, made, wav=None):
    """One gallery card as plain types: file names relative to the page's folder; made: when its batch was."""
    rel = lambda p: os.path.relpath(p, folder).replace(os.sep, "/")  # noqa: E731
    png = os.path.splitext(path)[0] + ".png"
    return {"midi": rel(path), "png": rel(png) if os.path.exists(png) else None, "wav": rel(wav) if wav else None,
            "title": title, "made": made, "understood": understood,
            "facts": measured_facts(score)}


def card_html(card):
    esc, url = html.escape, lambda p: html.escape(urllib.parse.quote(p))
    rows = lambda d: "".join(f"<tr><th>{esc(str(k))}</th><td>{esc(str(v))}</td></tr>" for k, v in d.items())  # noqa
    understood = {k.replace("_", " "): f"{v:.3f}" if isinstance(v, float) else
                  ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else v
                  for k, v in card["understood"].items() if v not in (None, [], "")}  # only what was asked
    return "\n".join([
        f'<article class="card" id="{esc(card["midi"])}">',
        f'<h2>{esc(card["title"])}</h2><p class="made">{esc(card["made"])}</p>',
        '<div class="tables"><table><caption>asked for, and what was understood</caption>'
        f'{rows(understood)}</table>',
        f'<table><caption>measured in the result</caption>{rows(card["facts"])}</table></div>',
        f'<img src="{url(card["png"])}" alt="piano roll of {esc(card["midi"])}" loading="lazy">' if card["png"] else "",
        f'<audio controls preload="none" src="{url(card["wav"])}"></audio>' if card["wav"] else
        '<p class="note">no audio: sample with --audio</p>',
        f'<p><a href="{url(card["midi"])}" download>download {esc(os.path.basename(card["midi"]))}</a></p>',
        "</article>"])


PAGE_STYLE = """body{font:15px/1.4 system-ui,sans-serif;margin:1.5em auto;max-width:1280px;padding:0 1em;color:#222}
.card{border:1px solid #ccc;border-radius:8px;padding:1em;margin:1.2em 0;background:#fafafa}
.card h2{margin:0;font-size:1.1em}.made{margin:.2em 0 .6em;color:#777;font-size:.85em}
.tables{display:flex;gap:2em;flex-wrap:wrap;align-items:flex-start}table{border-collapse:collapse;margin:.4em 0}
caption{text-align:left;font-weight:600;padding-bottom:.2em;white-space:nowrap}th,td{text-align:left;padding:.1em .8em .1em 0;
vertical-align:top;border-bottom:1px solid #e4e4e4}th{font-weight:500;color:#555}
img{max-width:100%;display:block;margin:.6em 0}audio{width:100%}.note{color:#777}
.report table th,.report table td{padding:.15em .6em;border:1px solid #ddd}pre{background:#f0f0f0;padding:.6em}"""


def page_html(title, cards, intro=""):
    return "\n".join(["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
                      f"<title>{html.escape(title)}</title><style>{PAGE_STYLE}</style></head><body>",
                      f"<h1>{html.escape(title)}</h1>", intro,
                      f"<p>{len(cards)} samples, newest first. Audio: TimGM6mb General MIDI SoundFont.</p>",
                      *map(card_html, cards), "</body></html>\n"])


def write_gallery(folder, new_cards, title="AMT samples", intro=""):
    """Add cards to folder/index.html, newest first. A card replaces the older one of the same MIDI file, and a
    card whose MIDI file is gone is dropped (a picture or WAV that is gone, left out), so re-running never
    duplicates a card or leaves a broken one. Returns the page's path."""
    store = os.path.join(folder, GALLERY_CARDS)
    try:
        with open(store, encoding="utf-8") as f:
            old = json.load(f)
    except FileNotFoundError:
        old = []
    except (OSError, ValueError):
        print(f"warning: {store} is unreadable; the gallery starts again from this run")
        old = []
    new = {c["midi"] for c in new_cards}
    kept = [c for c in old if c["midi"] not in new and os.path.isfile(os.path.join(folder, c["midi"]))]
    cards = list(new_cards) + kept
    for c in cards:
        for key in ("png", "wav"):
            if c[key] and not os.path.isfile(os.path.join(folder, c[key])):
                c[key] = None
    cards.sort(key=lambda c: c["made"], reverse=True)  # a stable sort: a batch keeps its order
    write_atomic(store, json.dumps(cards, indent=1))
    page = os.path.join(folder, "index.html")
    write_atomic(page, page_html(title, cards, intro))
    return page


def audio_and_gallery(written, folder, audio=False, *, title="AMT samples", intro=""):
    """written: [(MIDI path, Score, title, understood)] -> a WAV beside each (with audio) and their cards in
    folder/index.html. A synthesiser that fails says so in one line; the MIDI and the page are written all the same."""
    cards, seconds, t0 = [], 0.0, time.perf_counter()
    made = time.strftime("%Y-%m-%d %H:%M:%S")  # one time for the batch, so that it keeps its order on the page
    for path, score, card_title, understood in written:
        wav = None
        if audio:
            try:
                wav, length = render_wav(path)
                seconds += length
            except UserError as e:
                print(f"no audio: {e}")
                audio = False
        cards.append(sample_card(path, score, understood, card_title, folder=folder, made=made, wav=wav))
    elapsed = time.perf_counter() - t0
    if seconds:
        print(f"rendered {sum(c['wav'] is not None for c in cards)} WAV ({seconds:.1f} s of audio, {SAMPLE_RATE} Hz) "
              f"in {elapsed:.1f} s: {seconds / elapsed:.0f}x real time")
    page = write_gallery(folder, cards, title, intro)
    print(f"gallery: {page}")
    return page


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Sample MIDI from an AMT checkpoint.")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--token", help="SEMANTIC_TOKEN_k (or k, or SEMANTIC_UNCOND); default unconditional")
    what.add_argument("--prompt", help="free text, mapped to the nearest semantic token (cluster.py)")
    p.add_argument("--prime", help="a MIDI file whose beginning the samples continue")
    p.add_argument("--prime_seconds", type=float, default=10.0, help="how much of the prime to keep")
    p.add_argument("--out_dir", default=OUT_DIR, help="the training run's folder")
    p.add_argument("--ckpt", help="a checkpoint file, or 'best' for OUT_DIR/ckpt_best.pt; default the newest")
    p.add_argument("--data_dir", help="dataset folder with clusters.json; default the checkpoint's")
    p.add_argument("--sample_dir", help="where to write; default OUT_DIR/samples")
    p.add_argument("--num_samples", type=int, default=3)
    p.add_argument("--max_new_tokens", type=int, help="default 512, or 4096 with --seconds")
    p.add_argument("--seconds", type=float, help="stop each sample once the music (prime included) is this long")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top_k", type=int, default=0, help="0 = off")
    p.add_argument("--top_p", type=float, default=0.95, help="1 = off")
    p.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale; 1 = off")
    p.add_argument("--seed", type=int, help="default: a random one, printed and put in the file names")
    p.add_argument("--device", default="auto", help="auto = cuda, then mps, then cpu")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--quantize", action="store_true",
                   help="CPU only: INT8 dynamic quantisation of the Linear layers (bench.py: faster, same val loss)")
    p.add_argument("--tempo", help="bpm ('96', '96 bpm') or a word (adagio, slow, fast...); overrides the prompt")
    p.add_argument("--meter", help="n/d ('3/4', '6/8') or a dance (waltz, jig, march...); overrides the prompt")
    p.add_argument("--key", help="'A minor', 'E flat major', 'F# minor', or just 'major'/'minor'; overrides the prompt")
    p.add_argument("--instruments", help="comma-separated GM names, families (strings, brass) or numbers, 'drums'")
    p.add_argument("--any_instrument", action="store_true",
                   help="let the model play instruments besides those asked for (by default, when a prompt or "
                        "--instruments names some, notes are played on those only)")
    p.add_argument("--audio", action="store_true",
                   help="also render each sample to a 44.1 kHz WAV (TimGM6mb SoundFont)")
    p.add_argument("--dry_run", action="store_true",
                   help="print what the prompt and flags ask for as one JSON line and exit; loads no checkpoint")
    args = p.parse_args(argv)
    if args.num_samples < 1 or (args.max_new_tokens or 1) < 1:
        raise UserError("--num_samples and --max_new_tokens must be at least 1")
    return args


def quantize(model):
    """INT8 dynamic quantisation of the Linear layers, for CPU sampling."""
    with warnings.catch_warnings():  # torch marks the quantized tensor API as deprecated; it still works
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def asked_attributes(args):
    """What the prompt and the flags ask for -> dict of tempo_bpm, meter, key, mode, instruments, plus notes
    (contradictions, and how they were settled) and unused (words no rule read). Flags override the text."""
    asked = describe.parse_prompt(args.prompt or "")
    overrides = dict(tempo_bpm=args.tempo and describe.parse_tempo(args.tempo),
                     meter=args.meter and describe.parse_meter(args.meter),
                     instruments=args.instruments and describe.parse_instruments(args.instruments))
    if args.key:
        overrides["key"], overrides["mode"] = describe.parse_key(args.key)
    for name, value in overrides.items():
        if value is not None and asked.get(name) not in (None, [], value):
            asked["notes"].append(f"--{name.split('_')[0]} overrides the prompt's {name.replace('_', ' ')}")
    return asked | {k: v for k, v in overrides.items() if v is not None}


def dry_run(args):
    """The JSON line of --dry_run: the nearest semantic token (clusters.json and the embedder only, no
    checkpoint) and the attributes asked for."""
    token, cosine = args.token, None
    if args.prompt:
        k, _, cosine = cluster.nearest_tokens(args.prompt, args.data_dir or "data/music21", top=1)[0]
        token, cosine = f"SEMANTIC_TOKEN_{k}", round(cosine, 4)
    elif token and str(token).isdigit():
        token = f"SEMANTIC_TOKEN_{token}"
    asked = asked_attributes(args)
    return dict(token=token, cosine=cosine, **{k: asked[k] for k in ("tempo_bpm", "meter", "key", "mode",
                                                                     "instruments")})


def print_understood(u):
    """One line a person reads before the music is made: what was taken from the words, and what was not."""
    names = ", ".join(describe.instrument_name(p) for p in u["instruments"]) or None
    asked = dict(tempo=u["tempo_bpm"] and f"{u['tempo_bpm']:g} bpm", meter=u["meter"], key=u["key"] or u["mode"],
                 instruments=names)
    print("understood: " + (", ".join(f"{k} {v}" for k, v in asked.items() if v) or "no tempo, meter, key or "
                            "instruments") + (f"; words used only for the semantic token: {' '.join(u['unused'])}"
                                              if u["unused"] else ""))
    for note in u["notes"]:
        print(f"  note: {note}")


RARE_FILES = 50  # an instrument fewer training files have than this gets a warning: the model knows it little


def prefix_attributes(asked, seed, programs_seen=None):
    """What was asked (asked_attributes) -> (keyword arguments of tokenizer.attribute_prefix, notes to print).
    A mode without a tonic gets a tonic drawn from the seed (the key tokens name both); an instrument that
    no training file has is kept, with a warning."""
    notes, key = [], asked["key"]
    if key is None and asked["mode"]:
        key = describe.key_name(random.Random(seed).randrange(12), asked["mode"])
        notes.append(f"{asked['mode']} without a tonic: sampling in {key} (the seed picks the tonic)")
    seen = {} if programs_seen is None else programs_seen
    unseen = [p for p in asked["instruments"] if programs_seen is not None and p not in seen]
    rare = [p for p in asked["instruments"] if 0 < seen.get(p, 0) < RARE_FILES]
    if unseen:
        notes.append(f"warning: no training file has {', '.join(map(describe.instrument_name, unseen))}; the model "
                     "has never heard it, so expect little control (sampling goes on)")
    if rare:
        notes.append("warning: few training files have " + ", ".join(f"{describe.instrument_name(p)} ({seen[p]})"
                                                                      for p in rare) + "; expect weak control")
    return dict(key=None if key is None else describe.KEY_NAMES.index(key),
                meter=asked["meter"] and tuple(int(v) for v in asked["meter"].split("/")),
                tempo_bpm=asked["tempo_bpm"], instruments=asked["instruments"] or None), notes


def choose_token(args, ckpt):
    """--token, or the semantic token nearest --prompt (printing the three nearest) -> (token name, label,
    cosine to the prompt or None)."""
    data_dir = args.data_dir or ckpt.get("config", {}).get("data_dir", "data/music21")
    labels, token, cosine = token_labels(ckpt, data_dir), args.token, None
    if args.prompt:
        nearest = cluster.nearest_tokens(args.prompt, data_dir, top=3)
        for k, label, similarity in nearest:
            print(f"  SEMANTIC_TOKEN_{k:<3} {label:<40} cosine {similarity:.3f}")
        token, cosine = f"SEMANTIC_TOKEN_{nearest[0][0]}", nearest[0][2]
        print(f"prompt {args.prompt!r} -> {token} ({nearest[0][1]}), cosine {cosine:.3f}")
    semantic = semantic_token_id(token or "SEMANTIC_UNCOND", labels)
    k = semantic - tokenizer.semantic_token(0)
    label = "unconditional" if semantic == tokenizer.UNCOND else labels[k] if labels else "no label"
    return tokenizer.token_name(semantic), label, cosine


def write_samples(samples, args, *, token, label, seed, prime=None, header=()):
    """Each sample -> .mid and .png in the sample folder; -> rows (path, notes, seconds, instruments, new tokens)
    and, for the gallery, [(path, Score, title)]."""
    sample_dir = args.sample_dir or os.path.join(args.out_dir, "samples")
    os.makedirs(sample_dir, exist_ok=True)
    prime_name, prime_end = "", None
    prompt_len = tokenizer.PREFIX_LEN + 1 + len(header)  # the attribute prefix, START and the meter and tempo asked for
    if prime is not None:  # names say what a file continues; its piano roll marks where the prime's last note starts
        prime_name = os.path.splitext(os.path.basename(args.prime))[0]
        prime_score = tokenizer.tokens_to_score(prime)[0]
        prime_end = float(seconds_at(prime_score.notes[-1].onset, prime_score.tempos))
        prompt_len = tokenizer.PREFIX_LEN + len(prime)
    rows, written = [], []
    for i, tokens in enumerate(samples):
        path = os.path.join(sample_dir, f"{token}{'_after_' + prime_name if prime_name else ''}_s{seed}_{i}.mid")
        title = f"{token}: {label} (seed {seed}, sample {i})" + (f", after {prime_name}" if prime_name else "")
        score, png = write_sample(tokens, path, title, prime_end)
        print(f"wrote {path} and {png}")
        written.append((path, score, title))
        programs = sorted({n.program for n in score.notes})
        instruments = f"{len(programs)}: " + ", ".join(map(describe.instrument_name, programs))
        n_new = len(tokens) - prompt_len - 1  # the tokens the model added, END aside
        rows.append((path, len(score.notes), float(seconds_at(score.end_step, score.tempos)), instruments, n_new))
    return rows, written


def print_table(rows, elapsed):
    width = max(len(r[0]) for r in rows)
    print(f"\n{'file':<{width}} {'notes':>6} {'seconds':>8}  {'instruments':<36} {'tokens':>7} {'tok/s':>7}")
    for path, notes, seconds, instruments, n in rows:
        print(f"{path:<{width}} {notes:>6} {seconds:>8.1f}  {instruments[:36]:<36} {n:>7} {n / elapsed:>7.1f}")
    total = sum(r[4] for r in rows)
    print(f"{len(rows)} samples, {total} tokens in {elapsed:.1f} s: {total / elapsed:.1f} tokens/s as one batch")


def main(argv=None):
    args = parse_args(argv)
    if args.dry_run:
        print(json.dumps(dry_run(args)))
        return []
    asked = asked_attributes(args)  # before the checkpoint loads: a malformed flag fails fast
    device, device_type, dtype = pick_device(args.device, args.dtype)
    ckpt_path = os.path.join(args.out_dir, "ckpt_best.pt") if args.ckpt == "best" else args.ckpt or args.out_dir
    model, ckpt = load_model(ckpt_path, device)
    if args.quantize:
        if device_type != "cpu":
            raise UserError("--quantize is for CPU sampling; leave it out on cuda or mps")
        model, dtype = quantize(model), "float32"  # int8 kernels take fp32 activations
    token, label, cosine = choose_token(args, ckpt)
    attributes = {k: asked[k] for k in ("tempo_bpm", "meter", "key", "mode", "instruments")}
    seed = random.randrange(10 ** 6) if args.seed is None else args.seed
    prefix, notes = prefix_attributes(asked, seed, ckpt.get("programs_seen"))
    asked["notes"] += notes
    if prefix["key"] is not None:
        attributes["key"] = describe.KEY_NAMES[prefix["key"]]  # a mode alone gets a tonic
    if args.prompt or any(attributes.values()):
        print_understood(asked)
    prime = prime_tokens(args.prime, args.prime_seconds) if args.prime else None
    print(f"{ckpt['path']} (iter {ckpt.get('iter_num', '?')}) on {device} ({dtype}); {token} ({label}), seed {seed}"
          + (f", continuing {args.prime} ({len(prime)} tokens)" if args.prime else ""))
    t0 = time.perf_counter()
    samples = generate_tokens(
        model, token, attributes=prefix, n_samples=args.num_samples, max_new_tokens=args.max_new_tokens or (4096 if args.seconds else 512),
        temperature=args.temperature, top_k=args.top_k or None, top_p=args.top_p, guidance=args.guidance, seed=seed,
        prime_tokens=prime, device=device, seconds=args.seconds, dtype=dtype, only_instruments=not args.any_instrument)
    elapsed = time.perf_counter() - t0
    rows, written = write_samples(samples, args, token=token, label=label, seed=seed, prime=prime,
                                  header=tokenizer.header_tokens(prefix["meter"], prefix["tempo_bpm"]))
    print_table(rows, elapsed)
    understood = dict(prompt=args.prompt, token=token, label=label, cosine=cosine, **attributes, prime=args.prime)
    audio_and_gallery([(path, score, title, understood) for path, score, title in written],
                      args.sample_dir or os.path.join(args.out_dir, "samples"), args.audio)
    return [r[0] for r in rows]


if __name__ == "__main__":
    try:
        main()
    except UserError as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        sys.exit("interrupted")
