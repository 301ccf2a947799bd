"""
Files and user errors, at the bottom of every import: the one class for a mistake a person can fix,
the one atomic writer, JSON readers that name a broken file and the command that rebuilds it, the
checks that an output can be written, the one lock that keeps a folder to one writer, and the guard
every script runs under. Every script writes through write_atomic, so a crash or a full disk leaves
the previous file whole.
"""

import errno
import fcntl
import json
import math
import os
import shlex
import shutil
import sys
import time
from contextlib import contextmanager


class UserError(Exception):
    """A mistake the user can fix (a bad flag, a missing file, an unknown token). Every script
    prints it as one line, with what to do, and no traceback. The one such class in the project."""


# -----------------------------------------------------------------------------
# writing


def write_atomic(path, data):
    """Write data (bytes, str, or a function that writes into a binary file object) to path through
    a temporary name and os.replace: a crash leaves the previous file whole, never a half-written
    one. A write that fails (a full disk, a read-only folder) raises an OSError that names path."""
    tmp = (
        f"{path}.{os.getpid()}.tmp"  # the pid: two processes never write through each other's file
    )
    try:
        with open(tmp, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        cause = os_error_in(e)
        # f.write's errors name no file; say which one
        if cause is not None and cause.filename is None:
            raise OSError(cause.errno, cause.strerror, path) from e
        raise


def os_error_in(e):
    """The OSError behind an exception, or None (torch.save wraps a failed write in another)."""
    while e is not None and not isinstance(e, OSError):
        e = e.__cause__ or e.__context__
    return e


ADVICE = {
    errno.ENOSPC: "the disk is full: free some space or choose another folder",
    errno.EDQUOT: "over the disk quota: free some space or choose another folder",
    errno.EFBIG: "over the file size limit (ulimit -f): raise it or choose another folder",
    errno.EROFS: "the folder is read-only: choose another one",
    errno.EACCES: "no permission: choose a folder you can write to",
    errno.EPERM: "no permission: choose a folder you can write to",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder: give a file",
}


def os_error_line(e):
    """An OSError -> one line: what failed, on which file, and what to do."""
    where = f": {e.filename}" if e.filename else ""
    advice = ADVICE.get(e.errno)
    return f"{e.strerror or e}{where}" + (f" ({advice})" if advice else "")


MIN_FREE_BYTES = 1 << 20  # less free space than this is a full disk: no output of any script fits


def rebuild_command(data_dir, script="prepare.py"):
    """The command that (re)makes a data folder's files: prepare.py's, or cluster.py's."""
    return f"python {script} --data_dir {data_dir}"


def check_output_folder(folder, *, must_exist=False):
    """Before any work: raise UserError unless files can be written in folder (made later if missing
    and not must_exist): no part of it is a file, it is not read-only, its disk is not full."""
    probe = os.path.abspath(folder)
    # the folder would be made inside the nearest part that exists
    while not os.path.lexists(probe):
        probe = os.path.dirname(probe)
    if must_exist and probe != os.path.abspath(folder):
        raise UserError(f"no folder {folder}; make it first, or give another")
    if not os.path.isdir(probe):
        what = folder if probe == os.path.abspath(folder) else f"{probe}, a part of {folder},"
        raise UserError(f"{what} is a file, not a folder; give a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(
            f"can't write in {probe} (read-only or no permission); choose another folder"
        )
    usage = shutil.disk_usage(probe)
    if usage.total == 0:
        raise UserError(
            f"can't write in {probe} (it is not on a disk, as /proc is not); choose another folder"
        )
    if usage.free < MIN_FREE_BYTES:
        raise UserError(
            f"the disk of {probe} is full ({usage.free:,} bytes free); free some space or choose "
            f"another folder"
        )


def check_output_file(path, *, inputs=()):
    """Before any work: raise UserError unless path can be written as a new version of a regular
    file, and is none of the inputs (the same file by another name included), so an output never
    replaces what it is made from."""
    if os.path.isdir(path):
        raise UserError(f"{path} is a folder; give a file name for the output")
    if os.path.lexists(path) and not os.path.isfile(path):
        raise UserError(
            f"{path} is not a regular file (a device or a broken link); give another output file"
        )
    for source in inputs:
        if os.path.exists(path) and os.path.exists(source) and os.path.samefile(path, source):
            raise UserError(f"{path} is the input {source}; write the output to another file")
    check_output_folder(os.path.dirname(path) or ".", must_exist=True)


# -----------------------------------------------------------------------------
# reading


def read_json(path, default=None, *, rebuild=None):
    """A JSON file -> its value; default (when given) if the file does not exist. A file that does
    not parse is a UserError naming it and rebuild, the command that makes it again."""
    if default is not None and not os.path.exists(path):
        return default
    try:
        with open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise corrupt(path, e, rebuild) from None


def corrupt(path, e, rebuild=None, line=None):
    """The UserError for a file that does not parse: the file, where, why, and the command that
    rebuilds it."""
    where = f", line {line or e.lineno}" if line or getattr(e, "lineno", None) else ""
    why = getattr(e, "msg", None) or str(e).splitlines()[0][:120]
    return UserError(
        f"{path} is corrupt{where} ({why}); "
        + (f"rebuild it: {rebuild}" if rebuild else "repair or delete it")
    )


def read_jsonl(path, *, rebuild=None):
    """A JSON-lines file -> its rows. With rebuild (the command that remakes the file), a line that
    does not parse is a UserError naming the file and the line; without it such lines are skipped,
    with a count printed."""
    rows, bad = [], 0
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                rows.append(json.loads(raw.decode("utf-8")))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                if rebuild:
                    raise corrupt(path, e, rebuild, line=number) from None
                bad += 1
    if bad:
        print(f"warning: {bad} unreadable lines in {path}")
    return rows


# -----------------------------------------------------------------------------
# one writer per folder

LOCK_NAME = (
    ".amt.lock"  # in the folder written: {"pid", "command", "since"} of the process writing it
)
_held = set()  # folders this process holds (a POSIX lock is per process: a nested take is a no-op)


@contextmanager
def folder_lock(folder, *, create=False, wait=False):
    """Hold folder as its one writer for the with block: a second writer stops at once with a
    UserError naming this process (pid and command), or with wait, waits its turn (for a short
    read-modify-write, such as a gallery's cards). A lock left by a process that died is taken over,
    with a note. With create, the folder is made if missing (and removed again if the block leaves
    nothing in it). fcntl's locks end with their process, however it ends, so a lock can never
    outlive its writer."""
    check_output_folder(folder, must_exist=not create)
    made = not os.path.isdir(folder)
    os.makedirs(folder, exist_ok=True)
    path, key = os.path.join(folder, LOCK_NAME), os.path.realpath(folder)
    if key in _held:
        yield
        return
    fd = take_lock(folder, path, wait)
    _held.add(key)
    try:
        yield
    finally:
        _held.discard(key)
        try:
            # before the lock ends: whoever locks the old file next sees it gone, takes a new one
            os.unlink(path)
        except FileNotFoundError:
            pass
        os.close(fd)
        if made and not os.listdir(folder):
            os.rmdir(folder)  # a run that stopped before writing anything leaves no trace


def take_lock(folder, path, wait=False):
    """Lock path (made if missing) -> its file descriptor, holding this process's pid and command
    line."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            raise UserError(
                f"{folder} is being written by {lock_holder(path)}; wait for it to finish, or stop "
                "it, "
                f"then run this again"
            ) from None
        try:
            here = os.stat(path)
        except FileNotFoundError:
            here = None
        mine = os.fstat(fd)
        if here is not None and (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino):
            break
        # the holder removed the file between our open and our lock: lock the one there now
        os.close(fd)
    left = os.read(fd, 4096).decode("utf-8", "replace").strip()
    if left:
        print(
            f"note: {folder}: taking over the lock left by {describe_holder(left)}, which ended "
            "without "
            f"releasing it"
        )
    me = json.dumps(
        dict(
            pid=os.getpid(),
            command=shlex.join([os.path.basename(sys.executable), *sys.argv]),
            since=time.strftime("%Y-%m-%d %H:%M:%S"),
        )
    )
    os.ftruncate(fd, 0)
    os.pwrite(fd, me.encode("utf-8"), 0)
    return fd


def lock_holder(path):
    """Who holds the lock at path, in words. A new holder writes its name just after it locks (a
    stale one's name may still be there for that moment), so wait until the file names a process
    that is running."""
    text = ""
    for _ in range(40):
        try:
            with open(path, "rb") as f:
                text = f.read().decode("utf-8", "replace").strip()
        except FileNotFoundError:
            text = ""
        if running(holder_pid(text)):
            break
        time.sleep(0.05)
    return describe_holder(text) if text else "another process"


def holder_pid(text):
    try:
        return int(json.loads(text)["pid"])
    except (ValueError, KeyError, TypeError):
        return None


def running(pid):
    if pid is None:
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


def describe_holder(text):
    try:
        holder = json.loads(text)
        command = " ".join(str(holder["command"]).split())  # one line, whatever the command held
        return f"pid {holder['pid']} ({command[:300]}, since {holder['since']})"
    except (ValueError, KeyError, TypeError):
        return f"another process ({text[:200]!r})"


# -----------------------------------------------------------------------------
# settings


def check_range(
    name, value, *, low=-math.inf, high=math.inf, low_open=False, high_open=False, note="", where=""
):
    """Raise UserError unless value is a finite number in the range: the message names the setting,
    the value, where it was set, and what is allowed (note: what the ends mean, say "0 = off"). ->
    value."""
    number = isinstance(value, (int, float)) and math.isfinite(value)
    if (
        number
        and (value > low if low_open else value >= low)
        and (value < high if high_open else value <= high)
    ):
        return value

    def show(x):  # 4294967295, not 4.29497e+09
        return str(int(x)) if float(x).is_integer() and abs(x) < 1e16 else f"{x:g}"

    if high == math.inf:
        allowed = f"{'>' if low_open else '>='} {show(low)}"
    elif low == -math.inf:
        allowed = f"{'<' if high_open else '<='} {show(high)}"
    else:
        allowed = (
            f"in {'(' if low_open else '['}{show(low)}, {show(high)}{')' if high_open else ']'}"
        )
    raise UserError(
        f"{name}={value!r}{f' ({where})' if where else ''} is not allowed: it must be a number "
        f"{allowed}" + (f" ({note})" if note else "")
    )


def check_text(name, value, *, where=""):
    """Raise UserError if a text setting was given but is empty (--tempo ""). -> value."""
    if value is not None and not str(value).strip():
        raise UserError(
            f"{name}={value!r}{f' ({where})' if where else ''} is empty; give a value, or leave it "
            "out"
        )
    return value


# -----------------------------------------------------------------------------
# the guard of every script


def run_script(main, *, interrupted="interrupted"):
    """Every script's `if __name__ == "__main__"`: main() with its expected failures as one line on
    stderr and exit status 1: a UserError, and an OSError (a full disk, a read-only folder, a file
    where a folder should be). Ctrl-C prints `interrupted` and exits 130. Anything else is a bug,
    and keeps its traceback."""
    # a file name that is not UTF-8 prints escaped, never crashes
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    try:
        main()
    except UserError as e:
        sys.exit(f"error: {e}")
    except OSError as e:
        sys.exit(f"error: {os_error_line(e)}")
    except KeyboardInterrupt:
        print(f"\n{interrupted}", file=sys.stderr)
        sys.exit(130)
