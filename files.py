"""
Files and user errors, at the bottom of every import: the one class for a mistake a person can fix,
the one atomic writer, JSON readers that name a broken file and the command that rebuilds it, the
checks that an output can be written, the one lock that keeps a folder to one writer, and the guard
every script runs under. Every script writes through write_atomic, so a crash or a full disk leaves
the previous file whole.

Folders may come from anywhere (an archive, a shared disk), so no write follows a link it did not
make (open_new, the lock), inputs are read from regular files only, never waiting on a FIFO
(open_regular), and names are escaped in TSV lines (tsv_field).
"""

import errno
import fcntl
import json
import math
import os
import shlex
import shutil
import stat
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
    tmp = f"{path}.{os.getpid()}.tmp"  # the pid: two processes never write through each other's
    try:
        with open_new(tmp) as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException as e:
        if is_regular(tmp, follow_links=False):
            os.remove(tmp)
        cause = os_error_in(e)
        # f.write's errors name no file; say which one
        if cause is not None and cause.filename is None:
            raise OSError(cause.errno, cause.strerror, path) from e
        raise


def open_new(tmp, mode="wb", **kwargs):
    """A temporary name of this process -> a file object newly made there for writing (O_EXCL and
    O_NOFOLLOW): a link planted at that name is never followed, so a write cannot land in a file
    it points to. A regular file already there is this pid's temporary left by a run that was
    killed, and is replaced; anything else there (a link, a FIFO, a folder) is a UserError."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    try:
        fd = os.open(tmp, flags, 0o644)
    except FileExistsError:
        if not is_regular(tmp, follow_links=False):
            raise UserError(
                f"{tmp} is in the way of a write ({kind_of(os.lstat(tmp).st_mode)}, not a file "
                "this program wrote); remove it, then run this again"
            ) from None
        os.remove(tmp)  # unlinks that name only: no other name of the file is touched
        fd = os.open(tmp, flags, 0o644)
    return os.fdopen(fd, mode, **kwargs)


def remove_stale_temps(targets):
    """Remove the temporaries that write_atomic and open_new left for the target paths when they
    were killed ({target}.{pid}.tmp, of a process no longer running; regular files only). Nothing
    else is touched: a file of the user's beside them ({target}.mine.tmp, notes.tmp) stays, and so
    does a link. Each folder is listed once."""
    by_folder = {}
    for target in targets:
        folder, name = os.path.split(os.fspath(target))
        by_folder.setdefault(folder or ".", set()).add(name)
    for folder, names in by_folder.items():
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            continue
        for entry in entries:
            target, _, pid = entry.name.removesuffix(".tmp").rpartition(".")
            if (
                entry.name.endswith(".tmp")
                and target in names
                and pid.isascii()
                and pid.isdigit()
                and entry.is_file(follow_symlinks=False)
                and (int(pid) == os.getpid() or not running(int(pid)))
            ):
                os.remove(entry.path)


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


# Characters that would end or split a line or a column of a TSV file (and every other control
# character, and the separators str.splitlines breaks at) -> their escapes: \t, \n, \\, \x1c, \u2028
TSV_ESCAPES = {c: f"\\x{c:02x}" for c in [*range(32), 127, 0x85]} | {
    ord("\t"): "\\t",
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\\"): "\\\\",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}


def tsv_field(text):
    """A text -> one field of a TSV line, with backslash escapes as Python writes them in a string:
    a name holding a TAB or a newline stays in its column and on its line."""
    return str(text).translate(TSV_ESCAPES)


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


KINDS = (
    (stat.S_ISLNK, "a symlink"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a folder"),
)


def kind_of(mode):
    """An st_mode that is not a regular file's -> what it is, in words ("a FIFO")."""
    return next((words for test, words in KINDS if test(mode)), "not a regular file")


class NotRegularFile(UserError):
    """A name that holds no regular file (a FIFO, a device, a folder, a broken or refused link);
    kind says which, in words."""

    def __init__(self, path, kind):
        super().__init__(f"{path} is {kind}, not a regular file; give a file, or remove it")
        self.kind = kind


def is_regular(path, *, follow_links=True):
    try:
        st = os.stat(path) if follow_links else os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode)


def open_regular(path, *, follow_links=True):
    """path -> a binary file object for reading, of a regular file only. A FIFO, a device or a
    folder under that name (or, without follow_links, a symlink) raises NotRegularFile and is
    never waited on: it is looked at before it is opened, and opened without blocking."""
    try:
        st = os.stat(path) if follow_links else os.lstat(path)
    except FileNotFoundError:
        if os.path.lexists(path):
            raise NotRegularFile(path, "a broken link") from None
        raise
    if not stat.S_ISREG(st.st_mode):
        raise NotRegularFile(path, kind_of(st.st_mode))
    nofollow = 0 if follow_links else os.O_NOFOLLOW
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | nofollow)
    st = os.fstat(fd)  # the name may have been swapped since the look: what was opened counts
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise NotRegularFile(path, kind_of(st.st_mode))
    return os.fdopen(fd, "rb")


def read_json(path, default=None, *, rebuild=None):
    """A JSON file -> its value; default (when given) if the file does not exist. A file that does
    not parse is a UserError naming it and rebuild, the command that makes it again."""
    if default is not None and not os.path.exists(path):
        return default
    try:
        with open_regular(path) as f:
            return json.loads(f.read().decode("utf-8"))
    except (ValueError, RecursionError) as e:  # bad UTF-8, bad JSON, "[[[[..." nested too deep
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


MAX_LINE_BYTES = 64 << 20  # a longer line of a JSON-lines file is unreadable: memory stays bounded


def read_jsonl(path, *, rebuild=None):
    """A JSON-lines file (a regular file only: open_regular) -> its rows. With rebuild (the command
    that remakes the file), a line that does not parse is a UserError naming the file and the line;
    without it such lines are skipped, with a count printed. A line over MAX_LINE_BYTES does not
    parse."""
    rows, bad = [], 0
    with open_regular(path) as f:
        for number, raw in enumerate(bounded_lines(f), 1):
            if raw is not None and not raw.strip():
                continue
            try:
                if raw is None:
                    raise ValueError(f"a line over {MAX_LINE_BYTES >> 20} MiB")
                rows.append(json.loads(raw.decode("utf-8")))
            # UnicodeDecodeError and JSONDecodeError are ValueErrors; "[[[[..." is a RecursionError
            except (ValueError, RecursionError) as e:
                if rebuild:
                    raise corrupt(path, e, rebuild, line=number) from None
                bad += 1
    if bad:
        print(f"warning: {bad} unreadable lines in {path}")
    return rows


def bounded_lines(f):
    """A binary file's lines; a line over MAX_LINE_BYTES comes as None, read past in pieces, so one
    huge line (a sparse file of zeros) never fills memory."""
    while raw := f.readline(MAX_LINE_BYTES + 1):
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):
                raw = f.readline(MAX_LINE_BYTES)
            yield None
        else:
            yield raw


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
        # before the lock ends: whoever locks the old file next sees it gone, takes a new one
        if same_file(path, fd):
            os.unlink(path)
        os.close(fd)
        if made and not os.listdir(folder):
            os.rmdir(folder)  # a run that stopped before writing anything leaves no trace


def same_file(path, fd):
    """Whether the name path (not followed) is the file open as fd."""
    try:
        here = os.lstat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)


def take_lock(folder, path, wait=False):
    """Lock path (made if missing) -> its file descriptor, holding this process's pid and command
    line."""
    while True:
        fd = open_lock(path)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            raise UserError(
                f"{folder} is being written by {lock_holder(path)}; wait for it to finish, or stop "
                "it, then run this again"
            ) from None
        if same_file(path, fd):
            break
        # the holder removed the file between our open and our lock: lock the one there now
        os.close(fd)
    left = os.read(fd, LOCK_BYTES).decode("utf-8", "replace").strip()
    if left and lock_fields(left) is None:  # not a lock's: someone's file under the lock's name
        os.close(fd)
        raise planted_lock(path, "a file that holds no lock (what it holds is not shown)")
    if left:
        print(
            f"note: {folder}: taking over the lock left by {describe_holder(left)}, which ended "
            "without releasing it"
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


LOCK_BYTES = 4096  # what is read of a lock file: its JSON is far shorter


def open_lock(path):
    """The lock file at path -> a descriptor open for reading and writing: made new (O_CREAT and
    O_EXCL) where there is none, else opened without following a link. A symlink, a FIFO, a device,
    a folder or a file with other names (a hard link) there is a UserError, never opened for
    writing: a lock planted in a folder (from an archive) can't reach a file of the user's."""
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK  # non-blocking: a FIFO never waits
    while True:
        try:
            return checked_lock(path, os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o644))
        except FileExistsError:
            pass
        try:
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                raise planted_lock(path, kind_of(st.st_mode))
            return checked_lock(path, os.open(path, flags))
        except FileNotFoundError:
            continue  # its holder removed it meanwhile: make a new one
        except OSError as e:
            if e.errno == errno.ELOOP:  # swapped for a link since the look
                raise planted_lock(path, "a symlink") from None
            raise


def checked_lock(path, fd):
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
        return fd
    os.close(fd)
    raise planted_lock(path, kind_of(st.st_mode) if not stat.S_ISREG(st.st_mode) else "a hard link")


def planted_lock(path, kind):
    return UserError(
        f"{path} is {kind}, not a lock file this program made, so it is neither followed nor "
        "written; remove it (that touches nothing it points to), then run this again"
    )


def lock_holder(path):
    """Who holds the lock at path, in words. A new holder writes its name just after it locks (a
    stale one's name may still be there for that moment), so wait until the file names a process
    that is running."""
    text = ""
    for _ in range(40):
        try:
            with open_regular(path, follow_links=False) as f:
                text = f.read(LOCK_BYTES).decode("utf-8", "replace").strip()
        except (FileNotFoundError, NotRegularFile):
            text = ""
        if running(holder_pid(text)):
            break
        time.sleep(0.05)
    return describe_holder(text) if text else "another process"


def lock_fields(text):
    """A lock file's text -> its (pid, command, since), or None where it is not a lock's JSON."""
    try:
        holder = json.loads(text)
        fields = holder["pid"], holder["command"], holder["since"]
    except (ValueError, RecursionError, KeyError, TypeError):
        return None
    kinds = (int, str, str)
    return fields if all(type(v) is k for v, k in zip(fields, kinds)) and fields[0] > 0 else None


def holder_pid(text):
    fields = lock_fields(text)
    return None if fields is None else fields[0]


def running(pid):
    if pid is None:
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    except OverflowError:
        return False  # a number no pid can be
    return True


def describe_holder(text):
    """A lock's text -> its holder in words, from the fields a lock writes and nothing else: text
    that is not a lock's JSON is not shown (a planted file could hold anything of the user's)."""
    fields = lock_fields(text)
    if fields is None:
        return "another process (its lock file holds no lock's fields, so it is not shown)"
    pid, command, since = fields
    command = " ".join(command.split())  # one line, whatever the command held
    return f"pid {pid} ({command[:300]}, since {' '.join(since.split())[:40]})"


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
