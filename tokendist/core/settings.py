"""The one settings object, read from ``TOKENDIST_*`` environment variables, in sections.

Built once in the CLI; nothing else reads the environment. Each long-running component is
handed only its section: the consumer never holds a payment provider's secret, the
webhook receiver never holds the operator key. The variables stay flat (one name each,
as the README and the compose file list them); the sections group them in code.

Any variable may be given as a file instead, as container platforms mount secrets:
``TOKENDIST_<NAME>_FILE`` names a file whose content (less its final line break) is the
value. Both set is refused. ``secret_values`` lists what no output may ever show.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, Self, TypeAlias, TypeVar, get_args
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

# Defined with the rest of the tree; importable from here, beside the settings it is about.
from tokendist.core.errors import SettingsError as SettingsError  # noqa: PLC0414 -- still importable from here
from tokendist.core.finality import MAX_CONFIRMATIONS, PRESETS, FinalityRule

ENV_PREFIX = "TOKENDIST_"
LOCAL_HINT = 'for the local stack: eval "$(tokendist stack env)"'
INSTANCE_ID = re.compile(r"[a-zA-Z0-9._-]+")
INSTANCE_ID_MAX = 249


FILE_SUFFIX = "_FILE"
HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")  # an HTTP token (RFC 9110)

IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network


def ip_networks(value: str) -> tuple[IPNetwork, ...]:
    """Comma-separated addresses or CIDR blocks; empty means none."""
    return tuple(ipaddress.ip_network(v.strip()) for v in value.split(",") if v.strip())


def instance_id(value: str) -> str:
    """``value`` if the broker accepts it as a group.instance.id (its rule is that of topic
    names); checked up front, a bad id stops ``consume`` with a reason instead of failing
    every join."""
    if len(value) > INSTANCE_ID_MAX or value in {".", ".."} or not INSTANCE_ID.fullmatch(value):
        raise ValueError(
            f"an instance id is 1 to {INSTANCE_ID_MAX} letters, digits, '.', '_' or '-' "
            "(and not '.' or '..')"
        )
    return value


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    def _require(self, *names: str) -> None:
        missing = [f"{ENV_PREFIX}{n.upper()}" for n in names if getattr(self, n) is None]
        if missing:
            raise SettingsError(f"set {' and '.join(missing)} ({LOCAL_HINT})")


class DatabaseSettings(_Section):
    database_url: str = Field(description="PostgreSQL DSN")


KafkaSecurity: TypeAlias = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism: TypeAlias = Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]


class KafkaSettings(_Section):
    """The broker, and how every client of the project reaches it: one set of connection
    settings per process (``tokendist.core.kafka.connection`` builds them into every
    client). A managed Kafka wants ``SASL_SSL``: Confluent Cloud with ``PLAIN`` (an API
    key and secret), MSK and Aiven with ``SCRAM-SHA-512``."""

    kafka_bootstrap: str = Field(description="comma-separated Kafka bootstrap servers")
    topic: str = "payments.confirmed"
    topic_partitions: int = Field(default=16, ge=1, le=1024)
    topic_replication: int = Field(default=1, ge=1, le=5)
    kafka_security_protocol: KafkaSecurity = "PLAINTEXT"
    kafka_sasl_mechanism: SaslMechanism = "SCRAM-SHA-512"
    kafka_username: str | None = None
    kafka_password: SecretStr | None = None
    # Unset: the system's CAs (a managed Kafka's public certificate).
    kafka_ca_file: str | None = Field(default=None, description="PEM CA bundle for TLS")
    # Mutual TLS, for a broker that authenticates clients by certificate.
    kafka_cert_file: str | None = Field(default=None, description="PEM client certificate")
    kafka_key_file: str | None = Field(default=None, description="PEM key of the certificate")
    kafka_check_hostname: bool = True

    @model_validator(mode="after")
    def _security_complete(self) -> Self:
        sasl = self.kafka_security_protocol.startswith("SASL_")
        if sasl and (self.kafka_username is None or self.kafka_password is None):
            raise ValueError(
                f"TOKENDIST_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                "TOKENDIST_KAFKA_USERNAME and TOKENDIST_KAFKA_PASSWORD"
            )
        if (self.kafka_cert_file is None) != (self.kafka_key_file is None):
            raise ValueError("set both TOKENDIST_KAFKA_CERT_FILE and TOKENDIST_KAFKA_KEY_FILE")
        return self

    @property
    def kafka_tls(self) -> bool:
        return self.kafka_security_protocol in ("SSL", "SASL_SSL")

    @property
    def dlq_topic(self) -> str:
        return f"{self.topic}.dlq"

    @property
    def bootstrap_servers(self) -> list[str]:
        return [s.strip() for s in self.kafka_bootstrap.split(",") if s.strip()]


class ServiceSettings(_Section):
    """What every long-running process shares: how it waits for a dependency, where it
    serves its metrics, how long it drains on SIGTERM."""

    retry_base_s: float = Field(default=0.2, gt=0)
    retry_cap_s: float = Field(default=10.0, gt=0)
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    # How long SIGTERM (or a rebalance) waits for the work in hand.
    shutdown_grace_s: float = Field(default=15.0, gt=0)


class ChainSettings(_Section):
    """The node, and how transactions are sent to it and when they are final
    (``tokendist.core.finality``): ``finality`` if set, else ``confirmations`` (the older
    shorthand for ``confirmations:N``), else the chain preset's rule."""

    rpc_url: str | None = Field(default=None, description="Ethereum JSON-RPC URL")
    chain_preset: str = Field(default="anvil", description="anvil, ethereum, polygon, ...")
    finality: str | None = Field(
        default=None, description="confirmations:N, finalized or safe (default: the preset's)"
    )
    confirmations: int | None = Field(default=None, ge=1, le=MAX_CONFIRMATIONS)
    priority_fee_wei: int = Field(default=1_000_000_000, ge=0)
    max_fee_wei: int = Field(default=500_000_000_000, gt=0)
    receipt_poll_s: float = Field(default=0.1, gt=0)
    rebroadcast_after_s: float = Field(default=10.0, gt=0)
    fee_bump_after_s: float = Field(default=30.0, gt=0)
    fee_bump_percent: int = Field(default=20, ge=10, le=500)
    # Unconfirmed batches per operator key (geth keeps 16 executable per account).
    max_inflight_per_sender: int = Field(default=16, ge=1, le=64)
    resubmit_interval_s: float = Field(default=5.0, gt=0)
    # How often one member asks the pre-flight again for the ERC-3643 payments it parked
    # (token paused, wallet frozen, compliance refused, identity not verified).
    parked_recheck_interval_s: float = Field(default=10.0, gt=0, le=3600)

    def require_rpc(self) -> str:
        self._require("rpc_url")
        assert self.rpc_url is not None
        return self.rpc_url

    @field_validator("chain_preset")
    @classmethod
    def _preset(cls, value: str) -> str:
        if value not in PRESETS:
            raise ValueError(f"{value!r} is not a chain preset: one of {', '.join(PRESETS)}")
        return value

    @field_validator("finality")
    @classmethod
    def _finality(cls, value: str | None) -> str | None:
        return None if value is None else str(FinalityRule.parse(value))

    @model_validator(mode="after")
    def _one_finality_rule(self) -> Self:
        if (
            self.finality is not None
            and self.confirmations is not None
            and FinalityRule.parse(self.finality) != FinalityRule(self.confirmations)
        ):
            raise ValueError(
                f"TOKENDIST_FINALITY={self.finality} and TOKENDIST_CONFIRMATIONS="
                f"{self.confirmations} disagree: set one"
            )
        return self

    @property
    def finality_rule(self) -> FinalityRule:
        if self.finality is not None:
            return FinalityRule.parse(self.finality)
        if self.confirmations is not None:
            return FinalityRule(self.confirmations)
        return PRESETS[self.chain_preset]


class RpcSettings(_Section):
    """More RPC endpoints behind the node's URL, and when one of them is left out
    (``tokendist.consumer.endpoints``)."""

    rpc_urls: str = Field(
        default="", description="more JSON-RPC URLs, comma-separated, after TOKENDIST_RPC_URL"
    )
    # Blocks an endpoint's head may trail the best one's and still answer reads (Chainlink's
    # node pool: SyncThreshold 5).
    rpc_max_lag_blocks: int = Field(default=5, ge=0, le=10_000)
    rpc_timeout_s: float = Field(default=10.0, gt=0, le=300)
    rpc_check_interval_s: float = Field(default=5.0, gt=0, le=600)
    # A failing endpoint rests for a jittered backoff growing from base to cap.
    rpc_backoff_base_s: float = Field(default=0.5, gt=0)
    rpc_backoff_cap_s: float = Field(default=30.0, gt=0)
    # For a provider that authenticates by header rather than by user info in the URL
    # (https://user:pass@host, which works as it is).
    rpc_auth_header: SecretStr | None = Field(
        default=None, description="'Name: value', sent to every RPC endpoint"
    )

    @field_validator("rpc_auth_header")
    @classmethod
    def _header(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            name, colon, rest = value.get_secret_value().partition(":")
            if not colon or not HEADER_NAME.fullmatch(name.strip()) or not rest.strip():
                raise ValueError("must be 'Name: value' (the value is not shown)")
        return value

    def rpc_headers(self) -> dict[str, str]:
        """The extra HTTP headers of every RPC request."""
        if self.rpc_auth_header is None:
            return {}
        name, _, value = self.rpc_auth_header.get_secret_value().partition(":")
        return {name.strip(): value.strip()}

    def endpoints(self, first: str) -> list[str]:
        """``first`` (``TOKENDIST_RPC_URL``), then ``rpc_urls``, each once."""
        urls = [first.strip()]
        urls += [u.strip() for u in self.rpc_urls.split(",") if u.strip()]
        return list(dict.fromkeys(urls))


class BatchSettings(_Section):
    """How payments ready to sign are gathered into one ``distributeBatch`` transaction:
    up to ``batch_max_size`` of them, or whatever arrived within ``batch_max_wait_s`` of
    the oldest (about a block interval: a batch signed sooner only waits in the pool)."""

    batch_max_size: int = Field(default=200, ge=1, le=1000)
    batch_max_wait_s: float = Field(default=0.5, gt=0, le=60)
    # A restored database may not know transactions its keys still have in the node's
    # pool; indices are rebuilt from the chain once they are mined, waiting up to this.
    index_rebuild_wait_s: float = Field(default=120.0, gt=0)


def _listed(value: str) -> list[str]:
    return list(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))


class SignerSettings(_Section):
    """Where the operator keys live (``tokendist.custody``). Every source adds its keys to
    the pool, each key once: raw hex keys (local development only: a start-up warning
    on any chain but anvil's), keystore files, AWS KMS keys."""

    operator_key: SecretStr | None = Field(
        default=None, description="hex private key of the distributor's operator (development)"
    )
    operator_keys: SecretStr | None = Field(
        default=None, description="more hex operator keys, comma-separated (development)"
    )
    operator_keystores: str = Field(
        default="", description="Web3 Secret Storage files of operator keys, comma-separated"
    )
    operator_keystore_password_file: str | None = Field(
        default=None, description="file holding the keystores' password"
    )
    operator_kms_key_ids: str = Field(
        default="", description="AWS KMS key ids or ARNs (ECC_SECG_P256K1), comma-separated"
    )
    kms_endpoint_url: str | None = Field(
        default=None, description="KMS endpoint; unset: AWS's own for the region"
    )
    kms_region: str = "us-east-1"
    # Per KMS call, connect and read each: a signing batch waits this long at most.
    kms_timeout_s: float = Field(default=5.0, gt=0, le=60)

    @property
    def has_operator_keys(self) -> bool:
        return bool(self.raw_keys() or self.keystore_paths() or self.kms_key_ids())

    @field_validator("kms_endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None  # empty: AWS's own

    def raw_keys(self) -> list[SecretStr]:
        """``operator_key`` first, then ``operator_keys``, each once."""
        first = [] if self.operator_key is None else [self.operator_key.get_secret_value()]
        more = "" if self.operator_keys is None else self.operator_keys.get_secret_value()
        return [SecretStr(k) for k in _listed(",".join([*first, more]))]

    def keystore_paths(self) -> list[str]:
        return _listed(self.operator_keystores)

    def kms_key_ids(self) -> list[str]:
        return _listed(self.operator_kms_key_ids)


class ConsumerSettings(
    DatabaseSettings,
    KafkaSettings,
    ServiceSettings,
    ChainSettings,
    RpcSettings,
    BatchSettings,
    SignerSettings,
):
    """``tokendist consume``: all a group member is given (no payment-provider secret)."""

    consumer_group: str = "tokendist-distributor"
    # Static membership (KIP-345): a member restarted with the same id takes its partitions
    # back without a rebalance. Unique per live member (two with one id fence each other):
    # a StatefulSet pod name, say. Unset: a dynamic member, new to the group at each start.
    consumer_instance_id: str | None = None
    # How long a silent member keeps its partitions: the pause after a consumer crash.
    session_timeout_ms: int = Field(default=10_000, ge=6_000, le=300_000)
    # The fetch loop polls every 200 ms whatever the workers do, so this only bounds a
    # wedged event loop; it never has to cover a slow chain call.
    max_poll_interval_ms: int = Field(default=300_000, ge=1_000)
    max_partition_buffer: int = Field(default=500, ge=1)
    # Records of one partition in progress at once; one user's records never overlap. A
    # record waits for its batch and its block: the group pays at most partitions x
    # window / (batch wait + block time + credit) payments a second, so this must cover a
    # few block intervals of the target rate (bench: 16 partitions x 128).
    partition_window: int = Field(default=128, ge=1, le=1024)
    # Unexpected errors (never outages) a record may cause before it is parked as
    # processing_error: with the backoff above, about a minute of trying.
    park_after_errors: int = Field(default=10, ge=1, le=1000)
    failpoints: str = Field(default="", description="test only: see tokendist/core/failpoints.py")

    @field_validator("consumer_instance_id")
    @classmethod
    def _instance_id(cls, value: str | None) -> str | None:
        return None if value is None else instance_id(value)

    def require_chain(self) -> tuple[str, SecretStr]:
        """The RPC URL and the first operator key, or an error that says what to set."""
        rpc_url, keys = self.require_keys()
        return rpc_url, keys[0]

    def require_keys(self) -> tuple[str, list[SecretStr]]:
        """The RPC URL and the raw hex keys (development tools, the benchmark): the
        consumer and the operator commands take every source (``custody.operator_signers``)."""
        self._require("rpc_url", "operator_key")
        assert self.rpc_url is not None
        return self.rpc_url, self.raw_keys()


class ChainCheckSettings(DatabaseSettings, ServiceSettings, ChainSettings, RpcSettings):
    """``tokendist chain-check``: how often credited payouts are looked for on the chain,
    and how many recent blocks each look re-reads (the deepest reorganisation it sees)."""

    chain_check_interval_s: float = Field(default=30.0, gt=0, le=3600)
    # Well past any finality rule (Polygon PoS: 500 blocks), within a node's getLogs range.
    chain_check_window_blocks: int = Field(default=1000, ge=1, le=100_000)


class RelaySettings(DatabaseSettings, KafkaSettings, ServiceSettings):
    """``tokendist relay``."""

    relay_batch_size: int = Field(default=500, ge=1, le=10_000)
    relay_poll_interval_s: float = Field(default=1.0, gt=0)
    relay_retention_s: int = Field(default=7 * 24 * 3600, ge=0)
    relay_standby_retry_s: float = Field(default=1.0, gt=0)


class WebhookSettings(DatabaseSettings, ServiceSettings):
    """``tokendist webhook``: the payment providers' secrets live here only. Paystack signs
    with the merchant's secret key; the key's mode is the only mode whose payments are
    accepted."""

    paystack_secret_key: SecretStr | None = Field(
        default=None, description="sk_live_... or sk_test_...: verifies webhook signatures"
    )
    paystack_mode: Literal["live", "test"] = "live"
    paystack_verify: bool = False  # also ask the Verify Transaction API before accepting
    paystack_api_url: str = "https://api.paystack.co"
    webhook_host: str = "127.0.0.1"
    webhook_port: int = Field(default=8088, ge=0, le=65535)
    webhook_max_body_bytes: int = Field(default=128 * 1024, ge=1024)
    # Paystack counts anything slower than 30 s as failed: answer 503 well before that.
    webhook_deadline_s: float = Field(default=20.0, gt=0, lt=30)
    webhook_allowed_ips: str = Field(default="", description="senders allowed; empty: any")
    webhook_trusted_proxies: str = Field(
        default="", description="proxies whose X-Forwarded-For is believed; empty: none"
    )
    checkout_api_key: SecretStr | None = Field(
        default=None, description="enables POST /investments for callers presenting it"
    )
    # Connection limits (tokendist/webhook/server.py): a client sending slowly, or not at
    # all, is cut off instead of holding a connection; past the cap it gets 503 at once.
    webhook_header_timeout_s: float = Field(default=10.0, gt=0, le=300)
    webhook_body_timeout_s: float = Field(default=10.0, gt=0, le=300)
    webhook_keepalive_s: int = Field(default=5, ge=1, le=300)
    webhook_max_connections: int = Field(default=256, ge=1, le=100_000)

    @field_validator("webhook_allowed_ips", "webhook_trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        ip_networks(value)  # raises ValueError on a bad entry, reported with its variable
        return value

    @model_validator(mode="after")
    def _key_matches_mode(self) -> Self:
        secret = self.paystack_secret_key
        key = "" if secret is None else secret.get_secret_value()
        if key.startswith(("sk_live_", "sk_test_")) and not key.startswith(
            f"sk_{self.paystack_mode}_"
        ):
            raise ValueError(
                f"TOKENDIST_PAYSTACK_SECRET_KEY is not a {self.paystack_mode} key "
                "(set TOKENDIST_PAYSTACK_MODE to match it)"
            )
        return self

    def require_webhook(self) -> SecretStr:
        self._require("paystack_secret_key")
        assert self.paystack_secret_key is not None
        return self.paystack_secret_key


S = TypeVar("S", bound=_Section)


class Settings(BaseSettings, ConsumerSettings, RelaySettings, WebhookSettings, ChainCheckSettings):
    """Every variable, read once by the CLI; each long-running component is handed only
    its own section (``consumer()``, ``relay()``, ``webhook()``). One-shot operator tools
    and the demo kit take the whole object."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=None, extra="ignore", frozen=True
    )

    deployer_key: SecretStr | None = Field(
        default=None, description="hex private key that deploys contracts and owns them"
    )
    # Each component may connect as its own role (README: PostgreSQL roles) when one
    # environment serves several; unset, it uses TOKENDIST_DATABASE_URL like the tools.
    webhook_database_url: str | None = None
    relay_database_url: str | None = None
    consumer_database_url: str | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _FileSource(settings_cls)

    def consumer(self) -> ConsumerSettings:
        return self._section(ConsumerSettings, self.consumer_database_url)

    def relay(self) -> RelaySettings:
        return self._section(RelaySettings, self.relay_database_url)

    def webhook(self) -> WebhookSettings:
        return self._section(WebhookSettings, self.webhook_database_url)

    def chain_check(self) -> ChainCheckSettings:
        return self._section(ChainCheckSettings)

    def in_database(self, database_url: str) -> Settings:
        """These settings on another database of the same server (a demo's, a benchmark's):
        ``database_url`` for the tools, and each component's own DSN, if set, moved there
        too (its role and password kept)."""
        path = urlsplit(database_url).path
        update = {"database_url": database_url}
        for name in ("webhook_database_url", "relay_database_url", "consumer_database_url"):
            if (dsn := getattr(self, name)) is not None:
                update[name] = urlunsplit(urlsplit(dsn)._replace(path=path))
        return self.model_copy(update=update)

    def _section(self, section: type[S], database_url: str | None = None) -> S:
        values = {name: getattr(self, name) for name in section.model_fields}
        if database_url is not None:
            values["database_url"] = database_url
        return section.model_validate(values)

    def as_env(self) -> dict[str, str]:
        """These settings as the environment of a child ``tokendist`` process."""
        env = {}
        for name, value in self.model_dump().items():
            if value is not None:
                plain = value.get_secret_value() if isinstance(value, SecretStr) else value
                env[f"{ENV_PREFIX}{name.upper()}"] = str(plain)
        return env

    def require_deployer(self) -> tuple[str, SecretStr]:
        self._require("rpc_url", "deployer_key")
        assert self.rpc_url is not None
        assert self.deployer_key is not None
        return self.rpc_url, self.deployer_key


def file_values(names: Iterable[str], environ: Mapping[str, str]) -> dict[str, str]:
    """The values of ``names`` given as ``TOKENDIST_<NAME>_FILE``; a variable given both
    ways, or a file that cannot be read, is refused (naming the file, never its content)."""
    values = {}
    for name in names:
        var = f"{ENV_PREFIX}{name.upper()}"
        path = environ.get(var + FILE_SUFFIX)
        if path is None:
            continue
        if var in environ:
            raise SettingsError(f"set {var} or {var}{FILE_SUFFIX}, not both")
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise SettingsError(f"{var}{FILE_SUFFIX}: cannot read {path} ({why})") from None
        # A mounted secret usually ends with a line break that is not part of it.
        values[name] = text.removesuffix("\n").removesuffix("\r")
    return values


class _FileSource(PydanticBaseSettingsSource):
    """``TOKENDIST_<NAME>_FILE`` for every field."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ reads every field at once

    def __call__(self) -> dict[str, Any]:
        return file_values(self.settings_cls.model_fields, os.environ)


def _is_secret(field: FieldInfo) -> bool:
    return SecretStr in (field.annotation, *get_args(field.annotation))


def secret_values(environ: Mapping[str, str]) -> list[str]:
    """Every secret the settings hold, from the environment or a file: the secret fields
    (each item of a comma-separated list too, and the value of a 'Name: value' header) and
    the password of every URL (a DSN's, an RPC endpoint's user info). What no output may
    show, whether or not the settings are valid."""
    raw = {n[len(ENV_PREFIX) :].lower(): v for n, v in environ.items() if n.startswith(ENV_PREFIX)}
    for name in Settings.model_fields:
        # A refused file stops the command before anything could show a value.
        with contextlib.suppress(SettingsError):
            raw.update(file_values([name], environ))
    found: list[str] = []
    for name, value in raw.items():
        field = Settings.model_fields.get(name)
        if field is not None and _is_secret(field):
            found += [value, *value.split(","), value.partition(":")[2]]
        elif name.endswith(("_url", "_urls")):
            found += [_password(url) for url in value.split(",")]
    return sorted({s.strip() for s in found if s.strip()}, key=len, reverse=True)


def _password(url: str) -> str:
    try:
        return urlsplit(url.strip()).password or ""
    except ValueError:
        return ""


def load_settings(**overrides: object) -> Settings:
    """Read settings, turning pydantic's report into one line per bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = f"{ENV_PREFIX}{'_'.join(str(p) for p in err['loc']).upper()}"
            if err["type"] == "missing":
                lines.append(f"{name} is not set")
            elif not err["loc"]:  # a check across variables names them in its message
                lines.append(str(err["msg"]).removeprefix("Value error, "))
            else:
                lines.append(f"{name}: {err['msg']}")
        raise SettingsError("; ".join(lines) + f" ({LOCAL_HINT})") from None
