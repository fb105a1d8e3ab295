"""headrace: durable workflows that live on Apache Kafka."""

__version__ = "0.1.0"
