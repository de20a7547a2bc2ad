"""`grmp-iqa serve`: an HTTP scoring service with dynamic batching and a drop-a-photo page (the `[serve]`
extra: FastAPI, uvicorn, python-multipart).

    from grmp_iqa_hf.serve import run_server, create_app
    run_server("path/or/hub-id", port=8000)      # blocks until SIGINT / SIGTERM
    app = create_app(model)                      # an ASGI app around a loaded model (tests, other servers)

Importing this package is cheap; FastAPI and uvicorn are imported with `create_app` / `run_server`.
"""

from __future__ import annotations

import importlib.util

__all__ = ["create_app", "run_server", "ServeSettings", "DynamicBatcher", "missing_dependencies",
           "SERVE_EXTRA_HINT", "DTYPES"]

SERVE_EXTRA_HINT = "pip install 'grmp-iqa-hf[serve]'  (fastapi, uvicorn, python-multipart)"
_REQUIRED = {"fastapi": "fastapi", "uvicorn": "uvicorn", "multipart": "python-multipart"}


def missing_dependencies() -> list[str]:
    """The distributions of the `[serve]` extra that are not installed (empty when the server can run)."""
    return [dist for module, dist in _REQUIRED.items() if importlib.util.find_spec(module) is None]


def __getattr__(name):
    if name in ("create_app", "run_server", "ServeSettings", "DTYPES"):
        missing = missing_dependencies()
        if missing:
            raise ImportError(f"grmp-iqa serve needs {', '.join(missing)}: {SERVE_EXTRA_HINT}")
        from . import app

        return getattr(app, name)
    if name == "DynamicBatcher":
        from .batching import DynamicBatcher

        return DynamicBatcher
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
