"""Alert delivery: Slack, generic webhook and email reach real local servers; failures are
isolated, bounded and free of secrets; the ledger's de-duplication covers delivery."""

import datetime as dt
import email
import email.policy
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest

from pipeline.adapters import alerts as alerting
from pipeline.adapters.alerts import (
    AlertConfigError,
    AlertDestinations,
    SmtpDestination,
    deliver,
    mask_url,
    notify,
)
from pipeline.store.ledger import Ledger

SECRET_PATH = "/services/T000/B000/s3cr3tT0k3n"
ALERT = {
    "kind": "asset_check", "severity": "ERROR", "subject": "clean_bars:bars_complete",
    "message": "asset check clean_bars:bars_complete failed in run abc",
    "created_at": dt.datetime(2024, 3, 8, 21, 30, tzinfo=dt.timezone.utc), "dedupe_key": "check:x:abc",
}


@pytest.fixture(autouse=True)
def _no_alert_env_or_proxy(monkeypatch):
    # Tests must not page a real person, nor send 127.0.0.1 traffic through a proxy.
    for name in list(alerting.os.environ):
        if name.startswith("TRADING_ALERT_") or name.lower() in ("http_proxy", "https_proxy", "all_proxy"):
            monkeypatch.delenv(name)


# -- local servers ------------------------------------------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append((self.path, self.headers["Content-Type"], json.loads(body)))
        status = 500 if self.path.startswith("/fail") else 200
        self.send_response(status)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _SmtpResponder:
    """Just enough SMTP (RFC 5321) to receive a message: no extensions, so no AUTH."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.messages: list[tuple[str, list[str], bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                self._session(conn)

    def _session(self, conn):
        reader = conn.makefile("rb")
        conn.sendall(b"220 localhost test SMTP\r\n")
        sender, recipients = "", []
        while line := reader.readline():
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                conn.sendall(b"250 localhost\r\n")
            elif verb == b"MAIL":
                sender = line.decode().split(":", 1)[1].strip()
            elif verb == b"RCPT":
                recipients.append(line.decode().split(":", 1)[1].strip())
            elif verb == b"DATA":
                conn.sendall(b"354 end with <CRLF>.<CRLF>\r\n")
                data = b""
                while (chunk := reader.readline()) not in (b".\r\n", b""):
                    data += chunk[1:] if chunk.startswith(b"..") else chunk
                self.messages.append((sender, recipients, data))
            elif verb == b"QUIT":
                conn.sendall(b"221 bye\r\n")
                return
            if verb in (b"MAIL", b"RCPT", b"DATA", b"RSET", b"NOOP"):
                conn.sendall(b"250 OK\r\n")
            elif verb not in (b"EHLO", b"HELO"):
                conn.sendall(b"502 not implemented\r\n")

    def close(self):
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def smtp_server():
    server = _SmtpResponder()
    yield server
    server.close()


@pytest.fixture
def closed_port():
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    return port  # nothing listens here any more: connections are refused


@pytest.fixture
def hanging_port():
    # Listening but never accepting: the kernel completes the handshake, then nothing answers.
    sock = socket.create_server(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


def _smtp(port, **kwargs):
    return SmtpDestination(host="127.0.0.1", port=port, sender="pipeline@example.com",
                           recipients=("ops@example.com", "pm@example.com"), **kwargs)


def _ledger(tmp_path):
    return Ledger(tmp_path / "warehouse.duckdb").init()


# -- configuration ------------------------------------------------------------------------


def test_no_variables_configure_no_destination():
    destinations = AlertDestinations.from_env({})
    assert destinations == AlertDestinations()
    assert not destinations.configured


def test_from_env_reads_every_variable():
    env = {
        "TRADING_ALERT_SLACK_WEBHOOK": "https://hooks.slack.com" + SECRET_PATH,
        "TRADING_ALERT_WEBHOOK": "https://example.com/hook?token=abc",
        "TRADING_ALERT_SMTP_HOST": "smtp.example.com", "TRADING_ALERT_SMTP_PORT": "587",
        "TRADING_ALERT_SMTP_FROM": "pipeline@example.com",
        "TRADING_ALERT_SMTP_TO": "ops@example.com, pm@example.com",
        "TRADING_ALERT_SMTP_USER": "bot", "TRADING_ALERT_SMTP_PASSWORD": "pw", "TRADING_ALERT_SMTP_STARTTLS": "true",
    }
    destinations = AlertDestinations.from_env(env)
    assert destinations.slack_webhook == "https://hooks.slack.com" + SECRET_PATH
    assert destinations.webhook == "https://example.com/hook?token=abc"
    assert destinations.smtp == SmtpDestination("smtp.example.com", 587, "pipeline@example.com",
                                                ("ops@example.com", "pm@example.com"), "bot", "pw", True)


def test_smtp_port_defaults_to_25_and_starttls_to_false():
    env = {"TRADING_ALERT_SMTP_HOST": "smtp.example.com", "TRADING_ALERT_SMTP_FROM": "a@example.com",
           "TRADING_ALERT_SMTP_TO": "b@example.com"}
    smtp = AlertDestinations.from_env(env).smtp
    assert (smtp.port, smtp.starttls, smtp.user) == (25, False, None)


@pytest.mark.parametrize("env, names", [
    ({"TRADING_ALERT_WEBHOOK": "file:///etc/passwd"}, "TRADING_ALERT_WEBHOOK"),
    ({"TRADING_ALERT_SMTP_HOST": "h", "TRADING_ALERT_SMTP_FROM": "a@b", "TRADING_ALERT_SMTP_TO": "c@d",
      "TRADING_ALERT_SMTP_PORT": "twenty-five"}, "TRADING_ALERT_SMTP_PORT"),
    ({"TRADING_ALERT_SMTP_HOST": "h", "TRADING_ALERT_SMTP_FROM": "a@b"}, "TRADING_ALERT_SMTP_TO"),
    ({"TRADING_ALERT_SMTP_HOST": "h", "TRADING_ALERT_SMTP_FROM": "a@b", "TRADING_ALERT_SMTP_TO": "c@d",
      "TRADING_ALERT_SMTP_STARTTLS": "maybe"}, "TRADING_ALERT_SMTP_STARTTLS"),
])
def test_malformed_variables_raise_naming_the_variable(env, names):
    with pytest.raises(AlertConfigError, match=names):
        AlertDestinations.from_env(env)


def test_repr_and_mask_hide_webhook_secrets():
    url = "https://user:pw@hooks.slack.com:8443" + SECRET_PATH + "?token=abc"
    destinations = AlertDestinations(slack_webhook=url, webhook=url, smtp=_smtp(25, user="bot", password="hunter2"))
    shown = repr(destinations)
    assert "s3cr3t" not in shown and "hunter2" not in shown and "token" not in shown
    assert mask_url(url) == "https://hooks.slack.com:8443/…"


# -- delivery to live local servers --------------------------------------------------------


def test_slack_webhook_receives_text_json(http_server):
    server, base = http_server
    results = deliver(ALERT, AlertDestinations(slack_webhook=base + SECRET_PATH))
    assert [(r.destination, r.ok) for r in results] == [("slack", True)]
    # Expected text: "[severity] kind: subject", newline, message (pipeline.adapters.alerts.slack_text).
    assert server.requests == [(SECRET_PATH, "application/json", {
        "text": "[ERROR] asset_check: clean_bars:bars_complete\n"
                "asset check clean_bars:bars_complete failed in run abc"})]


def test_generic_webhook_receives_every_alert_field(http_server):
    server, base = http_server
    results = deliver(ALERT, AlertDestinations(webhook=base + "/hook"))
    assert results[0].ok
    assert server.requests == [("/hook", "application/json", {
        "kind": "asset_check", "severity": "ERROR", "subject": "clean_bars:bars_complete",
        "message": "asset check clean_bars:bars_complete failed in run abc",
        "created_at": "2024-03-08T21:30:00+00:00", "dedupe_key": "check:x:abc"})]


def test_email_reaches_every_recipient_with_subject_and_body(smtp_server):
    results = deliver(ALERT, AlertDestinations(smtp=_smtp(smtp_server.port)))
    assert [(r.destination, r.target, r.ok) for r in results] == [("email", f"127.0.0.1:{smtp_server.port}", True)]
    [(sender, recipients, data)] = smtp_server.messages
    assert sender == "<pipeline@example.com>"
    assert recipients == ["<ops@example.com>", "<pm@example.com>"]
    msg = email.message_from_bytes(data.replace(b"\r\n", b"\n"), policy=email.policy.default)  # wire form is CRLF
    assert msg["Subject"] == "[ERROR] asset_check: clean_bars:bars_complete"
    assert msg["To"] == "ops@example.com, pm@example.com"
    body = msg.get_content()
    assert body.startswith("asset check clean_bars:bars_complete failed in run abc\n")
    assert "dedupe_key: check:x:abc" in body


def test_http_error_status_is_a_failed_result(http_server):
    _, base = http_server
    [result] = deliver(ALERT, AlertDestinations(webhook=base + "/fail"))
    assert not result.ok and "HTTP 500" in result.error


def test_refused_destination_fails_and_the_others_still_receive(http_server, smtp_server, closed_port):
    server, base = http_server
    destinations = AlertDestinations(slack_webhook=f"http://127.0.0.1:{closed_port}{SECRET_PATH}",
                                     webhook=base + "/hook", smtp=_smtp(smtp_server.port), timeout=1)
    slack, hook, mail = deliver(ALERT, destinations)
    assert not slack.ok and "refused" in slack.error.lower()
    assert hook.ok and mail.ok
    assert len(server.requests) == 1 and len(smtp_server.messages) == 1


def test_silent_servers_time_out_and_the_others_still_receive(http_server, smtp_server, hanging_port):
    server, base = http_server
    hanging = AlertDestinations(webhook=f"http://127.0.0.1:{hanging_port}/hook", smtp=_smtp(hanging_port), timeout=1)
    hook, mail = deliver(ALERT, hanging)
    assert (hook.ok, mail.ok) == (False, False)
    assert "timed out" in hook.error and "timed out" in mail.error.lower()

    mixed = AlertDestinations(slack_webhook=f"http://127.0.0.1:{hanging_port}/x", webhook=base + "/hook",
                              smtp=_smtp(smtp_server.port), timeout=1)
    assert [r.ok for r in deliver(ALERT, mixed)] == [False, True, True]
    assert len(server.requests) == 1 and len(smtp_server.messages) == 1


def test_secret_url_and_password_never_appear_in_failures(http_server, closed_port):
    _, base = http_server
    destinations = AlertDestinations(
        slack_webhook=f"http://127.0.0.1:{closed_port}{SECRET_PATH}",
        webhook=base + "/fail" + SECRET_PATH + "?token=qwerty",
        smtp=_smtp(closed_port, user="bot", password="hunter2"), timeout=1,
    )
    results = deliver(ALERT, destinations)
    assert [r.ok for r in results] == [False, False, False]
    for result in results:
        for secret in ("s3cr3t", "qwerty", "hunter2", SECRET_PATH):
            assert secret not in result.error and secret not in result.target
    assert results[0].target == f"http://127.0.0.1:{closed_port}/…"


def test_smtp_login_failure_does_not_leak_the_password(smtp_server):
    [result] = deliver(ALERT, AlertDestinations(smtp=_smtp(smtp_server.port, user="bot", password="hunter2")))
    assert not result.ok and "AUTH" in result.error and "hunter2" not in result.error


def test_malformed_alert_raises_before_any_network_attempt(monkeypatch):
    monkeypatch.setattr(alerting, "_post_json", lambda *a: pytest.fail("network attempted"))
    with pytest.raises(ValueError, match="message"):
        deliver({"kind": "k", "severity": "ERROR"}, AlertDestinations(webhook="http://127.0.0.1:9/x"))


# -- notify: ledger plus delivery -----------------------------------------------------------


def test_same_dedupe_key_is_delivered_once(tmp_path, http_server, smtp_server):
    server, base = http_server
    ledger = _ledger(tmp_path)
    destinations = AlertDestinations(slack_webhook=base + "/slack", webhook=base + "/hook",
                                     smtp=_smtp(smtp_server.port), timeout=1)
    fields = dict(kind="run_failure", severity="ERROR", subject="run abc", message="run failed", dedupe_key="run:abc")
    first = notify(ledger, **fields, destinations=destinations)
    second = notify(ledger, **fields, destinations=destinations)
    assert first.added and [r.ok for r in first.results] == [True, True, True]
    assert not second.added and second.results == []
    assert sorted(path for path, _, _ in server.requests) == ["/hook", "/slack"]
    assert len(smtp_server.messages) == 1
    assert len(ledger.alerts()) == 1
    hook_body = next(body for path, _, body in server.requests if path == "/hook")
    assert dt.datetime.fromisoformat(hook_body["created_at"]).tzinfo is not None


def test_without_variables_notify_only_stores_the_alert(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        pytest.fail("a network connection was attempted")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    ledger = _ledger(tmp_path)
    outcome = notify(ledger, "quality", "WARN", "ES", "stale bars", dedupe_key="q:ES")
    assert outcome.added and outcome.results == []
    assert list(ledger.alerts()["kind"]) == ["quality"]


def test_failed_delivery_is_recorded_as_a_masked_ledger_alert(tmp_path, http_server, closed_port):
    server, base = http_server
    ledger = _ledger(tmp_path)
    destinations = AlertDestinations(slack_webhook=f"http://127.0.0.1:{closed_port}{SECRET_PATH}",
                                     webhook=base + "/hook", timeout=1)
    outcome = notify(ledger, "run_failure", "ERROR", "run abc", "run failed", dedupe_key="run:abc",
                     destinations=destinations)
    assert [r.destination for r in outcome.failures] == ["slack"]
    alerts = ledger.alerts().set_index("kind")
    assert list(alerts.index) == ["run_failure", "alert_delivery"]
    row = alerts.loc["alert_delivery"]
    assert (row["severity"], row["subject"], row["dedupe_key"]) == ("WARN", "run:abc", "delivery:run:abc")
    assert f"http://127.0.0.1:{closed_port}/…" in row["message"] and "s3cr3t" not in row["message"]
    assert len(server.requests) == 1  # the delivery-failure row itself is not delivered


def test_bad_variable_still_stores_the_alert_and_reports_the_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TRADING_ALERT_SLACK_WEBHOOK", "ftp://hooks.example.com" + SECRET_PATH)
    ledger = _ledger(tmp_path)
    outcome = notify(ledger, "quality", "WARN", "ES", "stale bars", dedupe_key="q:ES")
    assert outcome.added
    [failure] = outcome.failures
    assert failure.destination == "config" and "TRADING_ALERT_SLACK_WEBHOOK" in failure.error
    assert "s3cr3t" not in failure.error
    assert list(ledger.alerts()["kind"]) == ["quality", "alert_delivery"]


def test_error_text_that_quotes_the_url_is_scrubbed(http_server):
    # http.client rejects a space in the path with an InvalidURL message that quotes the path.
    _, base = http_server
    [result] = deliver(ALERT, AlertDestinations(webhook=base + SECRET_PATH + " x"))
    assert not result.ok and "InvalidURL" in result.error
    assert "s3cr3t" not in result.error and "***" in result.error


def test_a_pre_trade_denial_reaches_the_webhook_once(tmp_path, http_server, monkeypatch):
    from pipeline.config import CostModel, RiskLimits
    from pipeline.execution import execute_orders
    from pipeline.execution.paper_broker import PaperBroker
    from pipeline.trading import TradingState

    server, base = http_server
    monkeypatch.setenv("TRADING_ALERT_WEBHOOK", base + "/hook")
    ledger = _ledger(tmp_path)
    ledger.set_trading_state(TradingState.HALTED, reason="test", changed_by="test")
    broker = PaperBroker(ledger, costs={"AAA": CostModel()}, point_sizes={"AAA": 1.0})
    for _ in range(2):  # a re-run denies again but alerts once
        execute_orders(pd.Series({"AAA": 10.0}), pd.Series({"AAA": 100.0}), "2024-03-08", ledger=ledger,
                       broker=broker, limits=RiskLimits(), point_sizes={"AAA": 1.0}, strategy="carver",
                       submit=True, run_id="r")
    (request,) = server.requests
    assert request[2]["kind"] == "order_denied" and request[2]["subject"] == "carver:2024-03-08:AAA:1"
    assert "kill_switch" in request[2]["message"]
