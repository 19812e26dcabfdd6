"""Logs as JSON, one object per line on stdout: the service's and uvicorn's alike."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS, LogData
from pythonjsonlogger.json import JsonFormatter

__all__ = ["OneEncoderJsonFormatter", "log_config"]

# RFC 3339 in UTC with milliseconds, e.g. 2026-11-25T22:17:03.042Z: logging.Formatter's own
# time format (no datefmt), with its millisecond suffix ending in Z and UTC as the clock.
_TIME_FORMAT = {
    "converter": time.gmtime,
    "default_time_format": "%Y-%m-%dT%H:%M:%S",
    "default_msec_format": "%s.%03dZ",
}
# uvicorn adds an ANSI-coloured copy of some messages as `color_message`; drop it.
_SKIPPED = ["color_message"]


class OneEncoderJsonFormatter(JsonFormatter):
    """python-json-logger's formatter, serialising with one encoder built once.

    `JsonFormatter` calls ``json.dumps(..., cls=..., default=...)`` for every line, which
    builds a new encoder each time; the lines are the same, character for character.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # As json.dumps builds it from the same arguments (cls=None is its JSONEncoder).
        self._encoder = (self.json_encoder or json.JSONEncoder)(
            default=self.json_default,
            indent=self.json_indent,
            ensure_ascii=self.json_ensure_ascii,
        )
        self._second = -1
        self._second_text = ""

    def format(self, record: logging.LogRecord) -> str:
        # JsonFormatter.format and add_fields, for the usual record: a message that is not
        # a dict, no exception or stack, and none of the formatter's extra fields set.
        if (
            isinstance(record.msg, dict)
            or record.exc_info
            or record.exc_text
            or record.stack_info
            or self.defaults
            or self.static_fields
            or self.timestamp
            or self.rename_fields_keep_missing
        ):
            return super().format(record)
        record.message = record.getMessage()
        if "asctime" in self._required_fields:
            record.asctime = self.formatTime(record, self.datefmt)
        attributes = record.__dict__
        rename, skip = self.rename_fields, self._skip_fields
        log_data = {rename.get(name, name): attributes.get(name) for name in self._required_fields}
        # merge_record_extra's rule: every attribute but the skipped and the private ones.
        log_data.update(
            (rename.get(key, key), value)
            for key, value in attributes.items()
            if key not in skip and not (isinstance(key, str) and key.startswith("_"))
        )
        return self.serialize_log_record(self.process_log_record(log_data))

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        # logging.Formatter's, with the text of the whole seconds kept until they change.
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime(self.default_time_format, self.converter(second))
        if self.default_msec_format is None:
            return self._second_text
        return self.default_msec_format % (self._second_text, record.msecs)

    def jsonify_log_record(self, log_data: LogData) -> str:
        if self.json_serializer is not json.dumps:  # a serializer of the caller's own
            return super().jsonify_log_record(log_data)
        return str(self._encoder.encode(log_data))


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
                "()": f"{__name__}.OneEncoderJsonFormatter",
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
