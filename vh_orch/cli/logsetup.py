"""How `vh-orch serve` writes its log on stderr: text for people, or one JSON object a line for
log collectors (`--log-format json`)."""

from __future__ import annotations

import json
import logging
import sys
import threading
from datetime import UTC, datetime
from types import TracebackType

from vh_orch.errors import UserInputError
from vh_orch.timeutil import iso

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def parse_log_format(text: str) -> str:
    value = text.strip().lower()
    if value not in LOG_FORMATS:
        raise UserInputError(f"--log-format {text!r} is not one of {', '.join(LOG_FORMATS)} "
                             "(or set VH_ORCH_LOG_FORMAT)")
    return value


class JsonFormatter(logging.Formatter):
    """`{"time": "...Z", "level": ..., "logger": ..., "message": ..., "exc": traceback}`; a
    message over several lines stays one line of JSON."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": iso(datetime.fromtimestamp(record.created, UTC)),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


def configure_logging(log_format: str, verbose: bool) -> None:
    """The root logger's one handler, on stderr. With json, uncaught exceptions and warnings
    become records too, so that every line on stderr is JSON."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    if log_format != "json":
        return
    logging.captureWarnings(True)
    log = logging.getLogger("vh_orch")

    def uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        log.critical("uncaught exception: %s", exc, exc_info=(kind, exc, tb))

    def uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is not SystemExit:
            log.error("uncaught exception in thread %s: %s", getattr(args.thread, "name", "?"), args.exc_value,
                      exc_info=(args.exc_type, args.exc_value, args.exc_traceback))  # type: ignore[arg-type]

    sys.excepthook = uncaught
    threading.excepthook = uncaught_in_thread
