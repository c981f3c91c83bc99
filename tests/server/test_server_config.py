"""Broker configuration the Kafka way (issue 14, item 2): ``server.properties`` read exactly as
``java.util.Properties.load`` reads it, ``--override KEY=VALUE`` as ``kafka-server-start.sh``
takes it, Kafka's types and ranges, and ``python -m dedup serve``'s errors: one line naming the
key, exit status 2. The shorthand flags win over the file and the overrides."""

from __future__ import annotations

import logging

import pytest

from dedup.server.cli import COMMAND, server_options
from dedup.server.config import (
    BROKER_CONFIGS,
    BrokerConfig,
    ConfigError,
    UnknownConfigError,
    load_properties,
    parse_override,
    parse_properties,
)

# --- java.util.Properties.load ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a=1\nb = 2\nc:3\nd 4\ne\t \f=\t5\n", {"a": "1", "b": "2", "c": "3", "d": "4", "e": "5"}),
        ("# comment\n! comment too\n   \n  key=value  \n", {"key": "value  "}),  # trailing space kept
        ("a=1\\\n    2\\\n  3\n", {"a": "123"}),  # continuation: the next line's leading whitespace dropped
        ("a=x\\\\\nb=y\n", {"a": "x\\", "b": "y"}),  # an even run of backslashes does not continue
        ("# comment \\\nb=2\n", {"b": "2"}),  # a comment line never continues
        ("a=1\\", {"a": "1"}),  # a continuation at the end of the input: the backslash dropped
        ("a=1\r\nb=2\rc=3", {"a": "1", "b": "2", "c": "3"}),  # \r\n, \r and \n all end lines
        ("k\\=ey\\ x=v\\tw\\u0041\\q\n", {"k=ey x": "v\twAq"}),  # escapes in keys and values
        ("a==b\nc=:d\ne::f\n", {"a": "=b", "c": ":d", "e": ":f"}),  # one separator, the rest is value
        ("a\n", {"a": ""}),  # a key alone has an empty value
        ("a=1\na=2\n", {"a": "2"}),  # a later duplicate wins
        ("a = b c \\\n", {"a": "b c "}),
    ],
)
def test_properties_are_read_as_java_reads_them(text, expected):
    assert parse_properties(text) == expected


@pytest.mark.parametrize("text", ["key=\\u00g1\n", "key=\\u12\n"])
def test_a_malformed_unicode_escape_names_the_key(text):
    with pytest.raises(ConfigError, match=r"^key: Malformed \\uxxxx encoding") as error:
        parse_properties(text)
    assert error.value.key == "key"


def test_a_file_is_read_as_iso_8859_1(tmp_path):
    path = tmp_path / "server.properties"
    path.write_bytes(b"log.dirs=/tmp/caf\xe9\nlistener=\\u00e9\n")
    assert load_properties(str(path)) == {"log.dirs": "/tmp/caf\u00e9", "listener": "\u00e9"}


@pytest.mark.parametrize(
    ("argument", "pair"),
    [("num.partitions=6", ("num.partitions", "6")), ("a=b=c", ("a", "b=c")), (" a = b", (" a ", " b"))],
)
def test_an_override_splits_at_the_first_equals_sign(argument, pair):
    assert parse_override(argument) == pair


@pytest.mark.parametrize("argument", ["num.partitions", "num.partitions="])
def test_an_override_without_a_value_is_refused(argument):
    with pytest.raises(ConfigError, match="^Missing value for key num.partitions$"):
        parse_override(argument)


# --- types, ranges, keys -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "text", "value"),
    [
        ("num.partitions", " 6 ", 6),
        ("num.partitions", "+6", 6),
        ("auto.create.topics.enable", "FALSE", False),
        ("auto.create.topics.enable", " True", True),
        ("offsets.topic.replication.factor", "32767", 32767),
        ("offsets.retention.check.interval.ms", "9223372036854775807", (1 << 63) - 1),
        ("log.cleanup.policy", " delete ", ["delete"]),
        ("log.dirs", " /data ", "/data"),
    ],
)
def test_values_are_parsed_as_kafka_configdef_parses_them(key, text, value):
    assert BrokerConfig({key: text}).value(key) == value


@pytest.mark.parametrize(
    ("key", "text", "why"),
    [
        ("num.partitions", "six", "Not a number of type INT"),
        ("num.partitions", "2147483648", "Not a number of type INT"),
        ("num.partitions", "1.5", "Not a number of type INT"),
        ("num.partitions", "", "Not a number of type INT"),
        ("num.partitions", "0", "Value must be at least 1"),
        ("offsets.topic.replication.factor", "32768", "Not a number of type SHORT"),
        ("offsets.retention.check.interval.ms", "9223372036854775808", "Not a number of type LONG"),
        ("auto.create.topics.enable", "yes", "Expected value to be either true or false"),
        ("log.cleanup.policy", "compact", "String must be one of: delete"),
        ("min.insync.replicas", "-1", "Value must be at least 1"),
        ("log.dirs", "/a,/b", "dedup keeps its logs in one directory"),
        ("listeners", "PLAINTEXT//x:1", "Unable to parse"),
        ("listeners", "PLAINTEXT://x:70000", "Unable to parse"),
    ],
)
def test_a_wrong_value_is_an_error_naming_the_key(key, text, why):
    with pytest.raises(ConfigError) as error:
        BrokerConfig({key: text})
    assert error.value.key == key
    assert str(error.value).startswith(f"Invalid value {text} for configuration {key}: ")
    assert why in str(error.value)
    assert "\n" not in str(error.value)


def test_an_unknown_key_is_an_error_and_kafka_keys_without_effect_are_ignored(caplog):
    caplog.set_level(logging.WARNING, logger="dedup.server")  # another test may have raised its level
    with pytest.raises(UnknownConfigError, match="^num.partition: not a broker configuration"):
        BrokerConfig({"num.partition": "3"})
    config = BrokerConfig({"broker.id": "7", "process.roles": "broker,controller", "num.io.threads": "x"})
    assert config.server_kwargs() == {}
    assert "broker.id=7 is accepted and ignored" in caplog.text


def test_defaults_are_kafkas_and_only_set_keys_become_server_arguments():
    config = BrokerConfig({"log.segment.bytes": "1048576", "log.retention.hours": "1",
                           "listeners": "CONTROLLER://:9093,PLAINTEXT://127.0.0.2:19092"})  # fmt: skip
    assert config.value("num.partitions") == 1
    assert config.value("group.initial.rebalance.delay.ms") == 3000
    assert config.value("offsets.retention.minutes") == 10080
    assert config.server_kwargs() == {"segment_bytes": 1048576, "retention_ms": 3_600_000, "host": "127.0.0.2",
                                      "port": 19092}  # fmt: skip
    assert config.entry("log.segment.bytes").is_default is False
    assert config.entry("num.partitions").is_default is True
    # log.retention.ms wins over minutes, minutes over hours (LogConfig)
    assert BrokerConfig({"log.retention.minutes": "2", "log.retention.hours": "5"}).value("log.retention.ms") == 120_000
    assert BrokerConfig({"log.retention.ms": "-1", "log.retention.hours": "5"}).value("log.retention.ms") == -1


def test_every_key_has_kafkas_snake_case_kwarg_or_none():
    for key, entry in BROKER_CONFIGS.items():
        assert entry.kwarg is None or entry.kwarg == key.replace(".", "_") or key in {
            "log.segment.bytes", "log.retention.bytes", "unclean.leader.election.enable", "socket.request.max.bytes",
            "producer.state.max.producers"}
        if entry.default is not None:
            assert BrokerConfig({key: entry.to_text(entry.default)}).value(key) == entry.default


def test_kafkas_own_server_properties_are_accepted(tmp_path):
    # The stock file of Kafka 3.9's distribution (config/kraft/server.properties), trimmed of comments.
    path = tmp_path / "server.properties"
    path.write_text(
        "process.roles=broker,controller\nnode.id=1\ncontroller.quorum.voters=1@localhost:9093\n"
        "listeners=PLAINTEXT://:9092,CONTROLLER://:9093\ninter.broker.listener.name=PLAINTEXT\n"
        "advertised.listeners=PLAINTEXT://localhost:9092,CONTROLLER://localhost:9093\n"
        "controller.listener.names=CONTROLLER\n"
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT\n"
        "num.network.threads=3\nnum.io.threads=8\nsocket.send.buffer.bytes=102400\n"
        "socket.receive.buffer.bytes=102400\nsocket.request.max.bytes=104857600\nlog.dirs=" + str(tmp_path / "logs")
        + "\nnum.partitions=1\nnum.recovery.threads.per.data.dir=1\noffsets.topic.replication.factor=1\n"
        "transaction.state.log.replication.factor=1\ntransaction.state.log.min.isr=1\nlog.retention.hours=168\n"
        "log.segment.bytes=1073741824\nlog.retention.check.interval.ms=300000\n"
    )  # fmt: skip
    config = BrokerConfig(load_properties(str(path)))
    kwargs = config.server_kwargs()
    assert kwargs["directory"] == str(tmp_path / "logs")
    assert (kwargs["port"], "host" in kwargs) == (9092, False)  # an empty host keeps serve's default
    assert kwargs["retention_ms"] == 168 * 3_600_000


# --- python -m dedup serve ---------------------------------------------------------------------------------


def options(*argv: str) -> dict:
    return server_options(COMMAND.parser().parse_args(list(argv)))


def test_overrides_win_over_the_file_and_flags_win_over_both(tmp_path):
    path = tmp_path / "server.properties"
    path.write_text(f"log.dirs={tmp_path / 'file'}\nmin.insync.replicas=1\nlisteners=PLAINTEXT://127.0.0.3:20000\n"
                    "log.segment.bytes=100000\n")  # fmt: skip
    assert options(str(path)) == {"directory": str(tmp_path / "file"), "min_insync_replicas": 1,
                                  "host": "127.0.0.3", "port": 20000, "segment_bytes": 100000}  # fmt: skip
    got = options(str(path), "--override", "log.segment.bytes=200000", "--override", "log.segment.bytes=300000",
                  "--override", "min.insync.replicas=2")  # fmt: skip
    assert (got["segment_bytes"], got["min_insync_replicas"]) == (300000, 2)  # the later override wins
    got = options(str(path), "--override", "min.insync.replicas=2", "--min-insync-replicas", "3", "--dir",
                  str(tmp_path / "flag"), "--port", "0", "--host", "127.0.0.4")  # fmt: skip
    assert got == {"directory": str(tmp_path / "flag"), "min_insync_replicas": 3, "host": "127.0.0.4", "port": 0,
                   "segment_bytes": 100000}  # fmt: skip


def test_the_group_coordinators_keys_reach_the_server(capsys):
    """Refused as "not served by this build" before the group keys were accepted by serve: the
    coordinator takes them through KafkaServer's **options, which the check did not look into."""
    overrides = {"group.initial.rebalance.delay.ms": "0", "group.min.session.timeout.ms": "1000",
                 "offsets.topic.num.partitions": "5", "offsets.retention.minutes": "60"}  # fmt: skip
    argv = [arg for key, value in overrides.items() for arg in ("--override", f"{key}={value}")]
    assert options(*argv) == {"group_initial_rebalance_delay_ms": 0, "group_min_session_timeout_ms": 1000,
                              "offsets_topic_num_partitions": 5, "offsets_retention_minutes": 60}  # fmt: skip
    assert COMMAND.main([*argv, "--port", "0", "--exit-after", "0"]) == 0
    assert capsys.readouterr().out.startswith("bootstrap.servers=127.0.0.1:")


def test_no_file_and_no_flags_leave_the_servers_defaults():
    assert options() == {}


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--override", "num.partition=3"], "num.partition"),
        (["--override", "num.partitions=0"], "num.partitions"),
        (["--override", "auto.create.topics.enable=maybe"], "auto.create.topics.enable"),
        (["--override", "log.segment.bytes"], "log.segment.bytes"),
        (["--override", "min.insync.replicas=4"], "min.insync.replicas"),  # more than --brokers (3)
        (["--override", "listeners=PLAINTEXT://:65535"], "--port"),  # brokers 1 and 2 past 65535
        (["FILE:bad-key"], "no.such.key"),
        (["FILE:bad-escape"], "log.dirs"),
        (["FILE:missing"], "server.properties"),
    ],
)
def test_serve_reports_a_bad_configuration_in_one_line_naming_the_key_and_exits_2(tmp_path, capsys, argv, named):
    files = {"bad-key": "num.partitions=2\nno.such.key=1\n", "bad-escape": "log.dirs=/tmp/\\u12zz\n"}
    for index, argument in enumerate(argv):
        if argument.startswith("FILE:"):
            name = argument[5:]
            path = tmp_path / name
            if name in files:
                path.write_text(files[name])
            argv[index] = str(path)
    with pytest.raises(SystemExit) as exit_:
        COMMAND.main([*argv, "--exit-after", "0"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and named in err, err
    assert "Traceback" not in err
