"""The query API: views of runs, approvals and step durations folded from ``events``, over HTTP.

* :mod:`.indexer` reads every partition of ``events`` and folds it with
  :mod:`headrace.core.views` into :mod:`.store` (RocksDB; views and offsets in
  one write batch);
* :mod:`.web` serves them (aiohttp), with read-your-writes waits, and writes
  control commands through :mod:`headrace.control`;
* :mod:`.client` is the synchronous client the CLI uses.

Run it with ``headrace serve api --port 8080``; see docs/operations.md.
"""
