"""JSON-lines logging on stdout, and an optional rotating file."""

import json
import logging
import logging.handlers
import sys
import time

from inference.settings import Settings


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def setup(settings: Settings) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if settings.log_file:
        if settings.log_rotate_when:
            handlers.append(
                logging.handlers.TimedRotatingFileHandler(
                    settings.log_file, when=settings.log_rotate_when, backupCount=settings.log_backups, encoding="utf-8"
                )
            )
        else:
            handlers.append(
                logging.handlers.RotatingFileHandler(
                    settings.log_file,
                    maxBytes=settings.log_max_bytes,
                    backupCount=settings.log_backups,
                    encoding="utf-8",
                )
            )
    formatter = JsonFormatter()
    root = logging.getLogger()
    root.handlers.clear()
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    for noisy in ("uvicorn.access", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def event(logger: logging.Logger, msg: str, level: int = logging.INFO, **fields) -> None:
    logger.log(level, msg, extra={"fields": fields})
