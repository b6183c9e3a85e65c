"""Prefect settings that never open an outside connection (docs/design.md, "Prefect integration").

``configure_prefect()`` sets the offline defaults as environment variables *before* Prefect is
imported by the caller's flows; values the user already set win. ``PREFECT_HOME`` defaults to
``.prefect/`` in the working folder, so the demo's runs and the server started by ``vgg server``
share one database and the demo's runs are visible in the UI afterwards.
"""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

__all__ = ["OFFLINE_ENV", "configure_prefect", "api_url", "server_healthy", "DEFAULT_HOST", "DEFAULT_PORT"]

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 4200

OFFLINE_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # else the server sends telemetry and logs errors
    "DO_NOT_TRACK": "1",  # client analytics
    "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
    "PREFECT_SERVER_API_HOST": DEFAULT_HOST,
    "PREFECT_SERVER_API_PORT": str(DEFAULT_PORT),
    "PREFECT_LOGGING_LEVEL": "INFO",
    # a temporary (ephemeral) server on a busy two-core machine can take longer than the 20 s default
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
}


def configure_prefect(home: str | os.PathLike[str] | None = None, *, use_server: bool | None = None) -> dict[str, str]:
    """Set offline Prefect settings in ``os.environ`` (existing values win) and return them.

    Args:
        home: PREFECT_HOME (default: ``$PREFECT_HOME`` or ``./.prefect``).
        use_server: point PREFECT_API_URL at the local server (True), leave it unset so runs use
            a temporary in-process server on the same database (False), or decide by whether a
            server answers (None).
    """
    env = dict(OFFLINE_ENV)
    env["PREFECT_HOME"] = str(Path(home or os.environ.get("PREFECT_HOME") or Path.cwd() / ".prefect").resolve())
    for k, v in env.items():
        os.environ.setdefault(k, v)
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    url = f"http://{os.environ['PREFECT_SERVER_API_HOST']}:{os.environ['PREFECT_SERVER_API_PORT']}/api"
    if use_server is None:
        use_server = "PREFECT_API_URL" in os.environ or server_healthy(url)
    if use_server:
        os.environ.setdefault("PREFECT_API_URL", url)
    return {k: os.environ[k] for k in (*env, *(["PREFECT_API_URL"] if use_server else []))}


def api_url() -> str:
    """The API address the server started by ``vgg server`` answers on."""
    host = os.environ.get("PREFECT_SERVER_API_HOST", DEFAULT_HOST)
    port = os.environ.get("PREFECT_SERVER_API_PORT", str(DEFAULT_PORT))
    return os.environ.get("PREFECT_API_URL", f"http://{host}:{port}/api")


def server_healthy(url: str | None = None, timeout: float = 1.0) -> bool:
    """True if a Prefect server answers ``/health`` at ``url``."""
    try:
        with urllib.request.urlopen(f"{(url or api_url()).rstrip('/')}/health", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False
