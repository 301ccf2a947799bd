"""The app as a person uses it: start `app.py`, open its page in headless Chromium, type a prompt,
press Generate, and wait for an audio player and a MIDI download link to appear. Chromium is driven
through the DevTools protocol over a pipe (--remote-debugging-pipe: JSON messages ending in a NUL
byte on file descriptors 3 and 4), so it needs Debian's `chromium` package and nothing from pip: no
websocket client, no driver, no browser download. tests/test_app_browser.py runs it; by hand it also
takes the README's screenshot:

python tests/browser_check.py --out_dir out/amt_cpu --screenshot docs/app.png"""

import argparse
import base64
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-pipe",
]
PROMPT = "a gentle waltz in A minor for strings"
# What the page shows once a piece is made: an audio element, and links that download the WAV it
# plays and the MIDI. Each link is fetched, so its first bytes say what the file is. '' while they
# are not all there.
RESULT_JS = """(async () => {
  const audio = document.querySelector('#audio audio');
  const wav = document.querySelector('#audio a[download$=".wav"]');
  const midi = document.querySelector('#midi a[download$=".mid"]');
  if (!audio || !wav || !midi) return '';
  const head = async (url) => String.fromCharCode(
    ...new Uint8Array((await (await fetch(url)).arrayBuffer()).slice(0, 12)));
  return JSON.stringify({audio: audio.outerHTML.slice(0, 200), wav: wav.href,
                         wav_head: await head(wav.href),
                         midi: midi.href, midi_head: await head(midi.href),
                         status: document.querySelector('#status').innerText});
})()"""
STATUS_JS = "(document.querySelector('#status') || {}).innerText || ''"


def chromium_path():
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Chromium:
    """A headless Chromium and one page in it, driven by DevTools protocol messages over a pipe."""

    def __init__(self, executable, profile):
        to_browser, self._commands = os.pipe()  # we write commands, it reads them on its fd 3
        # it writes replies and events on its fd 4, we read them
        self._replies, from_browser = os.pipe()
        # bash puts the two pipe ends on fds 3 and 4, where --remote-debugging-pipe looks for them
        self.proc = subprocess.Popen(
            [
                "bash",
                "-c",
                f'exec "$0" "$@" 3<&{to_browser} 4>&{from_browser}',
                executable,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            pass_fds=(to_browser, from_browser),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser)
        os.close(from_browser)
        self._buffer, self._next_id, self.session = b"", 0, None

    def send(self, method, params=None, *, timeout=30.0, session=True):
        """One command -> its result; events that arrive meanwhile are dropped. A protocol error
        raises."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._next_id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply.get("result", {})
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._replies], [], [], left)[0]:
                raise TimeoutError(f"Chromium did not answer {method} in {timeout:.0f} s")
            chunk = os.read(self._replies, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the pipe (it exited)")
            self._buffer += chunk

    def open(self, url, width=1400, height=1000):
        target = self.send("Target.createTarget", {"url": url}, session=False)["targetId"]
        self.session = self.send(
            "Target.attachToTarget", {"targetId": target, "flatten": True}, session=False
        )["sessionId"]
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    def evaluate(self, expression):
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise RuntimeError(
                f"page script failed: {details.get('exception', {}).get('description', details)}"
            )
        return result["result"].get("value")

    def wait_for(self, expression, timeout):
        """Poll a page expression until it is truthy -> its value; None at the timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.5)
        return None

    def click(self, selector):
        """A real mouse click (pressed, released) at the middle of the element."""
        box = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
            "e.scrollIntoView();"
            " const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; "
            "})()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.send(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": box[0], "y": box[1], "button": "left", "clickCount": 1},
            )

    def type_into(self, selector, text):
        """Focus a field and type text over what it holds as keystrokes would (input events, as a
        person's typing)."""
        field = f"document.querySelector({json.dumps(selector)})"
        self.evaluate(f"{field}.focus(); {field}.select()")
        self.send("Input.insertText", {"text": text})

    def screenshot(self, path):
        height = self.evaluate("document.documentElement.scrollHeight")
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1400, "height": int(height), "deviceScaleFactor": 1, "mobile": False},
        )
        self.evaluate("window.scrollTo(0, 0)")
        time.sleep(0.5)
        data = self.send("Page.captureScreenshot", {"format": "png"}, timeout=60)["data"]
        Path(path).write_bytes(base64.b64decode(data))

    def close(self):
        try:
            self.send("Browser.close", session=False, timeout=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._commands)
        os.close(self._replies)


def start_app(args, env=None, timeout=180):
    """`python app.py ARGS` in the background -> (process, the address it printed)."""
    proc = subprocess.Popen(
        [sys.executable, "app.py", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline, seen = time.monotonic() + timeout, []
    while time.monotonic() < deadline and proc.poll() is None:
        if select.select([proc.stdout], [], [], 1.0)[0]:
            line = proc.stdout.readline()
            seen.append(line)
            found = re.search(r"AMT app: (http://127\.0\.0\.1:\d+/?)", line)
            if found:
                return proc, found.group(1)
    proc.kill()
    raise RuntimeError("app.py printed no address:\n" + "".join(seen) + (proc.stdout.read() or ""))


def check(url, *, prompt=PROMPT, timeout=240, screenshot=None):
    """Open url, type a prompt, press Generate -> what appeared: {audio: the element, wav and midi:
    their download links, wav_head and midi_head: the first 12 bytes of each file, status: the
    status line}. Raises if they did not all appear in time."""
    # a fresh profile: nothing cached from an earlier run
    with tempfile.TemporaryDirectory() as profile:
        browser = Chromium(chromium_path(), profile)
        try:
            browser.open(url)
            box, button = (
                "document.querySelector('#prompt textarea')",
                "document.getElementById('generate')",
            )
            ready = f"!!({box} && {button})"
            if not browser.wait_for(ready, 60):
                raise RuntimeError(f"the page at {url} never showed its prompt box and button")
            # On a loaded machine the page can draw its button before its handlers are bound, so
            # a click may go unheard: as a person would, press again if nothing starts.
            for _ in range(3):
                browser.type_into("#prompt textarea", prompt)
                browser.click("#generate")
                if browser.wait_for(STATUS_JS, 30):
                    break
            found = browser.wait_for(RESULT_JS, timeout)
            if not found:
                raise RuntimeError(
                    "no audio player and MIDI link after Generate; the status line reads: "
                    + repr(browser.evaluate(STATUS_JS))
                )
            if screenshot:
                browser.screenshot(screenshot)
            return json.loads(found)
        finally:
            browser.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser(
        description="Start app.py, press Generate in headless Chromium, check the result."
    )
    p.add_argument("--out_dir", default="out/amt_cpu")
    p.add_argument("--prompt", default=PROMPT)
    p.add_argument("--screenshot", help="write a PNG of the page after the piece is made")
    a = p.parse_args()
    if not chromium_path():
        sys.exit("no chromium: apt-get install -y chromium")
    app, address = start_app(["--out_dir", a.out_dir])
    try:
        print(json.dumps(check(address, prompt=a.prompt, screenshot=a.screenshot)))
    finally:
        app.terminate()
        app.wait(timeout=30)
