"""The local page: type a prompt, hear and see the result. A Gradio app on this machine only
(127.0.0.1) that generates through the same code as `sample.py --prompt ... --seconds ... --audio`:
prompt.request, generation's generate_tokens and render's files and cards (each piece is also added
to RESULTS/index.html, the gallery).

python app.py --out_dir out/amt_cpu          # prints the address to open; Ctrl+C stops it
python app.py --out_dir out/my_midi --port 7861
make app                                     # installs requirements-app.txt, then the line above

Gradio is an optional dependency (requirements-app.txt); the rest of the project never imports it.
"""

import argparse
import functools
import os
import time

import attributes
import checkpoints
import prompt
import render
from files import UserError, run_script
from generation import SAMPLE_DEFAULTS, add_device_flags, generate_tokens, user_sampling
from model import pick_device

SECONDS = 30  # the length the page starts at, as `make demo` samples
HOST = "127.0.0.1"  # this machine only: the page runs a model for whoever reaches it
# the inputs of the page's /generate endpoint, in the order Gradio passes them and gradio_client
# takes them
FIELDS = ("prompt", *attributes.FLAGS, "guidance", "temperature", "seconds", "seed")
INSTALL = "pip install -c constraints.txt -r requirements-app.txt (or: make app)"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="A local page to try prompts on an AMT checkpoint.")
    p.add_argument("--out_dir", default=checkpoints.OUT_DIR, help="the training run's folder")
    p.add_argument("--ckpt", help=checkpoints.CKPT_HELP)
    p.add_argument("--data_dir", help="dataset folder with clusters.json; default the checkpoint's")
    p.add_argument("--results_dir", help="where pieces are written; default OUT_DIR/app")
    p.add_argument("--port", type=int, help="default: the first free one from 7860 (Gradio's)")
    add_device_flags(p)
    return p.parse_args(argv)


def load(args):
    """The model, and what every request needs beside it: a dict, read by make_piece."""
    device, _, dtype = pick_device(args.device, args.dtype)
    model, ckpt = checkpoints.load_model(checkpoints.chosen(args.out_dir, args.ckpt), device)
    data_dir = checkpoints.data_dir(ckpt, args.data_dir)
    folder = os.path.abspath(args.results_dir or os.path.join(args.out_dir, "app"))
    os.makedirs(folder, exist_ok=True)
    print(
        f"{ckpt['path']} (iter {ckpt.get('iter_num', '?')}) on {device} ({dtype}); pieces go to "
        f"{folder}"
    )
    return dict(model=model, ckpt=ckpt, dtype=dtype, data_dir=data_dir, folder=folder, history=[])


# -----------------------------------------------------------------------------
# one request: the user's path, as sample.py takes it


def make_piece(loaded, text, flags, *, guidance, temperature, seconds, seed=None):
    """A prompt and the fields that override it (attributes.FLAGS) -> (the gallery card of one new
    piece, with absolute paths; the request). A malformed field or a missing clusters.json is a
    UserError."""
    asked = prompt.asked_attributes(text, flags)
    req = prompt.request(
        loaded["ckpt"], asked, text=text or None, seed=seed, data_dir=loaded["data_dir"]
    )
    rows = req.rows(1)
    sampling = user_sampling(
        seed=req.seed,
        dtype=loaded["dtype"],
        seconds=seconds,
        temperature=temperature,
        guidance=guidance,
    )
    samples = generate_tokens(loaded["model"], rows, sampling, programs=req.programs(len(rows)))
    _, written = render.write_samples(
        samples,
        loaded["folder"],
        token=req.token,
        label=req.label,
        seed=req.seed,
        prompt_len=len(rows[0]),
    )
    understood = req.understood(text or None)
    _, cards = render.audio_and_gallery(
        [(path, score, title, understood) for path, score, title in written],
        loaded["folder"],
        audio=True,
        title="AMT app",
    )
    card = cards[0]
    for key in ("midi", "png", "wav"):
        card[key] = card[key] and os.path.join(loaded["folder"], card[key])
    return card, req


def facts_table(facts, header):
    return render.markdown_table(header, [(k, str(v).replace("|", "/")) for k, v in facts.items()])


def understood_text(card, req):
    """What was understood, as --dry_run reports it (token, cosine, tempo, meter, key, mode,
    instruments), with instruments by name, then the notes that sample.py prints beside it."""
    lines = [
        facts_table(render.understood_facts(card["understood"]), ["asked for", "understood as"])
    ]
    if req.asked["unused"]:
        lines.append(f"Words used only for the semantic token: {' '.join(req.asked['unused'])}")
    lines += [f"- {note}" for note in req.asked["notes"]]
    return "\n\n".join(lines)


def history_text(history):
    """Earlier results, newest first: a table a person scans."""
    if not history:
        return "Nothing made yet."
    rows = [
        (
            c["made"],
            (c["understood"].get("prompt") or "(no prompt)").replace("|", "/"),
            c["understood"]["token"],
            c["facts"]["length"],
            c["facts"]["estimated key"],
            c["facts"]["instruments"].replace("|", "/"),
            os.path.basename(c["midi"]),
        )
        for c in reversed(history)
    ]
    return render.markdown_table(
        ["made", "prompt", "token", "length", "key", "instruments", "MIDI"], rows
    )


def parse_seed(text):
    """The seed field: empty (or None) for a new seed each time, else a whole number."""
    text = str(text if text is not None else "").strip()
    if not text:
        return None
    if not text.isdigit():
        raise UserError(
            f"seed {text!r}: give a whole number such as 1, or leave it empty for a new one each "
            "time"
        )
    return int(text)


def on_generate(loaded, *fields):
    """The page's button: its FIELDS, in order (Gradio passes them by position) -> status,
    understood, piano roll, audio, MIDI, measured, history, earlier files. A UserError becomes its
    one line in the status, with the piece's fields cleared (they showed the last piece)."""
    text, *asked, guidance, temperature, seconds, seed = fields
    flags = dict(zip(attributes.FLAGS, asked))
    t0 = time.perf_counter()
    try:
        card, req = make_piece(
            loaded,
            text,
            flags,
            guidance=float(guidance),
            temperature=float(temperature),
            seconds=float(seconds),
            seed=parse_seed(seed),
        )
    except UserError as e:
        print(f"error: {e}")
        return (
            [f"**error:** {e}"]
            + [None] * 5
            + [history_text(loaded["history"]), earlier_files(loaded)]
        )
    # a card replaces an earlier one of the same file (same token and seed), as in the gallery: the
    # file is new
    loaded["history"] = [c for c in loaded["history"] if c["midi"] != card["midi"]] + [card]
    status = f"Made {card['title']} in {time.perf_counter() - t0:.1f} s."
    return [
        status,
        understood_text(card, req),
        card["png"],
        card["wav"],
        card["midi"],
        facts_table(card["facts"], ["measured", "in the result"]),
        history_text(loaded["history"]),
        earlier_files(loaded),
    ]


def earlier_files(loaded):
    return [c["midi"] for c in reversed(loaded["history"])] or None


# -----------------------------------------------------------------------------
# the page


def build_page(loaded):
    """The Gradio page: inputs on the left, the newest piece on the right, earlier ones below."""
    try:
        import gradio as gr
    except ImportError:
        raise UserError(f"the app needs gradio: {INSTALL}") from None
    with gr.Blocks(title="AMT", analytics_enabled=False) as page:
        gr.Markdown(
            f"## AMT: text to MIDI\n`{loaded['ckpt']['path']}` (iter "
            f"{loaded['ckpt'].get('iter_num', '?')})."
            f" {attributes.listed(attributes.FLAGS).capitalize()}, when given, override what the"
            " prompt says."
        )
        with gr.Row():
            with gr.Column(scale=2):
                text = gr.Textbox(
                    label="prompt",
                    placeholder="a gentle waltz in A minor for strings",
                    lines=2,
                    elem_id="prompt",
                )
                asked = []  # a field per attribute, two to a row
                for i in range(0, len(attributes.ASKED), 2):
                    with gr.Row():
                        for a in attributes.ASKED[i : i + 2]:
                            asked.append(gr.Textbox(label=a.name, placeholder=a.placeholder))
                guidance = gr.Slider(
                    1, 5, value=SAMPLE_DEFAULTS.guidance, step=0.5, label="guidance (1 = off)"
                )
                temperature = gr.Slider(
                    0.5, 1.5, value=SAMPLE_DEFAULTS.temperature, step=0.05, label="temperature"
                )
                seconds = gr.Slider(5, 120, value=SECONDS, step=5, label="length (seconds)")
                seed = gr.Textbox(label="seed", placeholder="empty: a new one each time")
                button = gr.Button("Generate", variant="primary", elem_id="generate")
                status = gr.Markdown(elem_id="status")
                understood = gr.Markdown()
            with gr.Column(scale=3):
                roll = gr.Image(type="filepath", label="piano roll", elem_id="roll")
                audio = gr.Audio(
                    type="filepath", label="audio (TimGM6mb SoundFont)", elem_id="audio"
                )
                midi = gr.File(label="MIDI", elem_id="midi")
                measured = gr.Markdown()
        gr.Markdown("### Earlier results")
        history = gr.Markdown(history_text(loaded["history"]))
        files = gr.File(label="earlier MIDI files", file_count="multiple")
        outputs = [status, understood, roll, audio, midi, measured, history, files]
        button.click(
            functools.partial(on_generate, loaded),
            api_name="generate",
            outputs=outputs,
            inputs=[text, *asked, guidance, temperature, seconds, seed],
        )
    return page


def serve(page, loaded, port=None):
    """Serve the page on HOST without blocking; -> its address. Files are served from the results
    folder only."""
    try:
        _, url, _ = page.launch(
            server_name=HOST,
            server_port=port,
            prevent_thread_lock=True,
            quiet=True,
            allowed_paths=[loaded["folder"]],
            ssr_mode=False,
            mcp_server=False,
            footer_links=["api"],
        )
    except OSError as e:  # the port is taken (or, with none given, every one Gradio tries)
        raise UserError(
            f"no free port to serve on ({str(e).splitlines()[0][:120]}); give another with --port, "
            f"or leave --port out for the first free one from 7860"
        ) from None
    return url


def main(argv=None):
    args = parse_args(argv)
    loaded = load(args)
    page = build_page(loaded)
    clusters = os.path.join(loaded["data_dir"], "clusters.json")
    if os.path.exists(clusters):  # the embedder loads now rather than at the first prompt
        prompt.load_embedder(prompt.load_clusters(loaded["data_dir"])["embedder"])
    url = serve(page, loaded, args.port)
    print(f"AMT app: {url} (open it in a browser; Ctrl+C stops it)", flush=True)
    page.block_thread()


if __name__ == "__main__":
    run_script(main, interrupted="stopped")
