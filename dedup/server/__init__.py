"""A Kafka-protocol front end for dedup: real Kafka clients produce to and fetch from
dedup's brokers on loopback (``python -m dedup serve``), with injected faults."""

from .core import KafkaServer, ProducerIdBlocks, ServerStats
from .faults import Faults
from .thread import ServerThread

__all__ = ["Faults", "KafkaServer", "ProducerIdBlocks", "ServerStats", "ServerThread"]
