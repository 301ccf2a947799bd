"""The control report's prompts, and their samples on each path: the user's (`sample.py --prompt
P --seconds 20` with its defaults), the model alone (the attribute prefix, semantic token
unspecified), and unconditioned samples beside each. evaluate.py measures what they realise.

lab: the lab settings of the user's path, by name (semantic_from, min_cosine, guidance,
key_strength, turns, any_instrument, header); those left out keep sample.py's defaults."""

import os
from dataclasses import replace

import describe
import generation
import prompt
from files import UserError, os_error_line
from generation import generate_tokens, prompt_row

PATHS = ("user", "model", "none-user", "none-model")
FIXED_PROMPTS_FILE = "config/control_prompts.txt"  # the fixed control set, one per line
# the README's examples, with their flags (tests/test_evaluate.py checks they are there)
README_PROMPTS = [
    ("a slow waltz in A minor for strings", {}),
    ("a lively irish jig", {}),
    ("a jig", dict(tempo="100", key="D major", instruments="fiddle,drums")),
    ("a slow chorale in a minor key", {}),
]
DEMO_PROMPTS_FILE = "config/demo_prompts.txt"  # make demo samples these, one per line
USER_SECONDS = 20.0  # the user's path: sample.py --prompt P --seconds 20, other flags as default
BATCH_ROWS = 32  # control samples generated at once: a CPU's matmuls want a batch
POOL = 64  # unconditioned samples per length, shared by the prompts as their baseline
PROMPTS_FILE_MAX = 16 << 20  # bytes: --prompts reads a text file of prompts, not anything


def prompt_sets(names):
    """ "fixed,demo,readme,path.txt" -> {set name: [(prompt, flags)]}: the fixed control set, the
    demo's and the README's prompts, and any text file of prompts (one per line): prompts from
    outside the repo keep it honest. A file is UTF-8 text, each prompt readable as --prompt is
    (prompt.check_typed); anything else is a one-line UserError that names the file and line."""

    def read(path):
        if not os.path.isfile(path):
            raise UserError(
                f"--prompts {path}: no such file; give fixed, demo, readme or text files of "
                "prompts, one per line, separated by commas"
            )
        try:
            with open(path, "rb") as f:
                data = f.read(PROMPTS_FILE_MAX + 1)
            if len(data) > PROMPTS_FILE_MAX:
                raise UserError(
                    f"--prompts {path}: over {PROMPTS_FILE_MAX >> 20} MiB; a file of prompts is "
                    "text, one prompt a line"
                )
            text = data.decode("utf-8")
        except OSError as e:
            raise UserError(f"--prompts {path}: {os_error_line(e)}") from None
        except UnicodeDecodeError as e:
            line = data[: e.start].count(b"\n") + 1
            raise UserError(
                f"--prompts {path}: line {line} is not UTF-8 (byte {data[e.start]:#04x}); save "
                "the file as UTF-8 text"
            ) from None
        lines = [(i, line.strip()) for i, line in enumerate(text.splitlines(), 1)]
        return [
            (prompt.check_typed(f"--prompts {path}, line {i},", line), {})
            for i, line in lines
            if line and not line.startswith("#")
        ]

    builtin = {
        "fixed": lambda: read(FIXED_PROMPTS_FILE),
        "demo": lambda: read(DEMO_PROMPTS_FILE),
        "readme": lambda: README_PROMPTS,
    }
    sets = {}
    for name in filter(None, names.split(",")):
        if os.path.basename(name) in sets:
            raise UserError(
                f"--prompts: two sets named {os.path.basename(name)!r}; each set is reported by "
                "its file's name, so give files of different names"
            )
        sets[os.path.basename(name)] = builtin[name]() if name in builtin else read(name)
    return sets


def jobs(ckpt, sets, *, data_dir, seed, lab):
    """One job per (set, prompt): what it asks, the user's Request (token, prefix, seed:
    prompt.request exactly as sample.py --prompt makes it, unless `lab` says otherwise) and the
    model-alone prefix (semantic token unspecified)."""
    out = []
    for name, prompts in sets.items():
        for i, (text, flags) in enumerate(prompts):
            asked = prompt.asked_attributes(text, flags)
            req = prompt.request(
                ckpt,
                asked,
                text=text,
                seed=seed + i,
                data_dir=data_dir,
                semantic_from=lab.get("semantic_from"),
                min_cosine=lab.get("min_cosine"),
            )
            key = None if req.prefix["key"] is None else describe.KEY_NAMES[req.prefix["key"]]
            out.append(dict(set=name, prompt=i, asked=asked, request=req, key=key))
    return out


def batched(model, rows, sampling, programs=None):
    """generate_tokens over prompt rows of any lengths (grouped by length, BATCH_ROWS at a time;
    each chunk seeded from sampling.seed and its place) -> the samples in the order of rows."""
    out, by_length = [None] * len(rows), {}
    for i, row in enumerate(rows):
        by_length.setdefault(len(row), []).append(i)
    for length, index in sorted(by_length.items()):
        for at in range(0, len(index), BATCH_ROWS):
            chunk = index[at : at + BATCH_ROWS]
            got = generate_tokens(
                model,
                [rows[i] for i in chunk],
                replace(sampling, seed=sampling.seed + 1000 * length + at),
                programs=None if programs is None else [programs[i] for i in chunk],
            )
            for i, tokens in zip(chunk, got):
                out[i] = tokens
    return out


def path_samples(model, jobs, path, *, n, sampling, lab):
    """n samples of every job on one path -> [[token rows] per job]. user: exactly sample.py
    --prompt's defaults with --seconds 20 (the nearest semantic token, the opening meter and tempo,
    notes only on the asked instruments), unless a lab setting changes one; model: the attribute
    prefix alone (no semantic token, nothing forced, any instrument), as many tokens as section 2;
    none-user, none-model: unconditioned at each path's length, a pool of POOL samples that every
    job takes n of in turn."""
    at_length = replace(
        generation.SAMPLE_DEFAULTS,
        seconds=USER_SECONDS,
        seed=sampling.seed,
        dtype=sampling.dtype,
        max_new_tokens=generation.SECONDS_MAX_NEW_TOKENS,
    )
    if path.startswith("none"):
        pool = batched(
            model,
            [prompt_row(None, {}, header=False)] * POOL,
            replace(at_length if path == "none-user" else sampling, guidance=1.0),
        )
        return [[pool[(j * n + k) % POOL] for k in range(n)] for j in range(len(jobs))]
    if path == "user":
        requests = [job["request"] for job in jobs]
        rows = [row for r in requests for row in r.rows(n, header=lab.get("header", True))]
        programs = [p for r in requests for p in r.programs(n, lab.get("any_instrument", False))]
        changed = {
            k: lab[k] for k in ("guidance", "key_strength", "chord_strength", "turns") if k in lab
        }
        flat = batched(model, rows, replace(at_length, **changed), programs)
    else:
        rows = [prompt_row(None, job["request"].asked_prefix(), header=False) for job in jobs]
        flat = batched(model, [row for row in rows for _ in range(n)], sampling)
    return [flat[j * n : (j + 1) * n] for j in range(len(jobs))]


def path_words(sampling, lab, paths):
    """Each path's samples, in words."""
    d, lab = generation.SAMPLE_DEFAULTS, ", ".join(f"{k}={v}" for k, v in lab.items())
    words = {
        "user": f"`sample.py --prompt P --seconds {USER_SECONDS:g}` with its defaults: the nearest "
        f"semantic token, guidance {d.guidance:g}, top-p {d.top_p:g}, key strength "
        f"{d.key_strength:g}, chord strength {d.chord_strength:g}, the opening meter and tempo, "
        "notes only on the asked instruments, each of several in turn"
        + (f"; **lab settings instead of the defaults: {lab}**" if lab else ""),
        "model": "the attribute prefix alone (semantic token unspecified), guidance "
        f"{sampling.guidance:g}, {sampling.max_new_tokens} new tokens, nothing forced",
        "none-user": f"unconditioned, {USER_SECONDS:g} s ({POOL} samples shared by the prompts)",
        "none-model": f"unconditioned, {sampling.max_new_tokens} tokens ({POOL} samples shared by "
        "the prompts)",
    }
    return {path: words[path] for path in paths}


def lab_settings(s):
    """evaluate.py's lab settings given (only those), by the names the user's path takes them."""
    user = dict(
        semantic_from=s.semantic_from,
        min_cosine=s.min_cosine,
        guidance=s.user_guidance,
        key_strength=s.key_strength,
        chord_strength=s.chord_strength,
        turns=False if s.no_turns else None,
        any_instrument=s.any_instrument or None,
        header=False if s.no_header else None,
    )
    return {k: v for k, v in user.items() if v is not None}
