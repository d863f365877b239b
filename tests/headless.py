"""Render a local HTML page in headless Chromium through the DevTools protocol (tests only).

Collects what a reviewer's browser would complain about: console errors and warnings, CSP
violations and failed loads (Log / Runtime / Network events), and images that did not decode
(``naturalWidth == 0``); saves a full-page PNG screenshot. Uses aiohttp's websocket client (already
installed as a DVC dependency) so no browser-automation package is needed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_browser() -> str | None:
    env = os.environ.get("REPSHARE_BROWSER")
    if env:
        return env if shutil.which(env) or Path(env).is_file() else None
    return next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)


@dataclass
class PageCheck:
    url: str
    screenshot: Path
    errors: list[str] = field(default_factory=list)  # console errors, CSP violations, failed loads
    images: int = 0
    broken_images: list[str] = field(default_factory=list)
    title: str = ""
    height: int = 0


async def _check_pages(ws_root: str, pages: list[tuple[str, Path]], width: int) -> list[PageCheck]:
    import aiohttp

    host = re.match(r"ws://([^/]+)/", ws_root).group(1)
    out = []
    async with aiohttp.ClientSession() as http:
        for url, shot in pages:
            for attempt in range(5):  # the HTTP endpoint can lag the "listening" line under load
                try:
                    async with http.put(f"http://{host}/json/new?about:blank") as resp:
                        target = json.loads(await resp.text())
                    break
                except (OSError, aiohttp.ClientError, json.JSONDecodeError):
                    if attempt == 4:
                        raise
                    await asyncio.sleep(1.0)
            res = PageCheck(url=url, screenshot=shot)
            async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                ids = iter(range(1, 10_000))
                pending: dict[int, asyncio.Future] = {}
                loaded = asyncio.get_running_loop().create_future()

                async def reader() -> None:
                    async for msg in ws:
                        data = json.loads(msg.data)
                        if "id" in data and data["id"] in pending:
                            pending.pop(data["id"]).set_result(data)
                            continue
                        method, params = data.get("method"), data.get("params", {})
                        if method == "Page.loadEventFired" and not loaded.done():
                            loaded.set_result(True)
                        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning", "assert"):
                            res.errors.append("console: " + " ".join(str(a.get("value", a.get("description", "")))
                                                                      for a in params.get("args", [])))
                        elif method == "Runtime.exceptionThrown":
                            res.errors.append("exception: " + params["exceptionDetails"].get("text", ""))
                        elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
                            res.errors.append(f"log ({params['entry'].get('source')}): {params['entry']['text']}")
                        elif method == "Network.loadingFailed":
                            res.errors.append(f"load failed: {params.get('errorText')} {params.get('blockedReason', '')}")

                task = asyncio.create_task(reader())

                async def call(method: str, **params):
                    k = next(ids)
                    fut = asyncio.get_running_loop().create_future()
                    pending[k] = fut
                    await ws.send_str(json.dumps({"id": k, "method": method, "params": params}))
                    reply = await asyncio.wait_for(fut, 60)
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply.get("result", {})

                for domain in ("Page", "Runtime", "Log", "Network"):
                    await call(f"{domain}.enable")
                await call("Emulation.setDeviceMetricsOverride", width=width, height=900, deviceScaleFactor=1, mobile=False)
                await call("Page.navigate", url=url)
                await asyncio.wait_for(loaded, 60)
                await asyncio.sleep(0.3)  # late console messages
                info = await call("Runtime.evaluate", returnByValue=True, expression=(
                    "JSON.stringify({title: document.title, h: document.documentElement.scrollHeight,"
                    " imgs: Array.from(document.images).map(i => [i.complete && i.naturalWidth > 0,"
                    " (i.getAttribute('src') || '').slice(0, 60)])})"))
                doc = json.loads(info["result"]["value"])
                res.title, res.height = doc["title"], int(doc["h"])
                res.images = len(doc["imgs"])
                res.broken_images = [src for ok, src in doc["imgs"] if not ok]
                shot_data = await call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                                       clip={"x": 0, "y": 0, "width": width, "height": min(res.height, 12000), "scale": 1})
                shot.parent.mkdir(parents=True, exist_ok=True)
                shot.write_bytes(base64.b64decode(shot_data["data"]))
                task.cancel()
            async with http.get(f"http://{host}/json/close/{target['id']}") as resp:
                await resp.read()
            out.append(res)
    return out


def check_pages(browser: str, pages: list[tuple[Path, Path]], width: int = 1280, timeout: float = 120) -> list[PageCheck]:
    """Open each (html file, screenshot path) in one headless browser; return what it saw."""
    with tempfile.TemporaryDirectory(prefix="repshare-chromium-") as profile:
        proc = subprocess.Popen(
            [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
             "--disable-background-networking", "--disable-component-update", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            ws_root = None
            for line in proc.stderr:  # "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID"
                m = re.search(r"(ws://\S+)", line)
                if m:
                    ws_root = m.group(1)
                    break
            if ws_root is None:
                raise RuntimeError(f"{browser} did not start a DevTools endpoint")
            return asyncio.run(asyncio.wait_for(
                _check_pages(ws_root, [(p.resolve().as_uri(), s) for p, s in pages], width), timeout))
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
