"""DescribeConfigs (API 32): the broker configuration and the topic-level configs, as Kafka's
``ConfigHelper.describeConfigs`` reports them.

- BROKER: the resource name is the id of the broker asked ("" is the cluster-wide dynamic
  default, which dedup does not have: no configs); another id is INVALID_REQUEST
  ("Unexpected broker id, ..."), as in Kafka. Every key of
  :data:`~dedup.server.config.BROKER_CONFIGS` with its effective value; config source
  STATIC_BROKER_CONFIG (4) where the server was given a value, DEFAULT_CONFIG (5) otherwise;
  read-only (dedup has no dynamic broker configuration), never sensitive.
- TOPIC: the topic-level keys dedup serves (:data:`~dedup.server.config.TOPIC_CONFIGS`; Kafka
  lists all of LogConfig's), each with the value set on the topic (source TOPIC_CONFIG, 1) or
  its broker synonym's; an illegal name is INVALID_TOPIC_EXCEPTION, an unknown topic
  UNKNOWN_TOPIC_OR_PARTITION.
- any other resource type (GROUP, BROKER_LOGGER, CLIENT_METRICS, unknown): INVALID_REQUEST
  ("Unsupported resource type"), per resource, the others answered.

``configuration_keys`` null or empty asks for every key; ``include_synonyms`` lists, most
specific first, the topic's own value, the broker's set value and the default;
``include_documentation`` (v3+) adds each key's doc. Versions: 1 to 4 (Kafka 4 removed v0,
KIP-896).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kio.schema.errors import ErrorCode

from ...checkpoints import _topic
from ..config import BROKER_CONFIGS, CONFIG_TYPES, TOPIC_CONFIGS, BrokerConfig
from ..wire import Request, build, response_schema

if TYPE_CHECKING:
    from ..core import KafkaServer

#: ConfigResource.Type ids.
TOPIC, BROKER = 2, 4
#: DescribeConfigsResponse.ConfigSource ids.
TOPIC_CONFIG, STATIC_BROKER_CONFIG, DEFAULT_CONFIG = 1, 4, 5


def topic_overrides(server: KafkaServer, name: str) -> dict[str, str] | None:
    """The topic-level configs set on topic ``name`` (key to text), or None if there is no
    such topic."""
    topic = server.topics.get(name)
    return None if topic is None else dict(topic.configs)


def topic_configs(server: KafkaServer, broker_id: int, overrides: dict[str, str]) -> list[dict[str, Any]]:
    """Every served topic-level config of a topic with ``overrides`` set on it: its value and
    source, as DescribeConfigs and CreateTopics v5 report them."""
    return _topic_result(broker_config(server, broker_id), overrides, list(TOPIC_CONFIGS), False, False)


def broker_config(server: KafkaServer, broker_id: int) -> BrokerConfig:
    """The effective configuration of ``server`` as broker ``broker_id`` sees it."""
    settings = server.settings
    values: dict[str, Any] = {}
    for key, entry in BROKER_CONFIGS.items():
        if entry.kwarg is not None and settings.get(entry.kwarg) is not None:
            values[key] = settings[entry.kwarg]
    if settings.get("retention_ms") is not None:
        values["log.retention.ms"] = settings["retention_ms"]
    values["log.dirs"] = server.directory
    values["listeners"] = ",".join(f"{listener.name}://{listener.host}:{server.listener_ports[listener.name][broker_id]}"
                                   for listener in server.listeners)  # fmt: skip
    return BrokerConfig.from_values(values)


def _synonym(name: str, value: str | None, source: int) -> dict[str, Any]:
    return {"name": name, "value": value, "source": source}


def _broker_result(config: BrokerConfig, keys: list[str], synonyms: bool, documentation: bool) -> list[Any]:
    results = []
    for key in keys:
        entry = config.entry(key)
        chain = []
        if not entry.is_default:
            chain.append(_synonym(key, entry.value, STATIC_BROKER_CONFIG))
        if entry.default is not None:
            chain.append(_synonym(key, entry.default, DEFAULT_CONFIG))
        results.append({
            "name": key, "value": entry.value, "read_only": entry.read_only,
            "config_source": DEFAULT_CONFIG if entry.is_default else STATIC_BROKER_CONFIG,
            "is_default": entry.is_default, "is_sensitive": entry.sensitive, "synonyms": chain if synonyms else [],
            "config_type": CONFIG_TYPES[entry.type], "documentation": entry.doc if documentation else None,
        })  # fmt: skip
    return results


def _topic_result(config: BrokerConfig, overrides: dict[str, str], keys: list[str], synonyms: bool,
                  documentation: bool) -> list[Any]:  # fmt: skip
    results = []
    for key in keys:
        broker_key = TOPIC_CONFIGS[key].synonym
        broker = config.entry(broker_key)
        chain = []
        if key in overrides:
            chain.append(_synonym(key, overrides[key], TOPIC_CONFIG))
        if not broker.is_default:
            chain.append(_synonym(broker_key, broker.value, STATIC_BROKER_CONFIG))
        if broker.default is not None:
            chain.append(_synonym(broker_key, broker.default, DEFAULT_CONFIG))
        source = chain[0]["source"] if chain else DEFAULT_CONFIG
        results.append({
            "name": key, "value": overrides.get(key, broker.value), "read_only": False, "config_source": source,
            "is_default": source == DEFAULT_CONFIG, "is_sensitive": False, "synonyms": chain if synonyms else [],
            "config_type": CONFIG_TYPES[broker.type], "documentation": broker.doc if documentation else None,
        })  # fmt: skip
    return results


def _wanted(names: Any, known: list[str]) -> list[str]:
    if not names:  # null or empty: every key (ConfigHelper.createResponseConfig)
        return known
    return [key for key in known if key in names]


def _describe(server: KafkaServer, broker_id: int, resource: Any, synonyms: bool, documentation: bool
              ) -> tuple[ErrorCode, str | None, list[Any]]:  # fmt: skip
    kind, name = resource.resource_type, resource.resource_name
    if kind == BROKER:
        if not name:
            return ErrorCode.none, None, []  # the cluster-wide dynamic defaults: none in dedup
        if name.strip() != str(broker_id):
            if not name.strip().lstrip("+-").isdigit():
                return ErrorCode.invalid_request, f"Broker id must be an integer, but it is: {name}", []
            return ErrorCode.invalid_request, f"Unexpected broker id, expected {broker_id} or empty string, " \
                f"but received {name}", []  # fmt: skip
        keys = _wanted(resource.configuration_keys, list(BROKER_CONFIGS))
        return ErrorCode.none, None, _broker_result(broker_config(server, broker_id), keys, synonyms, documentation)
    if kind == TOPIC:
        try:
            _topic(name)
        except ValueError:
            return ErrorCode.invalid_topic_exception, f"Topic name {name!r} is illegal", []
        overrides = topic_overrides(server, name)
        if overrides is None:
            return ErrorCode.unknown_topic_or_partition, None, []
        keys = _wanted(resource.configuration_keys, list(TOPIC_CONFIGS))
        config = broker_config(server, broker_id)
        return ErrorCode.none, None, _topic_result(config, overrides, keys, synonyms, documentation)
    return ErrorCode.invalid_request, f"Unsupported resource type: {kind}", []


def describe_configs(server: KafkaServer, broker_id: int, request: Request) -> Any:
    body = request.body
    documentation = bool(getattr(body, "include_documentation", False))
    results = []
    for resource in body.resources:
        error, message, configs = _describe(server, broker_id, resource, body.include_synonyms, documentation)
        results.append({"error_code": error, "error_message": message, "resource_type": resource.resource_type,
                        "resource_name": resource.resource_name, "configs": configs})  # fmt: skip
    return build(response_schema(request), {"results": results})
