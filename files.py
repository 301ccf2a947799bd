"""
Files and user errors, at the bottom of every import: the one class for a mistake a person can fix,
the one atomic writer, and JSON readers. Every script writes through write_atomic, so a crash
or a full disk leaves the previous file whole.
"""

import json
import os


class UserError(Exception):
    """A mistake the user can fix (a bad flag, a missing file, an unknown token). Every script prints it as
    one line, with what to do, and no traceback. The one such class in the project."""


def write_atomic(path, data):
    """Write data (bytes, str, or a function that writes into a binary file object) to path through a
    temporary name and os.replace: a crash leaves the previous file whole, never a half-written one."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_json(path, default=None):
    """A JSON file -> its value; default (when given) if the file does not exist."""
    if default is not None and not os.path.exists(path):
        return default
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_jsonl(path):
    """A JSON-lines file -> the rows that parse; a count of the lines that don't is printed."""
    rows, bad = [], 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                bad += 1
    if bad:
        print(f"warning: {bad} unreadable lines in {path}")
    return rows
