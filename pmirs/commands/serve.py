"""``pmirs serve``: run the retriever service (the untrusted side) with uvicorn."""

from __future__ import annotations

import argparse
import json
import logging
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``serve``; unset options fall back to ``PMIRS_RETRIEVER_*`` variables, then defaults."""
    p = subparsers.add_parser("serve", help="run the retriever (stores only obfuscated, encrypted data)")
    p.add_argument("--host", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8400)")
    p.add_argument("--data-dir", help="identity, user registry, collection registry, embedded Chroma")
    p.add_argument("--chroma-host", help="use a Chroma server at this host instead of the embedded one")
    p.add_argument("--chroma-port", type=int, help="port of that Chroma server (default 8000)")
    p.add_argument("--allow-plain", action="store_true", default=None,
                   help="also serve /v1/plain (no privacy; for the latency benchmark only)")
    p.add_argument("--log-level", help="log level of the JSON request log (default INFO)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the settings (options override the environment) and serve until interrupted."""
    import uvicorn

    from retriever.guards import configure_logging
    from retriever.main import create_app
    from retriever.settings import Settings

    overrides = {key: getattr(args, key) for key in
                 ("host", "port", "data_dir", "chroma_host", "chroma_port", "allow_plain", "log_level")
                 if getattr(args, key, None) is not None}
    settings = Settings(**overrides)
    configure_logging(settings.log_level)
    app = create_app(settings)
    identity = app.state.pmirs.identity
    logging.getLogger("pmirs.retriever").info(json.dumps({
        "event": "start", "host": settings.host, "port": settings.port, "fingerprint": identity.fingerprint,
        "chroma": "http" if settings.chroma_host else "embedded", "plain_routes": settings.allow_plain,
    }))
    print(f"retriever fingerprint: {identity.fingerprint}", file=sys.stderr, flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, access_log=False, log_level="warning",
                timeout_graceful_shutdown=5)
    return 0
