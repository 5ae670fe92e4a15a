"""Running the service under uvicorn, as ``embedtune serve`` does.

uvicorn handles SIGINT and SIGTERM gracefully: it stops accepting connections, lets the requests
in flight finish (at most ``graceful_s`` seconds), then runs the app's lifespan shutdown, which
drains the batch queue and closes the model and the store. After SIGTERM the process then ends by
that signal, as uvicorn leaves it; after SIGINT (Ctrl-C) :func:`run` returns normally.
"""

from __future__ import annotations

import copy
import logging

from ..errors import EmbedtuneError, require
from .app import create_app
from .config import ServiceConfig
from .keys import check_bind
from .resources import Served

__all__ = ["run"]

log = logging.getLogger("embedtune.service")


def run(
    served: Served,
    config: ServiceConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    log_level: str = "info",
    access_log: bool = True,
    graceful_s: int = 30,
) -> None:
    """Serve until stopped. Refuses a non-loopback ``host`` without keys (``ConfigError``) and
    raises ``EmbedtuneError`` when the model or store cannot be loaded."""
    check_bind(host, config.keys)
    require("uvicorn", "serve", import_now=False)
    import uvicorn

    failures: list[BaseException] = []
    server: uvicorn.Server | None = None

    def stop(exc: BaseException) -> None:
        failures.append(exc)
        if server is not None:
            server.should_exit = True

    app = create_app(served, config, on_load_failure=stop)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level=log_level,
            access_log=access_log,
            log_config=_log_config(),
            timeout_graceful_shutdown=graceful_s,
            lifespan="on",
        )
    )
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn raises the captured Ctrl-C again once it has stopped
        log.info("stopped")
    if failures:
        raise EmbedtuneError(f"cannot serve: {app.state.service.failure}") from failures[0]


def _log_config() -> dict:
    """uvicorn's logging, with embedtune's service logger on the same handler."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["embedtune"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config
