"""Alerts: failed asset checks (ERROR and WARN) and failed runs go to the log and the ledger's
``alerts`` table, de-duplicated by key (one alert per failed check per run, one per failed run).
New alerts are also delivered to the apprise URLs of ``TRADING_ALERT_URLS`` (Slack, email,
webhooks...; see ``pipeline.adapters.alerts``).

Checks are read from each finished run's event log: run-status sensors keep their own cursor and
work on the default (run-sharded) SQLite instance storage as well as on PostgreSQL.
"""

import dagster as dg

from assets.resources import Settings
from pipeline.adapters.alerts import notify


def _alert(settings, log, kind: str, severity: str, subject: str, message: str, dedupe_key: str) -> bool:
    """``settings``: the Settings resource, or anything with a ``ledger()`` (the command line's)."""
    outcome = notify(settings.ledger(), kind=kind, severity=severity, subject=subject, message=message,
                     dedupe_key=dedupe_key)
    if outcome.added:
        log.warning(f"ALERT [{severity}] {subject}: {message}")
    for failure in outcome.failures:
        log.warning(f"ALERT delivery failed: {failure.error}")
    return outcome.added


def alert_failed_checks(instance: dg.DagsterInstance, run_id: str, settings, log) -> int:
    """Raise one alert per failed asset check evaluation of run ``run_id``; returns how many were new."""
    raised = 0
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = entry.dagster_event.event_specific_data
        if evaluation.passed:
            continue
        subject = f"{evaluation.asset_check_key.asset_key.to_user_string()}:{evaluation.asset_check_key.name}"
        partition = getattr(evaluation, "partition", None)
        raised += _alert(
            settings, log, "asset_check", evaluation.severity.value, subject,
            f"asset check {subject} failed{f' for {partition}' if partition else ''} in run {run_id}",
            dedupe_key=f"check:{subject}:{partition or ''}:{run_id}",
        )
    return raised


@dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, name="asset_check_alerts",
                      default_status=dg.DefaultSensorStatus.RUNNING,
                      description="Alerts (log, alerts table, and Slack/webhook/email when configured) for every failed WARN/ERROR asset check of a successful run.")
def asset_check_alerts(context: dg.RunStatusSensorContext, settings: Settings):
    alert_failed_checks(context.instance, context.dagster_run.run_id, settings, context.log)


@dg.run_failure_sensor(name="run_failure_alerts", default_status=dg.DefaultSensorStatus.RUNNING,
                       description="Alerts (log, alerts table, and Slack/webhook/email when configured) for a failed run and the checks that failed in it.")
def run_failure_alerts(context: dg.RunFailureSensorContext, settings: Settings):
    run = context.dagster_run
    alert_failed_checks(context.instance, run.run_id, settings, context.log)
    message = context.failure_event.message or "run failed"
    _alert(settings, context.log, "run_failure", "ERROR", f"run {run.run_id[:8]} ({run.job_name})", message,
           dedupe_key=f"run:{run.run_id}")


def alert_run_outcome(instance: dg.DagsterInstance, run_id: str, settings, log, failure: str | None) -> int:
    """The alerts of a finished run the daemon did not launch (a command-line daily or backfill): one per
    failed check and, when ``failure`` (the one-line cause) is given, one for the failed run. The keys are
    the sensors', so a run that both see is alerted once. Returns how many alerts were new."""
    raised = alert_failed_checks(instance, run_id, settings, log)
    if failure is not None:
        run = instance.get_run_by_id(run_id)
        job = run.job_name if run is not None else "run"
        raised += _alert(settings, log, "run_failure", "ERROR", f"run {run_id[:8]} ({job})", failure,
                         dedupe_key=f"run:{run_id}")
    return raised
