"""Where a model's weights come from (``model.<name>.weights``) and fetching published weights safely.

``weights`` is one of:
- ``random``: a fresh initialisation (timing, smoke runs, or to train later); nothing is loaded;
- ``pretrained``: the published timm / effdet weights (network, or their local cache);
- ``checkpoint``: the local file at ``checkpoint_path`` (safetensors or torch weights);
- ``trained``: what this pipeline's ``train_<name>`` stage wrote to ``results/models/<name>/``.
Unset (null), it follows the older keys: ``checkpoint_path`` set -> checkpoint, else ``pretrained: true``
-> pretrained, else trained. ``checkpoint_path`` also wins over ``weights: pretrained`` (as it always
won over ``pretrained: true``); it contradicts ``random`` / ``trained``, which is an error.

Published weights without network: the hubs retry for about a minute before failing (measured here:
50 s for timm on a machine without DNS), and effdet dies with a raw ``URLError``. ``fetch_guard``
fails in about a second instead, with one line naming ``checkpoint_path``: if the weights are not in
the local cache it fails at once when ``HF_HUB_OFFLINE`` is set or the host does not answer within a
few seconds (skipped behind a proxy), and any error while fetching becomes that same one line.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

WEIGHT_SOURCES = ("random", "pretrained", "checkpoint", "trained")
PROBE_TIMEOUT_S = 3.0
FETCH_TIMEOUT_S = 20.0
PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def resolve_weights(weights: str | None, pretrained: bool = False, checkpoint_path: str | None = None,
                    key: str = "model") -> str:
    """The effective weight source (one of WEIGHT_SOURCES); ``key`` names the config node in errors."""
    if weights is None:
        return "checkpoint" if checkpoint_path else "pretrained" if pretrained else "trained"
    if weights not in WEIGHT_SOURCES:
        raise ValueError(f"{key}.weights={weights!r} must be one of {', '.join(WEIGHT_SOURCES)} (or null)")
    if weights == "checkpoint" and not checkpoint_path:
        raise ValueError(f"{key}.weights=checkpoint needs {key}.checkpoint_path (a local weight file)")
    if checkpoint_path and weights in ("random", "trained"):
        raise ValueError(f"{key}.weights={weights} contradicts {key}.checkpoint_path={checkpoint_path!r}: "
                         "drop one of them")
    return "checkpoint" if checkpoint_path else weights


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def hub_offline() -> bool:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE set (in the environment or huggingface_hub's constant)."""
    if any(_truthy(os.environ.get(v)) for v in OFFLINE_VARS):
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:
        return False


def reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Can a TCP connection to ``url``'s host be opened quickly? Behind a proxy we cannot tell: assume yes."""
    if any(os.environ.get(v) for v in PROXY_VARS):
        return True
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname, parsed.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def torch_hub_cached(url: str | None) -> bool:
    import torch

    return bool(url) and (Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)).is_file()


def timm_weights(arch: str) -> tuple[str, bool]:
    """(where timm fetches ``arch``'s published weights from, whether they are already cached locally)."""
    import timm

    cfg = timm.models.get_pretrained_cfg(arch)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise ValueError(f"timm publishes no weights for {arch!r}: set weights=random or checkpoint_path")
    if torch_hub_cached(cfg.url):
        return cfg.url, True
    if cfg.hf_hub_id:
        from huggingface_hub import constants, try_to_load_from_cache

        repo = cfg.hf_hub_id.split("@")[0]
        names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        cached = any(isinstance(try_to_load_from_cache(repo, n), str) for n in names)
        return constants.ENDPOINT, cached
    return cfg.url, False


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200]}" if text else type(err).__name__


@contextmanager
def fetch_guard(key: str, what: str, url: str, cached: bool) -> Iterator[None]:
    """Run a published-weights fetch of ``what`` (from ``url``) so that no network means one fast error."""
    hint = (f"download them on a machine with network and set {key}.checkpoint_path to the local file "
            f"(or {key}.weights=random for an untrained model)")
    if not cached:
        if hub_offline():
            raise RuntimeError(f"could not fetch the published weights of {what}: not in the local cache and "
                               f"HF_HUB_OFFLINE is set; {hint}")
        if not reachable(url):
            raise RuntimeError(f"could not fetch the published weights of {what}: {urlparse(url).hostname} is "
                               f"unreachable (no network?); {hint}")
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(FETCH_TIMEOUT_S)  # urllib downloads (effdet, torch.hub) otherwise wait forever
    hub_constants, old_offline = None, None
    if cached:
        try:  # cached: read it without asking the hub first (which retries for a minute without network)
            from huggingface_hub import constants as hub_constants

            old_offline, hub_constants.HF_HUB_OFFLINE = hub_constants.HF_HUB_OFFLINE, True
        except ImportError:
            pass
    try:
        yield
    except Exception as err:  # noqa: BLE001 - every failure (URLError, hub errors, httpx, ...) becomes one line
        # The original type and message stay in the line, so a non-network cause is still visible.
        raise RuntimeError(f"could not fetch the published weights of {what} ({_first_line(err)}); {hint}") from None
    finally:
        socket.setdefaulttimeout(old_timeout)
        if hub_constants is not None:
            hub_constants.HF_HUB_OFFLINE = old_offline
