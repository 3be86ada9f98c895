"""The console logger of the project's runs: Dagster's console log, one line per event.

Dagster's default console logger prints a failed step's Python stack trace (30 to 300 lines) and
one ERROR line per downstream step that did not run. A trader running ``trading-pipeline daily``
needs the failure's message, once: this logger writes each event on one line and, below DEBUG
(``--verbose`` or ``TRADING_PIPELINE_LOG_LEVEL=DEBUG``), leaves out the stack trace and the
"Dependencies for step ... Not executing" lines. Nothing is lost: the run's event log in the
Dagster instance (and the UI) keeps every event with its stack trace, and at DEBUG this logger
prints them all.
"""

from __future__ import annotations

import logging
import sys

import dagster as dg

#: Where Dagster's message of a failed step starts its stack trace.
STACK_TRACE_MARK = "\n\nStack Trace:"
#: The class name Dagster puts before a ``dg.Failure``'s message.
FAILURE_CLASS = "dagster._core.definitions.events.Failure: "
#: The event of a failed run, whose message repeats its failed step's error.
RUN_FAILURE = " - RUN_FAILURE - "
#: Messages of steps skipped because an upstream step failed or was blocked.
SKIPPED_STEP_PREFIX = "Dependencies for step "


class OneLineFormatter(logging.Formatter):
    """``time - dagster - LEVEL - message``: the message cut before its stack trace, its lines joined."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        head = text.split(STACK_TRACE_MARK, 1)[0].replace(FAILURE_CLASS, "")
        if RUN_FAILURE in head:  # the step's error was already printed by its STEP_FAILURE line
            head = head.split("\n", 1)[0]
        return " ".join(part.strip() for part in head.splitlines() if part.strip())


class _SkippedSteps(logging.Filter):
    """Drops the one-line-per-step "Dependencies for step ... Not executing" notices."""

    def filter(self, record: logging.LogRecord) -> bool:
        return SKIPPED_STEP_PREFIX not in record.getMessage()


@dg.logger(
    {
        "log_level": dg.Field(str, is_required=False, default_value="INFO", description="The logger's threshold."),
        "name": dg.Field(str, is_required=False, default_value="dagster", description="The logger's name."),
    },
    description="Dagster's console log, one line per event; stack traces only at DEBUG.",
)
def console_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    """A ``logging.Logger`` writing to stderr: one line per event at INFO and above; at DEBUG every
    event in full (stack traces included). Config: ``log_level`` (default INFO) and ``name``."""
    level = logging.getLevelName(str(init_context.logger_config["log_level"]).upper())
    level = level if isinstance(level, int) else logging.INFO
    log = logging.getLogger(f"trading_pipeline.console.{init_context.logger_config['name']}")
    log.setLevel(level)
    log.propagate = False
    log.handlers.clear()  # one handler per run, however many runs a process makes
    handler = logging.StreamHandler(sys.stderr)
    if level > logging.DEBUG:
        handler.setFormatter(OneLineFormatter("%(asctime)s - dagster - %(levelname)s - %(message)s"))
        handler.addFilter(_SkippedSteps())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s - dagster - %(levelname)s - %(message)s"))
    log.addHandler(handler)
    return log
