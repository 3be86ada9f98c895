"""Alert delivery: send a ledger alert to a person by Slack, a generic webhook and/or email.

Destinations are configured only by environment variables, so that webhook URLs and SMTP
passwords never sit in a configuration file or the repository:

================================  =====================================================
``TRADING_ALERT_SLACK_WEBHOOK``   Slack incoming-webhook URL; receives ``{"text": ...}``
``TRADING_ALERT_WEBHOOK``         any HTTP(S) endpoint; receives the alert's fields as JSON
``TRADING_ALERT_SMTP_HOST``       SMTP server; email is off when unset
``TRADING_ALERT_SMTP_PORT``       default 25
``TRADING_ALERT_SMTP_FROM``       sender address (required with a host)
``TRADING_ALERT_SMTP_TO``         recipients, comma separated (required with a host)
``TRADING_ALERT_SMTP_USER``       optional login (with ``TRADING_ALERT_SMTP_PASSWORD``)
``TRADING_ALERT_SMTP_STARTTLS``   ``true``/``false`` (default false)
================================  =====================================================

Delivery is best effort and isolated: every destination is tried concurrently with a bounded
timeout, a failing one never stops the others, and failures come back as
:class:`DeliveryResult` values instead of exceptions, because an alert path that raises would
hide the very problem it reports. Secrets never appear in results or ``repr``: URLs are shown
as ``scheme://host/…`` and any secret text is scrubbed from error messages.

:func:`notify` is the entry point for the rest of the project: it stores the alert in the
ledger (de-duplicated by key) and delivers it only when the ledger says it is new, so a sensor
re-evaluating the same failed run does not page anyone twice. Standard library only.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import smtplib
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, Callable, Protocol


class AlertLog(Protocol):
    """Where alerts are recorded: the ledger's ``alerts`` table (:class:`pipeline.store.ledger.Ledger`)."""

    def add_alert(self, *, kind: str, severity: str, subject: str | None, message: str,
                  dedupe_key: str | None = None) -> bool:
        """Store the alert; False when one with the same ``dedupe_key`` is already stored."""

ENV_PREFIX = "TRADING_ALERT_"
DEFAULT_TIMEOUT = 5.0
DEFAULT_SMTP_PORT = 25
#: Kind of the ledger row that records a delivery failure (see :func:`notify`).
DELIVERY_FAILURE_KIND = "alert_delivery"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class AlertConfigError(ValueError):
    """A ``TRADING_ALERT_*`` environment variable is missing or malformed."""


def mask_url(url: str) -> str:
    """Show a URL as ``scheme://host[:port]/…``, hiding the path, query and credentials.

    Webhook URLs carry their secret token in the path (Slack) or query, and may carry
    ``user:password@``; only the scheme and host are safe to print.

    Parameters
    ----------
    url : str
        Any URL.

    Returns
    -------
    str
        E.g. ``https://hooks.slack.com/…``; ``<invalid url>`` if it cannot be parsed.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid url>"
    return f"{parts.scheme}://{host}{port}/…"


@dataclass(frozen=True)
class SmtpDestination:
    """An SMTP server and the addresses to mail. ``password`` is hidden from ``repr``."""

    host: str
    port: int
    sender: str
    recipients: tuple[str, ...]
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    starttls: bool = False


@dataclass(frozen=True)
class AlertDestinations:
    """Where alerts go; every field None means log and ledger only (no network attempt).

    Webhook URLs are hidden from ``repr`` because their path is the secret.
    """

    slack_webhook: str | None = field(default=None, repr=False)
    webhook: str | None = field(default=None, repr=False)
    smtp: SmtpDestination | None = None
    timeout: float = DEFAULT_TIMEOUT

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, timeout: float = DEFAULT_TIMEOUT) -> "AlertDestinations":
        """Read destinations from ``TRADING_ALERT_*`` variables (see the module docstring).

        Parameters
        ----------
        env : Mapping[str, str], optional
            The environment; ``os.environ`` when None. Empty values count as unset.
        timeout : float
            Seconds allowed per network operation of each delivery.

        Returns
        -------
        AlertDestinations

        Raises
        ------
        AlertConfigError
            A URL is not http(s), the SMTP port is not an integer, ``STARTTLS`` is not a
            boolean, an SMTP host is given without ``FROM``/``TO``, or a user without a
            password. Messages name the variable but never echo a secret value.
        """
        if env is None:
            env = os.environ

        def get(name: str) -> str | None:
            value = env.get(ENV_PREFIX + name, "").strip()
            return value or None

        slack = _checked_url(get("SLACK_WEBHOOK"), "SLACK_WEBHOOK")
        webhook = _checked_url(get("WEBHOOK"), "WEBHOOK")
        smtp = None
        host = get("SMTP_HOST")
        if host is not None:
            port_text = get("SMTP_PORT") or str(DEFAULT_SMTP_PORT)
            try:
                port = int(port_text)
            except ValueError:
                raise AlertConfigError(
                    f"{ENV_PREFIX}SMTP_PORT={port_text!r} is not an integer port; set e.g. 25, 587 or unset it"
                ) from None
            sender = get("SMTP_FROM")
            recipients = tuple(a.strip() for a in (get("SMTP_TO") or "").split(",") if a.strip())
            if sender is None or not recipients:
                raise AlertConfigError(
                    f"{ENV_PREFIX}SMTP_HOST is set but {ENV_PREFIX}SMTP_FROM and/or {ENV_PREFIX}SMTP_TO "
                    "(comma-separated addresses) are missing; set both or unset SMTP_HOST"
                )
            user, password = get("SMTP_USER"), env.get(ENV_PREFIX + "SMTP_PASSWORD") or None
            if user is not None and password is None:
                raise AlertConfigError(
                    f"{ENV_PREFIX}SMTP_USER is set without {ENV_PREFIX}SMTP_PASSWORD; set both or neither"
                )
            starttls_text = (get("SMTP_STARTTLS") or "").lower()
            if starttls_text not in _TRUE | _FALSE:
                raise AlertConfigError(
                    f"{ENV_PREFIX}SMTP_STARTTLS={starttls_text!r} is not true/false"
                )
            smtp = SmtpDestination(host=host, port=port, sender=sender, recipients=recipients,
                                   user=user, password=password, starttls=starttls_text in _TRUE)
        return cls(slack_webhook=slack, webhook=webhook, smtp=smtp, timeout=timeout)

    @property
    def configured(self) -> bool:
        """True if at least one destination is set."""
        return bool(self.slack_webhook or self.webhook or self.smtp)

    def secrets(self) -> tuple[str, ...]:
        """Strings that must never appear in a message: URLs, their paths and queries, the password."""
        found: list[str] = []
        for url in (self.slack_webhook, self.webhook):
            if url:
                parts = urllib.parse.urlsplit(url)
                found += [url, parts.path, parts.query, parts.password or ""]
        if self.smtp and self.smtp.password:
            found.append(self.smtp.password)
        # A bare "/" path is not a secret and would mangle every message.
        return tuple(s for s in found if len(s) > 1)


def _checked_url(url: str | None, name: str) -> str | None:
    # urllib would also open file:// and ftp:// URLs; a webhook is only ever HTTP(S).
    if url is None:
        return None
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AlertConfigError(
            f"{ENV_PREFIX}{name} is not an http(s) URL with a host (got {mask_url(url)}); set the full webhook URL"
        )
    return url


@dataclass(frozen=True)
class DeliveryResult:
    """The outcome of sending one alert to one destination.

    ``destination`` is ``slack``, ``webhook``, ``email`` or ``config``; ``target`` is the masked
    URL or ``host:port``; ``error`` is None on success, otherwise a message free of secrets.
    """

    destination: str
    target: str
    ok: bool
    error: str | None = None


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _iso(value: Any) -> str:
    if value is None:
        return dt.datetime.now(dt.timezone.utc).isoformat()
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)).isoformat()
    return str(value)


def alert_payload(alert: Mapping[str, Any]) -> dict[str, Any]:
    """The alert as the generic webhook's JSON object.

    Parameters
    ----------
    alert : Mapping
        ``kind``, ``severity``, ``message`` (required) and ``subject``, ``created_at``
        (datetime or ISO string; now in UTC if absent), ``dedupe_key`` (optional).

    Returns
    -------
    dict
        Keys kind, severity, subject, message, created_at (ISO 8601), dedupe_key.

    Raises
    ------
    ValueError
        A required key is missing (a programming error, raised before any network attempt).
    """
    missing = [k for k in ("kind", "severity", "message") if not alert.get(k)]
    if missing:
        raise ValueError(f"alert_payload: alert lacks {missing}; pass kind, severity and message")
    return {
        "kind": str(alert["kind"]),
        "severity": str(alert["severity"]),
        "subject": None if alert.get("subject") is None else str(alert["subject"]),
        "message": str(alert["message"]),
        "created_at": _iso(alert.get("created_at")),
        "dedupe_key": alert.get("dedupe_key"),
    }


def _headline(payload: Mapping[str, Any]) -> str:
    about = f": {payload['subject']}" if payload["subject"] else ""
    return f"[{payload['severity']}] {payload['kind']}{about}"


def slack_text(payload: Mapping[str, Any]) -> str:
    """The Slack message: ``[SEVERITY] kind: subject`` then the message on the next line."""
    return f"{_headline(payload)}\n{payload['message']}"


def email_message(payload: Mapping[str, Any], smtp: SmtpDestination) -> EmailMessage:
    """The email: subject ``[SEVERITY] kind: subject``; body the message then the alert's fields."""
    msg = EmailMessage()
    msg["Subject"] = _headline(payload)
    msg["From"] = smtp.sender
    msg["To"] = ", ".join(smtp.recipients)
    details = "\n".join(f"{k}: {payload[k]}" for k in ("kind", "severity", "subject", "created_at", "dedupe_key"))
    msg.set_content(f"{payload['message']}\n\n{details}\n")
    return msg


def _post_json(url: str, body: dict[str, Any], timeout: float) -> None:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode("utf-8"), method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "trading-pipeline-alerts"},
    )
    # A fresh opener reads the proxy variables now rather than when urllib was first used.
    with urllib.request.build_opener().open(request, timeout=timeout) as response:
        response.read(1024)


def _send_email(msg: EmailMessage, smtp: SmtpDestination, timeout: float) -> None:
    with smtplib.SMTP(smtp.host, smtp.port, timeout=timeout) as client:
        if smtp.starttls:
            client.starttls(context=ssl.create_default_context())
        if smtp.user:
            client.login(smtp.user, smtp.password or "")
        client.send_message(msg, from_addr=smtp.sender, to_addrs=list(smtp.recipients))


def _describe(exc: BaseException) -> str:
    # HTTPError's str is "HTTP Error 500: reason"; URLError wraps the socket error in .reason.
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"


def deliver(alert: Mapping[str, Any], destinations: AlertDestinations) -> list[DeliveryResult]:
    """Send one alert to every configured destination, concurrently, and report each outcome.

    Parameters
    ----------
    alert : Mapping
        As for :func:`alert_payload`.
    destinations : AlertDestinations
        Nothing configured means no network attempt and an empty list.

    Returns
    -------
    list of DeliveryResult
        One per configured destination, in the order slack, webhook, email. Every network or
        protocol failure (refused connection, timeout after ``destinations.timeout`` seconds
        per operation, HTTP status >= 400, SMTP error) is a result with ``ok=False``; none
        raises. Error texts show URLs masked and never contain a secret.

    Raises
    ------
    ValueError
        Only for a malformed ``alert`` (see :func:`alert_payload`), before any network attempt.
    """
    payload = alert_payload(alert)
    jobs: list[tuple[str, str, Callable[[], None]]] = []
    timeout = destinations.timeout
    if destinations.slack_webhook:
        url = destinations.slack_webhook
        jobs.append(("slack", mask_url(url), lambda: _post_json(url, {"text": slack_text(payload)}, timeout)))
    if destinations.webhook:
        hook = destinations.webhook
        jobs.append(("webhook", mask_url(hook), lambda: _post_json(hook, payload, timeout)))
    if destinations.smtp:
        smtp = destinations.smtp
        jobs.append(("email", f"{smtp.host}:{smtp.port}",
                     lambda: _send_email(email_message(payload, smtp), smtp, timeout)))
    if not jobs:
        return []
    secrets = destinations.secrets()

    def run(name: str, target: str, send: Callable[[], None]) -> DeliveryResult:
        try:
            send()
        except Exception as exc:  # noqa: BLE001 — any failure is reported, never raised
            return DeliveryResult(name, target, False, _scrub(f"{name} to {target}: {_describe(exc)}", secrets))
        return DeliveryResult(name, target, True)

    # One thread per destination: a hanging server costs one timeout, not one per destination.
    with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="alert-delivery") as pool:
        futures = [pool.submit(run, *job) for job in jobs]
        return [f.result() for f in futures]


@dataclass(frozen=True)
class Notification:
    """What :func:`notify` did: ``added`` is False for a duplicate (then ``results`` is empty)."""

    added: bool
    results: list[DeliveryResult] = field(default_factory=list)

    @property
    def failures(self) -> list[DeliveryResult]:
        return [r for r in self.results if not r.ok]


def notify(
    ledger: AlertLog,
    kind: str,
    severity: str,
    subject: str | None,
    message: str,
    dedupe_key: str | None = None,
    destinations: AlertDestinations | None = None,
) -> Notification:
    """Record an alert in the ledger and, if it is new, deliver it to a person.

    Delivery happens only when ``ledger.add_alert`` stores the alert, so de-duplication by
    ``dedupe_key`` covers delivery too. If any destination fails, one extra ledger alert of kind
    ``alert_delivery`` (severity WARN, dedupe key ``delivery:<dedupe_key>``) lists the masked
    failures — the alerts table then shows who was not reached; it is not itself delivered.

    Parameters
    ----------
    ledger : AlertLog
        Where alerts are stored: an initialised :class:`pipeline.store.ledger.Ledger`.
    kind, severity, subject, message, dedupe_key
        As for :meth:`pipeline.store.ledger.Ledger.add_alert`.
    destinations : AlertDestinations, optional
        None reads :meth:`AlertDestinations.from_env`; a configuration error then becomes a
        failed result with destination ``config`` (the alert is still stored).

    Returns
    -------
    Notification

    Raises
    ------
    LedgerError
        The ledger cannot be written (delivery is then not attempted). Delivery never raises.
    """
    added = ledger.add_alert(kind=kind, severity=severity, subject=subject, message=message, dedupe_key=dedupe_key)
    if not added:
        return Notification(added=False)
    results: list[DeliveryResult] = []
    if destinations is None:
        try:
            destinations = AlertDestinations.from_env()
        except AlertConfigError as exc:
            # A bad variable must not lose the alert: it is stored, and the error is reported.
            destinations = AlertDestinations()
            results.append(DeliveryResult("config", ENV_PREFIX + "*", False, str(exc)))
    alert = {"kind": kind, "severity": severity, "subject": subject, "message": message,
             "created_at": dt.datetime.now(dt.timezone.utc), "dedupe_key": dedupe_key}
    results += deliver(alert, destinations)
    failures = [r for r in results if not r.ok]
    if failures:
        ledger.add_alert(
            kind=DELIVERY_FAILURE_KIND, severity="WARN", subject=dedupe_key or subject,
            message=f"alert '{_headline(alert_payload(alert))}' not delivered: "
                    + "; ".join(r.error or r.destination for r in failures),
            dedupe_key=f"delivery:{dedupe_key}" if dedupe_key else None,
        )
    return Notification(added=True, results=results)
