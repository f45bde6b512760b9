"""Settings: flags over environment over defaults, and every bad value named."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from nsq_worker import settings as s
from nsq_worker.settings import Settings, SettingsError, parse

# The operator and local mode set exactly these names.
CONTRACT = [
    "NSQ_TOPIC", "NSQ_CHANNEL", "NSQD_TCP_ADDRESS", "NSQ_MAX_IN_FLIGHT", "NSQ_CONCURRENCY",
    "NSQ_MAX_ATTEMPTS", "NSQ_REQUEUE_DELAY", "NSQ_BACKOFF_CAP", "NSQ_MSG_TIMEOUT", "NSQ_HEARTBEAT_INTERVAL",
    "NSQ_TOUCH", "NSQ_TLS", "NSQ_TLS_CA_FILE", "NSQ_TLS_CERT_FILE", "NSQ_TLS_KEY_FILE", "NSQ_TLS_VERIFY",
    "NSQ_AUTH_SECRET",
    "NSQ_AUTH_SECRET_FILE", "NSQ_COMPRESSION", "NSQ_USER_AGENT", "NSQ_HEALTH_PORT", "NSQ_HEALTH_HOST",
    "NSQ_DRAIN_TIMEOUT", "NSQ_DEAD_LETTER_TOPIC", "NSQ_LOG_FORMAT", "NSQ_LOG_LEVEL", "NSQ_LOG_BODY_PREVIEW",
    "NSQ_DEDUP_WINDOW", "NSQ_MAX_MSG_SIZE",
    "NSQ_WORKER_CLASS",
]  # fmt: skip
BASE_ENV = {"NSQ_TOPIC": "orders", "NSQ_CHANNEL": "billing", "NSQD_TCP_ADDRESS": "10.0.0.1:4150"}


def settings_of(
    argv: list[str] | None = None, env: dict[str, str] | None = None, **kwargs: object
) -> Settings:
    result, _ = parse(argv or [], {**BASE_ENV, **(env or {})}, stderr_is_tty=False, **kwargs)  # type: ignore[arg-type]
    return result


def test_the_environment_contract_is_read_exactly() -> None:
    assert sorted(s.env_names()) == sorted(CONTRACT)


def test_defaults() -> None:
    got = settings_of()
    assert got == Settings(topic="orders", channel="billing", nsqd_tcp_address="10.0.0.1:4150")
    assert (got.nsqd_host, got.nsqd_port) == ("10.0.0.1", 4150)
    assert (got.tls_verify, got.touch, got.tls) == (True, True, False)
    assert (got.health_host, got.health_port, got.drain_timeout) == ("0.0.0.0", 8080, 25.0)
    assert got.log_format == "json"
    assert got.log_body_preview == 0  # no message body in any log line unless asked for


@pytest.fixture
def pem(tmp_path: Path) -> Path:
    """A self-signed certificate (cert.pem, key.pem) that also serves as the CA (ca.pem)."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", "key.pem", "-out", "cert.pem", "-days", "1", "-subj", "/CN=test"],
        cwd=tmp_path, check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    (tmp_path / "ca.pem").write_bytes((tmp_path / "cert.pem").read_bytes())
    return tmp_path


def test_every_setting_from_the_environment(pem: Path) -> None:
    tmp_path = pem
    env = {
        "NSQ_MAX_IN_FLIGHT": "2500", "NSQ_CONCURRENCY": "8", "NSQ_MAX_ATTEMPTS": "0",
        "NSQ_REQUEUE_DELAY": "250ms", "NSQ_BACKOFF_CAP": "2m", "NSQ_MSG_TIMEOUT": "90",
        "NSQ_HEARTBEAT_INTERVAL": "5s", "NSQ_TOUCH": "false", "NSQ_TLS": "true",
        "NSQ_TLS_CA_FILE": str(tmp_path / "ca.pem"), "NSQ_TLS_CERT_FILE": str(tmp_path / "cert.pem"),
        "NSQ_TLS_KEY_FILE": str(tmp_path / "key.pem"), "NSQ_TLS_VERIFY": "no", "NSQ_AUTH_SECRET": "s3cret",
        "NSQ_COMPRESSION": "Deflate", "NSQ_USER_AGENT": "billing/2", "NSQ_HEALTH_PORT": "0",
        "NSQ_HEALTH_HOST": "127.0.0.1", "NSQ_DRAIN_TIMEOUT": "10", "NSQ_DEAD_LETTER_TOPIC": "orders-dead",
        "NSQ_LOG_FORMAT": "text", "NSQ_LOG_LEVEL": "debug", "NSQ_LOG_BODY_PREVIEW": "64",
    }  # fmt: skip
    got = settings_of(env=env)
    assert (got.max_in_flight, got.concurrency, got.max_attempts) == (2500, 8, 0)
    assert (got.requeue_delay, got.backoff_cap, got.msg_timeout, got.heartbeat_interval) == (
        0.25,
        120.0,
        90.0,
        5.0,
    )
    assert (got.touch, got.tls, got.tls_verify) == (False, True, False)
    assert got.tls_ca_file == str(tmp_path / "ca.pem")
    assert (got.auth_secret, got.compression, got.user_agent) == ("s3cret", "deflate", "billing/2")
    assert (got.health_port, got.health_host, got.drain_timeout) == (0, "127.0.0.1", 10.0)
    assert (got.dead_letter_topic, got.log_format, got.log_level) == ("orders-dead", "text", "DEBUG")
    assert got.log_body_preview == 64
    assert "s3cret" not in repr(got)


def test_flags_win_over_the_environment() -> None:
    got = settings_of(
        ["--max-in-flight", "7", "--topic=other", "--touch=false", "--tls-verify", "--tls"],
        {"NSQ_MAX_IN_FLIGHT": "9", "NSQ_TOUCH": "true", "NSQ_TLS_VERIFY": "false"},
    )
    assert (got.max_in_flight, got.topic, got.touch, got.tls_verify, got.tls) == (
        7,
        "other",
        False,
        True,
        True,
    )


def test_empty_variables_count_as_unset() -> None:
    assert settings_of(env={"NSQ_DEAD_LETTER_TOPIC": "", "NSQ_MAX_IN_FLIGHT": ""}).max_in_flight == 200


def test_the_gnsq_mp_positional_form() -> None:
    got, cls = parse(["topic_a", "127.0.0.1:4150", "chan#ephemeral"], {})
    assert (got.topic, got.nsqd_tcp_address, got.channel, cls) == (
        "topic_a",
        "127.0.0.1:4150",
        "chan#ephemeral",
        None,
    )


def test_the_console_form_takes_a_class_first_or_from_the_environment() -> None:
    _, cls = parse(["pkg.mod:Worker", "t", "h:1", "c"], {}, console=True)
    assert cls == "pkg.mod:Worker"
    _, cls = parse([], {**BASE_ENV, "NSQ_WORKER_CLASS": "a:B"}, console=True)
    assert cls == "a:B"
    with pytest.raises(SettingsError, match="NSQ_WORKER_CLASS"):
        parse([], BASE_ENV, console=True)


@pytest.mark.parametrize(
    ("argv", "env", "named"),
    [
        ([], {"NSQ_MAX_IN_FLIGHT": "lots"}, "NSQ_MAX_IN_FLIGHT"),
        (["--concurrency", "0"], {}, "--concurrency"),
        ([], {"NSQ_MAX_ATTEMPTS": "-1"}, "NSQ_MAX_ATTEMPTS"),
        ([], {"NSQ_REQUEUE_DELAY": "soon"}, "NSQ_REQUEUE_DELAY"),
        ([], {"NSQ_BACKOFF_CAP": "-2"}, "NSQ_BACKOFF_CAP"),
        ([], {"NSQ_MSG_TIMEOUT": "0.5"}, "NSQ_MSG_TIMEOUT"),
        ([], {"NSQ_HEARTBEAT_INTERVAL": "0"}, "NSQ_HEARTBEAT_INTERVAL"),
        ([], {"NSQ_TOUCH": "maybe"}, "NSQ_TOUCH"),
        ([], {"NSQ_TLS_CA_FILE": "/no/such/file"}, "NSQ_TLS_CA_FILE"),
        ([], {"NSQ_COMPRESSION": "zstd"}, "NSQ_COMPRESSION"),
        ([], {"NSQ_HEALTH_PORT": "70000"}, "NSQ_HEALTH_PORT"),
        ([], {"NSQ_DRAIN_TIMEOUT": "forever"}, "NSQ_DRAIN_TIMEOUT"),
        ([], {"NSQ_DEAD_LETTER_TOPIC": "bad topic!"}, "NSQ_DEAD_LETTER_TOPIC"),
        ([], {"NSQ_LOG_FORMAT": "xml"}, "NSQ_LOG_FORMAT"),
        ([], {"NSQ_LOG_LEVEL": "loud"}, "NSQ_LOG_LEVEL"),
        ([], {"NSQ_LOG_BODY_PREVIEW": "-1"}, "NSQ_LOG_BODY_PREVIEW"),
        (["--log-body-preview", "all"], {}, "--log-body-preview"),
        ([], {"NSQ_TOPIC": "a" * 65}, "NSQ_TOPIC"),
        ([], {"NSQD_TCP_ADDRESS": "nohost"}, "NSQD_TCP_ADDRESS"),
        ([], {"NSQD_TCP_ADDRESS": "h:0"}, "NSQD_TCP_ADDRESS"),
        (["--auth-secret=hunter2"], {}, "NSQ_AUTH_SECRET"),
        (["t", "h:1"], {}, "positional"),
        (["t", "h:1", "c"], {}, "--topic / NSQ_TOPIC: given both"),
    ],
)
def test_bad_values_name_the_setting(argv: list[str], env: dict[str, str], named: str) -> None:
    if argv[:1] == ["t"] and len(argv) == 3:
        argv = [*argv, "--topic", "x"]
    with pytest.raises(SettingsError, match=named.replace("/", ".")):
        settings_of(argv, env)


def test_required_settings() -> None:
    with pytest.raises(SettingsError, match="NSQ_CHANNEL: required"):
        parse([], {"NSQ_TOPIC": "t", "NSQD_TCP_ADDRESS": "h:1"})


def test_tls_files_need_tls_and_a_cert_needs_its_key(tmp_path: Path) -> None:
    path = tmp_path / "f.pem"
    path.write_text("x")
    with pytest.raises(SettingsError, match="NSQ_TLS=true"):
        settings_of(env={"NSQ_TLS_CA_FILE": str(path)})
    with pytest.raises(SettingsError, match="both cert and key"):
        settings_of(env={"NSQ_TLS": "1", "NSQ_TLS_CERT_FILE": str(path)})


def test_tls_files_must_load(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(SettingsError, match="NSQ_TLS_CA_FILE: not a usable CA bundle"):
        settings_of(env={"NSQ_TLS": "true", "NSQ_TLS_CA_FILE": str(junk)})
    with pytest.raises(SettingsError, match=r"NSQ_TLS_CERT_FILE and .*NSQ_TLS_KEY_FILE"):
        settings_of(env={"NSQ_TLS": "true", "NSQ_TLS_CERT_FILE": str(junk), "NSQ_TLS_KEY_FILE": str(junk)})


def test_auth_secret_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text("from-a-file\n")
    assert settings_of(env={"NSQ_AUTH_SECRET_FILE": str(path)}).auth_secret == "from-a-file"
    with pytest.raises(SettingsError, match="only one"):
        settings_of(env={"NSQ_AUTH_SECRET_FILE": str(path), "NSQ_AUTH_SECRET": "x"})
    path.write_text("\n")
    with pytest.raises(SettingsError, match="empty"):
        settings_of(env={"NSQ_AUTH_SECRET_FILE": str(path)})


def test_log_format_follows_the_terminal() -> None:
    assert parse([], BASE_ENV, stderr_is_tty=True)[0].log_format == "text"
    assert parse([], BASE_ENV, stderr_is_tty=False)[0].log_format == "json"


def test_help_documents_every_flag_and_variable() -> None:
    text = s.build_parser("nsq-worker", console=True).format_help()
    for option in s.OPTIONS:
        assert option.env in text
        if option.flag:
            assert option.flag in text
    assert "NSQ_WORKER_CLASS" in text
    assert "[env NSQ_TOPIC; default required]" in text
    assert "[env NSQ_MAX_IN_FLIGHT; default 200]" in " ".join(text.split())
    assert "MISSING" not in text
    assert "--auth-secret " not in text  # there is no flag for the secret itself


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("1.5", 1.5), ("1500ms", 1.5), ("2s", 2.0), ("5m", 300.0), ("1h", 3600.0), (" 3 ", 3.0)],
)
def test_durations(raw: str, seconds: float) -> None:
    assert s.parse_duration(raw) == seconds


def test_addresses() -> None:
    assert s.split_address("[::1]:4150") == ("::1", 4150)
    assert s.split_address("nsqd-0.nsqd:4150") == ("nsqd-0.nsqd", 4150)
    with pytest.raises(ValueError, match="host:port"):
        s.split_address(":4150")
