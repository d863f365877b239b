"""Render local HTML pages in headless Chromium through the DevTools protocol (tests only).

Collects what a reviewer's browser would complain about or do: console errors and warnings, CSP
violations and failed loads (Log / Runtime / Network events), every request the page made (to
prove it made none over the network), images that did not decode (``naturalWidth == 0``), every
link with the URL the browser resolved it to, the element ids a ``#fragment`` can point at, and each
table's rows as the reader sees them (with the id of the heading above it); saves a full-page PNG
screenshot. :func:`crawl` follows the local links from a start page until every reachable page was
opened. Uses aiohttp's websocket client (installed as a DVC dependency), so no browser-automation
package is needed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urldefrag, urlparse
from urllib.request import url2pathname

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
# Flags that work in a root container without a display (Debian's chromium): no sandbox (root),
# no GPU, nothing fetched in the background, a fresh profile per run.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--remote-debugging-port=0")
LOCAL_SCHEMES = ("file", "data", "about", "blob")  # a request with any other scheme went to the network

# Read in the page after load: what the test checks, as plain JSON.
PAGE_STATE = """JSON.stringify({
  title: document.title,
  h: document.documentElement.scrollHeight,
  imgs: Array.from(document.images).map(i => [i.complete && i.naturalWidth > 0, (i.getAttribute('src') || '').slice(0, 60)]),
  links: Array.from(document.querySelectorAll('a[href]')).map(a => [a.getAttribute('href'), a.href]),
  ids: Array.from(document.querySelectorAll('[id]')).map(e => e.id),
  tables: Array.from(document.querySelectorAll('table')).map(t => {
    const h = document.evaluate('preceding::*[self::h1 or self::h2 or self::h3][1]', t, null,
                                XPathResult.FIRST_ORDERED_NODE_TYPE, null).singleNodeValue;
    return {heading: h ? (h.id || h.textContent.trim()) : '',
            head: Array.from(t.querySelectorAll('thead th')).map(c => c.innerText.trim()),
            rows: Array.from(t.querySelectorAll('tbody tr')).map(r => Array.from(r.cells).map(c => c.innerText.trim()))};
  }),
  charts: Array.from(document.querySelectorAll('script[type="application/json"][data-chart]')).map(s => {
    const t = document.getElementById(s.dataset.chart);
    const svg = t ? t.querySelector('svg') : null;
    const boxes = svg ? Array.from(svg.querySelectorAll('text')).filter(x => x.textContent.trim())
      .map(x => [x.textContent.trim(), x.getBoundingClientRect()]).filter(b => b[1].width > 0) : [];
    const overlaps = [];
    for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
      const a = boxes[i][1], b = boxes[j][1];
      if (a.left < b.right - 1 && b.left < a.right - 1 && a.top < b.bottom - 1 && b.top < a.bottom - 1)
        overlaps.push(boxes[i][0] + ' / ' + boxes[j][0]);
    }
    const right = t ? t.getBoundingClientRect().right : 0;  // text drawn past the chart's box is cut off
    const clipped = boxes.filter(b => b[1].right > right + 1).map(b => b[0]);
    return {id: s.dataset.chart, drawn: !!svg && !t.hasAttribute('data-pending'), texts: boxes.length, overlaps: overlaps,
            clipped: clipped, width: t ? Math.round(t.getBoundingClientRect().width) : 0,
            page_width: document.documentElement.clientWidth};
  }),
})"""
# Elements a page marks data-pending until its scripts finish drawing (the dashboard's charts).
PENDING = "document.querySelectorAll('[data-pending]').length"


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
    requests: list[str] = field(default_factory=list)  # every URL the page asked for (document included)
    images: int = 0
    broken_images: list[str] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)  # (href as written, URL the browser resolved)
    ids: set[str] = field(default_factory=set)
    tables: list[dict] = field(default_factory=list)  # {heading, head: [...], rows: [[cell text, ...], ...]}
    charts: list[dict] = field(default_factory=list)  # {id, drawn, texts, overlaps: ["a / b"], clipped, width, page_width}
    title: str = ""
    height: int = 0

    @property
    def network_requests(self) -> list[str]:
        """Requests that left the machine's files: anything but file:, data:, about:, blob:."""
        return [u for u in self.requests if urlparse(u).scheme not in LOCAL_SCHEMES]

    def table_after(self, heading: str) -> dict | None:
        """The first table under the heading with this id (or text)."""
        return next((t for t in self.tables if t["heading"] == heading), None)


def local_path(url: str) -> Path | None:
    """The file a file:// URL points at (fragment dropped); None for any other URL."""
    u = urlparse(urldefrag(url)[0])
    return Path(url2pathname(u.path)) if u.scheme == "file" else None


async def _open(http, host: str) -> dict:
    import aiohttp

    for attempt in range(5):  # the HTTP endpoint can lag the "listening" line under load
        try:
            async with http.put(f"http://{host}/json/new?about:blank") as resp:
                return json.loads(await resp.text())
        except (OSError, aiohttp.ClientError, json.JSONDecodeError):
            if attempt == 4:
                raise
            await asyncio.sleep(1.0)
    raise AssertionError("unreachable")


async def _check_page(http, host: str, url: str, shot: Path, width: int) -> PageCheck:
    target = await _open(http, host)
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
                elif method == "Network.requestWillBeSent":
                    res.requests.append(params["request"]["url"])
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
        await asyncio.sleep(0.3)  # late console messages and requests
        for _ in range(100):  # charts drawn asynchronously: wait (at most 10 s) until none is pending
            pending = await call("Runtime.evaluate", returnByValue=True, expression=PENDING)
            if not pending["result"].get("value"):
                break
            await asyncio.sleep(0.1)
        info = await call("Runtime.evaluate", returnByValue=True, expression=PAGE_STATE)
        doc = json.loads(info["result"]["value"])
        res.title, res.height = doc["title"], int(doc["h"])
        res.images = len(doc["imgs"])
        res.broken_images = [src for ok, src in doc["imgs"] if not ok]
        res.links = [tuple(x) for x in doc["links"]]
        res.ids = set(doc["ids"])
        res.tables = doc["tables"]
        res.charts = doc["charts"]
        shot_data = await call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                               clip={"x": 0, "y": 0, "width": width, "height": min(res.height, 12000), "scale": 1})
        shot.parent.mkdir(parents=True, exist_ok=True)
        shot.write_bytes(base64.b64decode(shot_data["data"]))
        task.cancel()
    async with http.get(f"http://{host}/json/close/{target['id']}") as resp:
        await resp.read()
    return res


async def _check_pages(ws_root: str, pages: list[tuple[str, Path]], width: int, follow: Path | None) -> list[PageCheck]:
    """Open each page; with ``follow`` (a folder), also every .html file under it that a page links to."""
    import aiohttp

    host = re.match(r"ws://([^/]+)/", ws_root).group(1)
    out: list[PageCheck] = []
    queue = list(pages)
    seen = {url for url, _ in queue}
    async with aiohttp.ClientSession() as http:
        while queue:
            url, shot = queue.pop(0)
            res = await _check_page(http, host, url, shot, width)
            out.append(res)
            if follow is None:
                continue
            for _, resolved in res.links:
                target = local_path(resolved)
                page_url = urldefrag(resolved)[0]
                if (target and target.suffix == ".html" and target.is_file() and follow in target.parents
                        and page_url not in seen):
                    seen.add(page_url)
                    queue.append((page_url, shot.parent / f"{target.name}.png"))
    return out


def _devtools_url(proc: subprocess.Popen, browser: str, timeout: float) -> str:
    """The "DevTools listening on ws://..." address the browser prints on stderr (read in a thread, so a
    browser that hangs without printing it fails after ``timeout`` s instead of blocking the test)."""
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr] and None, daemon=True).start()
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            break
        seen.append(line)
        m = re.search(r"(ws://\S+)", line)
        if m:
            return m.group(1)
        if proc.poll() is not None and lines.empty():
            break
    raise RuntimeError(f"{browser} did not start a DevTools endpoint within {timeout:.0f} s: {''.join(seen[-5:])}")


def _run(browser: str, pages: list[tuple[str, Path]], width: int, timeout: float, follow: Path | None) -> list[PageCheck]:
    with tempfile.TemporaryDirectory(prefix="repshare-chromium-") as profile:
        proc = subprocess.Popen([browser, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            ws_root = _devtools_url(proc, browser, timeout=60)
            return asyncio.run(asyncio.wait_for(_check_pages(ws_root, pages, width, follow), timeout))
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def check_pages(browser: str, pages: list[tuple[Path, Path]], width: int = 1280, timeout: float = 120) -> list[PageCheck]:
    """Open each (html file, screenshot path) in one headless browser; return what it saw."""
    return _run(browser, [(p.resolve().as_uri(), s) for p, s in pages], width, timeout, None)


def crawl(browser: str, start: Path, shots: Path, width: int = 1280, timeout: float = 180) -> list[PageCheck]:
    """Open ``start``, then every .html page in its folder (or below) reachable through links, each once.
    Screenshots go to ``shots/<page>.png``."""
    start = start.resolve()
    return _run(browser, [(start.as_uri(), shots / f"{start.name}.png")], width, timeout, start.parent)
