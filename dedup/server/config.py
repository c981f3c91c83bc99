"""Kafka's broker configuration, for what ``dedup serve`` serves: one table of keys, a
``server.properties`` reader and ``--override KEY=VALUE``, as ``kafka-server-start.sh`` takes them.

:data:`BROKER_CONFIGS` is the single definition: each key with Kafka's name, type, default,
valid range and documentation (from the Kafka class named in ``defined_in``), and the
:class:`~dedup.server.core.KafkaServer` keyword argument it sets (snake_case of the key, except
where dedup's log already had a name: ``log.segment.bytes`` is ``segment_bytes``).
:class:`BrokerConfig` holds the values given (a file, then overrides, later ones winning) and
answers what DescribeConfigs reports: the effective value, whether it is a default
(``DEFAULT_CONFIG``) or was set (``STATIC_BROKER_CONFIG``), read-only (every key: dedup has no
dynamic broker configuration) and sensitive (none).

Parsing follows Kafka exactly: :func:`load_properties` is ``java.util.Properties.load`` on an
``InputStream`` (ISO-8859-1, as Kafka's ``Utils.loadProps`` reads the file); :func:`parse_override`
is ``CommandLineUtils.parseKeyValueArgs`` (split at the first ``=``, a missing value is an
error); values are converted as ``ConfigDef.parseType`` does (trimmed; ``true``/``false`` in
any case; ``Integer.parseInt``, ``Short.parseShort``, ``Long.parseLong`` with their ranges;
lists split at commas) and checked as ``ConfigDef.Range.atLeast``/``between`` and
``ValidList.in`` do, with Kafka's messages (``Invalid value X for configuration K: ...``).

Keys dedup does not serve. Kafka warns ``The configuration 'K' was supplied but isn't a known
config`` and goes on; issue 14 asks instead for an error that names the key (exit 2), because
a setting silently dropped is a test that silently tests something else. Both are honoured:

- a key in no table is an :class:`UnknownConfigError`;
- a Kafka key that has no effect a client can see in a single-process server (identity, KRaft
  wiring, threads, socket buffers, the transaction log's min.isr) is accepted and
  ignored with a warning (:data:`IGNORED_KAFKA_KEYS`), so Kafka's own
  ``config/server.properties`` starts ``dedup serve`` unchanged;
- ``log.dirs`` (or ``log.dir``) is ``--dir`` (one directory: dedup keeps a cluster's logs in
  one tree), and ``listeners`` is ``--host``/``--port`` (the ``PLAINTEXT`` listener, or the
  first one not named in ``controller.listener.names``; broker ``b`` on ``PORT + b``; an empty
  host keeps the default host rather than every interface, since it is also the host
  advertised in Metadata).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BROKER_CONFIGS",
    "ConfigError",
    "ConfigKey",
    "BrokerConfig",
    "IGNORED_KAFKA_KEYS",
    "TOPIC_CONFIGS",
    "UnknownConfigError",
    "load_properties",
    "parse_override",
    "parse_properties",
]

logger = logging.getLogger("dedup.server")

INT_MAX = (1 << 31) - 1
SHORT_MAX = (1 << 15) - 1
LONG_MAX = (1 << 63) - 1
_RANGES = {"INT": (-(1 << 31), INT_MAX), "SHORT": (-(1 << 15), SHORT_MAX), "LONG": (-(1 << 63), LONG_MAX)}

#: DescribeConfigs' ``config_type`` (KIP-569): ConfigDef.Type as the wire numbers it.
CONFIG_TYPES = {"BOOLEAN": 1, "STRING": 2, "INT": 3, "SHORT": 4, "LONG": 5, "DOUBLE": 6, "LIST": 7, "CLASS": 8,
                "PASSWORD": 9}  # fmt: skip


class ConfigError(ValueError):
    """A configuration Kafka would refuse; the one-line message names the key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class UnknownConfigError(ConfigError):
    """A key that is neither served nor a Kafka key dedup accepts and ignores."""


@dataclass(frozen=True)
class ConfigKey:
    """One broker configuration key: Kafka's ``ConfigDef.define(name, type, default, validator,
    importance, doc)``, and the :class:`~dedup.server.core.KafkaServer` argument it sets."""

    name: str
    type: str  # ConfigDef.Type: BOOLEAN, STRING, INT, SHORT, LONG or LIST
    default: Any  # the parsed default; None: no default
    kwarg: str | None  # the KafkaServer keyword argument (None: derived, see BrokerConfig.server_kwargs)
    doc: str
    defined_in: str  # the Kafka class that defines the key
    low: int | None = None  # Range.atLeast / between
    high: int | None = None
    choices: tuple[str, ...] | None = None  # ValidList.in / ValidString.in

    def parse(self, text: str) -> Any:
        """``text`` as a value of this key (``ConfigDef.parseType`` and the validator)."""
        trimmed = text.strip()
        value: Any
        if self.type == "BOOLEAN":
            if trimmed.lower() not in ("true", "false"):
                raise self._invalid(text, "Expected value to be either true or false")
            value = trimmed.lower() == "true"
        elif self.type in _RANGES:
            low, high = _RANGES[self.type]
            if not re.fullmatch(r"[+-]?[0-9]+", trimmed) or not low <= int(trimmed) <= high:
                raise self._invalid(text, f"Not a number of type {self.type}")
            value = int(trimmed)
            if self.low is not None and value < self.low:
                raise self._invalid(text, self._range_text())
            if self.high is not None and value > self.high:
                raise self._invalid(text, self._range_text())
        elif self.type == "LIST":
            value = [] if not trimmed else [item.strip() for item in trimmed.split(",")]
            if self.choices is not None:
                for item in value:
                    if item not in self.choices:
                        raise self._invalid(text, f"String must be one of: {', '.join(self.choices)}")
        else:
            value = trimmed
            if self.choices is not None and value not in self.choices:
                raise self._invalid(text, f"String must be one of: {', '.join(self.choices)}")
        return value

    def to_text(self, value: Any) -> str | None:
        """A value as Kafka's ``ConfigDef.convertToString`` writes it (None stays null)."""
        if value is None:
            return None
        if self.type == "BOOLEAN":
            return "true" if value else "false"
        if self.type == "LIST":
            return ",".join(value)
        return str(value)

    def _range_text(self) -> str:
        if self.high is None:
            return f"Value must be at least {self.low}"
        return f"Value must be in the range [{self.low}, {self.high}]" if self.low is not None else ""

    def _invalid(self, text: str, why: str) -> ConfigError:
        return ConfigError(self.name, f"Invalid value {text} for configuration {self.name}: {why}")


_SERVER_LOG = "ServerLogConfigs (LogConfig.SERVER_CONFIG_DEF)"
_GROUP = "GroupCoordinatorConfig"
_TXN = "TransactionStateManagerConfig"
_TXN_LOG = "TransactionLogConfig"

#: Every broker key ``dedup serve`` serves, with Kafka's defaults. Where ``serve`` starts with
#: another value (``min.insync.replicas``, ``default.replication.factor``,
#: ``offsets.topic.replication.factor``: min(2 or 3, brokers), so that a fault-testing cluster
#: replicates), the server sets it, and DescribeConfigs reports it as set.
BROKER_CONFIGS: dict[str, ConfigKey] = {key.name: key for key in [
    ConfigKey("num.partitions", "INT", 1, "num_partitions", "The default number of log partitions per topic",
              _SERVER_LOG, low=1),
    ConfigKey("auto.create.topics.enable", "BOOLEAN", True, "auto_create_topics_enable",
              "Enable auto creation of topic on the server.", _SERVER_LOG),
    ConfigKey("default.replication.factor", "INT", 1, "default_replication_factor",
              "The replication factor for automatically created topics, and for topics created with -1 as the "
              "replication factor", "ReplicationConfigs"),
    ConfigKey("min.insync.replicas", "INT", 1, "min_insync_replicas",
              "When a producer sets acks to \"all\" (or \"-1\"), min.insync.replicas specifies the minimum number "
              "of replicas that must acknowledge a write for the write to be considered successful.", _SERVER_LOG,
              low=1),
    ConfigKey("unclean.leader.election.enable", "BOOLEAN", False, "unclean_leader_election",
              "Indicates whether to enable replicas not in the ISR set to be elected as leader as a last resort, "
              "even though doing so may result in data loss", "ReplicationConfigs"),
    ConfigKey("log.segment.bytes", "INT", 1073741824, "segment_bytes", "The maximum size of a single log file",
              _SERVER_LOG, low=62),  # Kafka: atLeast(14); dedup's log needs one batch header (61 bytes) and more
    ConfigKey("log.retention.ms", "LONG", None, None,
              "The number of milliseconds to keep a log file before deleting it (in milliseconds), If not set, "
              "the value in log.retention.minutes is used. If set to -1, no time limit is applied.", _SERVER_LOG,
              low=-1),
    ConfigKey("log.retention.minutes", "INT", None, None,
              "The number of minutes to keep a log file before deleting it (in minutes), secondary to "
              "log.retention.ms property. If not set, the value in log.retention.hours is used", _SERVER_LOG),
    ConfigKey("log.retention.hours", "INT", 168, None,
              "The number of hours to keep a log file before deleting it (in hours), tertiary to "
              "log.retention.ms property", _SERVER_LOG),
    ConfigKey("log.retention.bytes", "LONG", -1, "retention_bytes",
              "The maximum size of the log before deleting it", _SERVER_LOG),
    ConfigKey("log.cleanup.policy", "LIST", ["delete"], None,
              "The default cleanup policy for segments beyond the retention window. dedup serves \"delete\" "
              "(Kafka also \"compact\").", _SERVER_LOG, choices=("delete",)),
    ConfigKey("log.cleaner.enable", "BOOLEAN", True, "log_cleaner_enable",
              "Enable the log cleaner process to run on the server. dedup compacts the topics with "
              "cleanup.policy=compact (the internal __consumer_offsets).", "CleanerConfig"),
    ConfigKey("log.cleaner.backoff.ms", "LONG", 15000, "log_cleaner_backoff_ms",
              "The amount of time to sleep when there are no logs to clean", "CleanerConfig", low=0),
    ConfigKey("log.cleaner.delete.retention.ms", "LONG", 86400000, "log_cleaner_delete_retention_ms",
              "The amount of time to retain tombstone message markers for log compacted topics.", _SERVER_LOG,
              low=0),
    ConfigKey("producer.id.expiration.ms", "INT", 86400000, "producer_id_expiration_ms",
              "The time in ms that a topic partition leader will wait before expiring producer IDs.",
              "TransactionLogConfig", low=1),
    ConfigKey("producer.state.max.producers", "INT", 0, "max_producers",
              "dedup's own key (not Kafka's; KIP-936's problem, bounded as Redpanda's max_concurrent_producer_ids "
              "does): the most producer ids each partition replica keeps. A new producer then evicts the least "
              "recently used one without an ongoing transaction, whose next batch is accepted as an unknown "
              "producer's (KIP-360): dedup of long-idle producers is traded for bounded memory. When producers "
              "with ongoing transactions fill it, a new producer gets THROTTLING_QUOTA_EXCEEDED. 0: unbounded, "
              "as Kafka.", "dedup", low=0),
    ConfigKey("socket.request.max.bytes", "INT", 104857600, "max_request_bytes",
              "The maximum number of bytes in a socket request", "SocketServerConfigs", low=64),  # Kafka: atLeast(1)
    ConfigKey("fetch.max.bytes", "INT", 57671680, "fetch_max_bytes",
              "The maximum number of bytes we will return for a fetch request. Must be at least 1024.",
              "ServerConfigs", low=1024),
    # Connection hygiene (dedup/server/connections.py states where dedup's rules differ from Kafka's).
    ConfigKey("connections.max.idle.ms", "LONG", 600000, "connections_max_idle_ms",
              "Idle connections timeout: the server socket processor threads close the connections that idle more "
              "than this. dedup: a connection must complete a request within this time of its last request or "
              "response (a partial frame does not count as activity).", "SocketServerConfigs", low=1),
    ConfigKey("max.connections", "INT", INT_MAX, "max_connections",
              "The maximum number of connections we allow in the broker at any time. This limit is applied in "
              "addition to any per-ip limits configured using max.connections.per.ip.", "SocketServerConfigs",
              low=0),
    ConfigKey("max.connections.per.ip", "INT", INT_MAX, "max_connections_per_ip",
              "The maximum number of connections we allow from each ip address. New connections from the ip "
              "address are dropped if the limit is reached.", "SocketServerConfigs", low=0),
    ConfigKey("queued.max.requests", "INT", 500, "queued_max_requests",
              "The number of queued requests allowed for data-plane, before blocking the network threads",
              "ServerConfigs", low=1),
    ConfigKey("log.dirs", "STRING", None, None,
              "The directory where the log data is stored (dedup: one directory; default: a temporary one, "
              "removed at exit).", _SERVER_LOG),
    ConfigKey("log.dir", "STRING", "/tmp/kafka-logs", None,
              "The directory in which the log data is kept (supplemental for log.dirs property; dedup uses a "
              "temporary directory when neither is set)", _SERVER_LOG),
    ConfigKey("listeners", "STRING", "PLAINTEXT://:9092", None,
              "Listener List: the PLAINTEXT://HOST:PORT the first broker listens on; broker b on PORT + b.",
              "SocketServerConfigs"),
    # Listeners and their security (dedup/server/security/): kwarg None, gathered by BrokerConfig.server_kwargs.
    ConfigKey("listener.security.protocol.map", "STRING",
              "PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT", None,
              "Map between listener names and security protocols.", "SocketServerConfigs"),
    ConfigKey("advertised.listeners", "STRING", None, None,
              "Specifies the listener addresses that the Kafka brokers will advertise to clients (dedup: broker b "
              "advertises PORT + b).", "SocketServerConfigs"),
    ConfigKey("sasl.enabled.mechanisms", "LIST", ["GSSAPI"], None,
              "The list of SASL mechanisms enabled in the Kafka server. dedup serves PLAIN, SCRAM-SHA-256 and "
              "SCRAM-SHA-512.", "BrokerSecurityConfigs"),
    ConfigKey("ssl.keystore.type", "STRING", "JKS", None,
              "The file format of the key store file. dedup reads PEM.", "SslConfigs"),
    ConfigKey("ssl.keystore.location", "STRING", None, None,
              "The location of the key store file.", "SslConfigs"),
    ConfigKey("ssl.keystore.password", "PASSWORD", None, None,
              "The store password for the key store file (not needed for PEM).", "SslConfigs"),
    ConfigKey("ssl.key.password", "PASSWORD", None, None,
              "The password of the private key in the key store file or the PEM key specified in "
              "'ssl.keystore.key'.", "SslConfigs"),
    ConfigKey("ssl.keystore.certificate.chain", "PASSWORD", None, None,
              "Certificate chain in the format specified by 'ssl.keystore.type' (PEM).", "SslConfigs"),
    ConfigKey("ssl.keystore.key", "PASSWORD", None, None,
              "Private key in the format specified by 'ssl.keystore.type' (PEM).", "SslConfigs"),
    ConfigKey("ssl.truststore.type", "STRING", "JKS", None,
              "The file format of the trust store file. dedup reads PEM.", "SslConfigs"),
    ConfigKey("ssl.truststore.location", "STRING", None, None,
              "The location of the trust store file.", "SslConfigs"),
    ConfigKey("ssl.truststore.certificates", "PASSWORD", None, None,
              "Trusted certificates in the format specified by 'ssl.truststore.type' (PEM).", "SslConfigs"),
    ConfigKey("ssl.client.auth", "STRING", "none", None,
              "Configures kafka broker to request client authentication.", "BrokerSecurityConfigs",
              choices=("required", "requested", "none")),
    ConfigKey("offsets.topic.num.partitions", "INT", 50, "offsets_topic_num_partitions",
              "The number of partitions for the offset commit topic (should not change after deployment).", _GROUP,
              low=1),
    ConfigKey("offsets.topic.segment.bytes", "INT", 104857600, "offsets_topic_segment_bytes",
              "The offsets topic segment bytes should be kept relatively small in order to facilitate faster log "
              "compaction and cache loads.", _GROUP, low=62),  # Kafka: atLeast(1); dedup's log needs 62
    ConfigKey("offsets.topic.replication.factor", "SHORT", 3, "offsets_topic_replication_factor",
              "The replication factor for the offsets topic (set higher to ensure availability).", _GROUP, low=1),
    ConfigKey("group.initial.rebalance.delay.ms", "INT", 3000, "group_initial_rebalance_delay_ms",
              "The amount of time the group coordinator will wait for more consumers to join a new group before "
              "performing the first rebalance.", _GROUP),
    ConfigKey("group.min.session.timeout.ms", "INT", 6000, "group_min_session_timeout_ms",
              "The minimum allowed session timeout for registered consumers.", _GROUP),
    ConfigKey("group.max.session.timeout.ms", "INT", 1800000, "group_max_session_timeout_ms",
              "The maximum allowed session timeout for registered consumers.", _GROUP),
    ConfigKey("group.max.size", "INT", INT_MAX, "group_max_size",
              "The maximum number of consumers that a single consumer group can accommodate.", _GROUP, low=1),
    ConfigKey("offsets.retention.minutes", "INT", 10080, "offsets_retention_minutes",
              "For subscribed consumers, committed offset of a specific partition will be expired and discarded "
              "after this period once the group is empty.", _GROUP, low=1),
    ConfigKey("offsets.retention.check.interval.ms", "LONG", 600000, "offsets_retention_check_interval_ms",
              "Frequency at which to check for stale offsets", _GROUP, low=1),
    ConfigKey("transaction.state.log.num.partitions", "INT", 50, "transaction_state_log_num_partitions",
              "The number of partitions for the transaction topic (should not change after deployment).", _TXN_LOG,
              low=1),
    ConfigKey("transaction.state.log.replication.factor", "SHORT", 3, "transaction_state_log_replication_factor",
              "The replication factor for the transaction topic (set higher to ensure availability).", _TXN_LOG,
              low=1),
    ConfigKey("transaction.state.log.segment.bytes", "INT", 104857600, "transaction_state_log_segment_bytes",
              "The transaction topic segment bytes should be kept relatively small in order to facilitate faster log "
              "compaction and cache loads", _TXN_LOG, low=62),  # Kafka: atLeast(1); dedup's log needs 62
    ConfigKey("transaction.max.timeout.ms", "INT", 900000, "transaction_max_timeout_ms",
              "The maximum allowed timeout for transactions. If a client's requested transaction time exceed this, "
              "then the broker will return an error in InitProducerIdRequest.", _TXN, low=1),
    ConfigKey("transactional.id.expiration.ms", "INT", 604800000, "transactional_id_expiration_ms",
              "The time in ms that the transaction coordinator will wait without receiving any transaction status "
              "updates for the current transaction before expiring its transactional id.", _TXN, low=1),
    ConfigKey("transaction.abort.timed.out.transaction.cleanup.interval.ms", "INT", 10000,
              "transaction_abort_timed_out_transaction_cleanup_interval_ms",
              "The interval at which to rollback transactions that have timed out", _TXN, low=1),
    ConfigKey("transaction.remove.expired.transaction.cleanup.interval.ms", "INT", 3600000,
              "transaction_remove_expired_transaction_cleanup_interval_ms",
              "The interval at which to remove transactions that have expired due to transactional.id.expiration.ms "
              "passing", _TXN, low=1),
]}  # fmt: skip

@dataclass(frozen=True)
class TopicKey:
    """One topic-level key (CreateTopics ``configs``, DescribeConfigs TOPIC): the broker key it
    takes its default from (Kafka's ServerTopicConfigSynonyms) and the
    :class:`~dedup.cluster.Cluster` / :class:`~dedup.log.PartitionLog` keyword it sets on the
    topic's partitions (None: recorded, nothing to set)."""

    name: str
    synonym: str
    kwarg: str | None

    def parse(self, text: str) -> Any:
        """``text`` as a value of this key: its broker synonym's type and range, errors naming
        this key."""
        return dataclasses.replace(BROKER_CONFIGS[self.synonym], name=self.name).parse(text)

    def to_text(self, value: Any) -> str | None:
        return BROKER_CONFIGS[self.synonym].to_text(value)


#: The topic-level keys dedup serves. ``producer.id.expiration.ms`` is a broker key in Kafka;
#: dedup's log keeps it per partition, so it is served per topic too.
TOPIC_CONFIGS: dict[str, TopicKey] = {key.name: key for key in [
    TopicKey("cleanup.policy", "log.cleanup.policy", None),
    TopicKey("segment.bytes", "log.segment.bytes", "segment_bytes"),
    TopicKey("retention.ms", "log.retention.ms", "retention_ms"),
    TopicKey("retention.bytes", "log.retention.bytes", "retention_bytes"),
    TopicKey("min.insync.replicas", "min.insync.replicas", "min_insync_replicas"),
    TopicKey("unclean.leader.election.enable", "unclean.leader.election.enable", "unclean_leader_election"),
    TopicKey("producer.id.expiration.ms", "producer.id.expiration.ms", "producer_id_expiration_ms"),
]}  # fmt: skip

#: Kafka keys accepted and ignored with a warning: nothing a client sees depends on them in a
#: single-process server (node identity and KRaft wiring, threads, socket buffers, recovery
#: threads, the share-group state topic, which dedup does not serve, and the transaction state
#: topic's min.isr: its partitions take the server's min.insync.replicas).
IGNORED_KAFKA_KEYS = frozenset({
    "broker.id", "node.id", "process.roles", "controller.quorum.voters", "controller.quorum.bootstrap.servers",
    "controller.listener.names", "inter.broker.listener.name", "num.network.threads", "num.io.threads",
    "socket.send.buffer.bytes",
    "socket.receive.buffer.bytes", "num.recovery.threads.per.data.dir", "log.retention.check.interval.ms",
    "transaction.state.log.min.isr",
    "share.coordinator.state.topic.replication.factor", "share.coordinator.state.topic.min.isr",
    "log.flush.interval.messages", "log.flush.interval.ms", "zookeeper.connect", "zookeeper.connection.timeout.ms",
})  # fmt: skip


#: The keys :func:`dedup.server.security.configure_listeners` reads, passed to KafkaServer as
#: ``security_configs``, with the per-listener JAAS keys (:data:`LISTENER_JAAS_KEY`).
SECURITY_KEYS = frozenset(
    {"listeners", "listener.security.protocol.map", "advertised.listeners", "sasl.enabled.mechanisms"}
    | {key for key in BROKER_CONFIGS if key.startswith("ssl.")}
)
LISTENER_JAAS_KEY = re.compile(r"listener\.name\.[a-z0-9_]+\.(plain|scram-sha-256|scram-sha-512)\.sasl\.jaas\.config")


# --- java.util.Properties.load -------------------------------------------------------------------

_WHITESPACE = " \t\f"
_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


def _logical_lines(text: str) -> Iterable[str]:
    """Properties.LineReader: natural lines (``\\n``, ``\\r`` or ``\\r\\n``) without leading
    whitespace, joined where one ends in an odd number of backslashes (the continuation's
    leading whitespace dropped); blank and comment (``#``, ``!``) lines skipped."""
    natural = re.split(r"\r\n|\r|\n", text)
    index = 0
    while index < len(natural):
        line = natural[index].lstrip(_WHITESPACE)
        index += 1
        if not line or line[0] in "#!":
            continue  # a comment line never continues, whatever it ends with
        parts = []
        while True:
            trailing = len(line) - len(line.rstrip("\\"))
            if trailing % 2 == 0:
                parts.append(line)
                break
            parts.append(line[:-1])
            if index == len(natural):
                break  # a continuation at the end of the input: the backslash is dropped
            line = natural[index].lstrip(_WHITESPACE)
            index += 1
        yield "".join(parts)


def _unescape(text: str) -> str:
    """Properties.loadConvert: ``\\t \\n \\r \\f``, ``\\uXXXX``, and ``\\c`` for any other c."""
    out = []
    index = 0
    while index < len(text):
        char = text[index]
        index += 1
        if char != "\\" or index == len(text):
            out.append(char)
            continue
        char = text[index]
        index += 1
        if char == "u":
            digits = text[index : index + 4]
            if len(digits) < 4 or not re.fullmatch(r"[0-9a-fA-F]{4}", digits):
                raise ValueError("Malformed \\uxxxx encoding.")
            out.append(chr(int(digits, 16)))
            index += 4
        else:
            out.append(_ESCAPES.get(char, char))
    return "".join(out)


def _split(line: str) -> tuple[str, str]:
    """Properties.load0: the key ends at the first unescaped ``=``, ``:`` or whitespace; then
    whitespace, at most one ``=`` or ``:``, and whitespace again, before the value."""
    key_end = len(line)
    value_start = len(line)
    separator = False
    backslash = False
    for index, char in enumerate(line):
        if char in "=:" and not backslash:
            key_end, value_start, separator = index, index + 1, True
            break
        if char in _WHITESPACE and not backslash:
            key_end, value_start = index, index + 1
            break
        backslash = char == "\\" and not backslash
    while value_start < len(line):
        char = line[value_start]
        if char not in _WHITESPACE:
            if not separator and char in "=:":
                separator = True
            else:
                break
        value_start += 1
    return line[:key_end], line[value_start:]


def parse_properties(text: str) -> dict[str, str]:
    """The key-value pairs of a ``.properties`` text, in order, a later duplicate winning
    (``java.util.Properties.load``); ``ConfigError`` naming the key on a malformed ``\\uXXXX``."""
    pairs: dict[str, str] = {}
    for line in _logical_lines(text):
        raw_key, raw_value = _split(line)
        try:
            key = _unescape(raw_key)
        except ValueError as error:
            raise ConfigError(raw_key, f"{raw_key}: {error}") from None
        try:
            pairs[key] = _unescape(raw_value)
        except ValueError as error:
            raise ConfigError(key, f"{key}: {error}") from None
    return pairs


def load_properties(path: str) -> dict[str, str]:
    """:func:`parse_properties` of the file at ``path``, read as ISO-8859-1 as Kafka's
    ``Utils.loadProps`` (``Properties.load(InputStream)``) does: non-Latin-1 text is written
    with ``\\uXXXX``. An unreadable file raises OSError."""
    with open(path, "rb") as file:
        return parse_properties(file.read().decode("iso-8859-1"))


def parse_override(argument: str) -> tuple[str, str]:
    """``KEY=VALUE`` of ``--override`` (CommandLineUtils.parseKeyValueArgs: split at the first
    ``=``, nothing trimmed); ``ConfigError`` when the value is missing or empty."""
    key, equals, value = argument.partition("=")
    if not equals or not value:
        raise ConfigError(key, f"Missing value for key {key}")
    return key, value


# --- the effective configuration -----------------------------------------------------------------


@dataclass(frozen=True)
class ConfigEntry:
    """What DescribeConfigs reports of one key."""

    name: str
    value: str | None
    is_default: bool  # config source DEFAULT_CONFIG (5), else STATIC_BROKER_CONFIG (4)
    read_only: bool
    sensitive: bool
    type: str
    doc: str
    default: str | None  # the default's text, for the synonym of source DEFAULT_CONFIG


class BrokerConfig:
    """The broker configuration: the values given (parsed and checked), and Kafka's defaults.

    >>> config = BrokerConfig({"num.partitions": "6"})
    >>> config.value("num.partitions"), config.value("auto.create.topics.enable")
    (6, True)
    >>> config.server_kwargs()
    {'num_partitions': 6}
    """

    def __init__(self, settings: Mapping[str, str] | None = None, *, warn: bool = True) -> None:
        self._values: dict[str, Any] = {}
        #: ``listener.name.<listener>.<mechanism>.sasl.jaas.config`` keys, as given (never reported).
        self.listener_jaas: dict[str, str] = {}
        for key, text in dict(settings or {}).items():
            if LISTENER_JAAS_KEY.fullmatch(key):
                self.listener_jaas[key] = text
                continue
            if key in IGNORED_KAFKA_KEYS:
                if warn:
                    logger.warning("config %s=%s is accepted and ignored: it has no effect in dedup serve", key, text)
                continue
            entry = BROKER_CONFIGS.get(key)
            if entry is None:
                raise UnknownConfigError(key, f"{key}: not a broker configuration dedup serve knows or serves")
            self._values[key] = entry.parse(text)
        self._check()

    @classmethod
    def from_layers(cls, *layers: Mapping[str, str]) -> BrokerConfig:
        """The configuration of several layers (a file, then ``--override``s, then shorthand
        flags), a key in a later layer winning."""
        merged: dict[str, str] = {}
        for layer in layers:
            merged.update(layer)
        return cls(merged)

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> BrokerConfig:
        """A configuration of already parsed values (the server's own, for DescribeConfigs); a
        value equal to Kafka's default counts as a default."""
        config = cls()
        for key, value in values.items():
            if value is not None and value != BROKER_CONFIGS[key].default:
                config._values[key] = value
        return config

    def _check(self) -> None:
        dirs = self._values.get("log.dirs")
        if dirs is not None and "," in dirs:
            raise ConfigError("log.dirs", f"Invalid value {dirs} for configuration log.dirs: dedup keeps its logs "
                              "in one directory")  # fmt: skip
        if "listeners" in self._values:
            self._listener()

    def is_set(self, key: str) -> bool:
        return key in self._values

    def value(self, key: str) -> Any:
        """The effective value of ``key`` (KeyError for a key not in :data:`BROKER_CONFIGS`)."""
        entry = BROKER_CONFIGS[key]
        if key in self._values:
            return self._values[key]
        if key == "log.retention.ms":  # Kafka's LogConfig: ms, else minutes, else hours
            minutes = self.value("log.retention.minutes")
            return 60_000 * minutes if minutes is not None else 3_600_000 * self.value("log.retention.hours")
        return entry.default

    def entries(self) -> list[ConfigEntry]:
        """Every key as DescribeConfigs reports it, in table order."""
        return [self.entry(key) for key in BROKER_CONFIGS]

    def entry(self, key: str) -> ConfigEntry:
        entry = BROKER_CONFIGS[key]
        value = None if entry.type == "PASSWORD" else entry.to_text(self.value(key))  # Kafka never shows a password
        return ConfigEntry(
            name=key, value=value, is_default=key not in self._values, read_only=True,
            sensitive=entry.type == "PASSWORD", type=entry.type, doc=entry.doc, default=entry.to_text(entry.default),
        )  # fmt: skip

    def _listener(self) -> tuple[str | None, int]:
        text = self._values["listeners"]
        listeners = [item.strip() for item in text.split(",") if item.strip()]
        parsed = []
        for listener in listeners:
            match = re.fullmatch(r"([A-Za-z0-9_]+)://(\[[^\]]*\]|[^:]*):([0-9]+)", listener)
            if match is None or int(match.group(3)) > 65535:
                raise ConfigError("listeners", f"Invalid value {text} for configuration listeners: Unable to parse "
                                  f"{listener} to a broker endpoint")  # fmt: skip
            parsed.append((match.group(1), match.group(2).strip("[]") or None, int(match.group(3))))
        for name, host, port in parsed:
            if name.upper() == "PLAINTEXT":
                return host, port
        plain = [item for item in parsed if item[0].upper() != "CONTROLLER"]
        if not plain:
            raise ConfigError("listeners", f"Invalid value {text} for configuration listeners: no PLAINTEXT "
                              "listener")  # fmt: skip
        return plain[0][1], plain[0][2]

    def server_kwargs(self) -> dict[str, Any]:
        """The :class:`~dedup.server.core.KafkaServer` keyword arguments of the keys that were
        set (the server's own defaults apply to the rest): each key's ``kwarg``, and
        ``directory`` (``log.dirs``, else ``log.dir``), ``host`` and ``port`` (the first
        broker's, from ``listeners``), ``retention_ms`` (``log.retention.ms``, else minutes,
        else hours)."""
        kwargs: dict[str, Any] = {}
        for key, value in self._values.items():
            kwarg = BROKER_CONFIGS[key].kwarg
            if kwarg is not None:
                kwargs[kwarg] = value
        if "log.dirs" in self._values or "log.dir" in self._values:
            kwargs["directory"] = self._values.get("log.dirs", self._values.get("log.dir"))
        if "listeners" in self._values:
            host, port = self._listener()
            if host is not None:
                kwargs["host"] = host
            kwargs["port"] = port
        if any(key in self._values for key in ("log.retention.ms", "log.retention.minutes", "log.retention.hours")):
            kwargs["retention_ms"] = self.value("log.retention.ms")
        security = {key: value for key, value in self._values.items() if key in SECURITY_KEYS}
        names = [item.split("://")[0].strip().upper() for item in str(security.get("listeners", "")).split(",")]
        if [name for name in names if name and name != "CONTROLLER"] in (["PLAINTEXT"], []):
            security.pop("listeners", None)  # one PLAINTEXT listener: host and port say it all
        security.update(self.listener_jaas)
        if security:
            kwargs["security_configs"] = security
        return kwargs
