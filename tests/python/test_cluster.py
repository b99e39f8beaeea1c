"""Real Python clients against a cluster of three real nodes (conftest's ``myelin_cluster``):
axonclient writers append through every node at once while the group's leader is SIGKILLed
mid-load and started again on its data, twice; then every node's history, read through
axonclient, goes through the history checker (history_check.py, the twin of
crates/testkit/src/history.rs). The checker's own tests come first: a checker that cannot fail
proves nothing.

A writer's outcome for each transaction: acknowledged (its ids must be stored exactly once);
refused by the sequence check (OutOfRangeError: nothing stored, so its ids must not appear);
anything else (the node was killed, leadership moved) unknown: stored at most once. After a
failure the writer re-reads its aggregate's highest sequence and goes on from there; after three
refusals in a row (the leader holds a proposal it has not applied) with a new aggregate.
"""

from __future__ import annotations

import random
import threading
import time

import grpc
import pytest
from axonclient.client import AxonClient, AxonEvent
from axonclient.exceptions import OutOfRangeError
from axonclient.protos.event_pb2 import ReadHighestSequenceNrRequest

from history_check import Outcomes, assert_histories, check

WRITERS_PER_NODE = 2
KILLS = 2
# Acknowledged transactions awaited before a kill, after it (the survivors must go on) and after
# the restart.
ACKS_BETWEEN_STEPS = 40
# How long the killed leader stays down.
DOWN_S = 2.0
# Forming, electing, catching up and converging each get this long.
SETTLE_S = 60.0
READ_TIMEOUT_S = 5.0


# --- the checker fails when it must -----------------------------------------------------------------


def _event(aggregate: str, sequence: int, message_id: str | None = None) -> AxonEvent:
    return AxonEvent(
        message_identifier=message_id or f"{aggregate}-{sequence}",
        aggregate_identifier=aggregate,
        aggregate_sequence_number=sequence,
        aggregate_type="ClusterTest",
        payload_type="com.example.Appended",
        timestamp=1_700_000_000_000 + sequence,
    )


def _good(count: int) -> list[tuple[int, AxonEvent]]:
    return [(i, _event("a" if i % 2 == 0 else "b", i // 2)) for i in range(count)]


def _acknowledged(events) -> Outcomes:
    return Outcomes(acknowledged={e.message_identifier for _, e in events})


def _violations(histories, outcomes) -> dict[str, list[str]]:
    summary, violations = check([(f"node-{i + 1}", h) for i, h in enumerate(histories)], outcomes)
    assert (summary is None) == bool(violations)
    return violations


def test_the_checker_passes_identical_gapless_histories_with_every_acknowledgement():
    events = _good(6)
    assert not _violations([events, events, events], _acknowledged(events))


def test_the_checker_fails_on_a_gap_in_the_tokens():
    events = _good(4)
    events[3] = (4, events[3][1])
    violations = _violations([events], _acknowledged(events))
    assert violations["gap"] == ["node-1: a gap: token 2 is followed by token 4"]


def test_the_checker_fails_on_an_event_stored_twice():
    events = _good(4) + [(4, _event("b", 0))]
    violations = _violations([events], _acknowledged(events))
    assert violations["duplicate"] == ["node-1: 'b-0' is stored 2 times, at tokens [1, 4]"]


def test_the_checker_fails_on_a_lost_acknowledgement():
    events = _good(5)
    violations = _violations([events[:4], events[:4]], _acknowledged(events))
    assert violations["acknowledged but missing"] == ["node-1: the acknowledged 'a-2' is not stored"]


def test_the_checker_fails_on_a_divergent_node():
    events = _good(4)
    other = list(events)
    other[2] = (2, _event("a", 1, "stranger"))
    outcomes = _acknowledged(events)
    outcomes.unknown.add("stranger")
    violations = _violations([events, events, other], outcomes)
    assert violations["divergence"] == [
        "node-3 diverges from node-1 at token 2: node-1 has 'a-1' (a #1), node-3 has 'stranger' (a #1)"
    ]
    assert violations["acknowledged but missing"] == ["node-3: the acknowledged 'a-1' is not stored"]


def test_the_checker_fails_on_an_unsent_event_and_a_skipped_sequence():
    events = _good(4) + [(4, _event("a", 3))]
    violations = _violations([events], _acknowledged(events[:4]))
    assert violations["never sent"] == ["node-1: token 4 holds 'a-3' (a #3), which no writer sent"]
    assert violations["aggregate sequence"] == ["node-1: token 4 holds 'a-3' (a #3), expected sequence 2"]


def test_the_checker_fails_on_a_refused_write_that_was_stored():
    events = _good(3)
    outcomes = _acknowledged(events[:2])
    outcomes.rejected.add("a-1")
    violations = _violations([events], outcomes)
    assert violations["rejected but stored"] == ["node-1: token 2 holds 'a-1' (a #1), whose write cannot have been stored"]


def test_the_checker_lets_an_unknown_outcome_be_stored_once_but_not_twice():
    events = _good(4)
    outcomes = _acknowledged(events[:3])
    outcomes.unknown.update({"b-1", "b-9"})
    assert not _violations([events], outcomes)
    twice = events + [(4, _event("c", 0, "b-1"))]
    outcomes.unknown.add("c-0")
    assert _violations([twice], outcomes)["duplicate"] == ["node-1: 'b-1' is stored 2 times, at tokens [3, 4]"]


# --- writers through every node while the leader is killed ----------------------------------------


class Writer(threading.Thread):
    """Appends transactions of 1–3 events to its own aggregate through one node, as long as the
    node runs (it follows the node to its new port when it restarts), until stopped."""

    def __init__(self, cluster, node: int, name: str, stop: threading.Event, seed: int) -> None:
        super().__init__(name=name, daemon=True)
        self.cluster = cluster
        self.node = node
        self.base = name
        self.aggregate = name
        self.generation = 0
        self.stop = stop
        self.rng = random.Random(seed)
        self.outcomes = Outcomes()
        self.acknowledged_transactions = 0
        self.refused_transactions = 0
        self.unknown_transactions = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as e:  # reported by the test, not lost in the thread
            self.error = e

    def _run(self) -> None:
        client: AxonClient | None = None
        uri: str | None = None
        sequence: int | None = 0
        attempt = 0
        refusals = 0
        while not self.stop.is_set():
            current = self.cluster.uri(self.node)
            if current is None:
                time.sleep(0.02)
                continue
            if current != uri or client is None:
                if client is not None:
                    client.close_connection()
                client, uri = AxonClient(current), current
            if sequence is None:
                try:
                    reply = client.event_store_stub.ReadHighestSequenceNr(
                        ReadHighestSequenceNrRequest(aggregate_id=self.aggregate), timeout=READ_TIMEOUT_S
                    )
                    sequence = reply.to_sequence_nr + 1
                except grpc.RpcError:
                    client.close_connection()
                    client = None
                    time.sleep(0.02)
                    continue
            size = self.rng.randint(1, 3)
            events = [
                AxonEvent(
                    message_identifier=f"{self.aggregate}-t{attempt}-{k}",
                    aggregate_identifier=self.aggregate,
                    aggregate_sequence_number=sequence + k,
                    aggregate_type="ClusterTest",
                    payload_type="com.example.Appended",
                    payload_revision="1",
                    payload_data=f"{self.aggregate}:{sequence + k}".encode(),
                )
                for k in range(size)
            ]
            ids = {event.message_identifier for event in events}
            attempt += 1
            try:
                client.append_event(events)
            except OutOfRangeError:
                # The sequence check refused it before proposing: nothing was stored.
                self.outcomes.rejected |= ids
                self.refused_transactions += 1
                sequence = None
                refusals += 1
                if refusals >= 3:
                    self.generation += 1
                    self.aggregate = f"{self.base}-g{self.generation}"
                    sequence, refusals = 0, 0
                continue
            except grpc.RpcError:
                self.outcomes.unknown |= ids
                self.unknown_transactions += 1
                sequence = None
                client.close_connection()
                client = None
                time.sleep(0.02)
                continue
            self.outcomes.acknowledged |= ids
            self.acknowledged_transactions += 1
            refusals = 0
            sequence += size
        if client is not None:
            client.close_connection()


def _wait(what: str, condition, timeout_s: float = SETTLE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout_s} s", pytrace=False)
        time.sleep(0.05)


def _last_tokens(cluster) -> list[int]:
    tokens = []
    for i in range(len(cluster.nodes)):
        client = AxonClient(cluster.uri(i))
        try:
            tokens.append(client.get_last_token())
        finally:
            client.close_connection()
    return tokens


def _history(uri: str, last: int) -> list[tuple[int, AxonEvent]]:
    client = AxonClient(uri)
    try:
        return client.list_events(tracking_token=0, number_of_permits=last + 1)
    finally:
        client.close_connection()


@pytest.mark.timeout(600)
def test_axonclient_writers_through_every_node_lose_no_acknowledged_event_while_the_leader_is_killed_and_restarted(
    myelin_cluster,
):
    cluster = myelin_cluster
    stop = threading.Event()
    writers = [
        Writer(cluster, node, f"cluster-n{node + 1}-w{w}", stop, seed=20261206 + 10 * node + w)
        for node in range(len(cluster.nodes))
        for w in range(WRITERS_PER_NODE)
    ]

    def acknowledged() -> int:
        return sum(w.acknowledged_transactions for w in writers)

    def acknowledged_through(node: int) -> int:
        return sum(w.acknowledged_transactions for w in writers if w.node == node)

    for writer in writers:
        writer.start()
    try:
        cluster.wait_until_joined(SETTLE_S)
        _wait("the cluster formed and acknowledged writes", lambda: acknowledged() >= ACKS_BETWEEN_STEPS)
        for kill in range(KILLS):
            leader = cluster.wait_until_voters(SETTLE_S)
            before = acknowledged()
            _wait("load before the kill", lambda: acknowledged() >= before + ACKS_BETWEEN_STEPS)
            cluster.kill(leader)
            after_kill = acknowledged()
            _wait(
                f"kill {kill + 1}: the survivors acknowledging without node-{leader + 1}",
                lambda: acknowledged() >= after_kill + ACKS_BETWEEN_STEPS,
            )
            time.sleep(DOWN_S)
            cluster.start(leader)
            through = acknowledged_through(leader)
            _wait(
                f"kill {kill + 1}: writes through the restarted node-{leader + 1}",
                lambda: acknowledged_through(leader) >= through + ACKS_BETWEEN_STEPS // 4,
            )
    finally:
        stop.set()
        for writer in writers:
            writer.join(SETTLE_S)
    for writer in writers:
        assert not writer.is_alive(), f"writer {writer.name} did not stop"
        assert writer.error is None, f"writer {writer.name} failed: {writer.error!r}"

    # Every node holds the same last token, twice in a row.
    previous = None
    deadline = time.monotonic() + SETTLE_S
    while True:
        tokens = _last_tokens(cluster)
        if len(set(tokens)) == 1 and tokens == previous:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"the nodes did not converge: last tokens {tokens}", pytrace=False)
        previous = tokens
        time.sleep(0.2)

    outcomes = Outcomes()
    for writer in writers:
        outcomes.merge(writer.outcomes)
    histories = [(f"node-{i + 1}", _history(cluster.uri(i), tokens[0])) for i in range(len(cluster.nodes))]
    summary = assert_histories(histories, outcomes)
    assert summary.events == tokens[0] + 1
    print(
        f"cluster: {sum(w.acknowledged_transactions for w in writers)} transactions acknowledged, "
        f"{sum(w.unknown_transactions for w in writers)} unknown ({summary.unknown_present} of their events stored), "
        f"{sum(w.refused_transactions for w in writers)} refused; {summary.events} events on every node"
    )
