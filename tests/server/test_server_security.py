"""Authentication (issue 16, item 7): listeners as Kafka names them, TLS from PEM, SASL PLAIN
and SCRAM-SHA-256/512 with credentials in Kafka's JAAS form.

Real clients (kafka-python, confluent-kafka) produce and consume over SASL_SSL with the right
credentials and are refused with wrong ones; the protocol's edges are reached with raw
sockets (a plaintext client on the TLS listener, a request before authentication, an
unsupported mechanism, SaslHandshake v0's bare tokens, ILLEGAL_SASL_STATE after it). The
certificates are made in the test with trustme, never stored."""

from __future__ import annotations

import base64
import io
import logging
import os
import re
import socket
import ssl
import struct
import subprocess
import sys
import time

import pytest
from kio.index import load_request_schema, load_response_schema
from kio.serial import entity_reader, entity_writer

from dedup.server import ServerThread
from dedup.server.security import SecurityError, configure_listeners
from dedup.server.security.jaas import JaasError, parse_jaas_config, parse_jaas_file
from dedup.server.security.mechanisms import AuthenticationFailed, PlainServer, ScramServer, scram_credential
from dedup.server.wire import ApiKey, build

trustme = pytest.importorskip("trustme")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOPIC = "clicks"
PLAIN = 'org.apache.kafka.common.security.plain.PlainLoginModule required user_alice="alice-secret";'
SCRAM = 'org.apache.kafka.common.security.scram.ScramLoginModule required user_alice="alice-secret";'
MECHANISMS = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA and a server certificate for 127.0.0.1 (key and chain in one PEM file)."""
    directory = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(directory / "server.pem")
    ca.cert_pem.write_to_path(directory / "ca.pem")
    return {"keystore": str(directory / "server.pem"), "ca": str(directory / "ca.pem")}


def sasl_configs(pki) -> dict:
    return {
        "listeners": "PLAINTEXT://127.0.0.1:0,SASL_SSL://127.0.0.1:0",
        "sasl.enabled.mechanisms": MECHANISMS,
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": pki["keystore"],
        "listener.name.sasl_ssl.plain.sasl.jaas.config": PLAIN,
        "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config": SCRAM,
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": SCRAM,
    }


@pytest.fixture(scope="module")
def server(pki, tmp_path_factory):
    with ServerThread(tmp_path_factory.mktemp("serve"), brokers=2, topics=[TOPIC],
                      security_configs=sasl_configs(pki)) as running:  # fmt: skip
        yield running


def sasl_bootstrap(server: ServerThread) -> str:
    return ",".join(f"127.0.0.1:{port}" for port in server.server.listener_ports["SASL_SSL"])


# --- raw frames ------------------------------------------------------------------------------------


def frame(api_key: int, version: int, body: dict, correlation_id: int = 1) -> bytes:
    schema = load_request_schema(api_key, version)
    buffer = io.BytesIO()
    header = schema.__header_schema__
    entity_writer(header)(buffer, header(request_api_key=api_key, request_api_version=version,
                                         correlation_id=correlation_id, client_id="test"))  # fmt: skip
    entity_writer(schema)(buffer, build(schema, body))
    data = buffer.getvalue()
    return struct.pack(">i", len(data)) + data


def receive(sock) -> bytes | None:
    data = b""
    while len(data) < 4 or len(data) < 4 + struct.unpack(">i", data[:4])[0]:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            return None
        if not chunk:
            return None
        data += chunk
    return data[4:]


def call(sock, api_key: int, version: int, body: dict):
    sock.sendall(frame(api_key, version, body))
    data = receive(sock)
    assert data is not None, "the server closed the connection"
    schema = load_response_schema(api_key, version)
    _, size = entity_reader(schema.__header_schema__)(data, 0)
    response, _ = entity_reader(schema)(data, size)
    return response


def closed(sock) -> bool:
    sock.settimeout(5)
    return receive(sock) is None


def tls_connect(server: ServerThread, pki, broker: int = 0):
    context = ssl.create_default_context(cafile=pki["ca"])
    raw = socket.create_connection(("127.0.0.1", server.server.listener_ports["SASL_SSL"][broker]), timeout=10)
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


API_VERSIONS = {"client_software_name": "t", "client_software_version": "1"}
METADATA = {"topics": None, "allow_auto_topic_creation": False, "include_cluster_authorized_operations": False,
            "include_topic_authorized_operations": False}  # fmt: skip


def plain_token(user: str = "alice", password: str = "alice-secret") -> bytes:
    return b"\0" + user.encode() + b"\0" + password.encode()


# --- real clients ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_kafka_python_produces_and_consumes_over_sasl_ssl(server, pki, mechanism):
    kafka = pytest.importorskip("kafka")
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    security = {"security_protocol": "SASL_SSL", "sasl_mechanism": mechanism, "sasl_plain_username": "alice",
                "sasl_plain_password": "alice-secret", "ssl_cafile": pki["ca"]}  # fmt: skip
    producer = kafka.KafkaProducer(bootstrap_servers=sasl_bootstrap(server), enable_idempotence=True, acks="all",
                                   request_timeout_ms=10000, **security)  # fmt: skip
    values = [f"{mechanism}-{i}".encode() for i in range(5)]
    for value in values:
        producer.send(TOPIC, value=value)
    producer.flush(30)
    producer.close(5)
    consumer = kafka.KafkaConsumer(bootstrap_servers=sasl_bootstrap(server), auto_offset_reset="earliest",
                                   enable_auto_commit=False, consumer_timeout_ms=2000, **security)  # fmt: skip
    consumer.assign([kafka.TopicPartition(TOPIC, 0)])
    got = [message.value for message in consumer]
    consumer.close()
    assert [value for value in got if value.startswith(mechanism.encode() + b"-")] == values


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
def test_kafka_python_with_a_wrong_password_is_refused(server, pki, mechanism, caplog):
    kafka = pytest.importorskip("kafka")
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    with caplog.at_level(logging.INFO, logger="dedup.server"), pytest.raises(kafka.errors.KafkaError):
        producer = kafka.KafkaProducer(
            bootstrap_servers=sasl_bootstrap(server), security_protocol="SASL_SSL", sasl_mechanism=mechanism,
            sasl_plain_username="alice", sasl_plain_password="wrong", ssl_cafile=pki["ca"], max_block_ms=3000,
            api_version=(2, 5),
        )  # fmt: skip
        try:
            producer.send(TOPIC, value=b"never").get(5)
        finally:
            producer.close(1)
    assert any("authentication failed" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
def test_confluent_kafka_produces_and_consumes_over_sasl_ssl(server, pki, mechanism):
    confluent_kafka = pytest.importorskip("confluent_kafka")
    security = {"security.protocol": "SASL_SSL", "sasl.mechanisms": mechanism, "sasl.username": "alice",
                "sasl.password": "alice-secret", "ssl.ca.location": pki["ca"]}  # fmt: skip
    producer = confluent_kafka.Producer({"bootstrap.servers": sasl_bootstrap(server), "enable.idempotence": True,
                                         **security})  # fmt: skip
    delivered = []
    values = [f"librdkafka-{mechanism}-{i}".encode() for i in range(5)]
    for value in values:
        producer.produce(TOPIC, value=value, on_delivery=lambda error, message: delivered.append(error))
    assert producer.flush(30) == 0
    assert delivered == [None] * 5
    consumer = confluent_kafka.Consumer({"bootstrap.servers": sasl_bootstrap(server), "group.id": f"g-{mechanism}",
                                         "enable.auto.commit": False, **security})  # fmt: skip
    consumer.assign([confluent_kafka.TopicPartition(TOPIC, 0, confluent_kafka.OFFSET_BEGINNING)])
    got: list[bytes] = []
    deadline = time.monotonic() + 20
    while not set(values) <= set(got) and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            got.append(message.value())
    consumer.close()
    assert [value for value in got if value in values] == values


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
def test_confluent_kafka_with_a_wrong_password_is_refused(server, pki, mechanism):
    confluent_kafka = pytest.importorskip("confluent_kafka")
    errors = []
    producer = confluent_kafka.Producer({
        "bootstrap.servers": sasl_bootstrap(server), "security.protocol": "SASL_SSL", "sasl.mechanisms": mechanism,
        "sasl.username": "alice", "sasl.password": "wrong", "ssl.ca.location": pki["ca"],
        "error_cb": errors.append, "message.timeout.ms": 3000,
    })  # fmt: skip
    delivered = []
    producer.produce(TOPIC, value=b"never", on_delivery=lambda error, message: delivered.append(error))
    producer.flush(10)
    assert delivered and delivered[0] is not None, "a message was delivered with a wrong password"
    assert any(error.code() == confluent_kafka.KafkaError._AUTHENTICATION for error in errors), errors
    assert any("Invalid" in error.str() for error in errors), errors  # Kafka's message reached the client


def test_a_plaintext_client_on_the_sasl_ssl_listener_is_refused(server):
    with socket.create_connection(("127.0.0.1", server.server.listener_ports["SASL_SSL"][0]), timeout=10) as sock:
        sock.sendall(frame(ApiKey.API_VERSIONS, 3, API_VERSIONS))
        assert closed(sock)
    with socket.create_connection(("127.0.0.1", server.server.ports[0]), timeout=10) as sock:
        assert call(sock, ApiKey.API_VERSIONS, 3, API_VERSIONS).error_code == 0  # the server is fine


# --- the SASL exchange on the wire ---------------------------------------------------------------


def test_before_authentication_only_api_versions_and_sasl_are_served(server, pki):
    with tls_connect(server, pki) as sock:
        versions = call(sock, ApiKey.API_VERSIONS, 3, API_VERSIONS)
        assert versions.error_code == 0
        served = {key.api_key: (key.min_version, key.max_version) for key in versions.api_keys}
        assert served[ApiKey.SASL_HANDSHAKE] == (0, 1) and served[ApiKey.SASL_AUTHENTICATE] == (0, 2)
        sock.sendall(frame(ApiKey.METADATA, 9, METADATA))
        assert closed(sock), "a Metadata request before authentication was answered"
    with tls_connect(server, pki) as sock:
        sock.sendall(frame(ApiKey.SASL_AUTHENTICATE, 2, {"auth_bytes": plain_token()}))
        assert closed(sock), "SaslAuthenticate before SaslHandshake was answered"


def test_an_unsupported_mechanism_gets_33_and_the_connection_closed(server, pki):
    with tls_connect(server, pki) as sock:
        response = call(sock, ApiKey.SASL_HANDSHAKE, 1, {"mechanism": "GSSAPI"})
        assert response.error_code == 33  # UNSUPPORTED_SASL_MECHANISM
        assert list(response.mechanisms) == MECHANISMS
        assert closed(sock)


@pytest.mark.parametrize("version", [0, 1, 2])
def test_wrong_credentials_get_58_then_the_connection_closes(server, pki, version):
    with tls_connect(server, pki) as sock:
        assert call(sock, ApiKey.SASL_HANDSHAKE, 1, {"mechanism": "PLAIN"}).error_code == 0
        response = call(sock, ApiKey.SASL_AUTHENTICATE, version, {"auth_bytes": plain_token(password="nope")})
        assert response.error_code == 58  # SASL_AUTHENTICATION_FAILED
        assert response.error_message == "Authentication failed: Invalid username or password"
        assert closed(sock)


def test_authenticated_connections_see_their_listeners_endpoints(server, pki):
    with tls_connect(server, pki, broker=1) as sock:
        assert call(sock, ApiKey.SASL_HANDSHAKE, 1, {"mechanism": "PLAIN"}).error_code == 0
        response = call(sock, ApiKey.SASL_AUTHENTICATE, 2, {"auth_bytes": plain_token()})
        assert response.error_code == 0
        metadata = call(sock, ApiKey.METADATA, 9, METADATA)
        assert {(b.node_id, b.port) for b in metadata.brokers} == set(
            enumerate(server.server.listener_ports["SASL_SSL"])
        )
        again = call(sock, ApiKey.SASL_HANDSHAKE, 1, {"mechanism": "PLAIN"})
        assert again.error_code == 34  # ILLEGAL_SASL_STATE: already authenticated
    with socket.create_connection(("127.0.0.1", server.server.ports[0]), timeout=10) as sock:
        metadata = call(sock, ApiKey.METADATA, 9, METADATA)
        assert {(b.node_id, b.port) for b in metadata.brokers} == set(enumerate(server.server.ports))
        assert call(sock, ApiKey.SASL_HANDSHAKE, 1, {"mechanism": "PLAIN"}).error_code == 34


def test_sasl_handshake_v0_exchanges_bare_tokens(server, pki):
    with tls_connect(server, pki) as sock:
        assert call(sock, ApiKey.SASL_HANDSHAKE, 0, {"mechanism": "PLAIN"}).error_code == 0
        token = plain_token()
        sock.sendall(struct.pack(">i", len(token)) + token)
        assert receive(sock) == b""  # PLAIN's empty answer, size-prefixed
        assert call(sock, ApiKey.METADATA, 9, METADATA).brokers
    with tls_connect(server, pki) as sock:
        assert call(sock, ApiKey.SASL_HANDSHAKE, 0, {"mechanism": "PLAIN"}).error_code == 0
        token = plain_token(password="nope")
        sock.sendall(struct.pack(">i", len(token)) + token)
        assert closed(sock)  # v0 cannot say why


def test_advertised_listeners_are_what_metadata_names(pki, tmp_path):
    configs = sasl_configs(pki) | {"advertised.listeners": "SASL_SSL://localhost:19093"}
    with ServerThread(tmp_path, brokers=2, topics=[TOPIC], security_configs=configs) as running:
        with tls_connect(running, pki) as sock:
            call(sock, ApiKey.SASL_HANDSHAKE, 1, {"mechanism": "PLAIN"})
            assert call(sock, ApiKey.SASL_AUTHENTICATE, 2, {"auth_bytes": plain_token()}).error_code == 0
            metadata = call(sock, ApiKey.METADATA, 9, METADATA)
            assert {(b.node_id, b.host, b.port) for b in metadata.brokers} == {(0, "localhost", 19093),
                                                                               (1, "localhost", 19094)}  # fmt: skip


# --- start-up checks (nothing is bound) ------------------------------------------------------------


def run_serve(*arguments: str, tmp_path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "dedup", "serve", "--dir", str(tmp_path / "d"), "--exit-after", "0",
                           *arguments], capture_output=True, text=True, env=env, timeout=60)  # fmt: skip


@pytest.mark.parametrize("arguments", [
    ("--host", "0.0.0.0"),
    ("--override", "listeners=PLAINTEXT://0.0.0.0:0"),
    ("--override", "listeners=PLAINTEXT://127.0.0.1:0,SSL://0.0.0.0:0", "--override", "ssl.keystore.type=PEM"),
])  # fmt: skip
def test_a_non_loopback_listener_without_sasl_is_refused_at_start(tmp_path, pki, arguments):
    if "ssl.keystore.type=PEM" in arguments:
        arguments = (*arguments, "--override", f"ssl.keystore.location={pki['keystore']}")
    process = run_serve(*arguments, tmp_path=tmp_path)
    assert process.returncode == 2, process.stderr
    assert len(process.stderr.strip().splitlines()) == 1, process.stderr
    assert "non-loopback address" in process.stderr and "--allow-unauthenticated" in process.stderr
    assert not (tmp_path / "d").exists()  # refused before anything was created


def test_allow_unauthenticated_and_sasl_pass_the_start_up_check():
    assert configure_listeners({}, host="0.0.0.0", port=0, allow_unauthenticated=True)[0].host == "0.0.0.0"
    configs = {"listeners": "SASL_PLAINTEXT://0.0.0.0:0", "sasl.enabled.mechanisms": ["PLAIN"],
               "listener.name.sasl_plaintext.plain.sasl.jaas.config": PLAIN}  # fmt: skip
    [listener] = configure_listeners(configs, host="0.0.0.0", port=0)
    assert listener.protocol == "SASL_PLAINTEXT" and listener.plain_users == {"alice": "alice-secret"}


@pytest.mark.parametrize("configs, message", [
    ({"listeners": "SASL_SSL://127.0.0.1:0"}, "GSSAPI"),  # Kafka's default mechanism is not served
    ({"listeners": "SASL_PLAINTEXT://127.0.0.1:0", "sasl.enabled.mechanisms": ["PLAIN"]}, "user_<name>"),
    ({"listeners": "SASL_SSL://127.0.0.1:0", "sasl.enabled.mechanisms": ["PLAIN"],
      "listener.name.sasl_ssl.plain.sasl.jaas.config": PLAIN}, "ssl.keystore.location"),
    ({"listeners": "SSL://127.0.0.1:0", "ssl.keystore.type": "JKS"}, "PEM"),
    ({"listeners": "PLAINTEXT://127.0.0.1:0,PLAINTEXT://127.0.0.1:1"}, "different name"),
    ({"listeners": "PLAINTEXT://127.0.0.1:0", "advertised.listeners": "SSL://h:1"}, "not one of the listeners"),
])  # fmt: skip
def test_listener_configurations_that_cannot_be_served_name_the_key(configs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        configure_listeners(configs, host="127.0.0.1", port=0)


def test_serve_with_a_jaas_file_and_kafka_python_over_sasl_ssl(tmp_path, pki):
    kafka = pytest.importorskip("kafka")
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    jaas = tmp_path / "kafka_server_jaas.conf"
    jaas.write_text("// the broker's credentials\nKafkaServer {\n  " + SCRAM.replace("alice", "bob")
                    + "\n};\nsasl_ssl.KafkaServer {\n  " + SCRAM + "\n  " + PLAIN + "\n};\n")  # fmt: skip
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    process = subprocess.Popen(
        [sys.executable, "-m", "dedup", "serve", "--brokers", "1", "--port", "0", "--jaas", str(jaas),
         "--override", "listeners=PLAINTEXT://127.0.0.1:0,SASL_SSL://127.0.0.1:0",
         "--override", "sasl.enabled.mechanisms=SCRAM-SHA-256", "--override", "ssl.keystore.type=PEM",
         "--override", f"ssl.keystore.location={pki['keystore']}", "--verbose"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert process.stdout is not None and process.stderr is not None
        assert process.stdout.readline().startswith("bootstrap.servers=")
        port = None
        deadline = time.monotonic() + 30
        while port is None and time.monotonic() < deadline:
            match = re.search(r"listening on SASL_SSL://127\.0\.0\.1:(\d+)", process.stderr.readline())
            port = match and int(match.group(1))
        assert port, "no SASL_SSL listener in the log"
        producer = kafka.KafkaProducer(
            bootstrap_servers=f"127.0.0.1:{port}", security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-256",
            sasl_plain_username="alice", sasl_plain_password="alice-secret", ssl_cafile=pki["ca"],
            enable_idempotence=True, acks="all", request_timeout_ms=10000,
        )  # fmt: skip
        assert producer.send(TOPIC, value=b"from-jaas").get(20).offset == 0
        producer.close(5)
    finally:
        process.terminate()
        process.communicate(timeout=60)
    assert process.returncode == 0


# --- units: JAAS, PLAIN, SCRAM -------------------------------------------------------------------


def test_jaas_config_and_file_parse_as_kafkas_jaasconfig():
    [entry] = parse_jaas_config('org.apache.kafka.common.security.plain.PlainLoginModule required\n'
                                '  username="admin" password="a;b \\"c\\"" user_admin=bare user_x="x=y";')  # fmt: skip
    assert entry.flag == "required"
    assert entry.options["password"] == 'a;b "c"'
    assert entry.users() == {"admin": "bare", "x": "x=y"}
    sections = parse_jaas_file("/* comment */ KafkaServer { a.B required; c.D optional k=v; };\nplain.KafkaServer {};")
    assert [e.module for e in sections["KafkaServer"]] == ["a.B", "c.D"] and sections["plain.KafkaServer"] == []
    for bad in ["", "a.B;", "a.B required user_x;", 'a.B required user_x="y"']:
        with pytest.raises(JaasError):
            parse_jaas_config(bad)


def test_plain_checks_the_password_and_the_authorization_id():
    server = PlainServer({"alice": "alice-secret"})
    assert server.evaluate(b"alice\0alice\0alice-secret") == b"" and server.username == "alice"
    for token in [b"\0alice\0wrong", b"\0bob\0alice-secret", b"other\0alice\0alice-secret", b"alice-secret"]:
        with pytest.raises(AuthenticationFailed):
            PlainServer({"alice": "alice-secret"}).evaluate(token)


def test_scram_sha_256_replays_rfc_7677s_example():
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    credential = scram_credential("SCRAM-SHA-256", "pencil", salt=salt)
    server = ScramServer("SCRAM-SHA-256", {"user": credential}, server_nonce="%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")
    first = server.evaluate(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
    assert first == b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    final = server.evaluate(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                            b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")  # fmt: skip
    assert final == b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    assert server.complete and server.username == "user"


def test_scram_refuses_a_wrong_proof_an_unknown_user_and_a_replayed_nonce():
    credential = scram_credential("SCRAM-SHA-256", "pencil", salt=b"s" * 16)
    with pytest.raises(AuthenticationFailed, match="Invalid user credentials"):
        ScramServer("SCRAM-SHA-256", {"user": credential}).evaluate(b"n,,n=nobody,r=abc")
    server = ScramServer("SCRAM-SHA-256", {"user": credential}, server_nonce="xyz")
    server.evaluate(b"n,,n=user,r=abc")
    with pytest.raises(AuthenticationFailed, match="nonce"):
        server.evaluate(b"c=biws,r=abcOTHER,p=" + base64.b64encode(b"\0" * 32))
    server = ScramServer("SCRAM-SHA-256", {"user": credential}, server_nonce="xyz")
    server.evaluate(b"n,,n=user,r=abc")
    with pytest.raises(AuthenticationFailed, match="Invalid user credentials"):
        server.evaluate(b"c=biws,r=abcxyz,p=" + base64.b64encode(b"\0" * 32))
    assert not server.complete


def test_security_errors_are_value_errors_for_the_command_line():
    assert issubclass(SecurityError, ValueError)


def test_ssl_with_a_required_client_certificate(tmp_path, pki):
    ca = trustme.CA()
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(tmp_path / "server.pem")
    ca.issue_cert("client@example.com").private_key_and_cert_chain_pem.write_to_path(tmp_path / "client.pem")
    configs = {"listeners": "SSL://0.0.0.0:0", "ssl.keystore.type": "PEM", "ssl.truststore.type": "PEM",
               "ssl.keystore.location": str(tmp_path / "server.pem"), "ssl.truststore.certificates": ca.cert_pem.bytes()
               .decode(), "ssl.client.auth": "required"}  # fmt: skip
    [listener] = configure_listeners(configs, host="0.0.0.0", port=0)  # authenticates: allowed off loopback
    assert listener.authenticates
    configs["listeners"] = "SSL://127.0.0.1:0"
    with ServerThread(tmp_path / "logs", brokers=1, topics=[TOPIC], host="127.0.0.1",
                      security_configs=configs) as running:  # fmt: skip
        port = running.server.listener_ports["SSL"][0]
        context = ssl.create_default_context(cafile=None, cadata=ca.cert_pem.bytes().decode())
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:  # no client certificate
                try:
                    sock.sendall(frame(ApiKey.API_VERSIONS, 3, API_VERSIONS))
                    refused = closed(sock)
                except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
                    refused = True
                assert refused, "a client without a certificate was served"
        context.load_cert_chain(str(tmp_path / "client.pem"))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
                assert call(sock, ApiKey.API_VERSIONS, 3, API_VERSIONS).error_code == 0
                metadata = call(sock, ApiKey.METADATA, 9, METADATA)
                assert [(b.host, b.port) for b in metadata.brokers] == [("127.0.0.1", port)]
