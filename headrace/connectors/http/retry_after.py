"""Read an HTTP ``Retry-After`` header into a delay in milliseconds.

A server that answers 429 or 503 may say when to come back, either as
delay-seconds (``120``) or as an HTTP-date (``Wed, 21 Oct 2026 07:28:00 GMT``,
RFC 9110 §10.2.3). The connector does not wait itself — it reports the delay
as the ``retry_after_ms`` hint of a retryable failure and the task service's
backoff honours it — so this only has to turn the header into a number.
"""

from __future__ import annotations

from datetime import UTC
from email.utils import parsedate_to_datetime

# A server asking for more than a day is more likely wrong than serious; the
# hint is capped so one bad header cannot park a task for weeks.
MAX_RETRY_AFTER_MS = 86_400_000


def parse_retry_after(value: str | None, now_ms: int) -> int | None:
    """Milliseconds to wait per ``value``, or None when it is absent or unreadable.

    ``now_ms`` (epoch ms) anchors an HTTP-date; a date in the past means "now" (0).
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return min(int(text) * 1000, MAX_RETRY_AFTER_MS)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        # The obsolete asctime form carries no zone; RFC 9110 says it is GMT.
        when = when.replace(tzinfo=UTC)
    delay = int(when.timestamp() * 1000) - now_ms
    return max(0, min(delay, MAX_RETRY_AFTER_MS))
