"""Token sequences out of a trained model: sampling pieces that keep tokenizer.py's grammar, play
only the instruments asked for, and stop where the piece ends or at a length in seconds. sample.py,
evaluate.py, bench.py and the local app all generate through generate_tokens, which drives
model.GPT.stream: one KV cache per sample, with the attribute prefix pinned when the context slides.

    model, ckpt = checkpoints.load_model("out/amt_cpu")
    rows = [prompt_row(tokenizer.semantic_token(3), dict(key=9, meter=(3, 4)))] * 4
    pieces = generate_tokens(model, rows, Sampling(seconds=20, guidance=2, seed=1))
    # each [prefix START ... END]
"""

import os
import warnings
from dataclasses import dataclass, replace

import numpy as np
import torch
from tqdm import tqdm

import attributes
import chords
import tokenizer
from attributes import UNCOND_PREFIX, attribute_prefix
from files import UserError
from model import DTYPES, autocast
from tokenizer import seconds_at

# tokens between checks of whether every sample has ended (the sampling itself never restarts)
STOP_CHECK = 64


# -----------------------------------------------------------------------------
# the device


def add_device_flags(parser):
    """--device and --dtype on a script's argparse parser: what model.pick_device takes."""
    parser.add_argument("--device", default="auto", help="auto = cuda, then mps, then cpu")
    parser.add_argument("--dtype", default="auto", choices=["auto", *DTYPES])


def check_device(device, name="device"):
    """Raise UserError unless device is "auto" or a device this machine has (model.pick_device takes
    it on); name: the setting, as the user typed it (--device)."""
    here = ["cpu"]
    if torch.cuda.is_available():
        here += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        here.append("mps")
    if device not in ["auto", *here]:
        raise UserError(
            f"{name}={device!r} is not a device here; use auto (cuda, then mps, then cpu) or one "
            f"of: {', '.join(here)}"
        )
    return device


def quantize(model):
    """INT8 dynamic quantisation of the Linear layers, for CPU sampling."""
    with warnings.catch_warnings():  # torch marks the quantized API as deprecated; it still works
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


# -----------------------------------------------------------------------------
# what a sample starts from


def prime_tokens(path, seconds):
    """The notes of a MIDI file that start in its first `seconds` -> tokens START ... (no END), the
    prompt that the model continues. Raises MidiError for a corrupt file, UserError if nothing is
    left."""
    if not os.path.isfile(path):
        raise UserError(f"prime {path} not found")
    try:
        score = tokenizer.read_midi(path)
    except tokenizer.MidiError as e:
        raise tokenizer.MidiError(f"prime {path}: {e}") from None
    notes = [
        n
        for n, t in zip(score.notes, seconds_at([n.onset for n in score.notes], score.tempos))
        if t < seconds
    ]
    if not notes:
        raise UserError(
            f"prime {path}: no note starts in its first {seconds:g} s; raise --prime_seconds"
        )
    last = notes[
        -1
    ].onset  # the prompt ends right after the last kept note, where the model goes on
    score = replace(
        score,
        notes=notes,
        end_step=last,
        tempos=[t for t in score.tempos if t[0] <= last],
        time_signatures=[t for t in score.time_signatures if t[0] <= last],
    )
    return tokenizer.score_to_tokens(score)[:-1]  # drop END: the piece goes on


def prompt_row(semantic, attributes=None, *, header=True, prime=None):
    """One sample's prompt: the attribute prefix (semantic: a token id, None for unspecified;
    attributes: keyword arguments of attributes.attribute_prefix), then START and, for a new piece
    with header, the meter and tempo asked for (tokenizer.header_tokens: the file says so; whether
    the notes follow is the model's part), or the tokens of a prime (START ..., no END) to continue.
    """
    attributes = attributes or {}
    body = (
        [tokenizer.START]
        + (
            tokenizer.header_tokens(attributes.get("meter"), attributes.get("tempo_bpm"))
            if header
            else []
        )
        if prime is None
        else [int(t) for t in prime]
    )
    assert body[0] == tokenizer.START and tokenizer.END not in body, (
        "a body is START ... without END"
    )
    return attribute_prefix(semantic, **attributes) + body


# -----------------------------------------------------------------------------
# constrained sampling

# The notes of a key: major; minor with its raised seventh (the leading tone of harmonic and melodic
# minor)
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10, 11)}
TONIC_TRIADS = {"major": (0, 4, 7), "minor": (0, 3, 7)}
OPENING_NOTES = 4  # a piece's first notes that key_strength also keeps on the tonic triad


def scale_penalty(prompts, strength, vocab_size):
    """(B, 2, vocab_size) to add to the logits: -strength on the NOTE ids whose pitch class is
    outside the scale of the key each row's prefix asks for ([:, 0]; for a piece's first
    OPENING_NOTES notes, [:, 1], also outside its tonic triad), 0 elsewhere and in rows that ask no
    key. A soft constraint: at strength s a note off the scale is e^s times less likely than the
    model has it, so chromatic notes stay possible."""
    penalty = torch.zeros(len(prompts), 2, vocab_size)
    pitch_class = np.arange(tokenizer.SIZE["NOTE"]) % 12  # (128,)
    for row, prompt in zip(penalty, prompts):
        keys = [
            t
            for t in prompt[: tokenizer.PREFIX_LEN]
            if tokenizer.TOKEN_TYPE[t] == tokenizer.TYPE["KEY"]
        ]
        if keys:
            k = keys[0] - tokenizer.OFFSET["KEY"]  # 12 * minor + tonic
            mode = "minor" if k >= 12 else "major"
            for i, degrees in enumerate((SCALES[mode], TONIC_TRIADS[mode])):
                off = ~np.isin(pitch_class, (k % 12 + np.array(degrees)) % 12)  # (128,)
                row[i, tokenizer.OFFSET["NOTE"] : tokenizer.OFFSET["NOTE"] + len(off)] = (
                    torch.from_numpy(off) * -strength
                )
            row[1] += row[0]
    return penalty


CHORD_SLOTS = attributes.PREFIX_SLOTS["chords"]
STEPS = torch.zeros(tokenizer.VOCAB_SIZE, dtype=torch.long)  # the steps each id moves time on
STEPS[tokenizer.OFFSET["TIME_ON"] :][: tokenizer.MAX_TIME_ON] = torch.arange(
    1, tokenizer.MAX_TIME_ON + 1
)


def bar_steps(row):
    """The bar's length in steps of a sequence (prefix, START, ...): its first meter's (the prefix's
    meter slots, else the stream's first TIMESIG event), else 4/4's."""
    ids = row.cpu().numpy()
    at = np.flatnonzero(tokenizer.TOKEN_TYPE[ids[:-1]] == tokenizer.TYPE["TIMESIG_NUM"])
    if not len(at):
        return 4 * tokenizer.STEPS_PER_QUARTER
    n = int(ids[at[0]]) - tokenizer.OFFSET["TIMESIG_NUM"] + 1
    d = tokenizer.DENOMINATORS[int(ids[at[0] + 1]) - tokenizer.OFFSET["TIMESIG_DEN"]]
    return max(1, round(n * 4 * tokenizer.STEPS_PER_QUARTER / d))


def follow_bars(seq, start):
    """model.stream's pin: each row's prefix with its chord slots turned to the bar its window now
    starts in (training fills them from that bar on), the asked progression read back from the
    slots as their shortest cycle -> (B', PREFIX_LEN)."""
    P = tokenizer.PREFIX_LEN
    out = seq[:, :P].clone()
    none = tokenizer.OFFSET["CHORD_NONE"]
    for b, row in enumerate(seq):
        ids = row[CHORD_SLOTS].tolist()
        if all(t == none for t in ids):
            continue
        period = len(chords.shortest_cycle(ids))
        bar = int(STEPS.to(row.device)[row[P:start]].sum()) // bar_steps(row)
        out[b, CHORD_SLOTS] = torch.tensor([ids[(bar + i) % period] for i in range(len(ids))])
    return out


def chord_plans(prompts):
    """Per row, the chord tones (root, third, fifth) planned for each bar of its chord slots' cycle
    -> (tones (B, 8, 12) bool, period (B,), bar length in steps (B,)); a row without chords has
    every pitch class in every bar."""
    slots = attributes.PREFIX_SLOTS["chords"]
    tones = torch.ones(len(prompts), slots.stop - slots.start, 12, dtype=torch.bool)
    period, bar = (
        torch.ones(len(prompts), dtype=torch.long),
        torch.ones(len(prompts), dtype=torch.long),
    )
    for b, prompt in enumerate(prompts):
        planned = attributes.chords_of(list(prompt[slots]))
        if not planned:
            continue
        ids = list(prompt[slots])
        period[b] = len(chords.shortest_cycle(ids))
        bar[b] = bar_steps(torch.as_tensor(list(prompt)))
        for i, c in enumerate(planned):
            if c:
                tones[b, i] = False
                tones[b, i, [(c[0] + k) % 12 for k in (0, 3 if c[1] == "minor" else 4, 7)]] = True
    return tones, period, bar


def chord_penalty(tokens, rows, plan, *, vocab_size):
    """(B', vocab_size) to add to the logits: -strength on the NOTE ids off the chord planned for
    the bar each row's next note sounds in (strength on a beat, half between). plan:
    (chord_plans(prompts), strength); rows: the prompts' rows still sampling."""
    (tones, period, bar), strength = plan
    step = STEPS.to(tokens.device)[tokens].sum(1).cpu()  # (B',) where the next note sounds
    slot = (step // bar[rows]) % period[rows]  # (B',)
    off = ~tones[rows, slot]  # (B', 12)
    weight = torch.where(step % tokenizer.STEPS_PER_QUARTER == 0, strength, strength / 2)
    out = torch.zeros(len(rows), vocab_size)
    notes = tokenizer.OFFSET["NOTE"]
    out[:, notes : notes + 128] = -(off.repeat(1, 11)[:, :128] * weight[:, None])
    return out.to(tokens.device)


def instrument_masks(programs, vocab_size, device):
    """programs: per row, the instruments asked (GM programs, DRUMS) or None -> (plays, turns), or
    (None, None) when no row asks: plays (B, vocab_size) is False on the PROGRAM ids a row may not
    play; turns (B, vocab_size) is True on the PROGRAM ids of a row that asks several (each of them
    gets its turn: grammar_hook)."""
    if programs is None or not any(p for p in programs):
        return None, None
    plays = torch.ones(len(programs), vocab_size, dtype=torch.bool)
    turns = torch.zeros(len(programs), vocab_size, dtype=torch.bool)
    for row, turn, chosen in zip(plays, turns, programs):
        if chosen:
            row[tokenizer.OFFSET["PROGRAM"] + np.setdiff1d(np.arange(129), list(chosen))] = False
            turn[tokenizer.OFFSET["PROGRAM"] + np.array(sorted(chosen))] = len(chosen) > 1
    return plays.to(device), turns.to(device) if turns.any() else None


def grammar_hook(vocab_size, device, programs=None, *, penalty=None, turns=True, chord_plan=None):
    """A model.stream logits_hook that leaves only the ids tokenizer.py's grammar allows after each
    row's last token. Ids >= tokenizer.VOCAB_SIZE (a model vocab rounded up) are never allowed.
    programs: per row, the only instruments (GM programs, DRUMS) its notes may be played on, or None
    for any; None: every row is free (with turns, an asked instrument that has not played since
    hook.start is made at least as likely as the likeliest asked one, so that each of several gets
    its turn). penalty: (B, 2, vocab_size) added to each row's logits where its note is pitched (not
    after the drums' PROGRAM), [:, 1] for its first OPENING_NOTES notes after hook.start, [:, 0]
    after them; or None (scale_penalty). chord_plan: (chord_plans(prompts), strength): a pitched
    note off the chord tones planned for its bar loses strength nats on a beat, half between."""
    V, T = tokenizer.VOCAB_SIZE, tokenizer.TYPE
    # (V,)
    special = np.isin(
        tokenizer.TOKEN_TYPE, [T[n] for n in ("PAD", "UNK", "START", "SEMANTIC", "UNCOND")]
    )
    # (V,)
    mid_stream = ~np.isin(
        tokenizer.TOKEN_TYPE, [T[n] for n in ("PAD", "END", "SEMANTIC", "UNCOND")]
    )
    assert not tokenizer.GRAMMAR_MASK[mid_stream][:, special].any(), (
        "the grammar lets a special token in mid-stream"
    )
    allowed = torch.zeros(vocab_size, vocab_size, dtype=torch.bool)  # (prev id, next id)
    allowed[:V, :V] = torch.from_numpy(tokenizer.GRAMMAR_MASK)
    allowed = allowed.to(device)
    plays, asked = instrument_masks(programs, vocab_size, device)
    asked = asked if turns else None
    pitched = penalty is not None and penalty.any()
    penalty = penalty.to(device) if pitched else None
    drums, notes = tokenizer.OFFSET["PROGRAM"] + tokenizer.DRUMS, tokenizer.OFFSET["NOTE"]

    def hook(tokens, logits):  # tokens (B', t), logits (B', vocab_size): the rows still sampling
        # (B', vocab)
        ok = allowed[tokens[:, -1]] if plays is None else allowed[tokens[:, -1]] & plays[hook.rows]
        # an asked instrument not heard yet comes in at least as likely as the likeliest
        if asked is not None:
            heard = torch.zeros_like(ok).scatter_(1, tokens[:, hook.start :], True)  # (B', vocab)
            mine = asked[hook.rows] & ok  # (B', vocab)
            best = logits.masked_fill(~mine, float("-inf")).amax(1, keepdim=True)  # (B', 1)
            logits = torch.where(mine & ~heard, torch.maximum(logits, best), logits)  # (B', vocab)
        if pitched:
            new = tokens[:, hook.start :]  # (B', t')
            played = ((new >= notes) & (new < notes + 128)).sum(1)  # (B',)
            chosen = penalty[hook.rows, (played < OPENING_NOTES).long()]  # (B', vocab)
            logits = logits + chosen * (tokens[:, -1:] != drums)  # (B', vocab)
        if chord_plan is not None:
            off = chord_penalty(tokens, hook.rows, chord_plan, vocab_size=vocab_size)
            logits = logits + off * (tokens[:, -1:] != drums)
        return logits.masked_fill(~ok, float("-inf"))  # (B', vocab)

    hook.start = 0  # where a row's own notes begin (generate_tokens: the prompt's length)
    hook.rows = torch.arange(
        max(
            len(programs) if programs is not None else 0,
            len(penalty) if pitched else 0,
            len(chord_plan[0][0]) if chord_plan is not None else 0,
        )
    )
    return hook


def stop_index(row, prompt_len, seconds=None):
    """Where a sample ends: just past its first END, or at the first TIME_ON that takes the music to
    `seconds`; None while it goes on."""
    ends = np.flatnonzero(row[prompt_len:] == tokenizer.END)
    stop = prompt_len + int(ends[0]) + 1 if len(ends) else None
    if seconds is not None:
        is_time = tokenizer.TOKEN_TYPE[row] == tokenizer.TYPE["TIME_ON"]  # (t,)
        # (t,) time after each token
        steps = np.cumsum(np.where(is_time, row - tokenizer.OFFSET["TIME_ON"] + 1, 0))
        late = np.flatnonzero(
            seconds_at(steps[prompt_len:], tokenizer.tokens_to_score(row)[0].tempos) >= seconds
        )
        if len(late) and (stop is None or prompt_len + late[0] < stop):
            stop = prompt_len + int(late[0])
    return stop


def finish(row, prompt_len, seconds=None):
    """Cut a sample where it ends and close it with END. A sample that ran out of tokens mid-event
    loses that event, so the file ends cleanly."""
    row = row[: stop_index(row, prompt_len, seconds) or len(row)]
    if row[-1] != tokenizer.END:
        while not tokenizer.GRAMMAR_MASK[row[-1], tokenizer.END]:
            row = row[:-1]
        row = np.append(row, tokenizer.END)
    return row


@dataclass
class Sampling:
    """How pieces are sampled; sample.py's flags, and what evaluate.py and bench.py ask for."""

    max_new_tokens: int = 512
    seconds: float | None = None  # end a piece once its music (a prime included) is this long
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    guidance: float = 1.0  # classifier-free guidance against the unconditional prefix; 1 = off
    key_strength: float = (
        0.0  # nats taken from notes off the asked key's scale (scale_penalty); 0 = off
    )
    chord_strength: float = 0.0  # nats taken from notes off the bar's planned chord; 0 = off
    turns: bool = True  # each of several asked instruments gets its turn (grammar_hook)
    seed: int | None = None
    dtype: str = "float32"  # autocast dtype name (model.autocast)


# sample.py's defaults: its flags read them from here, and so do evaluate.py's user path and the
# local app (a change here moves all three)
SAMPLE_DEFAULTS = Sampling(
    max_new_tokens=512,
    temperature=1.0,
    top_k=None,
    top_p=0.95,
    guidance=1.0,
    key_strength=4.0,
    chord_strength=3.0,
)
SECONDS_MAX_NEW_TOKENS = (
    4096  # the token budget of a sample that stops at --seconds (about 70 s of a busy piece)
)
NUM_SAMPLES = 3  # pieces per sample.py run


def user_sampling(
    *,
    seed,
    dtype="float32",
    seconds=None,
    max_new_tokens=None,
    temperature=None,
    top_k=None,
    top_p=None,
    guidance=None,
    key_strength=None,
    chord_strength=None,
):
    """What sample.py's flags (or the app's fields) ask for -> Sampling: SAMPLE_DEFAULTS for each
    one that is None; top_k 0 is off; the token cap is SECONDS_MAX_NEW_TOKENS when seconds end the
    piece."""
    asked = dict(
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        guidance=guidance,
        key_strength=key_strength,
        chord_strength=chord_strength,
    )
    chosen = replace(SAMPLE_DEFAULTS, **{k: v for k, v in asked.items() if v is not None})
    cap = max_new_tokens or (SECONDS_MAX_NEW_TOKENS if seconds else SAMPLE_DEFAULTS.max_new_tokens)
    return replace(
        chosen,
        max_new_tokens=cap,
        seconds=seconds,
        top_k=chosen.top_k or None,
        seed=seed,
        dtype=dtype,
    )


def row_generators(seed, n, device="cpu"):
    """One random generator per row, seeded from seed and the row's place (None: a random seed): a
    sample is then the same whatever else shares its batch, and whichever rows finish first."""
    seed = int(torch.randint(2**31, ())) if seed is None else seed
    return [torch.Generator(device).manual_seed(seed * 10_007 + i) for i in range(n)]


def sampling_hook(prompts, sampling, vocab_size, device, *, programs=None):
    """The grammar_hook of a batch: its instruments, and the key and chord strengths it asks."""
    penalty = plans = None
    if sampling.key_strength:
        penalty = scale_penalty(prompts, sampling.key_strength, vocab_size)
    if sampling.chord_strength:
        plans = (chord_plans(prompts), sampling.chord_strength)
    return grammar_hook(
        vocab_size, device, programs, penalty=penalty, turns=sampling.turns, chord_plan=plans
    )


def generate_tokens(model, prompts, sampling, *, programs=None):
    """prompts: rows of equal length, each an attribute prefix then START ... (prompt_row) -> one
    int64 array per row: [prompt ..., new tokens ..., END]. Sampling goes on until every row has
    reached END or sampling.seconds, or for max_new_tokens. With guidance != 1 each row is guided
    against itself led by the unconditional prefix (every slot unspecified). programs: per row, the
    only instruments its notes are played on (a decoding constraint, like the grammar), or None for
    the model's choice; None: every row free."""
    device = next(model.parameters()).device
    prompt = torch.tensor(prompts, dtype=torch.long, device=device)  # (B, T)
    P = tokenizer.PREFIX_LEN
    uncond = prompt.clone()
    uncond[:, :P] = torch.from_numpy(UNCOND_PREFIX)  # (B, T)
    generator = row_generators(sampling.seed, len(prompts), device)
    hook = sampling_hook(prompts, sampling, model.config.vocab_size, device, programs=programs)
    hook.start = prompt.size(1)
    steps = model.stream(
        prompt,
        temperature=sampling.temperature,
        top_k=sampling.top_k,
        top_p=sampling.top_p,
        logits_hook=hook,
        uncond_idx=uncond,
        guidance=sampling.guidance,
        keep_first=P,
        pin=follow_bars,
        generator=generator,
    )
    # seq: the rows still sampling, active: their places in prompts
    seq, active, out, keep = prompt, list(range(len(prompts))), [None] * len(prompts), None
    bar = tqdm(
        total=sampling.max_new_tokens, desc="sampling", unit="tok", disable=None, leave=False
    )
    with autocast(device.type, sampling.dtype), bar:
        for n in range(1, sampling.max_new_tokens + 1):
            new = next(steps) if keep is None else steps.send(keep)  # (B', 1)
            seq, keep = torch.cat([seq, new], dim=1), None  # (B', T + n)
            bar.update()
            if n % STOP_CHECK == 0:
                rows = seq.cpu().numpy()
                ends = [stop_index(row, prompt.size(1), sampling.seconds) for row in rows]
                done = np.array([end is not None for end in ends])
                for i, row in zip(np.array(active)[done], rows[done]):
                    out[i] = row
                if done.all():
                    break
                if done.any():  # the finished rows leave the batch: the others go on alone
                    keep, active = (
                        torch.from_numpy(~done),
                        [i for i, d in zip(active, done) if not d],
                    )
                    seq = seq[keep.to(device)]
                    hook.rows = hook.rows[keep] if len(hook.rows) else hook.rows
    for i, row in zip(active, seq.cpu().numpy()):
        out[i] = out[i] if out[i] is not None else row
    return [finish(row, prompt.size(1), sampling.seconds) for row in out]
