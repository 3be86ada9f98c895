"""Alerts: failed asset checks and failed runs go to the log and the ledger's ``alerts`` table.

Alerts are de-duplicated by key (one alert per failed check per partition, one per failed run).
"""


import dagster as dg

from assets.resources import Settings


def _record(settings: Settings, log, kind: str, severity: str, subject: str, message: str, dedupe_key: str) -> bool:
    added = settings.ledger().add_alert(kind=kind, severity=severity, subject=subject, message=message, dedupe_key=dedupe_key)
    if added:
        log.warning(f"ALERT [{severity}] {subject}: {message}")
    return added


@dg.sensor(minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Raises an alert (log + alerts table) for every failed asset check, ERROR or WARN.")
def asset_check_alerts(context: dg.SensorEvaluationContext, settings: Settings):
    records = context.instance.get_event_records(
        dg.EventRecordsFilter(
            event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION,
            after_cursor=int(context.cursor) if context.cursor else None,
        ),
        ascending=True,
        limit=500,
    )
    raised = 0
    for record in records:
        evaluation = record.event_log_entry.dagster_event.event_specific_data
        if evaluation.passed:
            continue
        key = evaluation.asset_check_key
        partition = getattr(evaluation, "partition", None) or ""
        subject = f"{key.asset_key.to_user_string()}:{key.name}"
        raised += _record(
            settings, context.log, "asset_check", evaluation.severity.value, subject,
            f"asset check {subject} failed{f' for {partition}' if partition else ''} in run {record.event_log_entry.run_id}",
            dedupe_key=f"check:{subject}:{partition}:{record.event_log_entry.run_id}",
        )
    if records:
        context.update_cursor(str(records[-1].storage_id))
    return dg.SkipReason(f"alerting only: {raised} new alert(s)")


@dg.run_failure_sensor(default_status=dg.DefaultSensorStatus.RUNNING, monitor_all_code_locations=False,
                       description="Raises an alert (log + alerts table) when a run fails.")
def run_failure_alerts(context: dg.RunFailureSensorContext, settings: Settings):
    run = context.dagster_run
    message = context.failure_event.message or "run failed"
    _record(settings, context.log, "run_failure", "ERROR", f"run {run.run_id[:8]} ({run.job_name})", message,
            dedupe_key=f"run:{run.run_id}")
