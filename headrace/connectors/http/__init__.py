"""The built-in HTTP connector: tasks on queue ``http`` become HTTP calls.

See docs/connectors/http.md for the task ``config`` (method, URL template,
headers, jq body and response mappings, auth, timeout, OpenAPI operations),
the failure codes, ``Retry-After`` hints and the per-host circuit breaker.
"""

from headrace.connectors.http.breaker import Breakers
from headrace.connectors.http.caller import HttpCaller
from headrace.connectors.http.config import HttpTaskConfig, compile_call
from headrace.connectors.http.connector import HttpConnectorSettings, http_worker

__all__ = [
    "Breakers",
    "HttpCaller",
    "HttpConnectorSettings",
    "HttpTaskConfig",
    "compile_call",
    "http_worker",
]
