"""The benchmark scripts' sections that import test-only packages (requirements-dev.txt) say so in
one line, before any section runs, where those packages are missing: `make demo` installs
requirements.txt alone. A section asked of the wrong script is one line naming the command that
runs it."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import bench  # noqa: E402
import bench_data  # noqa: E402
import bench_runs  # noqa: E402
import benchlib  # noqa: E402

SCRIPTS = {"bench.py": bench, "bench_data.py": bench_data, "bench_runs.py": bench_runs}
# a None in sys.modules: as if it were not installed
HIDE = (
    "import runpy, sys; sys.modules['{}'] = None; sys.argv = ['{}', '--only', '{}']; "
    "runpy.run_path('{}', run_name='__main__')"
)


def one_line_error(code):
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().count("\n") == 0 and r.stdout == "", (
        "one line, and nothing benchmarked first"
    )
    return r.stderr


def test_a_section_without_its_dev_package_says_what_to_install():
    said = one_line_error(
        HIDE.format("miditok", "bench_data.py", "roundtrip,prepare", "bench_data.py")
    )
    assert (
        "prepare needs miditok" in said
        and "pip install -c constraints.txt -r requirements-dev.txt" in said
    )


def test_a_section_of_another_script_names_the_command_that_runs_it():
    argv = "'bench.py', '--only', 'speedrun', '--speedrun_variants', 'baseline'"
    said = one_line_error(
        f"import runpy, sys; sys.argv = [{argv}]; runpy.run_path('bench.py', run_name='__main__')"
    )
    assert "python bench_runs.py --only speedrun" in said, said
    said = benchlib.elsewhere("bench_runs.py", ["padding", "roundtrip", "sample"])
    assert "python bench_data.py --only roundtrip" in said, said
    assert said.startswith("--only roundtrip,sample:") and "python bench.py --only sample" in said
    assert benchlib.elsewhere("bench.py", ["train", "render"]) is None


def test_every_package_a_section_needs_is_a_dev_requirement():
    dev = {
        line.split("#")[0].strip()
        for line in (ROOT / "requirements-dev.txt").read_text().splitlines()
    }
    needed = {
        module
        for script in SCRIPTS.values()
        for _, needs in script.SECTIONS.values()
        for module in needs
    }
    assert needed and needed <= dev, needed - dev
    assert {name: tuple(script.SECTIONS) for name, script in SCRIPTS.items()} == benchlib.SCRIPTS
    for script in SCRIPTS.values():
        assert benchlib.missing_packages(script.SECTIONS, list(script.SECTIONS)) is None, (
            "make test installs what every section needs"
        )
