"""bench.py's sections that import test-only packages (requirements-dev.txt) say so in one line,
before any section runs, where those packages are missing: `make demo` installs requirements.txt
alone."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import bench  # noqa: E402

HIDE = (
    "import runpy, sys; sys.modules['{}'] = None; sys.argv = ['bench.py', '--only', '{}']; "
    "runpy.run_path('bench.py', run_name='__main__')"
)  # a None in sys.modules: as if it were not installed


def test_a_section_without_its_dev_package_says_what_to_install():
    r = subprocess.run(
        [sys.executable, "-c", HIDE.format("miditok", "roundtrip,prepare")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().count("\n") == 0 and r.stdout == "", (
        "one line, and nothing benchmarked first"
    )
    assert (
        "prepare needs miditok" in r.stderr
        and "pip install -c constraints.txt -r requirements-dev.txt" in r.stderr
    )


def test_every_package_a_section_needs_is_a_dev_requirement():
    dev = {
        line.split("#")[0].strip()
        for line in (ROOT / "requirements-dev.txt").read_text().splitlines()
    }
    needed = {module for needs in bench.NEEDS.values() for module in needs}
    assert needed and needed <= dev, needed - dev
    assert set(bench.NEEDS) == set(bench.SECTIONS)
    assert bench.missing_packages(list(bench.SECTIONS)) is None, (
        "make test installs what every section needs"
    )
