"""Alert delivery: send a ledger alert to people through apprise (Slack, email, webhooks, Telegram...).

Destinations come only from one environment variable, so that webhook tokens and mail passwords
never sit in a configuration file or the repository:

``TRADING_ALERT_URLS``
    apprise URLs separated by commas and/or spaces; unset or empty means log and ledger only.
    E.g. ``https://hooks.slack.com/services/T…/B…/…`` (a Slack incoming webhook, as Slack gives
    it), ``mailtos://bot:$PASSWORD@mail.example.com?to=ops@example.com,pm@example.com`` (email,
    TLS), ``jsons://alerts.example.com/hook`` (a JSON webhook over HTTPS), ``tgram://BOT_TOKEN/CHAT_ID``
    (Telegram). Every service apprise knows works; its documentation lists the URL of each.

Every destination receives the title ``[SEVERITY] kind: subject`` and a body made of the message
then one ``field: value`` line for kind, severity, subject, created_at and dedupe_key, with the
apprise type ``failure`` (ERROR), ``warning`` (WARN) or ``info``; a ``json://`` endpoint gets them
as ``{"version", "title", "message", "attachments", "type"}``, a ``form://`` endpoint as form fields.

The variables of the senders this module used to hand-write (``TRADING_ALERT_SLACK_WEBHOOK``,
``TRADING_ALERT_WEBHOOK``, ``TRADING_ALERT_SMTP_*``), and any other ``TRADING_ALERT_*`` name, are
refused (fail closed): :meth:`AlertDestinations.from_env` raises :class:`AlertConfigError` with one
line naming the variable and the ``TRADING_ALERT_URLS`` form to use, so that an operator who set
the old variables learns that nobody is paged instead of believing alerts still reach Slack.
:func:`notify` still stores the alert and records that line in the ledger (kind ``alert_delivery``).

Delivery is best effort and isolated: apprise sends to every destination concurrently, each
network operation bounded by ``timeout`` seconds and the whole call by three times that; a failing
destination never stops the others, and failures come back as :class:`DeliveryResult` values
instead of exceptions, because an alert path that raises would hide the very problem it reports.
Secrets never appear in results, ``repr`` or the log: a URL is shown as ``scheme://host[:port]/…``
(``scheme://…`` when the host part is itself a token, as in ``slack://`` and ``tgram://``), every
error text is scrubbed of the URL's parts, and apprise's own log lines (which may quote a path)
are kept out of the application's log.

:func:`notify` is the entry point for the rest of the project: it stores the alert in the ledger
(de-duplicated by key) and delivers it only when the ledger says it is new, so a sensor
re-evaluating the same failed run does not page anyone twice.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


class AlertLog(Protocol):
    """Where alerts are recorded: the ledger's ``alerts`` table (:class:`pipeline.store.ledger.Ledger`)."""

    def add_alert(self, *, kind: str, severity: str, subject: str | None, message: str,
                  dedupe_key: str | None = None) -> bool:
        """Store the alert; False when one with the same ``dedupe_key`` is already stored."""

ENV_PREFIX = "TRADING_ALERT_"
#: The one variable that names the destinations (apprise URLs).
ENV_VAR = ENV_PREFIX + "URLS"
#: Seconds allowed per network operation (connect, read) of each destination.
DEFAULT_TIMEOUT = 5.0
#: The whole delivery call is abandoned after this many ``timeout``s (unfinished destinations fail).
DEADLINE_TIMEOUTS = 3
#: Kind of the ledger row that records a delivery failure (see :func:`notify`).
DELIVERY_FAILURE_KIND = "alert_delivery"

# What to write instead of a refused variable, by the variable's name after the prefix.
_REPLACEMENTS = {
    "SLACK_WEBHOOK": "the same https://hooks.slack.com/services/… URL",
    "WEBHOOK": "json://host/path (jsons:// for HTTPS)",
    "SMTP": "mailto://user:$PASSWORD@host:port?from=…&to=… (mailtos:// for TLS)",
}
# Parts of a URL shorter than this are not scrubbed on their own (they would mangle every message).
_MIN_SECRET_LEN = 6


class AlertConfigError(ValueError):
    """``TRADING_ALERT_URLS`` holds a URL apprise cannot use, or a refused ``TRADING_ALERT_*`` is set."""


def _apprise():
    # Imported on first use: loading apprise and its plugins costs about half a second, which a
    # process that never delivers (no TRADING_ALERT_URLS) should not pay.
    import apprise

    # apprise logs an unusable URL with its path ("Unparseable URL json://host/TOKEN"): its records
    # stay out of the application's handlers; what failed reaches the log through DeliveryResult.
    logger = logging.getLogger("apprise")
    if logger.propagate:
        logger.propagate = False
        logger.addHandler(logging.NullHandler())
    return apprise


def _shown_host(host: str) -> bool:
    # A host part that is a DNS name or an IP address is not a secret; in slack://TOKEN/...,
    # tgram://BOT_TOKEN/... or ntfy://TOPIC the host part is the secret.
    if host == "localhost" or "." in host.strip("."):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def mask_url(url: str) -> str:
    """Show an apprise URL as ``scheme://host[:port]/…``, hiding its path, query and credentials.

    Webhook and bot tokens sit in the path, the query, the user info or, for schemes such as
    ``slack://`` and ``tgram://``, in the host part itself: the host is shown only when it is a
    DNS name (with a dot), ``localhost`` or an IP address, else the URL shows as ``scheme://…``.

    Parameters
    ----------
    url : str
        Any URL.

    Returns
    -------
    str
        E.g. ``https://hooks.slack.com/…``, ``json://127.0.0.1:8080/…``, ``tgram://…``;
        ``<invalid url>`` without a scheme.
    """
    scheme, sep, _ = url.partition("://")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        return "<invalid url>"
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # e.g. tgram://123:TOKEN/..., whose "port" is not a number
        return f"{scheme}://…"
    return f"{scheme}://{host}{port}/…" if host and _shown_host(host) else f"{scheme}://…"


def url_secrets(url: str) -> tuple[str, ...]:
    """The parts of ``url`` that must never appear in a message, longest first.

    The URL itself, its user info, password, path, query and fragment, a host part that
    :func:`mask_url` hides, and every path segment and query value of at least six characters.
    """
    rest = url.partition("://")[2]
    found = [url, rest]
    shown = mask_url(url)
    try:
        parts = urllib.parse.urlsplit(url)
        userinfo, _, hostport = parts.netloc.rpartition("@")
        found += [userinfo, parts.password or "", parts.path, parts.query, parts.fragment]
        if f"://{parts.hostname}" not in shown:
            found += [hostport, parts.hostname or ""]
        found += [s for s in parts.path.split("/") if len(s) >= _MIN_SECRET_LEN]
        found += [v for _, v in urllib.parse.parse_qsl(parts.query) if len(v) >= _MIN_SECRET_LEN]
    except ValueError:
        found += rest.split("/")
    found += [urllib.parse.unquote(s) for s in found]
    return tuple(sorted({s for s in found if len(s) > 1}, key=len, reverse=True))


def parse_urls(text: str) -> tuple[str, ...]:
    """Split ``TRADING_ALERT_URLS`` into URLs: commas and/or whitespace separate them (a comma
    inside a URL's query, as in ``?to=a@x.com,b@x.com``, stays with it; apprise's own rule).
    Duplicates are dropped, order kept."""
    if not text.strip():
        return ()
    from apprise.utils.parse import parse_urls as split

    return tuple(dict.fromkeys(u for u in split(text) if u))


def _unusable(url: str, position: int, count: int) -> str:
    return (f"{ENV_VAR}: URL {position} of {count} ({mask_url(url)}) is not one apprise can send to; "
            "write it as apprise documents the service's URL (e.g. jsons://host/path, mailtos://..., tgram://...)")


@dataclass(frozen=True, repr=False)
class AlertDestinations:
    """Where alerts go: apprise URLs; none means log and ledger only (no network attempt).

    ``urls`` are hidden from ``repr`` (their path, query, user info or host is the secret);
    ``repr`` shows the :func:`mask_url` form. ``timeout`` is in seconds per network operation.
    """

    urls: tuple[str, ...] = field(default=())
    timeout: float = DEFAULT_TIMEOUT

    def __post_init__(self) -> None:
        if isinstance(self.urls, str):
            raise TypeError("AlertDestinations.urls is a tuple of URLs; split a text with parse_urls")
        if not self.timeout > 0:
            raise ValueError(f"AlertDestinations.timeout must be > 0 seconds, got {self.timeout}")

    def __repr__(self) -> str:
        return f"AlertDestinations(targets={self.targets!r}, timeout={self.timeout})"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, timeout: float = DEFAULT_TIMEOUT) -> AlertDestinations:
        """Read destinations from ``TRADING_ALERT_URLS`` (see the module docstring).

        Parameters
        ----------
        env : Mapping[str, str], optional
            The environment; ``os.environ`` when None. An empty value counts as unset.
        timeout : float
            Seconds allowed per network operation of each delivery.

        Returns
        -------
        AlertDestinations

        Raises
        ------
        AlertConfigError
            Another ``TRADING_ALERT_*`` variable is set (e.g. the retired
            ``TRADING_ALERT_SLACK_WEBHOOK``): the message names it and the URL to write in
            ``TRADING_ALERT_URLS`` instead; or a URL is not one apprise can send to (the message
            gives its position and masked form). Messages never echo a secret.
        """
        if env is None:
            env = os.environ
        refused = sorted(n for n, v in env.items() if n.startswith(ENV_PREFIX) and n != ENV_VAR and v.strip())
        if refused:
            name = refused[0][len(ENV_PREFIX):]
            instead = _REPLACEMENTS.get("SMTP" if name.startswith("SMTP_") else name, "an apprise URL")
            raise AlertConfigError(
                f"{refused[0]} is no longer read and no alert is delivered until it is unset: "
                f"put {instead} in {ENV_VAR} (apprise URLs, comma or space separated)"
            )
        urls = parse_urls(env.get(ENV_VAR, ""))
        apprise = _apprise() if urls else None
        for i, url in enumerate(urls, 1):
            if apprise.Apprise.instantiate(url) is None:
                raise AlertConfigError(_unusable(url, i, len(urls)))
        return cls(urls=urls, timeout=timeout)

    @property
    def configured(self) -> bool:
        """True if at least one destination is set."""
        return bool(self.urls)

    @property
    def targets(self) -> tuple[str, ...]:
        """The destinations as :func:`mask_url` shows them."""
        return tuple(mask_url(u) for u in self.urls)

    def secrets(self) -> tuple[str, ...]:
        """Strings that must never appear in a message (:func:`url_secrets` of every URL), longest first."""
        return tuple(sorted({s for u in self.urls for s in url_secrets(u)}, key=len, reverse=True))


@dataclass(frozen=True)
class DeliveryResult:
    """The outcome of sending one alert to one destination.

    ``destination`` is apprise's name of the service (``JSON``, ``Slack``, ``E-Mail``,
    ``Telegram``...), or ``config`` for a URL or variable that cannot be used; ``target`` is the
    :func:`mask_url` form; ``error`` is None on success, otherwise a message free of secrets.
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
        return dt.datetime.now(dt.UTC).isoformat()
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).isoformat()
    return str(value)


def alert_payload(alert: Mapping[str, Any]) -> dict[str, Any]:
    """The alert's fields, checked and normalised.

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


def alert_title(payload: Mapping[str, Any]) -> str:
    """``[SEVERITY] kind: subject`` (``[SEVERITY] kind`` without a subject) of an :func:`alert_payload`."""
    about = f": {payload['subject']}" if payload["subject"] else ""
    return f"[{payload['severity']}] {payload['kind']}{about}"


def alert_body(payload: Mapping[str, Any]) -> str:
    """The message, a blank line, then ``field: value`` for kind, severity, subject, created_at, dedupe_key."""
    details = "\n".join(f"{k}: {payload[k]}" for k in ("kind", "severity", "subject", "created_at", "dedupe_key"))
    return f"{payload['message']}\n\n{details}"


def _notify_type(apprise, severity: str):
    level = severity.upper()
    if level in ("ERROR", "CRITICAL", "FATAL"):
        return apprise.NotifyType.FAILURE
    if level in ("WARN", "WARNING"):
        return apprise.NotifyType.WARNING
    return apprise.NotifyType.INFO


def _send(payload: Mapping[str, Any], destinations: AlertDestinations) -> list[DeliveryResult]:
    apprise = _apprise()
    timeout = destinations.timeout
    deadline = DEADLINE_TIMEOUTS * timeout
    # Memory-only persistent store: apprise writes nothing under the home folder.
    asset = apprise.AppriseAsset(app_id="trading-pipeline", app_desc="trading-pipeline alerts",
                                 storage_mode=apprise.PersistentStoreMode.MEMORY, service_timeout=deadline)
    client = apprise.Apprise(asset=asset)
    secrets = destinations.secrets()
    results: list[DeliveryResult | None] = [None] * len(destinations.urls)
    sent: list[int] = []
    for i, url in enumerate(destinations.urls):
        plugin = apprise.Apprise.instantiate(url, asset=asset)
        if plugin is None or not client.add(plugin):
            results[i] = DeliveryResult("config", mask_url(url), False,
                                        _unusable(url, i + 1, len(destinations.urls)))
            continue
        plugin.socket_connect_timeout = min(plugin.socket_connect_timeout, timeout)
        plugin.socket_read_timeout = min(plugin.socket_read_timeout, timeout)
        sent.append(i)
    if sent:
        with client.notify(body=alert_body(payload), title=alert_title(payload),
                           notify_type=_notify_type(apprise, payload["severity"]),
                           body_format=apprise.NotifyFormat.TEXT, timeout=deadline) as outcome:
            services = list(outcome)
            call_notes = "; ".join(e.message for e in outcome.call_logs())
            # apprise returns one result per service, in the order they were added.
            for k, i in enumerate(sent):
                target = mask_url(destinations.urls[i])
                if len(services) != len(sent):
                    results[i] = DeliveryResult("apprise", target, False,
                                                _scrub(f"to {target}: {call_notes or 'not attempted'}", secrets))
                    continue
                service = services[k]
                if service:
                    results[i] = DeliveryResult(service.name, target, True)
                    continue
                if service.status == apprise.AppriseResultStatus.TIMEOUT:
                    reason = f"timed out after {deadline:g}s"
                else:
                    reason = "; ".join(e.message for e in service.logs()) or service.status.name.lower()
                results[i] = DeliveryResult(service.name, target, False,
                                            _scrub(f"{service.name} to {target}: {reason}", secrets))
    return [r for r in results if r is not None]


def deliver(alert: Mapping[str, Any], destinations: AlertDestinations) -> list[DeliveryResult]:
    """Send one alert to every destination through apprise, concurrently, and report each outcome.

    Parameters
    ----------
    alert : Mapping
        As for :func:`alert_payload`.
    destinations : AlertDestinations
        No URL means no network attempt and an empty list.

    Returns
    -------
    list of DeliveryResult
        One per URL, in the order of ``destinations.urls``. Every failure (a URL apprise cannot
        use, refused connection, timeout after ``destinations.timeout`` seconds per network
        operation or ``DEADLINE_TIMEOUTS`` times that for the whole call, HTTP status outside
        2xx, SMTP error, an exception inside apprise) is a result with ``ok=False``; none raises.
        Error texts show URLs masked and never contain a secret.

    Raises
    ------
    ValueError
        Only for a malformed ``alert`` (see :func:`alert_payload`), before any network attempt.
    """
    payload = alert_payload(alert)
    if not destinations.urls:
        return []
    try:
        return _send(payload, destinations)
    except Exception as exc:  # noqa: BLE001 - the alert path reports, it never raises
        secrets = destinations.secrets()
        return [DeliveryResult("apprise", mask_url(u), False,
                               _scrub(f"to {mask_url(u)}: {type(exc).__name__}: {exc}", secrets))
                for u in destinations.urls]


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
    """Record an alert in the ledger and, if it is new, deliver it to people.

    Delivery happens only when ``ledger.add_alert`` stores the alert, so de-duplication by
    ``dedupe_key`` covers delivery too. If any destination fails, one extra ledger alert of kind
    ``alert_delivery`` (severity WARN, dedupe key ``delivery:<dedupe_key>``) lists the masked
    failures; the alerts table then shows who was not reached. It is not itself delivered.

    Parameters
    ----------
    ledger : AlertLog
        Where alerts are stored: an initialised :class:`pipeline.store.ledger.Ledger`.
    kind, severity, subject, message, dedupe_key
        As for :meth:`pipeline.store.ledger.Ledger.add_alert`.
    destinations : AlertDestinations, optional
        None reads :meth:`AlertDestinations.from_env`; a configuration error (a refused variable,
        an unusable URL) then delivers nowhere and becomes a failed result with destination
        ``config`` (the alert is still stored).

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
        except Exception as exc:  # noqa: BLE001 - e.g. apprise missing from a broken install; never raise
            destinations = AlertDestinations()
            # The exception's text may quote a URL: only its type is reported.
            results.append(DeliveryResult("config", ENV_VAR, False,
                                          f"{ENV_VAR} could not be read ({type(exc).__name__}); nothing delivered"))
    alert = {"kind": kind, "severity": severity, "subject": subject, "message": message,
             "created_at": dt.datetime.now(dt.UTC), "dedupe_key": dedupe_key}
    results += deliver(alert, destinations)
    failures = [r for r in results if not r.ok]
    if failures:
        ledger.add_alert(
            kind=DELIVERY_FAILURE_KIND, severity="WARN", subject=dedupe_key or subject,
            message=f"alert '{alert_title(alert_payload(alert))}' not delivered: "
                    + "; ".join(r.error or r.destination for r in failures),
            dedupe_key=f"delivery:{dedupe_key}" if dedupe_key else None,
        )
    return Notification(added=True, results=results)
