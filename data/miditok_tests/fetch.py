"""
Real-world MIDI for benchmarks: the test files shipped in miditok's source
distribution (pop songs with drums from the Lakh MIDI dataset, MAESTRO piano
performances, POP909 piano arrangements, and a deliberately corrupt file).

    python data/miditok_tests/fetch.py     # -> data/miditok_tests/midi/

It asks pip for the source archive (a package registry, so it works offline from
model hubs) and keeps only the .mid files. They are used by bench.py only and are
never committed; their licences are those of the datasets they come from.
"""

import os
import subprocess
import sys
import tarfile
import tempfile

VERSION = "3.0.6"
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "midi")

if __name__ == "__main__":
    if os.path.isdir(OUT) and any(f.endswith(".mid") for _, _, fs in os.walk(OUT) for f in fs):
        print(f"already there: {OUT}")
        sys.exit(0)
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"miditok=={VERSION}",
                "-d",
                tmp,
            ],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            sys.exit(
                f"pip could not download miditok=={VERSION}'s source: "
                f"{r.stderr.strip().splitlines()[-1:]}"
            )
        archive = os.path.join(tmp, f"miditok-{VERSION}.tar.gz")
        n = 0
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                parts = member.name.split("/")
                if (
                    member.isfile()
                    and member.name.endswith(".mid")
                    and len(parts) == 4
                    and parts[1] == "tests"
                ):
                    member.name = f"{parts[2]}/{parts[3]}"  # e.g. MIDIs_multitrack/Funkytown.mid
                    tar.extract(member, OUT, filter="data")
                    n += 1
    print(f"wrote {n} MIDI files to {OUT}")
