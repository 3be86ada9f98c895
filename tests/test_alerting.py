"""Alert delivery through apprise: a JSON webhook, a form webhook and email reach real local servers;
failures are isolated, bounded and free of secrets (results, repr, log, ledger); the ledger's
de-duplication covers delivery; the retired per-destination variables are refused in one line."""

import datetime as dt
import email
import email.policy
import json
import logging
import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest

from pipeline.adapters import alerts as alerting
from pipeline.adapters.alerts import (
    AlertConfigError,
    AlertDestinations,
    deliver,
    mask_url,
    notify,
    parse_urls,
)
from pipeline.store.ledger import Ledger

SECRET_PATH = "/services/T000/B000/s3cr3tT0k3n"
PASSWORD = "hunter2"  # pragma: allowlist secret
ALERT = {
    "kind": "asset_check", "severity": "ERROR", "subject": "clean_bars:bars_complete",
    "message": "asset check clean_bars:bars_complete failed in run abc",
    "created_at": dt.datetime(2024, 3, 8, 21, 30, tzinfo=dt.UTC), "dedupe_key": "check:x:abc",
}
TITLE = "[ERROR] asset_check: clean_bars:bars_complete"
BODY = ("asset check clean_bars:bars_complete failed in run abc\n\n"
        "kind: asset_check\nseverity: ERROR\nsubject: clean_bars:bars_complete\n"
        "created_at: 2024-03-08T21:30:00+00:00\ndedupe_key: check:x:abc")
SECRETS = ("s3cr3t", "qwerty123", PASSWORD, SECRET_PATH)


@pytest.fixture(autouse=True)
def _no_alert_env_or_proxy(monkeypatch):
    # Tests must not page a real person, nor send 127.0.0.1 traffic through a proxy.
    for name in list(alerting.os.environ):
        if name.startswith("TRADING_ALERT_") or name.lower() in ("http_proxy", "https_proxy", "all_proxy"):
            monkeypatch.delenv(name)


# -- local servers ------------------------------------------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    def do_POST(self):
        raw = self.rfile.read(int(self.headers["Content-Length"])).decode()
        kind = self.headers["Content-Type"].split(";")[0]
        body = json.loads(raw) if kind == "application/json" else dict(urllib.parse.parse_qsl(raw))
        self.server.requests.append((self.path, kind, body))
        self.send_response(500 if self.path.startswith("/fail") else 200)
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
    yield server, f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _SmtpResponder:
    """Just enough SMTP (RFC 5321) to receive a message: no extensions, so no AUTH and no STARTTLS."""

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
                sender, recipients = "", []  # the transaction ends with DATA (RFC 5321 4.1.1.4)
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


def _mailto(port, to="ops@example.com,pm@example.com", auth=""):
    return f"mailto://{auth}127.0.0.1:{port}?from=pipeline@example.com&to={to}"


def _ledger(tmp_path):
    return Ledger(tmp_path / "warehouse.duckdb").init()


def _no_secret_in(text):
    assert not [s for s in SECRETS if s in text], text


# -- configuration ------------------------------------------------------------------------


def test_no_variables_configure_no_destination():
    destinations = AlertDestinations.from_env({})
    assert destinations == AlertDestinations()
    assert not destinations.configured
    assert AlertDestinations.from_env({"TRADING_ALERT_URLS": "  "}) == AlertDestinations()


def test_urls_are_split_on_commas_and_spaces_keeping_a_query_list():
    text = ("https://hooks.slack.com" + SECRET_PATH + ", mailtos://bot:" + PASSWORD + "@mail.example.com"
            "?to=ops@example.com,pm@example.com\n  tgram://123456789:AAbbCC/12315544 jsons://example.com/hook")
    destinations = AlertDestinations.from_env({"TRADING_ALERT_URLS": text}, timeout=2)
    assert destinations.urls == (
        "https://hooks.slack.com" + SECRET_PATH,
        "mailtos://bot:" + PASSWORD + "@mail.example.com?to=ops@example.com,pm@example.com",
        "tgram://123456789:AAbbCC/12315544", "jsons://example.com/hook",
    )
    assert destinations.timeout == 2 and destinations.configured
    assert parse_urls("json://a.example.com/x json://a.example.com/x") == ("json://a.example.com/x",)


def test_a_url_apprise_cannot_use_is_refused_by_position_and_masked():
    text = "json://example.com/ok, foo://user:" + PASSWORD + "@example.com" + SECRET_PATH
    with pytest.raises(AlertConfigError, match=r"TRADING_ALERT_URLS: URL 2 of 2 \(foo://example.com/…\)") as err:
        AlertDestinations.from_env({"TRADING_ALERT_URLS": text})
    _no_secret_in(str(err.value))


@pytest.mark.parametrize("name, instead", [
    ("TRADING_ALERT_SLACK_WEBHOOK", "https://hooks.slack.com/services/"),
    ("TRADING_ALERT_WEBHOOK", "json://host/path"),
    ("TRADING_ALERT_SMTP_HOST", "mailto://user:$PASSWORD@host:port"),
    ("TRADING_ALERT_SMTP_PASSWORD", "mailto://"),
    ("TRADING_ALERT_URL", "an apprise URL"),  # a typo of TRADING_ALERT_URLS is refused too
])
def test_retired_variables_fail_closed_in_one_line(name, instead):
    env = {name: "https://hooks.slack.com" + SECRET_PATH, "TRADING_ALERT_URLS": "json://127.0.0.1/x"}
    with pytest.raises(AlertConfigError) as err:
        AlertDestinations.from_env(env)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{name} is no longer read")
    assert instead in message and "TRADING_ALERT_URLS" in message
    _no_secret_in(message)


def test_repr_and_mask_hide_secrets():
    urls = ("json://user:" + PASSWORD + "@alerts.example.com:8443" + SECRET_PATH + "?token=qwerty123",
            "slack://T1JJ3T3L2s3cr3t/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#ops",
            "tgram://123456789:s3cr3tbot/12315544", "https://hooks.slack.com" + SECRET_PATH)
    destinations = AlertDestinations(urls=urls)
    shown = repr(destinations)
    _no_secret_in(shown)
    assert "TIiajk" not in shown and "123456789" not in shown
    assert destinations.targets == ("json://alerts.example.com:8443/…", "slack://…", "tgram://…",
                                    "https://hooks.slack.com/…")
    assert mask_url("not a url") == "<invalid url>"


# -- delivery to live local servers --------------------------------------------------------


def test_json_webhook_receives_the_alert_fields(http_server):
    server, base = http_server
    results = deliver(ALERT, AlertDestinations(urls=(f"json://{base}{SECRET_PATH}",)))
    assert [(r.destination, r.target, r.ok) for r in results] == [("JSON", f"json://{base}/…", True)]
    [(path, kind, body)] = server.requests
    assert (path, kind) == (SECRET_PATH, "application/json")
    assert body == {"version": "1.0", "title": TITLE, "message": BODY, "attachments": [], "type": "failure"}


def test_form_webhook_receives_the_alert_and_a_warn_is_a_warning(http_server):
    server, base = http_server
    warn = {**ALERT, "severity": "WARN", "subject": None}
    [result] = deliver(warn, AlertDestinations(urls=(f"form://{base}/form",)))
    assert result.ok
    [(path, kind, body)] = server.requests
    assert (path, kind) == ("/form", "application/x-www-form-urlencoded")
    assert (body["title"], body["type"]) == ("[WARN] asset_check", "warning")
    assert body["message"].startswith("asset check clean_bars:bars_complete failed in run abc\n\nkind: asset_check\n")


def test_email_reaches_every_recipient_with_subject_and_body(smtp_server):
    results = deliver(ALERT, AlertDestinations(urls=(_mailto(smtp_server.port),)))
    assert [(r.destination, r.target, r.ok) for r in results] == [("E-Mail", f"mailto://127.0.0.1:{smtp_server.port}/…",
                                                                   True)]
    assert sorted(rcpt for _, rcpts, _ in smtp_server.messages for rcpt in rcpts) == ["<ops@example.com>",
                                                                                    "<pm@example.com>"]
    for sender, _, data in smtp_server.messages:
        assert sender == "<pipeline@example.com>"
        msg = email.message_from_bytes(data.replace(b"\r\n", b"\n"), policy=email.policy.default)  # wire form is CRLF
        assert msg["Subject"] == TITLE
        text = msg.get_body(("plain",)).get_content()
        assert text.startswith("asset check clean_bars:bars_complete failed in run abc\n")
        assert "dedupe_key: check:x:abc" in text


def test_http_error_status_is_a_failed_result(http_server):
    _, base = http_server
    [result] = deliver(ALERT, AlertDestinations(urls=(f"json://{base}/fail",)))
    assert not result.ok and "error=500" in result.error and result.error.startswith(f"JSON to json://{base}/…: ")


def test_refused_destination_fails_and_the_others_still_receive(http_server, smtp_server, closed_port):
    server, base = http_server
    destinations = AlertDestinations(urls=(f"json://127.0.0.1:{closed_port}{SECRET_PATH}", f"json://{base}/hook",
                                           _mailto(smtp_server.port, to="ops@example.com")), timeout=1)
    refused, hook, mail = deliver(ALERT, destinations)
    assert not refused.ok and "Connection error" in refused.error
    assert refused.target == f"json://127.0.0.1:{closed_port}/…"
    assert hook.ok and mail.ok
    assert [path for path, _, _ in server.requests] == ["/hook"] and len(smtp_server.messages) == 1


def test_silent_servers_fail_within_the_timeout_and_the_others_still_receive(http_server, smtp_server, hanging_port):
    server, base = http_server
    hanging = AlertDestinations(urls=(f"json://127.0.0.1:{hanging_port}/hook", _mailto(hanging_port),
                                      f"json://{base}/hook", _mailto(smtp_server.port, to="ops@example.com")),
                                timeout=1)
    assert [r.ok for r in deliver(ALERT, hanging)] == [False, False, True, True]
    assert len(server.requests) == 1 and len(smtp_server.messages) == 1


def test_secrets_never_appear_in_failures(http_server, closed_port, smtp_server):
    _, base = http_server
    destinations = AlertDestinations(urls=(
        f"json://127.0.0.1:{closed_port}{SECRET_PATH}",
        f"json://{base}/fail{SECRET_PATH}?token=qwerty123",
        _mailto(closed_port, auth=f"bot:{PASSWORD}@"),
        _mailto(smtp_server.port, auth=f"bot:{PASSWORD}@"),  # the responder offers no AUTH: login fails
        f"slack://s3cr3t{PASSWORD}",                          # one token where Slack needs three: config
    ), timeout=1)
    results = deliver(ALERT, destinations)
    assert [r.ok for r in results] == [False] * 5
    assert results[-1].destination == "config" and "URL 5 of 5 (slack://…)" in results[-1].error
    for result in results:
        _no_secret_in(result.error + result.target)


def test_malformed_alert_raises_before_any_network_attempt(monkeypatch):
    def no_network(*args, **kwargs):
        pytest.fail("a network connection was attempted")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(ValueError, match="message"):
        deliver({"kind": "k", "severity": "ERROR"}, AlertDestinations(urls=("json://127.0.0.1:9/x",)))


# -- notify: ledger plus delivery -----------------------------------------------------------


def test_same_dedupe_key_is_delivered_once(tmp_path, http_server, smtp_server):
    server, base = http_server
    ledger = _ledger(tmp_path)
    destinations = AlertDestinations(urls=(f"json://{base}/slack", f"json://{base}/hook", _mailto(smtp_server.port)),
                                     timeout=1)
    fields = {"kind": "run_failure", "severity": "ERROR", "subject": "run abc", "message": "run failed",
              "dedupe_key": "run:abc"}
    first = notify(ledger, **fields, destinations=destinations)
    second = notify(ledger, **fields, destinations=destinations)
    assert first.added and [r.ok for r in first.results] == [True, True, True]
    assert not second.added and second.results == []
    assert sorted(path for path, _, _ in server.requests) == ["/hook", "/slack"]
    assert len(smtp_server.messages) == 2  # apprise mails each recipient separately
    assert len(ledger.alerts()) == 1
    hook_body = next(body for path, _, body in server.requests if path == "/hook")
    created = hook_body["message"].split("created_at: ")[1].split("\n")[0]
    assert dt.datetime.fromisoformat(created).tzinfo is not None


def test_without_variables_notify_only_stores_the_alert(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        pytest.fail("a network connection was attempted")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    ledger = _ledger(tmp_path)
    outcome = notify(ledger, "quality", "WARN", "ES", "stale bars", dedupe_key="q:ES")
    assert outcome.added and outcome.results == []
    assert list(ledger.alerts()["kind"]) == ["quality"]


class _RootLog(logging.Handler):
    """Every record that reaches the application's handlers (the root logger), at DEBUG."""

    def __enter__(self):
        self.lines, root = [], logging.getLogger()
        self.level_before = root.level
        root.addHandler(self)
        root.setLevel(logging.DEBUG)
        return self

    def __exit__(self, *exc):
        logging.getLogger().removeHandler(self)
        logging.getLogger().setLevel(self.level_before)

    def emit(self, record):
        self.lines.append(f"{record.name}: {record.getMessage()}")


def test_failed_delivery_is_recorded_masked_and_no_secret_reaches_table_or_log(tmp_path, http_server, closed_port,
                                                                               monkeypatch):
    server, base = http_server
    monkeypatch.setenv("TRADING_ALERT_URLS", f"json://127.0.0.1:{closed_port}{SECRET_PATH}?token=qwerty123, "
                                             f"json://{base}/hook foo://bot:{PASSWORD}@127.0.0.1/x")
    ledger = _ledger(tmp_path)
    with _RootLog() as log:
        outcome = notify(ledger, "run_failure", "ERROR", "run abc", "run failed", dedupe_key="run:abc")
    # An unusable URL fails the whole configuration closed: nothing is sent, the alert is stored.
    [failure] = outcome.failures
    assert failure.destination == "config" and "URL 3 of 3" in failure.error and server.requests == []

    monkeypatch.setenv("TRADING_ALERT_URLS", f"json://127.0.0.1:{closed_port}{SECRET_PATH}?token=qwerty123, "
                                             f"json://{base}/hook")
    with _RootLog() as log2:
        outcome = notify(ledger, "run_failure", "ERROR", "run def", "run failed", dedupe_key="run:def")
    assert [(r.destination, r.ok) for r in outcome.results] == [("JSON", False), ("JSON", True)]
    assert [path for path, _, _ in server.requests] == ["/hook"]  # the delivery-failure row itself is not delivered
    alerts = ledger.alerts()
    assert list(alerts["kind"]) == ["run_failure", "alert_delivery", "run_failure", "alert_delivery"]
    row = alerts.iloc[3]
    assert (row["severity"], row["subject"], row["dedupe_key"]) == ("WARN", "run:def", "delivery:run:def")
    assert row["message"].startswith("alert '[ERROR] run_failure: run def' not delivered: ")
    assert f"json://127.0.0.1:{closed_port}/…" in row["message"]
    _no_secret_in(alerts.astype(str).to_csv())
    # apprise's own records (one quotes the unusable URL's path) stay out of the application's log;
    # the HTTP client's DEBUG lines do reach it, so this handler does see the deliveries.
    lines = "\n".join(log.lines + log2.lines)
    assert f"Starting new HTTP connection (1): 127.0.0.1:{closed_port}" in lines
    _no_secret_in(lines)


def test_a_retired_variable_stores_the_alert_and_delivers_nowhere(tmp_path, http_server, monkeypatch):
    server, base = http_server
    monkeypatch.setenv("TRADING_ALERT_SLACK_WEBHOOK", "https://hooks.slack.com" + SECRET_PATH)
    monkeypatch.setenv("TRADING_ALERT_URLS", f"json://{base}/hook")
    ledger = _ledger(tmp_path)
    outcome = notify(ledger, "quality", "WARN", "ES", "stale bars", dedupe_key="q:ES")
    assert outcome.added and server.requests == []
    [failure] = outcome.failures
    assert failure.destination == "config" and "TRADING_ALERT_SLACK_WEBHOOK is no longer read" in failure.error
    alerts = ledger.alerts()
    assert list(alerts["kind"]) == ["quality", "alert_delivery"]
    assert "put the same https://hooks.slack.com/services/… URL in TRADING_ALERT_URLS" in alerts["message"].iloc[1]
    _no_secret_in(alerts.astype(str).to_csv())


def test_a_pre_trade_denial_reaches_the_webhook_once(tmp_path, http_server, monkeypatch):
    from pipeline.config import CostModel, RiskLimits
    from pipeline.execution import execute_orders
    from pipeline.execution.paper_broker import PaperBroker
    from pipeline.trading import TradingState

    server, base = http_server
    monkeypatch.setenv("TRADING_ALERT_URLS", f"json://{base}/hook")
    ledger = _ledger(tmp_path)
    ledger.set_trading_state(TradingState.HALTED, reason="test", changed_by="test")
    broker = PaperBroker(ledger, costs={"AAA": CostModel()}, point_sizes={"AAA": 1.0})
    for _ in range(2):  # a re-run denies again but alerts once
        execute_orders(pd.Series({"AAA": 10.0}), pd.Series({"AAA": 100.0}), "2024-03-08", ledger=ledger,
                       broker=broker, limits=RiskLimits(), point_sizes={"AAA": 1.0}, strategy="carver",
                       submit=True, run_id="r")
    (request,) = server.requests
    assert request[2]["title"].endswith("] order_denied: carver:2024-03-08:AAA:1")
    assert "kill_switch" in request[2]["message"]
