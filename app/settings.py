"""Settings read from the environment, validated once, with errors that name the variable.

Every process type (web, workers, scheduler, CLI) reads the same variables through one
``Settings``, so a value that is wrong fails the same way everywhere and before any work
starts: in one line that names the variable, shows its value with its credentials hidden and says
what was expected. URLs that may carry credentials are ``SecretStr``: a repr or a log of the
settings shows ``**********`` in their place.

With ``REDIS_URL`` unset, the Redis is that of the ``fintask run`` running from the same var dir,
if one is: it keeps its pid and the URLs it chose in ``<var dir>/run.json`` (``RUN_FILE_NAME``),
so ``fintask queues`` in a second shell needs no setup. The file is read only if that pid is
alive: one left behind by a killed run is ignored, and its dead Redis never used. An explicit
``REDIS_URL`` always wins.
"""

from __future__ import annotations

import functools
import json
import os
import re
import socket
import sys
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, ParamSpec, TypeVar, get_args, get_origin
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

from annotated_types import Ge, Le
from pydantic import (
    BeforeValidator,
    Field,
    PlainSerializer,
    PlainValidator,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from app.blob_crypto import Keyring, KeyringError
from app.redis_urls import SENTINEL_SCHEMES, SentinelURLError, is_sentinel_url, parse_sentinel_url

PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: Process types of the Procfile that run Dramatiq workers, and so export Dramatiq's metrics.
WORKER_PROCESS_TYPES = ("worker", "worker_urgent")

#: The exit status of a process stopped by a bad setting: gunicorn's "App failed to load", the
#: one status (with 3) that makes its master stop instead of restarting the worker forever.
CONFIGURATION_ERROR_EXIT = 4

#: The file under the var dir where a running ``fintask run`` keeps its pid and the URLs it chose
#: (``app.local.run_file`` writes it; ``running_stack`` reads it).
RUN_FILE_NAME = "run.json"

#: Mails sent over one SMTP connection before it is renewed (``SMTP_MAX_SENDS``): relays cap a
#: connection's mails (Amazon SES and Exchange Online among them), and a bound spreads the load
#: of a long run. 1 opens a connection per mail.
SMTP_MAX_SENDS = 100
#: Seconds a kept SMTP connection may sit unused before it is renewed instead of reused
#: (``SMTP_MAX_IDLE_S``): below the idle timeouts of common relays, so a reused connection is
#: rarely one they dropped.
SMTP_MAX_IDLE_S = 30.0

#: The ``BROKER_URL`` schemes of RabbitMQ (``amqps``: over TLS, as Amazon MQ requires).
RABBITMQ_SCHEMES = ("amqp://", "amqps://")

#: A host name as ``FINTASK_HOSTNAME`` may give it (RFC 1123 labels, with ``_`` tolerated).
_HOSTNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,252}")

#: The schemes ``REDIS_URL`` may have: one Redis, or the sentinels that name its master.
REDIS_SCHEMES = ("redis", "rediss", "unix", *SENTINEL_SCHEMES)

#: The pydantic error type of fintask's own checks, whose message is already the reason.
_SETTING_ERROR = "setting"

P = ParamSpec("P")
R = TypeVar("R")


class SettingsError(ValueError):
    """An environment variable is missing or malformed; the message names it and says why."""


# --- BLOB_KEYS (#23): the keys raw blobs are encrypted with, app.blob_crypto ------------------
#: Why a worker will not start without BLOB_KEYS (``Settings.blob_keyring``).
MISSING_BLOB_KEYS = (
    "BLOB_KEYS is not set: raw provider data is kept encrypted under it; set "
    "BLOB_KEYS=ID:BASE64_KEY (`openssl rand -base64 32` makes a key), or run through "
    "`fintask run`, which makes a local one (kept in its var dir's blob-keys file)"
)


def _as_secret(value: object) -> object:
    """``BLOB_KEYS`` hidden before it is checked: an error shows its input, and must not."""
    return SecretStr(value) if isinstance(value, str) else value


def _keyring(value: object) -> Keyring:
    if not isinstance(value, SecretStr):
        raise _invalid("expected ID:BASE64_KEY[,ID:BASE64_KEY...]")
    try:
        return Keyring.parse(value.get_secret_value())
    except KeyringError as error:
        raise _invalid(str(error)) from None


BlobKeys = Annotated[
    Annotated[Keyring, PlainValidator(_keyring), PlainSerializer(repr, when_used="json")] | None,
    BeforeValidator(_as_secret),
]
# --- end BLOB_KEYS ----------------------------------------------------------------------------


class Settings(BaseSettings):
    """The validated configuration of one fintask process: one field per environment variable.

    Built by ``load_settings``, which passes the environment (the process's, or the one a test
    or ``fintask run`` gives) and turns a validation error into one ``SettingsError`` line.
    """

    model_config = SettingsConfigDict(
        case_sensitive=True,
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,
        validate_default=True,
    )

    redis_url_secret: SecretStr | None = Field(None, validation_alias="REDIS_URL")
    #: ``stub://`` (unit tests) or ``amqp[s]://USER:PASSWORD@HOST:PORT/VHOST`` (RabbitMQ); unset:
    #: Redis, at ``REDIS_URL``, which every broker needs for the control plane.
    broker_url_secret: SecretStr | None = Field(None, validation_alias="BROKER_URL")
    #: Durable enqueue (#21): how many replicas must hold a message before ``send`` returns.
    redis_wait_replicas: int = Field(0, ge=0, le=64, validation_alias="REDIS_WAIT_REPLICAS")
    redis_wait_timeout_ms: int = Field(
        1_000, ge=1, le=60_000, validation_alias="REDIS_WAIT_TIMEOUT_MS"
    )
    database_url_secret: SecretStr | None = Field(None, validation_alias="DATABASE_URL")
    var_dir: Path = Field(PROJECT_ROOT / "var", validation_alias="FINTASK_VAR_DIR")
    #: The Procfile process type, set by ``fintask process TYPE`` (``cli`` outside the Procfile).
    process_type: str = Field("cli", validation_alias="FINTASK_PROCESS_TYPE")
    #: The host a worker's record names (``app.middleware.fleet``): the machine's name, as a
    #: container's is its own; set it where several hosts would share one name.
    hostname: str = Field(default_factory=socket.gethostname, validation_alias="FINTASK_HOSTNAME")
    sentry_dsn_secret: SecretStr | None = Field(None, validation_alias="SENTRY_DSN")
    sentry_environment: str = Field("development", validation_alias="SENTRY_ENVIRONMENT")
    smtp_url_secret: SecretStr = Field(
        SecretStr("smtp://127.0.0.1:1025"), validation_alias="SMTP_URL"
    )
    smtp_max_sends: int = Field(
        SMTP_MAX_SENDS, ge=1, le=1_000_000, validation_alias="SMTP_MAX_SENDS"
    )
    smtp_max_idle_s: float = Field(
        SMTP_MAX_IDLE_S, ge=0, le=3_600, validation_alias="SMTP_MAX_IDLE_S"
    )
    provider_url: str = Field("http://127.0.0.1:8001", validation_alias="PROVIDER_URL")
    push_url: str = Field("http://127.0.0.1:8002/push", validation_alias="PUSH_URL")
    #: Where the weekly report's final tally is posted (unset: it is only kept on its run).
    ops_webhook_url: str | None = Field(None, validation_alias="OPS_WEBHOOK_URL")
    metrics_port_worker: int = Field(9191, ge=1, le=65535, validation_alias="METRICS_PORT_WORKER")
    metrics_port_worker_urgent: int = Field(
        9192, ge=1, le=65535, validation_alias="METRICS_PORT_WORKER_URGENT"
    )
    metrics_host: str = Field("0.0.0.0", validation_alias="METRICS_HOST")
    heartbeat_timeout_ms: int = Field(
        60_000, ge=1_000, le=3_600_000, validation_alias="HEARTBEAT_TIMEOUT_MS"
    )
    maintenance_chance_per_million: int = Field(
        1_000, ge=1, le=1_000_000, validation_alias="BROKER_MAINTENANCE_CHANCE"
    )
    notification_claim_timeout_ms: int = Field(
        45_000, ge=1_000, le=3_600_000, validation_alias="NOTIFICATION_CLAIM_TIMEOUT_MS"
    )
    max_message_bytes: int = Field(
        16_384, ge=256, le=1_048_576, validation_alias="MAX_MESSAGE_BYTES"
    )
    worker_max_memory_mb: int | None = Field(
        None, ge=32, le=1_048_576, validation_alias="WORKER_MAX_MEMORY_MB"
    )
    refresh_deadline_s: float = Field(300, ge=1, le=86_400, validation_alias="REFRESH_DEADLINE_S")
    log_format: Literal["text", "json"] = Field("text", validation_alias="LOG_FORMAT")
    #: Read by Dramatiq itself at import, where a typo is a traceback; checked here first.
    queue_prefetch: int | None = Field(
        None, ge=0, le=65535, validation_alias="dramatiq_queue_prefetch"
    )
    #: BLOB_KEYS (#23): ``ID:BASE64_KEY[,...]``, the first encrypts, all decrypt.
    blob_keys: BlobKeys = Field(None, validation_alias="BLOB_KEYS")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only the variables ``load_settings`` passes, so that a given environment stands alone.

        Neither the process's own variables nor a ``.env`` file or a secrets directory are
        mixed into a mapping a test passes, or change a process behind its back.
        """
        return (init_settings,)

    @model_validator(mode="before")
    @classmethod
    def _blank_is_unset(cls, data: Any) -> Any:
        """A variable set to blanks counts as unset (``REDIS_URL=`` in a shell or Procfile)."""
        if not isinstance(data, Mapping):
            return data
        return {
            name: value.strip() if isinstance(value, str) else value
            for name, value in data.items()
            if not (isinstance(value, str) and not value.strip())
        }

    @field_validator("redis_url_secret", mode="before")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        return None if value is None else check_redis_url(value)

    @field_validator("broker_url_secret", mode="before")
    @classmethod
    def _broker_url(cls, value: str | None) -> str | None:
        return None if value is None else check_broker_url(value)

    @field_validator("hostname", mode="after")
    @classmethod
    def _hostname(cls, value: str) -> str:
        if not _HOSTNAME.fullmatch(value):
            raise _invalid("expected a host name: letters, digits, '.', '-' and '_', at most 253")
        return value

    @field_validator("database_url_secret", mode="before")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        return None if value is None else check_database_url(value)

    @field_validator("sentry_dsn_secret", mode="before")
    @classmethod
    def _sentry_dsn(cls, value: str | None) -> str | None:
        return None if value is None else check_sentry_dsn(value)

    @field_validator("smtp_url_secret", mode="before")
    @classmethod
    def _smtp_url(cls, value: str | SecretStr) -> str | SecretStr:
        if isinstance(value, SecretStr):  # the default
            return value
        return check_url(value, schemes={"smtp", "smtps"})

    @field_validator("provider_url", "push_url", "ops_webhook_url", mode="before")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value, schemes={"http", "https"})

    @field_validator("var_dir", mode="after")
    @classmethod
    def _var_dir(cls, value: Path) -> Path:
        return check_writable_dir(value)

    @field_validator("log_format", mode="before")
    @classmethod
    def _log_format(cls, value: str) -> str:
        return value.lower()

    @property
    def redis_url(self) -> str | None:
        """``REDIS_URL`` in clear, for the clients that connect with it; never log it."""
        return _reveal(self.redis_url_secret)

    @property
    def broker_url(self) -> str | None:
        """``BROKER_URL`` in clear, for the broker that connects with it; never log it."""
        return _reveal(self.broker_url_secret)

    @property
    def rabbitmq_url(self) -> str | None:
        """``BROKER_URL`` in clear if it names RabbitMQ (the messages go there, the rest of
        fintask's state stays on Redis), else None."""
        url = self.broker_url
        return url if url is not None and url.startswith(RABBITMQ_SCHEMES) else None

    @property
    def database_url(self) -> str:
        """``DATABASE_URL`` in clear with its driver named, or SQLite under ``var_dir``."""
        if self.database_url_secret is None:
            return f"sqlite:///{self.var_dir / 'fintask.db'}"
        return self.database_url_secret.get_secret_value()

    @property
    def sentry_dsn(self) -> str | None:
        """``SENTRY_DSN`` in clear, for ``sentry_sdk.init``."""
        return _reveal(self.sentry_dsn_secret)

    @property
    def smtp_url(self) -> str:
        """``SMTP_URL`` in clear, user and password included, for the mail sender."""
        return self.smtp_url_secret.get_secret_value()

    @property
    def metrics_ports(self) -> Mapping[str, int]:
        """Each worker process type's Prometheus exposition port."""
        return {
            "worker": self.metrics_port_worker,
            "worker_urgent": self.metrics_port_worker_urgent,
        }

    @property
    def uses_stub_broker(self) -> bool:
        """Unit tests run actors in process on Dramatiq's StubBroker."""
        return self.broker_url == "stub://"

    def blob_keyring(self) -> Keyring:
        """The raw blobs' keys (``BLOB_KEYS``, #23); a ``SettingsError`` when it is unset.

        Checked where blobs are sealed or opened and when a worker starts, rather than by
        every process: the web process, the scheduler and most commands never need the key.
        """
        if self.blob_keys is None:
            raise SettingsError(MISSING_BLOB_KEYS)
        return self.blob_keys

    def metrics_dir(self, process_type: str) -> Path:
        """Where one process type keeps its Prometheus multiprocess files."""
        return self.var_dir / "prometheus" / process_type


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate fintask's settings from ``environ`` (default: ``os.environ``).

    An explicit ``environ`` is the whole environment: nothing is read from the process's own.
    Without ``REDIS_URL``, the Redis of a live ``fintask run`` of the same var dir is used.
    """
    env = os.environ if environ is None else environ
    variables = {name: env[name] for name in _fields_by_variable() if name in env}
    try:
        settings = Settings.model_validate(variables)
    except ValidationError as error:
        raise SettingsError(describe_errors(error)) from None
    if settings.redis_url_secret is None:
        return _with_running_stacks_redis(settings)
    return settings


def running_stack(var_dir: Path) -> dict[str, Any] | None:
    """What the run file of the live ``fintask run`` under ``var_dir`` says, or None.

    None too when the file is unreadable or names a pid that is not alive: a run that was
    killed could not remove its file, and the ports it names may since be someone else's.
    """
    try:
        record = json.loads((var_dir / RUN_FILE_NAME).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not _alive(record.get("pid")):
        return None
    return record


def _alive(pid: object) -> bool:
    """Whether ``pid`` is a live process of this user (signal 0 checks, and sends nothing).

    Another user's process (``PermissionError``) holds a reused pid: it is no run of ours.
    """
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (OSError, OverflowError):
        return False
    return True


def _with_running_stacks_redis(settings: Settings) -> Settings:
    """``settings`` with the Redis URL of the live ``fintask run`` of its var dir, if any."""
    stack = running_stack(settings.var_dir)
    url = None if stack is None else stack.get("redis_url")
    if not isinstance(url, str):
        return settings
    try:
        check_redis_url(url)
    except PydanticCustomError:
        return settings
    return settings.model_copy(update={"redis_url_secret": SecretStr(url)})


def exit_on_settings_error(entry_point: Callable[P, R]) -> Callable[P, R]:
    """Make a bad setting end the process with one line on stderr, not a traceback.

    For the entry points another program calls (Dramatiq's worker processes, gunicorn's
    workers, the scheduler), which would otherwise print the exception with its traceback.
    """

    @functools.wraps(entry_point)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return entry_point(*args, **kwargs)
        except SettingsError as error:
            # One write, so that the lines of sibling worker processes never interleave.
            sys.stderr.write(f"configuration error: {error}\n")
            sys.stderr.flush()
            raise SystemExit(CONFIGURATION_ERROR_EXIT) from None

    return run


def describe_errors(error: ValidationError) -> str:
    """Every bad variable of ``error`` in one line: name, value (no password), what was expected."""
    return "; ".join(_describe(detail) for detail in error.errors(include_url=False))


def _describe(detail: ErrorDetails) -> str:
    name = str(detail["loc"][0]) if detail["loc"] else "the environment"
    field = _fields_by_variable().get(name)
    if detail["type"] == _SETTING_ERROR:
        reason = detail["msg"]
    else:
        expected = _expected(field) if field is not None else None
        reason = f"expected {expected}" if expected else detail["msg"]
    return f"{name}={_shown(field, str(detail['input']))!r}: {' '.join(reason.splitlines())}"


def _shown(field: FieldInfo | None, value: str) -> str:
    """A bad value as its error line shows it: with its credentials hidden, and not at all if
    it belongs in a secret variable but is no URL, for then it may be the secret alone (a
    password or a Sentry key pasted without the rest of its URL)."""
    secret = field is not None and SecretStr in (field.annotation, *get_args(field.annotation))
    return "***" if secret and "://" not in value else hide_credentials(value)


@functools.cache
def _fields_by_variable() -> dict[str, FieldInfo]:
    return {str(f.validation_alias): f for f in Settings.model_fields.values()}


def _expected(field: FieldInfo) -> str | None:
    """What a variable must hold, said from its field's type and bounds."""
    if get_origin(field.annotation) is Literal:
        return "one of " + ", ".join(map(str, get_args(field.annotation)))
    low = next((m.ge for m in field.metadata if isinstance(m, Ge)), None)
    high = next((m.le for m in field.metadata if isinstance(m, Le)), None)
    if low is None or high is None:
        return None
    whole = field.annotation is int or int in get_args(field.annotation)
    return f"{'a whole number' if whole else 'a number'} from {low} to {high}"


def _invalid(reason: str) -> PydanticCustomError:
    return PydanticCustomError(_SETTING_ERROR, "{reason}", {"reason": reason})


def _reveal(secret: SecretStr | None) -> str | None:
    return None if secret is None else secret.get_secret_value()


#: A parameter whose name says it holds a secret: ``password=``, ``api_key=``, ``token=``...,
#: in a URL's query or among libpq's ``key=value`` words.
_SECRET_PARAMETER = re.compile(
    r"(?i)\b([\w-]*(?:password|passwd|pwd|secret|token|key|sig)[\w-]*=)[^&#\s]*"
)


def hide_credentials(value: str) -> str:
    """``value``, a URL (or what should have been one), with its credentials hidden, to print.

    fintask's one masking of URLs: settings errors, ``fintask run``'s lines, the provider's and
    webhooks' errors and the web's access log use it. Everything before the host's ``@`` is
    hidden, the user with the password (``redis://***@host:6379/0``): a Sentry DSN keeps its
    key there, and many services their token. So is the value of every parameter named for a
    secret. Parsed by hand rather than with ``urlsplit``, so that a URL too malformed to parse
    is hidden as well: all up to the last ``@`` counts, so an unencoded ``@`` or ``/`` in a
    password still hides all of it (and an ``@`` later in the URL hides more than needed, never
    less). A path alone (``/api/audit?token=...``) has no credentials but its parameters.
    """
    scheme, separator, rest = value.partition("://")
    if not separator:
        scheme, rest = "", value
    _, at, location = rest.rpartition("@")
    if at and not rest.startswith("/"):
        rest = f"***@{location}"
    return _SECRET_PARAMETER.sub(r"\1***", f"{scheme}{separator}{rest}")


def check_url(value: str, *, schemes: Collection[str], hostless: Collection[str] = ()) -> str:
    """``value`` if it is a URL of one of ``schemes`` with a host (unless ``hostless``) and a
    valid port; otherwise a pydantic error that says which part is wrong."""
    _split_url(value, schemes=schemes, hostless=hostless)
    return value


def check_redis_url(value: str) -> str:
    """A URL redis-py connects with, its database a number: redis-py would use 0 for a typo;
    or a Sentinel URL (``app.redis_urls``), read the way its clients will read it."""
    if is_sentinel_url(value):
        try:
            parse_sentinel_url(value)
        except SentinelURLError as error:
            raise _invalid(str(error)) from None
        return value
    parts = _split_url(value, schemes=REDIS_SCHEMES, hostless={"unix"})
    database = parse_qs(parts.query).get("db", [""])[0]
    if not database and parts.scheme != "unix":
        database = unquote(parts.path).replace("/", "")
    if parts.scheme == "unix" and not parts.path:
        raise _invalid("the URL names no socket path (unix:///PATH?db=DB)")
    if database and not database.isdigit():
        raise _invalid("the database must be a whole number (redis://HOST:PORT/DB or ?db=DB)")
    return value


def check_broker_url(value: str) -> str:
    """``stub://``, or a RabbitMQ URL pika connects with (``amqp[s]://USER:PASSWORD@HOST:PORT/VHOST``).

    Whether RabbitMQ answers, and takes the credentials, is checked when the broker is built
    (``app.rabbitmq.check_connection``).
    """
    _split_url(value, schemes={"stub", "amqp", "amqps"}, hostless={"stub"})
    return value


def check_database_url(value: str) -> str:
    """A SQLite or PostgreSQL URL, with Heroku's ``postgres://`` given the psycopg driver."""
    for prefix in ("postgres://", "postgresql://"):
        if value.startswith(prefix):
            value = "postgresql+psycopg://" + value[len(prefix) :]
    if not value.startswith(("sqlite://", "postgresql+psycopg://")):
        raise _invalid(
            "fintask supports sqlite:///PATH and postgresql+psycopg://USER:PASSWORD@HOST:PORT/NAME"
        )
    # libpq may take the host from the query (a Unix socket), so a missing one is no error.
    _split_url(
        value, schemes={"sqlite", "postgresql+psycopg"}, hostless={"sqlite", "postgresql+psycopg"}
    )
    return value


def check_sentry_dsn(value: str) -> str:
    """A DSN sentry-sdk accepts; its own check would fail later, with a traceback."""
    parts = _split_url(value, schemes={"http", "https"})
    if not parts.username:
        raise _invalid("the DSN names no public key (https://KEY@HOST/PROJECT_ID)")
    if not parts.path.rsplit("/", 1)[-1].isdigit():
        raise _invalid("the DSN does not end in a project id (https://KEY@HOST/PROJECT_ID)")
    return value


def check_writable_dir(path: Path) -> Path:
    """``path`` made absolute, if fintask can write there or create it; it is not created here."""
    path = path.resolve()
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise _invalid(f"expected a directory, and {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise _invalid(f"expected a directory fintask can write to, and {existing} is not writable")
    return path


def _split_url(
    value: str, *, schemes: Collection[str], hostless: Collection[str] = ()
) -> SplitResult:
    try:
        parts = urlsplit(value)
    except ValueError:
        raise _invalid("this is not a URL") from None
    if parts.scheme not in schemes:
        expected = ", ".join(f"{scheme}://" for scheme in sorted(schemes))
        raise _invalid(f"the scheme must be one of {expected}")
    if parts.scheme not in hostless and not parts.hostname:
        raise _invalid("the URL names no host")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise _invalid("the port must be a whole number from 1 to 65535")
    return parts
