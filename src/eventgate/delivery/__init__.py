"""Async delivery: the durable queue contract (`base`) and its embedded SQLite backend."""

from eventgate.delivery.base import (
    Accepted,
    Attempt,
    DeadLetter,
    Delivery,
    DeliveryRecord,
    EventLife,
    EventRecord,
    NewEvent,
    Queue,
    QueueStats,
    Retention,
    State,
    Target,
)
from eventgate.delivery.queue import SqliteQueue

__all__ = [
    "Accepted",
    "Attempt",
    "DeadLetter",
    "Delivery",
    "DeliveryRecord",
    "EventLife",
    "EventRecord",
    "NewEvent",
    "Queue",
    "QueueStats",
    "Retention",
    "SqliteQueue",
    "State",
    "Target",
]
