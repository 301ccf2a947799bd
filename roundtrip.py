"""
What the model "hears" of a MIDI file: encode it to AMT tokens, decode them back, write the result
and say what was kept, moved, dropped or changed.

    python roundtrip.py song.mid -o heard.mid     # the round trip, to listen to beside the original
    python roundtrip.py song.mid --show 40        # and the first 40 tokens by name
"""

import argparse

import describe
import tokenizer
from files import UserError, check_output_file, check_range, check_text, run_script, write_atomic
from midifile import MidiError


def print_result(result):
    n_in, n_kept = result["notes_in"], result["notes_kept"]
    dropped = sum(result["dropped"].values())
    print(f"notes in     {n_in}")
    print(
        f"notes kept   {n_kept} ({100 * n_kept / max(n_in, 1):.2f}%: same pitch and instrument, "
        "onset and duration "
        f"within 1/{tokenizer.STEPS_PER_QUARTER} beat)"
    )
    print(f"tokens       {result['tokens']} ({result['tokens'] / max(n_kept, 1):.2f} per note)")
    print(f"length       {result['seconds_in']:.2f} s in, {result['seconds_out']:.2f} s out")
    for reason, count in result["dropped"].most_common():
        print(f"dropped      {count}: {reason}")
    if n_in - n_kept > dropped:
        print(
            f"moved        {n_in - n_kept - dropped} notes by more than a grid step "
            f"(notes shorter than a step that end up overlapping the next note of the same key)"
        )
    for reason, count in result["changed"].most_common():
        print(f"also         {count} {reason}")


def main(argv=None):
    parser = argparse.ArgumentParser(description="Round-trip a MIDI file through the AMT tokens.")
    parser.add_argument("midi", help="input .mid")
    parser.add_argument(
        "-o", "--out", help="where to write the decoded round trip (.mid); never the input"
    )
    parser.add_argument("--show", type=int, default=0, help="print the first N tokens by name")
    args = parser.parse_args(argv)
    check_range("--show", args.show, low=0)
    # before any work: the round trip is lossy, so it must never replace its input
    if args.out is not None:
        check_text("--out", args.out)
        check_output_file(args.out, inputs=[args.midi])
    try:
        result = describe.round_trip(args.midi)
    except MidiError as e:
        raise UserError(f"{args.midi}: {e}") from None
    except MemoryError:  # under the limits on a file, only on a machine short of memory
        raise UserError(f"{args.midi}: out of memory reading it; free some memory") from None
    if args.out:
        write_atomic(args.out, lambda f: result["midi"].save(file=f))
    print_result(result)
    if args.show:
        print(" ".join(tokenizer.token_name(t) for t in tokenizer.encode(args.midi)[: args.show]))
    if args.out:
        print(f"wrote        {args.out}")


if __name__ == "__main__":
    run_script(main)
