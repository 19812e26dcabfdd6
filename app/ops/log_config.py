"""Logs as JSON, one object per line on stdout: the service's and uvicorn's alike."""

from __future__ import annotations

import time
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS

__all__ = ["log_config"]

# RFC 3339 in UTC with milliseconds, e.g. 2026-11-25T22:17:03.042Z: logging.Formatter's own
# time format (no datefmt), with its millisecond suffix ending in Z and UTC as the clock.
_TIME_FORMAT = {
    "converter": time.gmtime,
    "default_time_format": "%Y-%m-%dT%H:%M:%S",
    "default_msec_format": "%s.%03dZ",
}
# uvicorn adds an ANSI-coloured copy of some messages as `color_message`; drop it.
_SKIPPED = ["color_message"]


def log_config(level: str) -> dict[str, Any]:
    """A `logging.config.dictConfig` for uvicorn's `log_config`, at `level` (e.g. "info").

    Each line holds time, level, logger, message and the record's extra fields.
    """
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {
                "()": "pythonjsonlogger.json.JsonFormatter",
                "fmt": "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s",
                "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
                "reserved_attrs": [*RESERVED_ATTRS, *_SKIPPED],
                # dictConfig sets these attributes on the formatter it builds.
                ".": dict(_TIME_FORMAT),
            }
        },
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stdout",
            }
        },
        "loggers": {
            "": {"handlers": ["stdout"], "level": level},
            # uvicorn's loggers log through the root handler, in the same format.
            "uvicorn": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.access": {"handlers": [], "level": level, "propagate": True},
            "app": {"handlers": [], "level": level, "propagate": True},
        },
    }
