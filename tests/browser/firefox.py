"""A small WebDriver BiDi client for Debian's headless firefox-esr (no geckodriver, no Playwright build).

Firefox serves WebDriver BiDi itself: `--remote-debugging-port=0` makes it pick a free 127.0.0.1 port and print
"WebDriver BiDi listening on ws://127.0.0.1:<port>" on stderr; commands go to ws://127.0.0.1:<port>/session.
Only the few commands the browser tests need: navigate, reload, evaluate (values come back as Python values),
wait_for, click, screenshot. Uncaught page errors arrive as log.entryAdded events and are kept in `errors`."""
from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import websocket

from testkit.waiting import eventually, poll

FIREFOX = os.environ.get("FIREFOX", "/usr/bin/firefox-esr")
LISTENING = re.compile(r"WebDriver BiDi listening on (ws://\S+)")
# Quiet, offline, no first-run pages. Firefox also applies its own "recommended" automation prefs
# (remote.prefs.recommended) when the remote agent is on.
# Scrolls the element to the middle of the viewport until it stays there for a frame: a scroll Firefox has pending
# (the caret of a field just focused and filled, brought into view) may otherwise undo it before the click.
SCROLL_INTO_VIEW = """(async (selector) => {
  const element = document.querySelector(selector);
  const nextFrame = () => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
  const inView = () => {
    const rect = element.getBoundingClientRect();
    return rect.top >= 0 && rect.bottom <= innerHeight && rect.left >= 0 && rect.right <= innerWidth;
  };
  for (let tries = 0; tries < 20; tries++) {
    if (!inView()) element.scrollIntoView({block: 'center'});
    await nextFrame();
    if (inView()) {
      await nextFrame();
      if (inView()) return true;
    }
  }
  return false;
})(%s)"""
USER_JS = {
    "remote.active-protocols": 1,  # WebDriver BiDi only (no CDP)
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage_override.mstone": "ignore",
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.reportingpolicy.firstRun": False,
    "app.update.disabledForTesting": True,
    "services.settings.server": "data:,",
    "app.normandy.enabled": False,
    "messaging-system.rsexperimentloader.enabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
}


class BidiError(RuntimeError):
    pass


class Firefox:
    """One headless Firefox with a fresh profile, one BiDi session and one tab (`context`)."""

    def __init__(self, binary: str = FIREFOX, width: int = 1280, height: int = 900, timeout: float = 30.0):
        self.binary = binary
        self.timeout = timeout
        self.directory = Path(tempfile.mkdtemp(prefix="t2i-firefox-"))
        self.log_path = self.directory / "firefox.log"
        self.errors: list[str] = []  # uncaught JS errors seen by the browser (log.entryAdded, type javascript)
        self.version = ""
        self._ids = itertools.count(1)
        self.process: subprocess.Popen[bytes] | None = None
        self.ws: websocket.WebSocket | None = None
        try:
            self._start()
            self.context = self._start_session(width, height)
        except BaseException:
            self.quit()
            raise

    # ------------------------------------------------------------------ process and session

    def _start(self) -> None:
        profile = self.directory / "profile"
        profile.mkdir()
        (profile / "user.js").write_text(
            "".join(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in USER_JS.items()))
        log = open(self.log_path, "wb")
        env = {**os.environ, "MOZ_HEADLESS": "1", "MOZ_CRASHREPORTER_DISABLE": "1",
               "XDG_CACHE_HOME": str(self.directory / "cache")}  # nothing left in ~/.cache either
        self.process = subprocess.Popen(
            [self.binary, "--headless", "--no-remote", "--remote-debugging-port=0", "--profile", str(profile),
             "about:blank"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        log.close()
        match = poll(self._listening, self.timeout, interval=0.05)
        if not match:
            raise BidiError(f"firefox did not start its WebDriver BiDi server:\n{self.log_tail()}")
        # Firefox refuses websocket handshakes that carry an Origin header it was not told to allow.
        self.ws = websocket.create_connection(match.group(1) + "/session", timeout=self.timeout,
                                              suppress_origin=True)

    def _listening(self) -> re.Match[str] | None:
        """Where Firefox's BiDi server listens, once it says so."""
        assert self.process is not None
        if self.process.poll() is not None:
            raise BidiError(f"firefox exited before it started its WebDriver BiDi server:\n{self.log_tail()}")
        return LISTENING.search(self.log_path.read_text(errors="replace"))

    def _start_session(self, width: int, height: int) -> str:
        caps = self.command("session.new", {"capabilities": {"alwaysMatch": {"acceptInsecureCerts": True}}})
        self.version = f'{caps["capabilities"]["browserName"]} {caps["capabilities"]["browserVersion"]}'
        self.command("session.subscribe", {"events": ["log.entryAdded"]})
        contexts = self.command("browsingContext.getTree", {"maxDepth": 0})["contexts"]
        context = contexts[0]["context"] if contexts else self.command(
            "browsingContext.create", {"type": "tab"})["context"]
        self.command("browsingContext.setViewport",
                     {"context": context, "viewport": {"width": width, "height": height}})
        return context

    def command(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Sends one command and returns its result; events that arrive meanwhile are handled on the way."""
        assert self.ws is not None, "not connected"
        command_id = next(self._ids)
        self.ws.send(json.dumps({"id": command_id, "method": method, "params": params or {}}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("type") == "event":
                self._event(message)
            elif message.get("id") == command_id:
                if message.get("type") == "error":
                    raise BidiError(f'{method}: {message.get("error")}: {message.get("message")}')
                result: dict[str, Any] = message["result"]
                return result

    def _event(self, message: dict[str, Any]) -> None:
        entry = message.get("params", {})
        if message.get("method") == "log.entryAdded" and entry.get("type") == "javascript":
            frames = (entry.get("stackTrace") or {}).get("callFrames") or [{}]
            where = f'{frames[0].get("url", "?")}:{frames[0].get("lineNumber", "?")}' if frames[0] else "?"
            self.errors.append(f'{entry.get("text")} (at {where})')

    def quit(self) -> None:
        """Closes the connection, kills Firefox (its whole process group) and removes the profile."""
        if self.ws is not None:
            try:
                self.ws.close(timeout=1)
            except Exception:
                pass
            self.ws = None
        if self.process is not None:
            if self.process.poll() is None:
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.process.wait(10)
            self.process = None
        shutil.rmtree(self.directory, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # ------------------------------------------------------------------ page

    def navigate(self, url: str) -> None:
        self.command("browsingContext.navigate", {"context": self.context, "url": url, "wait": "complete"})
        self.wait_for_load()

    def reload(self) -> None:
        self.command("browsingContext.reload", {"context": self.context, "wait": "complete"})
        self.wait_for_load()

    def wait_for_load(self) -> None:
        # Firefox ESR sometimes answers a reload's `wait: complete` while the new document is still
        # "interactive" (seen in the full run); the load event is what callers count on.
        self.wait_for("document.readyState === 'complete'", timeout=15)

    @property
    def url(self) -> str:
        return str(self.evaluate("location.href"))

    def evaluate(self, expression: str) -> Any:
        """Evaluates JS in the page (promises awaited) and returns its value: primitives, arrays and plain
        objects come back as Python values (nodes and other objects as their BiDi remote value)."""
        answer = self.command("script.evaluate", {
            "expression": expression, "target": {"context": self.context}, "awaitPromise": True,
            "resultOwnership": "none"})
        if answer["type"] == "exception":
            details = answer["exceptionDetails"]
            raise BidiError(f'{details.get("text")}\n  in: {expression}')
        return _value(answer["result"])

    def wait_for(self, condition: str, timeout: float = 15.0, interval: float = 0.05) -> Any:
        """Evaluates `condition` until it is truthy and returns that value."""
        return eventually(lambda: self.evaluate(condition), timeout,
                          lambda: f"after {timeout} s still falsy: {condition}", interval)

    def click(self, selector: str) -> None:
        """A real mouse click (move, press, release) at the middle of the element."""
        found = self.command("script.evaluate", {
            "expression": f"document.querySelector({json.dumps(selector)})",
            "target": {"context": self.context}, "awaitPromise": False})["result"]
        if found.get("type") != "node":
            raise BidiError(f"no element matches {selector}")
        if not self.evaluate(SCROLL_INTO_VIEW % json.dumps(selector)):
            raise BidiError(f"{selector} does not stay in view")
        origin = {"type": "element", "element": {"sharedId": found["sharedId"]}}
        self.command("input.performActions", {"context": self.context, "actions": [{
            "type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"},
            "actions": [{"type": "pointerMove", "x": 0, "y": 0, "origin": origin},
                        {"type": "pointerDown", "button": 0}, {"type": "pointerUp", "button": 0}]}]})
        self.command("input.releaseActions", {"context": self.context})

    def screenshot(self, path: Path) -> Path:
        """The whole document as a PNG."""
        data = self.command("browsingContext.captureScreenshot",
                            {"context": self.context, "origin": "document"})["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path


def _value(remote: dict[str, Any]) -> Any:
    """A BiDi serialized value as a Python value."""
    kind = remote["type"]
    if kind in ("undefined", "null"):
        return None
    if kind in ("string", "boolean"):
        return remote["value"]
    if kind == "number":
        value = remote["value"]
        return float(value) if isinstance(value, str) else value  # "NaN", "Infinity", "-0"
    if kind == "bigint":
        return int(remote["value"])
    if kind == "array" and "value" in remote:
        return [_value(item) for item in remote["value"]]
    if kind == "object" and "value" in remote:
        return {key if isinstance(key, str) else str(_value(key)): _value(item) for key, item in remote["value"]}
    return remote
