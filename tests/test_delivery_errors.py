"""Why a delivery failed, by exception type; our own bugs are not blamed on the customer.

The dispatcher here is built from its parts: connections and the message log in memory
(tests/factories.py; test_dispatch.py covers the real tables), a real retry queue on Azurite
and, where something is sent, the local Service Bus emulator over AMQP.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from azure.core import exceptions as core
from azure.servicebus import exceptions as sb

from local.servicebus.emulator import Emulator
from shared.clock import system_clock
from shared.connstrings import ConnectionStringError
from shared.dispatch import errors
from shared.dispatch.claimcheck import ClaimCheckStore
from shared.dispatch.dispatcher import Dispatcher
from shared.dispatch.errors import INTERNAL_ERROR, TooLarge, classify
from shared.dispatch.outgoing import Outgoing
from shared.dispatch.retries import RetryScheduler
from shared.dispatch.servicebus import SenderPool
from shared.events import DeliveryRetry, new_event
from shared.models.events import SystemEvent
from shared.models.records import DeliveryError, ErrorCategory, MessageStatus, RequestMetadata
from shared.services import Services
from shared.storage.logrecords import LoggedMessage
from tests.factories import NOW, MemoryConnections, MemoryRecords, a_connection, stored

CONFIGURATION, TRANSIENT, TOO_LARGE = (
    ErrorCategory.CONFIGURATION,
    ErrorCategory.TRANSIENT,
    ErrorCategory.TOO_LARGE,
)


def http_error(status: int) -> core.HttpResponseError:
    error = core.HttpResponseError(message=f"status {status}")
    error.status_code = status
    return error


@pytest.mark.parametrize(
    ("error", "category"),
    [
        (sb.ServiceBusAuthenticationError(message="token rejected"), CONFIGURATION),
        (sb.ServiceBusAuthorizationError(message="no Send claim"), CONFIGURATION),
        (sb.MessagingEntityNotFoundError(message="no such queue"), CONFIGURATION),
        (sb.MessagingEntityDisabledError(message="queue disabled"), CONFIGURATION),
        (core.ClientAuthenticationError("blob 401"), CONFIGURATION),
        (core.ResourceNotFoundError("blob 404"), CONFIGURATION),
        (http_error(403), CONFIGURATION),
        (http_error(401), CONFIGURATION),
        (ConnectionStringError("unknown or malformed part 'X'"), CONFIGURATION),
        (sb.MessageSizeExceededError(message="too big"), TOO_LARGE),
        (TooLarge("too big for the link"), TOO_LARGE),
        (sb.ServiceBusServerBusyError(message="busy"), TRANSIENT),
        (sb.OperationTimeoutError(message="timed out"), TRANSIENT),
        (sb.ServiceBusConnectionError(message="connection lost"), TRANSIENT),
        (sb.ServiceBusCommunicationError(message="unreachable"), TRANSIENT),
        (sb.ServiceBusError("other"), TRANSIENT),
        (core.ServiceRequestError("cannot connect"), TRANSIENT),
        (core.ServiceResponseError("connection reset"), TRANSIENT),
        (http_error(503), TRANSIENT),
        (ConnectionResetError("reset by peer"), TRANSIENT),
        (TimeoutError(), TRANSIENT),
    ],
)
def test_sdk_failures_are_classified_by_type(error: Exception, category: ErrorCategory) -> None:
    before = errors.internal_errors.count
    found = classify(error)
    assert found.category == category
    assert found.type == type(error).__name__
    assert errors.internal_errors.count == before  # none of these is ours


@pytest.mark.parametrize(
    "error", [ValueError("bad"), TypeError("bad"), KeyError("x"), AttributeError("y")]
)
def test_anything_else_is_our_internal_error_logged_and_counted(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    before = errors.internal_errors.count
    with caplog.at_level(logging.ERROR, logger="shared.dispatch"):
        found = classify(error)
    assert (found.category, found.type) == (TRANSIENT, INTERNAL_ERROR)
    assert "bad" not in found.message  # our internals stay out of the customer's record
    assert errors.internal_errors.count == before + 1
    [line] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert line.exc_info is not None and line.exc_info[1] is error  # with its traceback
    assert f"({before + 1} in this process)" in line.getMessage()


def test_secrets_never_reach_the_reason() -> None:
    error = sb.ServiceBusAuthenticationError(
        message="rejected Endpoint=sb://x/;SharedAccessKey=K3Y-VALUE;EntityPath=q and ABCD-SECRET"
    )
    message = classify(error, secrets=["ABCD-SECRET"]).message
    assert "K3Y-VALUE" not in message and "ABCD-SECRET" not in message


# ------------------------------------------------------ through the dispatcher


@pytest.fixture
async def retries(services: Services) -> AsyncIterator[RetryScheduler]:
    """A retry queue of this test alone, so what it holds is what this test scheduled."""
    queue = await services.storage.queue(f"retries-{uuid.uuid4().hex[:12]}")
    yield RetryScheduler(queue, (30, 120), services.events)
    await queue.delete_queue()


async def scheduled(retries: RetryScheduler) -> int:
    return (await retries.queue.get_queue_properties()).approximate_message_count or 0


def dispatcher_of(
    connections: MemoryConnections, retries: RetryScheduler, cache_seconds: float = 60.0
) -> tuple[Dispatcher, MemoryRecords]:
    records = MemoryRecords()
    dispatcher = Dispatcher(
        connections=connections,
        records=records,
        retries=retries,
        clock=system_clock,
        connection_cache_seconds=cache_seconds,
        senders=SenderPool(),
        claims=ClaimCheckStore(),
    )
    return dispatcher, records


def an_event() -> SystemEvent:
    return new_event("acme", "Order.Shipped", NOW, "orders/1", {"OrderId": 1})


def metadata_of(record: LoggedMessage) -> RequestMetadata:
    metadata = RequestMetadata.from_text(record.message.request_metadata)
    assert metadata is not None
    return metadata


@pytest.mark.parametrize("bug", [TypeError, ValueError])
async def test_a_bug_in_our_send_path_is_internal_and_retried_not_the_customers(
    bug: Callable[[str], Exception],
    monkeypatch: pytest.MonkeyPatch,
    servicebus_emulator: Emulator,
    retries: RetryScheduler,
) -> None:
    def broken(self: Outgoing) -> Any:
        raise bug("a bug of ours while building the message")

    monkeypatch.setattr(Outgoing, "application_properties", broken)
    connection = a_connection(ServiceBusConnectionString=servicebus_emulator.connection_string)
    dispatcher, _ = dispatcher_of(MemoryConnections(stored(connection)), retries)
    before = errors.internal_errors.count
    try:
        [record] = await dispatcher.dispatch(an_event())
    finally:
        await dispatcher.close()
    assert record.message.status == MessageStatus.FAILED
    error = metadata_of(record).error
    assert error is not None
    assert (error.category, error.type) == (TRANSIENT, INTERNAL_ERROR)
    assert errors.internal_errors.count == before + 1
    assert await scheduled(retries) == 1


async def test_a_connection_string_our_parser_refuses_is_configuration(
    retries: RetryScheduler, caplog: pytest.LogCaptureFixture
) -> None:
    # Stored before the rules got stricter, say: the model is bypassed to store it.
    bad = "Endpoint=sb://x.example/;SharedAccessKeyName=s;SharedAccessKey=S3CRET-K3Y;Z=1"
    connection = a_connection().model_copy(update={"service_bus_connection_string": bad})
    dispatcher, records = dispatcher_of(MemoryConnections(stored(connection)), retries)
    with caplog.at_level(logging.WARNING, logger="shared.dispatch"):
        [record] = await dispatcher.dispatch(an_event())
    await dispatcher.close()
    error = metadata_of(record).error
    assert error is not None
    assert (error.category, error.type) == (CONFIGURATION, "ConnectionStringError")
    assert "S3CRET-K3Y" not in record.message.request_metadata
    assert list(records.written.values()) == [[record]]  # written to the log
    assert await scheduled(retries) == 1  # the customer may fix it before the next try
    [line] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "S3CRET-K3Y" not in line.getMessage()
    fields = {k: getattr(line, k) for k in ("ConnectionUid", "EventId", "ErrorCategory")}
    assert fields == {
        "ConnectionUid": str(connection.uid),
        "EventId": record.event_id,
        "ErrorCategory": "Configuration",
    }
    assert line.__dict__["ErrorType"] == "ConnectionStringError"
    assert isinstance(line.__dict__["ElapsedMilliseconds"], int)


async def test_a_cache_time_of_zero_reads_the_connections_for_every_event(
    retries: RetryScheduler,
) -> None:
    connections = MemoryConnections()  # no connections: nothing is sent
    uncached, _ = dispatcher_of(connections, retries, cache_seconds=0)
    for _ in range(3):
        assert await uncached.dispatch(an_event()) == []
    assert connections.reads == 3
    cached, _ = dispatcher_of(connections, retries, cache_seconds=60)
    for _ in range(3):
        await cached.dispatch(an_event())
    assert connections.reads == 4


async def test_the_schedule_runs_out_after_its_last_delay(
    retries: RetryScheduler, caplog: pytest.LogCaptureFixture
) -> None:
    event, connection_uid = an_event(), uuid.uuid4()
    transient = DeliveryError(category=TRANSIENT, type="ServiceBusError", message="x")
    assert len(retries.delays) == 2
    for attempt in (1, 2):  # the try after each of these is scheduled
        assert (
            retries.delay_after(event, connection_uid, attempt, transient)
            == retries.delays[attempt - 1]
        )
    with caplog.at_level(logging.ERROR, logger="shared.dispatch"):
        assert retries.delay_after(event, connection_uid, 3, transient) is None
    assert "giving up after 3 attempts" in caplog.text
    # Nothing was tried when the breaker was open: that is never the last attempt.
    circuit_open = transient.model_copy(update={"type": "CircuitOpen"})
    assert retries.delay_after(event, connection_uid, 3, circuit_open) == retries.delays[-1]
    too_large = transient.model_copy(update={"category": ErrorCategory.TOO_LARGE})
    assert retries.delay_after(event, connection_uid, 1, too_large) is None


async def test_a_delivery_logs_its_outcome_with_fields(
    servicebus_emulator: Emulator,
    retries: RetryScheduler,
    unique_queue: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    connection = a_connection(
        ServiceBusConnectionString=servicebus_emulator.connection_string, QueueName=unique_queue
    )
    dispatcher, records = dispatcher_of(MemoryConnections(stored(connection)), retries)
    with caplog.at_level(logging.DEBUG, logger="shared.dispatch"):
        [record] = await dispatcher.dispatch(an_event())
    await dispatcher.close()
    assert record.message.status == MessageStatus.SUCCEEDED
    assert list(records.written.values()) == [[record]]
    [line] = [r for r in caplog.records if r.getMessage().startswith("delivered event")]
    assert line.levelno == logging.DEBUG
    fields = {k: line.__dict__[k] for k in ("ConnectionUid", "EventId", "Attempt")}
    expected = {"ConnectionUid": str(connection.uid), "EventId": record.event_id, "Attempt": 1}
    assert fields == expected
    assert "ErrorCategory" not in line.__dict__
    assert line.__dict__["ElapsedMilliseconds"] == record.message.elapsed_milliseconds


async def test_a_retry_point_reads_its_connection_not_the_account(
    retries: RetryScheduler,
) -> None:
    bad = "Endpoint=sb://x.example/;SharedAccessKeyName=s;SharedAccessKey=k;Z=1"  # not sent
    connection = a_connection().model_copy(update={"service_bus_connection_string": bad})
    others = [stored(a_connection()) for _ in range(3)]  # the same account's other connections
    connections = MemoryConnections(stored(connection), *others)
    dispatcher, _ = dispatcher_of(connections, retries)
    event = an_event()
    retry = DeliveryRetry(event=event.to_json(), connection_uid=connection.uid, attempt=2)
    record = await dispatcher.retry(retry, event)
    gone = retry.model_copy(update={"connection_uid": uuid.uuid4()})
    assert await dispatcher.retry(gone, event) is None  # dropped: the connection is gone
    await dispatcher.close()
    assert record is not None and record.message.connection_uid == connection.uid
    assert (connections.point_reads, connections.reads) == (2, 0)
