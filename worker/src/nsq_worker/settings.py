"""Every worker setting: one table gives its flag, environment variable, default and check.

The operator and the local backend set environment variables; people at a shell use flags; flags
win. A bad value stops the worker with exit status 2 and a message that names the setting, before
anything connects. The AUTH secret has no flag on purpose: command lines are visible to every user
of the machine (`ps`), environment variables and files are not.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import re
import socket
import ssl
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Literal

from nsq_worker import __version__

Compression = Literal["none", "snappy", "deflate"]
LogFormat = Literal["json", "text"]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_NAME_RE = re.compile(r"^[.a-zA-Z0-9_-]+(#ephemeral)?$")
DEFAULT_USER_AGENT = f"nsq-worker/{__version__}"


class SettingsError(ValueError):
    """A setting has a bad value; the message names the flag and the environment variable."""


@dataclass(frozen=True)
class Settings:
    """The validated configuration of one worker process (one topic/channel on one nsqd)."""

    topic: str
    channel: str
    nsqd_tcp_address: str
    max_in_flight: int = 200
    concurrency: int = 200
    max_attempts: int = 5
    requeue_delay: float = 1.0
    backoff_cap: float = 60.0
    msg_timeout: float = 0.0
    heartbeat_interval: float = 30.0
    touch: bool = True
    tls: bool = False
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_verify: bool = True
    auth_secret: str | None = field(default=None, repr=False)
    compression: Compression = "none"
    user_agent: str = DEFAULT_USER_AGENT
    health_host: str = "0.0.0.0"  # a pod's probes and scrapes come from outside it
    health_port: int = 8080
    drain_timeout: float = 25.0
    dead_letter_topic: str | None = None
    log_format: LogFormat = "json"
    log_level: str = "INFO"
    log_body_preview: int = 0  # bytes of a given-up body in the give-up log line; 0: none
    dedup_window: int = 0  # message ids finished here that a redelivery is checked against; 0: off
    max_msg_size: int = 1024 * 1024  # nsqd's --max-msg-size: larger frames are a corrupt stream

    @property
    def nsqd_host(self) -> str:
        return split_address(self.nsqd_tcp_address)[0]

    @property
    def nsqd_port(self) -> int:
        return split_address(self.nsqd_tcp_address)[1]


# ---------------------------------------------------------------------------------------------
# Value parsers: each raises ValueError with a short reason; the caller adds the setting's name.


def parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{raw!r} is not true or false")


def parse_int(raw: str) -> int:
    try:
        return int(raw.strip())
    except ValueError:
        raise ValueError(f"{raw!r} is not an integer") from None


_DURATION_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(raw: str) -> float:
    """Seconds: `1.5`, `1500ms`, `2s`, `5m`, `1h`."""
    match = _DURATION_RE.match(raw)
    if not match:
        raise ValueError(f"{raw!r} is not a duration (seconds, or a number with ms, s, m or h)")
    value = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not math.isfinite(value):
        raise ValueError(f"{raw!r} is not a finite duration")
    return value


def valid_name(name: str) -> bool:
    """nsqd's rule for topic and channel names."""
    return 0 < len(name) < 65 and bool(_NAME_RE.fullmatch(name))


def split_address(address: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` into (host, port)."""
    host, sep, port_text = address.strip().rpartition(":")
    if not sep or not host:
        raise ValueError(f"{address!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = parse_int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range")
    return host, port


def _name(raw: str) -> str:
    if not valid_name(raw):
        raise ValueError(f"{raw!r} is not a valid NSQ name (1-64 of [.a-zA-Z0-9_-], optional #ephemeral)")
    return raw


def _address(raw: str) -> str:
    split_address(raw)
    return raw.strip()


def _file(raw: str) -> str:
    if not os.path.isfile(raw):
        raise ValueError(f"{raw!r} is not a readable file")
    return raw


def _choice(*choices: str, fold: Callable[[str], str] = str.lower) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = fold(raw.strip())
        if value not in choices:
            raise ValueError(f"{raw!r} is not one of {', '.join(choices)}")
        return value

    return parse


def _at_least(parse: Callable[[str], Any], low: float, high: float | None = None) -> Callable[[str], Any]:
    def checked(raw: str) -> Any:
        value = parse(raw)
        if value < low or (high is not None and value > high):
            bound = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
            raise ValueError(f"{raw!r} must be {bound}")
        return value

    return checked


def _text(raw: str) -> str:
    return raw


# ---------------------------------------------------------------------------------------------
# The table.


@dataclass(frozen=True)
class Option:
    """One setting: where it comes from, how it is checked, what --help says."""

    name: str
    env: str
    flag: str | None
    parse: Callable[[str], Any]
    help: str
    metavar: str = "VALUE"
    is_bool: bool = False

    @property
    def label(self) -> str:
        return f"{self.flag} / {self.env}" if self.flag else self.env


_DEFAULTS = {f.name: f.default for f in fields(Settings)}

OPTIONS: tuple[Option, ...] = (
    Option("topic", "NSQ_TOPIC", "--topic", _name, "Topic to consume.", "TOPIC"),
    Option("channel", "NSQ_CHANNEL", "--channel", _name, "Channel to consume.", "CHANNEL"),
    Option(
        "nsqd_tcp_address",
        "NSQD_TCP_ADDRESS",
        "--nsqd-tcp-address",
        _address,
        "The one nsqd to consume from, host:port.",
        "HOST:PORT",
    ),
    Option(
        "max_in_flight",
        "NSQ_MAX_IN_FLIGHT",
        "--max-in-flight",
        _at_least(parse_int, 1, 1_000_000),
        "Messages nsqd may have in flight to this worker (the RDY count; nsqd caps it, 2500 by default).",
        "N",
    ),
    Option(
        "concurrency",
        "NSQ_CONCURRENCY",
        "--concurrency",
        _at_least(parse_int, 1, 100_000),
        "Handler calls running at once (greenlets in the pool).",
        "N",
    ),
    Option(
        "max_attempts",
        "NSQ_MAX_ATTEMPTS",
        "--max-attempts",
        _at_least(parse_int, 0, 65535),
        "Deliveries before a failing message goes to the give-up hook; 0 retries forever.",
        "N",
    ),
    Option(
        "requeue_delay",
        "NSQ_REQUEUE_DELAY",
        "--requeue-delay",
        _at_least(parse_duration, 0),
        "Seconds a failed message waits before its retry; doubles with each attempt.",
        "SECONDS",
    ),
    Option(
        "backoff_cap",
        "NSQ_BACKOFF_CAP",
        "--backoff-cap",
        _at_least(parse_duration, 0),
        "Longest requeue delay and longest consumer pause after failures; 0 turns the consumer "
        "pause off and keeps the requeue delay constant.",
        "SECONDS",
    ),
    Option(
        "msg_timeout",
        "NSQ_MSG_TIMEOUT",
        "--msg-timeout",
        _at_least(parse_duration, 0),
        "Seconds nsqd waits for a response before redelivering; 0 keeps nsqd's --msg-timeout.",
        "SECONDS",
    ),
    Option(
        "heartbeat_interval",
        "NSQ_HEARTBEAT_INTERVAL",
        "--heartbeat-interval",
        _at_least(parse_duration, 1, 3600),
        "Seconds between nsqd's heartbeats; /readyz fails after two are missed.",
        "SECONDS",
    ),
    Option(
        "touch",
        "NSQ_TOUCH",
        "--touch",
        parse_bool,
        "TOUCH messages whose handlers run long, so nsqd does not redeliver them.",
        "BOOL",
        True,
    ),
    Option("tls", "NSQ_TLS", "--tls", parse_bool, "Upgrade the connection to TLS.", "BOOL", True),
    Option(
        "tls_ca_file",
        "NSQ_TLS_CA_FILE",
        "--tls-ca-file",
        _file,
        "CA bundle that signed nsqd's certificate (default: the system's).",
        "PATH",
    ),
    Option(
        "tls_cert_file",
        "NSQ_TLS_CERT_FILE",
        "--tls-cert-file",
        _file,
        "Client certificate for nsqd's --tls-client-auth-policy.",
        "PATH",
    ),
    Option(
        "tls_key_file", "NSQ_TLS_KEY_FILE", "--tls-key-file", _file, "Key of the client certificate.", "PATH"
    ),
    Option(
        "tls_verify",
        "NSQ_TLS_VERIFY",
        "--tls-verify",
        parse_bool,
        "Verify nsqd's certificate and host name.",
        "BOOL",
        True,
    ),
    Option(
        "auth_secret",
        "NSQ_AUTH_SECRET",
        None,
        _text,
        "AUTH secret for nsqd's --auth-http-address (environment only, never a flag).",
    ),
    Option(
        "auth_secret_file",
        "NSQ_AUTH_SECRET_FILE",
        "--auth-secret-file",
        _file,
        "File holding the AUTH secret (e.g. a mounted Secret).",
        "PATH",
    ),
    Option(
        "compression",
        "NSQ_COMPRESSION",
        "--compression",
        _choice("none", "snappy", "deflate"),
        "Stream compression: none, snappy (needs python-snappy) or deflate.",
        "KIND",
    ),
    Option("user_agent", "NSQ_USER_AGENT", "--user-agent", _text, "User agent nsqd shows for this client."),
    Option(
        "health_host",
        "NSQ_HEALTH_HOST",
        "--health-host",
        _text,
        "Address of the health/metrics server.",
        "HOST",
    ),
    Option(
        "health_port",
        "NSQ_HEALTH_PORT",
        "--health-port",
        _at_least(parse_int, 0, 65535),
        "Port of /healthz, /readyz and /metrics; 0 turns the server off.",
        "PORT",
    ),
    Option(
        "drain_timeout",
        "NSQ_DRAIN_TIMEOUT",
        "--drain-timeout",
        _at_least(parse_duration, 0),
        "On SIGTERM/SIGINT, seconds running handlers get to finish before the rest is requeued.",
        "SECONDS",
    ),
    Option(
        "dead_letter_topic",
        "NSQ_DEAD_LETTER_TOPIC",
        "--dead-letter-topic",
        _name,
        "Topic (same nsqd) that the default give-up hook publishes given-up bodies to.",
        "TOPIC",
    ),
    Option(
        "log_format",
        "NSQ_LOG_FORMAT",
        "--log-format",
        _choice("json", "text"),
        "json (one object per line) or text; default json unless stderr is a terminal.",
        "FORMAT",
    ),
    Option(
        "log_level",
        "NSQ_LOG_LEVEL",
        "--log-level",
        _choice(*LOG_LEVELS, fold=str.upper),
        "DEBUG, INFO, WARNING, ERROR or CRITICAL.",
        "LEVEL",
    ),
    Option(
        "log_body_preview",
        "NSQ_LOG_BODY_PREVIEW",
        "--log-body-preview",
        _at_least(parse_int, 0, 65536),
        "Bytes of a given-up message's body that the give-up log line shows; 0 shows none (bodies may "
        "hold personal data or secrets, and logs travel further than messages).",
        "BYTES",
    ),
    Option(
        "dedup_window",
        "NSQ_DEDUP_WINDOW",
        "--dedup-window",
        _at_least(parse_int, 0, 10_000_000),
        "Remember the ids of the last N messages this process finished and finish a redelivery of one "
        "without calling the handler (per process, best effort); 0 turns it off.",
        "N",
    ),
    Option(
        "max_msg_size",
        "NSQ_MAX_MSG_SIZE",
        "--max-msg-size",
        _at_least(parse_int, 1024, 1 << 30),
        "nsqd's --max-msg-size in bytes (nsqd does not announce it): a frame announcing a larger "
        "message closes the connection as corrupt, and nsqd redelivers what was in flight.",
        "BYTES",
    ),
)

WORKER_CLASS_ENV = "NSQ_WORKER_CLASS"
_BY_NAME = {option.name: option for option in OPTIONS}
_POSITIONAL_NAMES = ("topic", "nsqd_tcp_address", "channel")  # gnsq_mp: worker.py TOPIC NSQD_ADDR CHANNEL


def _default_text(option: Option) -> str:
    if option.name == "log_format":
        return "json, or text on a terminal"
    if option.name == "user_agent":
        return DEFAULT_USER_AGENT
    if option.name == "msg_timeout":
        return "0 (nsqd's)"
    default = _DEFAULTS.get(option.name)
    if default is MISSING:
        return "required"
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return str(default).lower()
    return str(default)


def build_parser(prog: str, console: bool) -> argparse.ArgumentParser:
    """The argparse parser; every value is kept as text and checked by `resolve`."""
    usage_positional = "[module:Class] " if console else ""
    parser = argparse.ArgumentParser(
        prog=prog,
        usage=f"%(prog)s [-h] {usage_positional}[TOPIC NSQD_TCP_ADDRESS CHANNEL] [options]",
        description=(
            "Consume one NSQ topic/channel from exactly one nsqd with an NsqProcessWorker subclass. "
            "Every option also comes from the environment variable shown; a flag wins over its variable."
        ),
        epilog=_epilog(console),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument(
        "positional", nargs="*", metavar="ARG",
        help=(
            ("module:Class of the worker (or NSQ_WORKER_CLASS), then " if console else "")
            + "optionally the gnsq_mp form TOPIC NSQD_TCP_ADDRESS CHANNEL."
        ),
    )  # fmt: skip
    parser.add_argument("--version", action="version", version=f"nsq-worker {__version__}")
    for option in OPTIONS:
        if option.flag is None:
            continue
        kwargs: dict[str, Any] = {
            "dest": option.name,
            "metavar": option.metavar,
            "default": None,
            "help": f"{option.help} [env {option.env}; default {_default_text(option)}]".replace("%", "%%"),
        }
        if option.is_bool:
            kwargs.update(nargs="?", const="true")
        parser.add_argument(option.flag, **kwargs)
    return parser


def _epilog(console: bool) -> str:
    lines = ["environment only:"]
    lines.append(f"  NSQ_AUTH_SECRET       {_BY_NAME['auth_secret'].help}")
    lines.append(
        f"  {WORKER_CLASS_ENV}      module:Class to run when no positional class is given"
        + ("" if console else " (nsq-worker console script only)")
    )
    lines.append("")
    lines.append("every environment variable:")
    lines.append("  " + " ".join([*(option.env for option in OPTIONS), WORKER_CLASS_ENV]))
    lines.append("")
    lines.append("Durations are seconds, or a number with ms, s, m or h. Booleans are true/false.")
    lines.append("Exit status: 0 after a clean shutdown, 2 for a bad setting, 1 for anything else.")
    return "\n".join(lines)


def _parse_args(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    for arg in argv:
        if arg == "--auth-secret" or arg.startswith("--auth-secret="):
            raise SettingsError(
                "--auth-secret: the AUTH secret is never taken from the command line (other users can "
                "read it there); set NSQ_AUTH_SECRET or NSQ_AUTH_SECRET_FILE"
            )
    return parser.parse_args(list(argv))


def parse(
    argv: Sequence[str],
    environ: Mapping[str, str],
    *,
    console: bool = False,
    prog: str = "nsq-worker",
    stderr_is_tty: bool | None = None,
) -> tuple[Settings, str | None]:
    """Settings from flags over environment over defaults, and the worker class spec (console form).

    argparse handles `--help` and unknown flags itself (SystemExit 0 or 2); every other problem is a
    SettingsError naming the setting.
    """
    namespace = _parse_args(build_parser(prog, console), argv)
    given: dict[str, str | None] = {option.name: getattr(namespace, option.name, None) for option in OPTIONS}

    worker_class, positional = _split_positional(list(namespace.positional), console)
    for name, value in zip(_POSITIONAL_NAMES, positional, strict=False):
        if given[name] is not None:
            raise SettingsError(f"{_BY_NAME[name].label}: given both as a flag and as a positional argument")
        given[name] = value
    if console and worker_class is None:
        worker_class = environ.get(WORKER_CLASS_ENV) or None
        if worker_class is None:
            raise SettingsError(
                f"worker class: give module:Class as the first argument or set {WORKER_CLASS_ENV}"
            )

    values: dict[str, Any] = {}
    for option in OPTIONS:
        raw = given[option.name]
        if raw is None:
            raw = environ.get(option.env) or None
        if raw is None:
            continue
        try:
            values[option.name] = option.parse(raw)
        except ValueError as error:
            raise SettingsError(f"{option.label}: {error}") from None

    return _assemble(values, stderr_is_tty), worker_class


def _split_positional(positional: list[str], console: bool) -> tuple[str | None, list[str]]:
    if console and len(positional) in (1, 4):
        return positional[0], positional[1:]
    if len(positional) in (0, 3):
        return None, positional
    expected = (
        "module:Class and/or TOPIC NSQD_TCP_ADDRESS CHANNEL" if console else "TOPIC NSQD_TCP_ADDRESS CHANNEL"
    )
    raise SettingsError(f"positional arguments: expected {expected}, got {positional!r}")


def _assemble(values: dict[str, Any], stderr_is_tty: bool | None) -> Settings:
    for name in ("topic", "channel", "nsqd_tcp_address"):
        if name not in values:
            raise SettingsError(f"{_BY_NAME[name].label}: required")

    if 0 < values.get("msg_timeout", 0) < 1:
        raise SettingsError(f"{_BY_NAME['msg_timeout'].label}: nsqd needs at least 1 second (or 0)")

    tls_files = [name for name in ("tls_ca_file", "tls_cert_file", "tls_key_file") if name in values]
    if tls_files and not values.get("tls", False):
        raise SettingsError(f"{_BY_NAME[tls_files[0]].label}: set, but TLS is off (set NSQ_TLS=true)")
    if ("tls_cert_file" in values) != ("tls_key_file" in values):
        raise SettingsError(f"{_BY_NAME['tls_key_file'].label}: a client certificate needs both cert and key")

    if values.get("tls"):
        _check_tls_files(values)

    secret_file = values.pop("auth_secret_file", None)
    if secret_file is not None:
        if "auth_secret" in values:
            raise SettingsError("NSQ_AUTH_SECRET / NSQ_AUTH_SECRET_FILE: set only one of them")
        try:
            with open(secret_file, encoding="utf-8") as handle:
                values["auth_secret"] = handle.read().strip()
        except OSError as error:
            raise SettingsError(f"{_BY_NAME['auth_secret_file'].label}: {error}") from None
        if not values["auth_secret"]:
            raise SettingsError(f"{_BY_NAME['auth_secret_file'].label}: the file is empty")

    if values.get("compression") == "snappy" and importlib.util.find_spec("snappy") is None:
        raise SettingsError(
            f"{_BY_NAME['compression'].label}: snappy needs the python-snappy package; "
            "install it or use deflate"
        )

    if "log_format" not in values:
        tty = sys.stderr.isatty() if stderr_is_tty is None else stderr_is_tty
        values["log_format"] = "text" if tty else "json"
    return Settings(**values)


def _check_tls_files(values: Mapping[str, Any]) -> None:
    """Load the CA and the client certificate once now, so a bad file is a setting error (exit 2)."""
    context = ssl.create_default_context()
    if "tls_ca_file" in values:
        try:
            context.load_verify_locations(cafile=values["tls_ca_file"])
        except (ssl.SSLError, OSError) as error:
            raise SettingsError(f"{_BY_NAME['tls_ca_file'].label}: not a usable CA bundle: {error}") from None
    if "tls_cert_file" in values:
        try:
            context.load_cert_chain(values["tls_cert_file"], values["tls_key_file"])
        except (ssl.SSLError, OSError) as error:
            label = f"{_BY_NAME['tls_cert_file'].label} and {_BY_NAME['tls_key_file'].label}"
            raise SettingsError(f"{label}: not a usable certificate and key: {error}") from None


def env_names() -> list[str]:
    """Every environment variable the worker reads (the operator's contract)."""
    return [*(option.env for option in OPTIONS), WORKER_CLASS_ENV]


def client_id() -> str:
    """What nsqd lists as this client: the pod's (or machine's) short host name."""
    return socket.gethostname().split(".")[0]
