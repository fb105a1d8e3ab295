"""Local development infrastructure: a real Apache Kafka (KRaft) run as plain JVMs.

``headrace dev`` and the test suite use this to get a broker without Docker:
:func:`ensure_jars` fetches the broker from Maven Central once into a cache,
:class:`KafkaCluster` formats, starts, stops and kills one or three nodes, and
:mod:`headrace.dev.services` lists what ``headrace dev up`` starts after Kafka.
"""

from headrace.dev.cluster import ClusterSpec, KafkaCluster, NodeStatus
from headrace.dev.jars import KafkaJars, ensure_jars
from headrace.dev.node import BrokerNode
from headrace.dev.ports import free_port_block, is_free, port_owner
from headrace.dev.progress import Progress, Quiet

__all__ = [
    "BrokerNode",
    "ClusterSpec",
    "KafkaCluster",
    "KafkaJars",
    "NodeStatus",
    "Progress",
    "Quiet",
    "ensure_jars",
    "free_port_block",
    "is_free",
    "port_owner",
]
