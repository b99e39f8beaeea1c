"""The event store behaviour real clients rely on (AXON_COMPAT.md §3), through axonclient.

Tests use `axonclient.client.AxonClient`; where it has no method for an rpc (GetTokenAt,
ReadHighestSequenceNr, PlatformService, streams held open) they use the client's own channel,
stubs and generated messages. Every test works on new aggregate ids (uuid4) and on tokens taken
from GetLastToken first, so it holds on a fresh store and on one that already holds data; the
few answers that differ between the modes say so.
"""

from __future__ import annotations

import queue
import random
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import uuid4

import grpc
import pytest
from axonclient.client import AxonClient, AxonEvent
from axonclient.exceptions import OutOfRangeError
from axonclient.protos.common_pb2 import MetaDataValue, SerializedObject
from axonclient.protos.control_pb2 import (
    ClientIdentification,
    Heartbeat,
    PlatformInboundInstruction,
)
from axonclient.protos.control_pb2_grpc import PlatformServiceStub
from axonclient.protos.event_pb2 import (
    Event,
    GetAggregateEventsRequest,
    GetEventsRequest,
    GetTokenAtRequest,
    ReadHighestSequenceNrRequest,
)

# A stream the server should complete gets this long before the test fails instead of hanging.
STREAM_TIMEOUT_S = 20
# How long to watch a stream to see that nothing (more) arrives.
QUIET_S = 0.7
# 2200-01-01: later than every other timestamp this suite writes (for GetTokenAt).
FUTURE_MS = 7_258_118_400_000


@pytest.fixture
def client(myelin) -> Iterator[AxonClient]:
    c = AxonClient(myelin.grpc_uri)
    yield c
    c.close_connection()


# --- helpers -------------------------------------------------------------------------------------


def new_id() -> str:
    return str(uuid4())


def event(aggregate_id: str, seq: int, **fields: Any) -> AxonEvent:
    values: dict[str, Any] = dict(
        message_identifier=new_id(),
        aggregate_identifier=aggregate_id,
        aggregate_sequence_number=seq,
        aggregate_type="AggregateRoot",
        payload_type="com.example.Happened",
        payload_revision="1",
        payload_data=f"{aggregate_id}:{seq}".encode(),
    )
    values.update(fields)
    return AxonEvent(**values)


def events(aggregate_id: str, first: int, count: int, **fields: Any) -> list[AxonEvent]:
    return [event(aggregate_id, seq, **fields) for seq in range(first, first + count)]


def snapshot(aggregate_id: str, seq: int, **fields: Any) -> AxonEvent:
    values: dict[str, Any] = dict(
        message_identifier="",
        payload_type="com.example.State",
        payload_data=f"snapshot {seq}".encode(),
        snapshot=True,
        meta_data={"kind": MetaDataValue(text_value="snapshot"), "seq": MetaDataValue(number_value=seq)},
    )
    values.update(fields)
    return event(aggregate_id, seq, **values)


def with_timeout(what: str, fn: Callable[[], Any], timeout_s: float = STREAM_TIMEOUT_S) -> Any:
    """fn() in a daemon thread; fails the test if it has not returned after timeout_s."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as e:  # handed to the test thread
            outcome["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        pytest.fail(f"{what} did not return within {timeout_s} s (the server never completed the stream)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def list_events(client: AxonClient, tracking_token: int, **kwargs: Any) -> list[tuple[int, AxonEvent]]:
    """AxonClient.list_events: the client half-closes after ~1 s and reads until the server ends."""
    return with_timeout(
        f"list_events(tracking_token={tracking_token})",
        lambda: client.list_events(tracking_token=tracking_token, **kwargs),
    )


class Requests:
    """A request stream the test writes to; close() half-closes it."""

    _CLOSE = object()

    def __init__(self) -> None:
        self._queue: queue.Queue[Any] = queue.Queue()

    def send(self, request: Any) -> None:
        self._queue.put(request)

    def close(self) -> None:
        self._queue.put(self._CLOSE)

    def __iter__(self) -> Iterator[Any]:
        while True:
            request = self._queue.get()
            if request is self._CLOSE:
                return
            yield request


class Responses:
    """Reads a response stream in a thread, so the test can wait for items, quiet and the end."""

    _END = object()

    def __init__(self, call: Any) -> None:
        self.call = call
        self._queue: queue.Queue[Any] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for item in self.call:
                self._queue.put(item)
        except grpc.RpcError as e:
            self._queue.put(e)
        else:
            self._queue.put(self._END)

    def next(self, timeout_s: float = STREAM_TIMEOUT_S) -> Any:
        try:
            item = self._queue.get(timeout=timeout_s)
        except queue.Empty:
            pytest.fail(f"no response within {timeout_s} s")
        if item is self._END:
            pytest.fail("the stream ended early")
        if isinstance(item, grpc.RpcError):
            raise item
        return item

    def take(self, count: int) -> list[Any]:
        return [self.next() for _ in range(count)]

    def assert_quiet(self, seconds: float = QUIET_S) -> None:
        try:
            item = self._queue.get(timeout=seconds)
        except queue.Empty:
            return
        what = "the end of the stream" if item is self._END else repr(item)
        pytest.fail(f"expected nothing on the stream for {seconds} s, got {what}")

    def assert_completes_ok(self, timeout_s: float = STREAM_TIMEOUT_S) -> None:
        try:
            item = self._queue.get(timeout=timeout_s)
        except queue.Empty:
            pytest.fail(f"the stream was not completed within {timeout_s} s of the client half-closing")
        if isinstance(item, grpc.RpcError):
            pytest.fail(f"the stream ended with {item.code()}: {item.details()}")
        assert item is self._END, f"expected the end of the stream, got {item!r}"
        assert self.call.code() == grpc.StatusCode.OK


def open_list_events(client: AxonClient, first: GetEventsRequest) -> tuple[Requests, Responses]:
    requests = Requests()
    requests.send(first)
    return requests, Responses(client.event_store_stub.ListEvents(iter(requests)))


def read_events(client: AxonClient, tracking_token: int, count: int) -> list[tuple[int, AxonEvent]]:
    """Exactly `count` events from `tracking_token` on a held-open stream, then half-close."""
    requests, responses = open_list_events(
        client, GetEventsRequest(tracking_token=tracking_token, number_of_permits=count)
    )
    received = [(r.token, AxonEvent.from_grpc(r.event)) for r in responses.take(count)]
    requests.close()
    responses.assert_completes_ok()
    return received


def token_at(client: AxonClient, instant: int) -> int:
    return client.event_store_stub.GetTokenAt(GetTokenAtRequest(instant=instant)).token


def highest_sequence(client: AxonClient, aggregate_id: str) -> int:
    request = ReadHighestSequenceNrRequest(aggregate_id=aggregate_id)
    return client.event_store_stub.ReadHighestSequenceNr(request).to_sequence_nr


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def list_aggregate_events_up_to(
    client: AxonClient, aggregate_id: str, initial_sequence: int, max_sequence: int
) -> list[AxonEvent]:
    """ListAggregateEvents with field 4 (max_sequence), which axonclient's message lacks."""
    request = GetAggregateEventsRequest(aggregate_id=aggregate_id, initial_sequence=initial_sequence)
    raw = request.SerializeToString() + b"\x20" + _varint(max_sequence)  # field 4, varint
    call = client.channel.unary_stream(
        "/io.axoniq.axonserver.grpc.event.EventStore/ListAggregateEvents",
        request_serializer=lambda b: b,
        response_deserializer=Event.FromString,
    )
    return [AxonEvent.from_grpc(e) for e in call(raw)]


def rpc_error(error: BaseException) -> grpc.RpcError:
    """The gRPC error behind an axonclient exception (OutOfRangeError wraps it)."""
    cause = error if isinstance(error, grpc.RpcError) else error.__cause__
    assert isinstance(cause, grpc.RpcError), f"{error!r} does not come from a gRPC error"
    return cause


def assert_axon_error(error: BaseException, axon_code: str, details: str) -> None:
    e = rpc_error(error)
    assert e.code() == grpc.StatusCode.OUT_OF_RANGE, (e.code(), e.details())
    assert e.details() == details
    trailers = dict(e.trailing_metadata() or ())
    assert trailers.get("axoniq-errorcode") == axon_code, trailers


def assert_rejected_append(client: AxonClient, batch: list[AxonEvent], details: str) -> None:
    """The append fails as a whole with OUT_OF_RANGE/AXONIQ-2000 and stores nothing."""
    last = client.get_last_token()
    before = {a: client.list_aggregate_events(a, 0, False) for a in {e.aggregate_identifier for e in batch}}
    with pytest.raises(OutOfRangeError) as caught:
        client.append_event(batch)
    assert "Invalid sequence number" in caught.value.args[0]
    assert_axon_error(caught.value, "AXONIQ-2000", details)
    assert client.get_last_token() == last
    for aggregate_id, stored in before.items():
        assert client.list_aggregate_events(aggregate_id, 0, False) == stored


def snapshot_error(aggregate_id: str, highest: int, seq: int) -> str:
    return (
        "[AXONIQ-2000] Invalid sequence number while storing snapshot. "
        f"Highest aggregate {aggregate_id} sequence number: {highest}, snapshot sequence {seq}."
    )


def sequence_error(aggregate_id: str, seq: int, expected: int) -> str:
    return f"[AXONIQ-2000] Invalid sequence number {seq} for aggregate {aggregate_id}, expected {expected}"


def seeded_token_at(instant: int, seed: Any) -> int:
    """GetTokenAt on the with-data store as seeded: event t has timestamp T0 + step * t."""
    if instant <= seed.timestamp_t0_ms:
        return 0  # before every segment (or at the first event): the first token
    steps, rest = divmod(instant - seed.timestamp_t0_ms, seed.timestamp_step_ms)
    token = steps + (1 if rest else 0)
    assert token < len(seed.events), "probe instants stay inside the seeded range"
    return token


# --- startup and recovery ------------------------------------------------------------------------


def test_http_root_returns_200(myelin):
    with urllib.request.urlopen(myelin.http_url + "/", timeout=10) as response:
        assert response.status == 200


def test_tokens_at_start(myelin):
    """GetLastToken = -1 only on an empty store; GetFirstToken = 0; GetTokenAt as upstream."""
    at_start = myelin.at_start
    assert at_start.first_token == 0
    if myelin.mode == "fresh":
        assert at_start.last_token == -1
        assert set(at_start.token_at.values()) == {-1}, at_start.token_at
    else:
        seeded = len(myelin.seed.events)
        assert at_start.last_token == seeded - 1
        # The seed rolled segments, so the token search crossed segment boundaries.
        assert len(at_start.event_segments) >= 2, at_start.event_segments
        assert len(at_start.snapshot_segments) >= 2, at_start.snapshot_segments
        now = max(at_start.token_at)  # after the last seeded event: not pinned by the spec
        wrong = {
            instant: (token, seeded_token_at(instant, myelin.seed))
            for instant, token in at_start.token_at.items()
            if instant != now and token != seeded_token_at(instant, myelin.seed)
        }
        assert not wrong, f"GetTokenAt(instant): (got, expected) = {wrong}"


def test_first_token_is_zero(client):
    assert client.get_first_token() == 0


@pytest.mark.parametrize("myelin", ["with-data"], indirect=True)
def test_store_recovered_after_restart(myelin, client):
    """Everything written before the restart reads back exactly, and the sequences continue."""
    seed = myelin.seed
    assert seed.events
    assert read_events(client, 0, len(seed.events)) == list(enumerate(seed.events))
    for aggregate_id in seed.aggregate_ids():
        stored = seed.aggregate_events(aggregate_id)
        snapshots = seed.snapshots[aggregate_id]
        assert client.list_aggregate_events(aggregate_id, 0, False) == stored
        assert client.list_snapshot_events(aggregate_id) == snapshots[::-1]
        if snapshots:
            latest = snapshots[-1]
            after = [e for e in stored if e.aggregate_sequence_number > latest.aggregate_sequence_number]
            assert client.list_aggregate_events(aggregate_id, 0, True) == [latest, *after]

        highest = stored[-1].aggregate_sequence_number
        assert highest_sequence(client, aggregate_id) == highest
        again = event(aggregate_id, highest, aggregate_type=stored[-1].aggregate_type)
        assert_rejected_append(client, [again], sequence_error(aggregate_id, highest, highest + 1))
        client.append_event(event(aggregate_id, highest + 1, aggregate_type=stored[-1].aggregate_type))
        with pytest.raises(grpc.RpcError) as caught:
            client.append_snapshot(snapshot(aggregate_id, highest + 2))
        assert_axon_error(caught.value, "AXONIQ-2000", snapshot_error(aggregate_id, highest + 1, highest + 2))


# --- append --------------------------------------------------------------------------------------


def test_events_round_trip_exactly(client):
    """Stored as sent: empty message id, the client's timestamp, metadata of every type."""
    aggregate_id = new_id()
    metadata = {
        "text": MetaDataValue(text_value="héllo ✓ 漢字"),
        "empty-text": MetaDataValue(text_value=""),
        "number": MetaDataValue(number_value=-(2**62) - 12345),
        "max-number": MetaDataValue(number_value=2**63 - 1),
        "min-number": MetaDataValue(number_value=-(2**63)),
        "true": MetaDataValue(boolean_value=True),
        "false": MetaDataValue(boolean_value=False),
        "double": MetaDataValue(double_value=3.141592653589793),
        "negative-double": MetaDataValue(double_value=-1.5e-300),
        "bytes": MetaDataValue(
            bytes_value=SerializedObject(type="com.example.Blob", revision="7", data=bytes(range(256)))
        ),
        "": MetaDataValue(text_value="empty key"),
    }
    sent = [
        event(
            aggregate_id,
            0,
            message_identifier="",
            aggregate_type="com.example.Order",
            timestamp=1_234_567_890_123,
            payload_type="com.example.OrderCreated",
            payload_revision="2",
            payload_data=bytes(range(256)) * 4,
            meta_data=metadata,
        ),
        event(
            aggregate_id,
            1,
            aggregate_type="com.example.Order",
            timestamp=4_102_444_800_000,
            payload_type="",
            payload_revision="",
            payload_data=b"",
        ),
        event(
            aggregate_id,
            2,
            message_identifier="",
            aggregate_type="com.example.Order",
            timestamp=1,
            payload_data=random.Random(7).randbytes(200_000),
            meta_data={"only": MetaDataValue(boolean_value=False)},
        ),
    ]
    start = client.get_last_token() + 1
    client.append_event(sent)

    assert client.list_aggregate_events(aggregate_id, 0, False) == sent
    assert read_events(client, start, len(sent)) == [(start + i, e) for i, e in enumerate(sent)]
    # The same at the message level: oneof presence (false, "") and every field as sent.
    raw = list(client.event_store_stub.ListAggregateEvents(GetAggregateEventsRequest(aggregate_id=aggregate_id)))
    assert raw == [e.to_grpc() for e in sent]


def test_last_token_advances_by_one_per_event(client):
    last = client.get_last_token()
    a, b = new_id(), new_id()
    client.append_event(events(a, 0, 3))
    assert client.get_last_token() == last + 3
    client.append_event(events(b, 0, 1))
    client.append_event(events(a, 3, 2))
    assert client.get_last_token() == last + 6
    assert client.get_first_token() == 0


def test_empty_append_succeeds(client):
    last = client.get_last_token()
    client.append_event([])
    confirmation = client.event_store_stub.AppendEvent(iter([]))
    assert confirmation.success is True
    assert client.get_last_token() == last


def test_conflicting_sequence_numbers_are_rejected(client):
    a, b = new_id(), new_id()
    client.append_event(events(a, 0, 2))
    # The same position again.
    assert_rejected_append(client, [event(a, 1)], sequence_error(a, 1, 2))
    assert_rejected_append(client, [event(a, 0)], sequence_error(a, 0, 2))
    # A gap.
    assert_rejected_append(client, [event(a, 3)], sequence_error(a, 3, 2))
    # A new aggregate starts at 0.
    assert_rejected_append(client, [event(b, 1)], sequence_error(b, 1, 0))
    # Inside a transaction every event is the previous one + 1.
    assert_rejected_append(client, [event(a, 2), event(a, 4)], sequence_error(a, 4, 3))
    assert_rejected_append(client, [event(a, 2), event(a, 2)], sequence_error(a, 2, 3))
    # One bad aggregate rejects the whole transaction, the other aggregates' events included.
    assert_rejected_append(client, [event(b, 0), event(b, 1), event(a, 5)], sequence_error(a, 5, 2))
    assert client.list_aggregate_events(b, 0, False) == []
    # The sequences are untouched: the right next events are accepted.
    client.append_event([event(b, 0), event(a, 2), event(b, 1), event(a, 3)])
    assert [e.aggregate_sequence_number for e in client.list_aggregate_events(a, 0, False)] == [0, 1, 2, 3]
    assert [e.aggregate_sequence_number for e in client.list_aggregate_events(b, 0, False)] == [0, 1]


def test_events_without_aggregate_type_are_not_sequence_checked(client):
    aggregate_id = new_id()
    untyped = [
        Event(message_identifier=new_id(), timestamp=1000 + i, aggregate_sequence_number=0,
              payload=SerializedObject(type="com.example.Notice", data=b"%d" % i))
        for i in range(2)
    ] + [
        Event(message_identifier=new_id(), timestamp=2000 + i, aggregate_identifier=aggregate_id,
              aggregate_sequence_number=7, payload=SerializedObject(type="com.example.Notice"))
        for i in range(2)
    ]
    start = client.get_last_token() + 1
    assert client.event_store_stub.AppendEvent(iter(untyped)).success is True
    assert client.event_store_stub.AppendEvent(iter(untyped)).success is True
    requests, responses = open_list_events(client, GetEventsRequest(tracking_token=start, number_of_permits=8))
    assert [(r.token, r.event) for r in responses.take(8)] == [(start + i, e) for i, e in enumerate(untyped * 2)]
    requests.close()
    responses.assert_completes_ok()


def test_append_is_committed_when_the_client_half_closes(client):
    aggregate_id = new_id()
    last = client.get_last_token()
    requests = Requests()
    call = client.event_store_stub.AppendEvent.future(iter(requests))
    sent = events(aggregate_id, 0, 3)
    for e in sent:
        requests.send(e.to_grpc())
    time.sleep(QUIET_S)
    assert client.list_aggregate_events(aggregate_id, 0, False) == []
    assert client.get_last_token() == last
    requests.close()
    assert call.result(timeout=STREAM_TIMEOUT_S).success is True
    assert client.list_aggregate_events(aggregate_id, 0, False) == sent
    assert client.get_last_token() == last + 3


def test_cancelled_append_stores_nothing(client):
    aggregate_id = new_id()
    last = client.get_last_token()
    requests = Requests()
    call = client.event_store_stub.AppendEvent.future(iter(requests))
    for e in events(aggregate_id, 0, 3):
        requests.send(e.to_grpc())
    time.sleep(QUIET_S)
    call.cancel()
    requests.close()
    with pytest.raises(grpc.FutureCancelledError):
        call.result(timeout=STREAM_TIMEOUT_S)
    time.sleep(QUIET_S)
    assert client.list_aggregate_events(aggregate_id, 0, False) == []
    assert client.get_last_token() == last
    # Nothing of it counts for the sequence either.
    client.append_event(events(aggregate_id, 0, 1))
    assert client.get_last_token() == last + 1


def test_concurrent_transactions_get_adjacent_contiguous_tokens(client):
    writers, transactions_per_writer = 8, 10
    start = client.get_last_token() + 1

    def write(writer: int) -> list[list[AxonEvent]]:
        aggregate_id, seq, written = new_id(), 0, []
        rng = random.Random(writer)
        for tx in range(transactions_per_writer):
            size = rng.randint(1, 7)
            batch = events(aggregate_id, seq, size, payload_data=f"{writer}:{tx}".encode())
            client.append_event(batch)
            written.append(batch)
            seq += size
        return written

    with ThreadPoolExecutor(writers) as pool:
        transactions = [tx for written in pool.map(write, range(writers)) for tx in written]
    total = sum(len(tx) for tx in transactions)
    assert client.get_last_token() == start + total - 1

    stored = read_events(client, start, total)
    assert [token for token, _ in stored] == list(range(start, start + total))
    token_of = {(e.aggregate_identifier, e.aggregate_sequence_number): t for t, e in stored}
    assert len(token_of) == total
    for tx in transactions:
        tokens = [token_of[(e.aggregate_identifier, e.aggregate_sequence_number)] for e in tx]
        assert tokens == list(range(tokens[0], tokens[0] + len(tx))), "a transaction's events are adjacent"
        assert [stored[t - start][1] for t in tokens] == tx


# --- snapshots -----------------------------------------------------------------------------------


def test_snapshots_list_highest_first_within_bounds(client):
    aggregate_id = new_id()
    client.append_event(events(aggregate_id, 0, 10))
    snapshots = {seq: snapshot(aggregate_id, seq) for seq in (2, 4, 6, 8)}
    for seq in sorted(snapshots):
        client.append_snapshot(snapshots[seq])

    def listed(**kwargs: int) -> list[int]:
        found = client.list_snapshot_events(aggregate_id, **kwargs)
        for s in found:
            assert s == snapshots[s.aggregate_sequence_number], "stored exactly as sent"
        return [s.aggregate_sequence_number for s in found]

    assert client.list_snapshot_events(aggregate_id) == [snapshots[s] for s in (8, 6, 4, 2)]
    assert listed(max_results=2) == [8, 6]
    assert listed(max_results=1) == [8]
    assert listed(max_results=0) == [8, 6, 4, 2]  # 0 = unlimited
    assert listed(initial_sequence=4) == [8, 6, 4]
    assert listed(initial_sequence=5) == [8, 6]
    assert listed(max_sequence=8) == [6, 4, 2]  # initial_sequence <= seq < max_sequence
    assert listed(max_sequence=7) == [6, 4, 2]
    assert listed(max_sequence=0) == []
    assert listed(initial_sequence=3, max_sequence=7) == [6, 4]
    assert listed(initial_sequence=4, max_sequence=9, max_results=2) == [8, 6]
    assert client.list_snapshot_events(new_id()) == []


def test_snapshot_beyond_the_aggregate_is_rejected_with_axons_message(client):
    unknown = new_id()
    with pytest.raises(grpc.RpcError) as caught:
        client.append_snapshot(snapshot(unknown, 0))
    assert_axon_error(caught.value, "AXONIQ-2000", snapshot_error(unknown, -1, 0))
    assert client.list_snapshot_events(unknown) == []

    aggregate_id = new_id()
    client.append_event(events(aggregate_id, 0, 3))
    for seq in (3, 7):
        with pytest.raises(grpc.RpcError) as caught:
            client.append_snapshot(snapshot(aggregate_id, seq))
        assert_axon_error(caught.value, "AXONIQ-2000", snapshot_error(aggregate_id, 2, seq))
    assert client.list_snapshot_events(aggregate_id) == []
    accepted = [snapshot(aggregate_id, 1), snapshot(aggregate_id, 2)]
    for s in accepted:
        client.append_snapshot(s)
    assert client.list_snapshot_events(aggregate_id) == accepted[::-1]


def test_snapshots_take_no_tokens_and_are_not_in_the_event_stream(client):
    aggregate_id = new_id()
    start = client.get_last_token() + 1
    stored = event(aggregate_id, 0)
    client.append_event(stored)
    client.append_snapshot(snapshot(aggregate_id, 0))
    assert client.get_last_token() == start
    client.append_event(event(aggregate_id, 1))
    assert client.get_last_token() == start + 1
    assert [(t, e.snapshot) for t, e in list_events(client, start)] == [(start, False), (start + 1, False)]
    assert list_events(client, start)[0] == (start, stored)


# --- reading an aggregate ------------------------------------------------------------------------


def test_list_aggregate_events_with_snapshots(client):
    aggregate_id = new_id()
    stored = events(aggregate_id, 0, 10)
    client.append_event(stored)
    s3, s6 = snapshot(aggregate_id, 3), snapshot(aggregate_id, 6)
    client.append_snapshot(s3)
    client.append_snapshot(s6)

    assert client.list_aggregate_events(aggregate_id, 0, False) == stored
    # The latest snapshot at or after initial_sequence, then only the events after it.
    assert client.list_aggregate_events(aggregate_id, 0, True) == [s6, *stored[7:]]
    assert client.list_aggregate_events(aggregate_id, 4, True) == [s6, *stored[7:]]
    assert client.list_aggregate_events(aggregate_id, 6, True) == [s6, *stored[7:]]
    assert client.list_aggregate_events(aggregate_id, 7, True) == stored[7:]
    assert client.list_aggregate_events(aggregate_id, 5, False) == stored[5:]

    s9 = snapshot(aggregate_id, 9)
    client.append_snapshot(s9)
    assert client.list_aggregate_events(aggregate_id, 0, True) == [s9]


def test_list_aggregate_events_bounds(client):
    unknown = new_id()
    assert client.list_aggregate_events(unknown, 0, False) == []
    assert client.list_aggregate_events(unknown, 0, True) == []

    aggregate_id = new_id()
    stored = events(aggregate_id, 0, 6)
    client.append_event(stored)
    assert client.list_aggregate_events(aggregate_id, 3, False) == stored[3:]
    assert client.list_aggregate_events(aggregate_id, 6, False) == []
    # max_sequence <= 0 is unbounded.
    assert list_aggregate_events_up_to(client, aggregate_id, 0, 0) == stored
    assert list_aggregate_events_up_to(client, aggregate_id, 0, -1) == stored
    assert list_aggregate_events_up_to(client, aggregate_id, 2, 0) == stored[2:]
    # A positive max_sequence bounds the answer.
    bounded = list_aggregate_events_up_to(client, aggregate_id, 0, 3)
    assert bounded in (stored[:3], stored[:4]), [e.aggregate_sequence_number for e in bounded]


def test_read_highest_sequence_number(client):
    aggregate_id = new_id()
    assert highest_sequence(client, aggregate_id) == -1
    client.append_event(events(aggregate_id, 0, 3))
    assert highest_sequence(client, aggregate_id) == 2
    client.append_snapshot(snapshot(aggregate_id, 2))
    assert highest_sequence(client, aggregate_id) == 2


# --- the event stream ----------------------------------------------------------------------------


def test_list_events_from_next_token_returns_exactly_the_new_events(client):
    next_token = client.get_last_token() + 1
    assert list_events(client, next_token, number_of_permits=10) == []

    a, b = new_id(), new_id()
    first, second = events(a, 0, 3), events(b, 0, 2)
    client.append_event(first)
    client.append_event(second)
    expected = [(next_token + i, e) for i, e in enumerate(first + second)]
    assert list_events(client, next_token, number_of_permits=10) == expected
    assert list_events(client, next_token) == expected
    # Positioned inside the stream, and limited by the permits.
    assert list_events(client, next_token + 2) == expected[2:]
    assert list_events(client, next_token, number_of_permits=3) == expected[:3]


def test_list_events_completes_when_the_client_half_closes(client):
    start = client.get_last_token() + 1
    # Half-closed right after the first request (what `iter([request])` does).
    call = client.event_store_stub.ListEvents(iter([GetEventsRequest(tracking_token=start, number_of_permits=10)]))
    assert with_timeout("ListEvents half-closed at once", lambda: list(call)) == []
    assert call.code() == grpc.StatusCode.OK
    # Half-closed while events are still permitted: the stream ends with OK all the same.
    aggregate_id = new_id()
    client.append_event(events(aggregate_id, 0, 2))
    requests, responses = open_list_events(client, GetEventsRequest(tracking_token=start, number_of_permits=100))
    assert [r.token for r in responses.take(2)] == [start, start + 1]
    requests.close()
    responses.assert_completes_ok()


def test_list_events_permits_and_later_requests(client):
    start = client.get_last_token() + 1
    stored = events(new_id(), 0, 6)
    client.append_event(stored)
    requests, responses = open_list_events(client, GetEventsRequest(tracking_token=start, number_of_permits=2))
    assert [(r.token, AxonEvent.from_grpc(r.event)) for r in responses.take(2)] == [
        (start, stored[0]),
        (start + 1, stored[1]),
    ]
    responses.assert_quiet()
    # A later request adds permits; its token is ignored, stale (dendrite) or absent (Java).
    requests.send(GetEventsRequest(tracking_token=0, number_of_permits=2))
    assert [r.token for r in responses.take(2)] == [start + 2, start + 3]
    responses.assert_quiet()
    requests.send(GetEventsRequest(number_of_permits=1))
    assert [r.token for r in responses.take(1)] == [start + 4]
    responses.assert_quiet()
    requests.send(GetEventsRequest(tracking_token=start + 100, number_of_permits=5))
    assert [r.token for r in responses.take(1)] == [start + 5]
    requests.close()
    responses.assert_completes_ok()


def test_list_events_tails_live_until_the_client_half_closes(client):
    start = client.get_last_token() + 1
    requests, responses = open_list_events(client, GetEventsRequest(tracking_token=start, number_of_permits=100))
    responses.assert_quiet()
    aggregate_id = new_id()
    first = events(aggregate_id, 0, 3)
    client.append_event(first)
    assert [(r.token, AxonEvent.from_grpc(r.event)) for r in responses.take(3)] == [
        (start + i, e) for i, e in enumerate(first)
    ]
    # At the head the stream waits; it does not end.
    responses.assert_quiet(1.5)
    second = events(aggregate_id, 3, 2)
    client.append_event(second)
    assert [(r.token, AxonEvent.from_grpc(r.event)) for r in responses.take(2)] == [
        (start + 3 + i, e) for i, e in enumerate(second)
    ]
    requests.close()
    responses.assert_completes_ok()


def test_abandoned_list_events_streams_are_released(client):
    aggregate_id = new_id()
    client.append_event(events(aggregate_id, 0, 1))
    for _ in range(200):
        requests = Requests()
        requests.send(GetEventsRequest(tracking_token=0, number_of_permits=1000))
        call = client.event_store_stub.ListEvents(iter(requests))
        next(call)
        call.cancel()
        requests.close()
    # The server still serves: appends, reads and a live stream.
    start = client.get_last_token() + 1
    requests, responses = open_list_events(client, GetEventsRequest(tracking_token=start, number_of_permits=10))
    client.append_event(events(aggregate_id, 1, 1))
    assert [r.token for r in responses.take(1)] == [start]
    requests.close()
    responses.assert_completes_ok()
    assert len(client.list_aggregate_events(aggregate_id, 0, False)) == 2


def test_get_token_at(client):
    assert token_at(client, 0) == 0  # before every segment: the first token
    start = client.get_last_token() + 1
    aggregate_id = new_id()
    client.append_event(
        [event(aggregate_id, i, timestamp=FUTURE_MS + 10 * i) for i in range(3)]
    )
    assert token_at(client, FUTURE_MS) == start
    assert token_at(client, FUTURE_MS + 5) == start + 1
    assert token_at(client, FUTURE_MS + 10) == start + 1
    assert token_at(client, FUTURE_MS + 20) == start + 2


# --- PlatformService -----------------------------------------------------------------------------


def test_platform_server_is_this_connection(client):
    stub = PlatformServiceStub(client.channel)
    info = stub.GetPlatformServer(ClientIdentification(client_id="pytest", component_name="myelin-tests"))
    assert info.same_connection is True
    assert info.HasField("primary")


def test_platform_stream_acknowledges_instructions(client):
    stub = PlatformServiceStub(client.channel)
    requests = Requests()
    call = stub.OpenStream(iter(requests))
    responses = Responses(call)
    try:
        requests.send(
            PlatformInboundInstruction(
                register=ClientIdentification(client_id="pytest", component_name="myelin-tests"),
                instruction_id="register-1",
            )
        )
        requests.send(PlatformInboundInstruction(heartbeat=Heartbeat(), instruction_id="heartbeat-1"))
        requests.send(PlatformInboundInstruction(instruction_id="unknown-1"))  # no request set
        acks = {}
        while len(acks) < 3:
            outbound = responses.next()
            if outbound.WhichOneof("request") == "ack":
                acks[outbound.ack.instruction_id] = outbound.ack
        assert acks["register-1"].success is True
        assert acks["heartbeat-1"].success is True
        assert acks["unknown-1"].success is False
        assert acks["unknown-1"].error.error_code == "AXONIQ-1002"
    finally:
        requests.close()
        call.cancel()
