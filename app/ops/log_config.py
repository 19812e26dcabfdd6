"""Logs as JSON, one object per line on stdout: the service's and uvicorn's alike.

The lines are python-json-logger's, serialised by orjson (compact, and several times
cheaper per line than the standard library's encoder, which counts at one line per update),
in ASCII: any other character is written as its JSON escape, as the standard library writes
it by default, so that no line holds a character that some readers take for a line break
(U+2028, U+0085) or that a stream in another encoding cannot write.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import os
import re
import time
from collections.abc import Mapping
from typing import Any

import orjson
from pythonjsonlogger.core import RESERVED_ATTRS, LogData
from pythonjsonlogger.orjson import OrjsonFormatter

__all__ = ["JsonLineFormatter", "log_config", "log_fields"]

# RFC 3339 in UTC with milliseconds, e.g. 2026-11-25T22:17:03.042Z: logging.Formatter's own
# time format (no datefmt), with its millisecond suffix ending in Z and UTC as the clock.
_TIME_FORMAT = {
    "converter": time.gmtime,
    "default_time_format": "%Y-%m-%dT%H:%M:%S",
    "default_msec_format": "%s.%03dZ",
}
# uvicorn adds an ANSI-coloured copy of some messages as `color_message`; drop it.
_SKIPPED = ["color_message"]
# The record attributes `JsonLineFormatter.format_fields` knows without a record.
_FIELDS_WITHOUT_RECORD = frozenset({"asctime", "levelname", "name", "process", "message"})


# Sets of field names whose kind `JsonLineFormatter` keeps; others are looked at each time.
_KNOWN_FIELD_SETS = 64


class _Fields(enum.Enum):
    """What `JsonLineFormatter.format_fields` does with a set of field names."""

    AS_THEY_ARE = enum.auto()
    RENAMED = enum.auto()  # some are renamed by the formatter's rename_fields
    NEEDS_RECORD = enum.auto()  # some would be skipped, or are private: `format` decides


# In a JSON text, only a string can hold these: each is replaced by its escape there.
_NOT_ASCII = re.compile(r"[^\x00-\x7f]")


class JsonLineFormatter(OrjsonFormatter):
    """python-json-logger's orjson formatter, in ASCII, with a usual record's line built
    directly.

    Its lines are `OrjsonFormatter`'s, character for character, once each character beyond
    ASCII is escaped (``\\u00e9``; a surrogate pair beyond U+FFFF), and a line orjson
    cannot write (an integer beyond 64 bits) is the standard library's, compact;
    `format_fields` writes the same line from a mapping of fields, without a record.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._second = -1
        self._second_text = ""
        # The kind of each set of field names met so far: a caller logs the same few.
        self._field_kinds: dict[tuple[str, ...], _Fields] = {}

    def format(self, record: logging.LogRecord) -> str:
        # BaseJsonFormatter.format and add_fields, for the usual record: a message that is not
        # a dict, no exception or stack, and none of the formatter's extra fields set.
        if (
            isinstance(record.msg, dict)
            or record.exc_info
            or record.exc_text
            or record.stack_info
            or self._adds_fields()
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

    def format_fields(
        self, level: int, name: str, message: str, fields: Mapping[str, Any]
    ) -> str | None:
        """The line `format` gives a record logged now as ``logger.log(level, message,
        extra=fields)`` by the logger `name`, built without the record.

        None when this formatter needs the record itself: its format names an attribute
        other than the time, level, logger name, process and message, it adds fields of
        its own, or `fields` holds a name that `format` would skip or that a record
        reserves.
        """
        if (
            not _FIELDS_WITHOUT_RECORD.issuperset(self._required_fields)
            or self.datefmt is not None
            or self._adds_fields()
        ):
            return None
        keys = tuple(fields)
        kind = self._field_kinds.get(keys)
        if kind is None:
            kind = self._kind_of(keys)
            if len(self._field_kinds) < _KNOWN_FIELD_SETS:
                self._field_kinds[keys] = kind
        if kind is _Fields.NEEDS_RECORD:
            return None
        now = time.time_ns()
        # As a LogRecord has them: its process when logging records processes, and the
        # milliseconds truncated.
        attributes = {
            "asctime": self._time_text(now // 1_000_000_000, (now // 1_000_000) % 1000),
            "levelname": logging.getLevelName(level),
            "name": name,
            "process": os.getpid() if logging.logProcesses else None,
            "message": message,
        }
        rename = self.rename_fields
        log_data = {rename.get(key, key): attributes[key] for key in self._required_fields}
        if kind is _Fields.AS_THEY_ARE:
            log_data.update(fields)
        else:
            log_data.update((rename.get(key, key), value) for key, value in fields.items())
        return self.serialize_log_record(self.process_log_record(log_data))

    def _kind_of(self, keys: tuple[str, ...]) -> _Fields:
        """How `format_fields` writes fields of these names (see `_Fields`)."""
        if any(key in self._skip_fields or key.startswith("_") for key in keys):
            return _Fields.NEEDS_RECORD
        if any(key in self.rename_fields for key in keys):
            return _Fields.RENAMED
        return _Fields.AS_THEY_ARE

    def _adds_fields(self) -> bool:
        """Whether the formatter's own options add fields to every line."""
        return bool(
            self.defaults or self.static_fields or self.timestamp or self.rename_fields_keep_missing
        )

    def jsonify_log_record(self, log_data: LogData) -> str:
        try:
            line = super().jsonify_log_record(log_data)
        except orjson.JSONEncodeError:
            # What orjson cannot write (an integer beyond 64 bits), the standard library can.
            return json.dumps(log_data, default=self.json_default, separators=(",", ":"))
        return line if line.isascii() else _NOT_ASCII.sub(_escaped, line)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        # logging.Formatter's, with the text of the whole seconds kept until they change.
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        return self._time_text(int(record.created), record.msecs)

    def _time_text(self, second: int, msecs: float) -> str:
        if second != self._second:
            self._second = second
            self._second_text = time.strftime(self.default_time_format, self.converter(second))
        if self.default_msec_format is None:
            return self._second_text
        return self.default_msec_format % (self._second_text, msecs)


def _escaped(match: re.Match[str]) -> str:
    """A character's JSON escape, as `json.dumps` writes it with ``ensure_ascii``."""
    code = ord(match.group())
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def log_fields(logger: logging.Logger, level: int, message: str, fields: Mapping[str, Any]) -> None:
    """``logger.log(level, message, extra=fields)``: the same line, without a LogRecord when
    only the service's own handler would write it.

    A record, its handling and its formatting cost several times what writing one line of
    fields does, on every request. When the line would reach exactly one handler, a plain
    `logging.StreamHandler` with no filter and a `JsonLineFormatter` (as `log_config`
    sets up), and `logger` has no filter, the formatter writes the line from the fields
    under the handler's lock. Any other configuration (another handler, as pytest's
    `caplog` adds; a filter; logging.disable) gets the record, as `logger.log` makes it.
    """
    if not logger.isEnabledFor(level):
        return
    handler = _only_handler(logger, level)
    formatter = None if handler is None else handler.formatter
    if handler is not None and isinstance(formatter, JsonLineFormatter):
        # StreamHandler.emit, under the lock Handler.handle takes (the formatter's text of
        # the current second is shared with the lines other threads log).
        with handler.lock or _NO_LOCK:
            line = formatter.format_fields(level, logger.name, message, fields)
            if line is not None:
                try:
                    handler.stream.write(line + handler.terminator)
                    handler.flush()
                except RecursionError:
                    raise
                except Exception:
                    record = logger.makeRecord(logger.name, level, "", 0, message, (), None)
                    handler.handleError(record)
                return
    # stacklevel: the record names the caller's file, function and line, not this one.
    logger.log(level, message, extra=fields, stacklevel=2)


def _only_handler(logger: logging.Logger, level: int) -> logging.StreamHandler[Any] | None:
    """The one handler a record of `level` from `logger` would reach, if it is a filterless
    `logging.StreamHandler` and `logger` has no filter; None otherwise.

    Logger.callHandlers' walk: the logger's handlers, then its parents' while they propagate,
    each handler taken when the level reaches its own.
    """
    if logger.filters:
        return None
    found: logging.Handler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if level >= handler.level:
                if found is not None:
                    return None
                found = handler
        current = current.parent if current.propagate else None
    if type(found) is not logging.StreamHandler or found.filters:
        return None  # no handler at all is logging.lastResort's, which logger.log finds
    return found


_NO_LOCK = contextlib.nullcontext()


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
                "()": f"{__name__}.JsonLineFormatter",
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
