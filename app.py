"""The local page: type a prompt, hear and see the result. A Gradio app on this machine only
(127.0.0.1) that generates through the same code as `sample.py --prompt ... --seconds ... --audio`:
prompt.request, generation's generate_tokens and render's files and cards (each piece is also added
to RESULTS/index.html, the gallery).

python app.py --out_dir out/amt_cpu          # prints the address to open; Ctrl+C stops it
python app.py --out_dir out/my_midi --port 7861
make app                                     # installs requirements-app.txt, then the line above

Gradio is an optional dependency (requirements-app.txt); the rest of the project never imports it.
Gradio copies each file it serves; those copies go to a folder of this run inside the results
folder (or inside GRADIO_TEMP_DIR, where it is set), deleted when the page stops.
"""

import argparse
import contextlib
import functools
import os
import shutil
import tempfile
import time

import attributes
import checkpoints
import dataset
import prompt
import render
from files import UserError, check_output_folder, check_range, os_error_line, run_script
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
    args = p.parse_args(argv)
    if args.port is not None:  # before anything loads
        check_range("--port", args.port, low=1, high=65535)
    return args


def load(args):
    """The model, and what every request needs beside it: a dict, read by make_piece."""
    folder = os.path.abspath(args.results_dir or os.path.join(args.out_dir, "app"))
    check_output_folder(folder)  # before the model loads
    dataset.check_outside_midi(folder, "--results_dir")
    device, _, dtype = pick_device(args.device, args.dtype)
    model, ckpt = checkpoints.load_model(checkpoints.chosen(args.out_dir, args.ckpt), device)
    data_dir = checkpoints.data_dir(ckpt, args.data_dir)
    os.makedirs(folder, exist_ok=True)
    print(
        f"{ckpt['path']} (iter {ckpt.get('iter_num', '?')}) on {device} ({dtype}); pieces go to "
        f"{folder}"
    )
    return dict(model=model, ckpt=ckpt, dtype=dtype, data_dir=data_dir, folder=folder, history=[])


# -----------------------------------------------------------------------------
# one request: the user's path, as sample.py takes it


def read_fields(*fields):
    """The page's FIELDS, in order (Gradio passes them by position) -> (the prompt, what it and the
    fields over it ask for: prompt.asked_attributes, make_piece's keywords: guidance, temperature,
    seconds and seed). Each field is checked before any work, by the check its flag takes on the
    command line, so a field that can't be read is that same one-line UserError."""
    text, *asked, guidance, temperature, seconds, seed = fields
    asked = prompt.asked_attributes(text, dict(zip(attributes.FLAGS, asked)))
    settings = dict(
        guidance=check_range("guidance", guidance, low=0, note="1 = off, 0 = unconditional"),
        temperature=check_range("temperature", temperature, low=0, note="0 = greedy"),
        seconds=check_range("seconds", seconds, low=0, low_open=True),
        seed=prompt.read_seed(seed, "seed"),
    )
    return text, asked, settings


def make_piece(loaded, text, asked, *, guidance, temperature, seconds, seed=None):
    """A prompt and what it and the fields over it ask for (read_fields) -> (the gallery card of one
    new piece, with absolute paths; the request). A missing clusters.json is a UserError."""
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


def on_generate(loaded, *fields):
    """The page's button: its FIELDS, in order (Gradio passes them by position) -> status,
    understood, piano roll, audio, MIDI, measured, history, earlier files. A UserError becomes its
    one line in the status, with the piece's fields cleared (they showed the last piece)."""
    t0 = time.perf_counter()
    try:
        text, asked, settings = read_fields(*fields)
        card, req = make_piece(loaded, text, asked, **settings)
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


@contextlib.contextmanager
def served_copies(folder):
    """While the page runs, Gradio's copies of the files it serves go to a fresh folder inside
    folder, or inside GRADIO_TEMP_DIR where the user set it: -> its path. It is deleted at the end,
    so the copies don't pile up in the system's temp folder."""
    before = os.environ.get("GRADIO_TEMP_DIR")
    try:
        os.makedirs(before or folder, exist_ok=True)
        cache = tempfile.mkdtemp(prefix=".served-", dir=before or folder)
    except OSError as e:
        raise UserError(f"can't make the folder of served copies: {os_error_line(e)}") from None
    os.environ["GRADIO_TEMP_DIR"] = cache
    try:
        yield cache
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        if before is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = before


def main(argv=None):
    args = parse_args(argv)
    loaded = load(args)
    with served_copies(loaded["folder"]):
        page = build_page(loaded)
        clusters = os.path.join(loaded["data_dir"], "clusters.json")
        if os.path.exists(clusters):  # the embedder loads now rather than at the first prompt
            prompt.load_embedder(prompt.load_clusters(loaded["data_dir"])["embedder"])
        url = serve(page, loaded, args.port)
        print(f"AMT app: {url} (open it in a browser; Ctrl+C stops it)", flush=True)
        try:
            page.block_thread()  # until Ctrl+C
        finally:
            page.close(verbose=False)


if __name__ == "__main__":
    run_script(main, interrupted="stopped")
