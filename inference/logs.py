"""JSON-lines logging on stdout, and an optional rotating file, its older files gzipped."""

import gzip
import json
import logging
import logging.handlers
import os
import shutil
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
    if settings.log_compress:
        for handler in handlers[1:]:
            handler.namer, handler.rotator = _gzip_name, _gzip_rotate
    formatter = JsonFormatter()
    root = logging.getLogger()
    root.handlers.clear()
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    for noisy in ("uvicorn.access", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _gzip_name(name: str) -> str:
    return f"{name}.gz"


def _gzip_rotate(source: str, dest: str) -> None:
    """The file just closed gzipped into its older name (logrotate's compress), then removed: a new
    file is opened in its place. Level 1: rotation holds the logging lock, so the server's threads wait."""
    partial = f"{dest}.partial"
    with open(source, "rb") as plain, open(partial, "wb") as raw:
        with gzip.GzipFile(os.path.basename(dest).removesuffix(".gz"), "wb", compresslevel=1, fileobj=raw) as packed:
            shutil.copyfileobj(plain, packed, 1 << 20)
    os.replace(partial, dest)
    os.remove(source)


def event(logger: logging.Logger, msg: str, level: int = logging.INFO, **fields) -> None:
    logger.log(level, msg, extra={"fields": fields})
