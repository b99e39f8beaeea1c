package io.myelin.tests.connector;

import static io.myelin.tests.connector.Connector.CALL_TIMEOUT;
import static io.myelin.tests.connector.Connector.CONTEXT;
import static io.myelin.tests.connector.Connector.event;
import static io.myelin.tests.connector.Connector.snapshot;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.UUID;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;

import io.axoniq.axonserver.connector.AxonServerConnection;
import io.axoniq.axonserver.connector.AxonServerConnectionFactory;
import io.axoniq.axonserver.connector.event.AggregateEventStream;
import io.axoniq.axonserver.connector.event.AppendEventsTransaction;
import io.axoniq.axonserver.connector.event.EventChannel;
import io.axoniq.axonserver.connector.event.EventStream;
import io.axoniq.axonserver.grpc.event.Confirmation;
import io.axoniq.axonserver.grpc.event.Event;
import io.axoniq.axonserver.grpc.event.EventWithToken;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

/**
 * The event store through the connector's {@code EventChannel}, as Axon Framework 4's
 * {@code AxonServerEventStore} drives it: append transactions, read an aggregate back (with and
 * without snapshots), track the global stream by token. The tests share one server, so each works
 * on aggregates of its own and on tokens relative to the last token it saw.
 */
@ExtendWith(MyelinExtension.class)
class EventStoreTest {

    private AxonServerConnectionFactory factory;
    private EventChannel events;

    @BeforeEach
    void connect(MyelinServer server) {
        factory = Connector.factory(server).build();
        AxonServerConnection connection = factory.connect(CONTEXT);
        Connector.awaitConnected(connection, server);
        events = connection.eventChannel();
    }

    @AfterEach
    void disconnect() {
        factory.shutdown();
    }

    private static <T> T get(java.util.concurrent.CompletableFuture<T> future) throws Exception {
        return future.get(CALL_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS);
    }

    private static List<Event> readAll(AggregateEventStream stream) throws InterruptedException {
        List<Event> read = new ArrayList<>();
        try {
            while (stream.hasNext()) {
                read.add(stream.next());
            }
        } finally {
            stream.cancel();
        }
        return read;
    }

    private static EventWithToken next(EventStream stream, String what) throws InterruptedException {
        EventWithToken next = stream.nextIfAvailable(CALL_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS);
        assertNotNull(next, "no event within " + CALL_TIMEOUT.toSeconds() + " s while waiting for " + what
                + (stream.getError().map(e -> "; the stream failed:" + Errors.describe(e)).orElse("")));
        return next;
    }

    @Test
    void aTransactionIsReadBackWholeByAggregateAndByTokenInOrder() throws Exception {
        long before = get(events.getLastToken());
        String order = "order-" + UUID.randomUUID();
        List<Event> appended = List.of(event(order, 0), event(order, 1), event(order, 2));

        AppendEventsTransaction transaction = events.startAppendEventsTransaction();
        appended.forEach(transaction::appendEvent);
        Confirmation confirmation = get(transaction.commit());

        assertTrue(confirmation.getSuccess(), "the commit's confirmation says success: " + confirmation);
        assertEquals(before + 3, get(events.getLastToken()), "the last token after appending 3 events to a store whose last token was " + before);
        // The server answers GetFirstToken with 0; the connector hands out the token before it
        // (max(token, 0) - 1), the one to open a stream at to read from the first event.
        assertEquals(-1L, get(events.getFirstToken()),
                "the connector's first token (the server's GetFirstToken 0, minus one) of a store whose first event is token 0");
        assertEquals(2L, get(events.findHighestSequence(order)), "the highest sequence of " + order);
        assertEquals(appended, readAll(events.openAggregateStream(order, false)),
                "the aggregate's events, read back, are the appended ones in order, unchanged");

        try (EventStream stream = events.openStream(before, 16)) {
            for (int i = 0; i < appended.size(); i++) {
                EventWithToken read = next(stream, "token " + (before + 1 + i));
                assertEquals(before + 1 + i, read.getToken(), "token of the transaction's event " + i);
                assertEquals(appended.get(i), read.getEvent(), "the event at token " + read.getToken());
            }
        }
    }

    @Test
    void aTransactionWhoseSequenceConflictsIsRejectedWithInvalidSequenceAndLeavesNoTrace() throws Exception {
        String order = "order-" + UUID.randomUUID();
        get(events.startAppendEventsTransaction().appendEvent(event(order, 0)).appendEvent(event(order, 1)).commit());
        long last = get(events.getLastToken());

        // Sequence 1 is taken: the whole transaction (1 and 2) must be refused.
        AppendEventsTransaction conflicting = events.startAppendEventsTransaction()
                .appendEvent(event(order, 1))
                .appendEvent(event(order, 2));
        ExecutionException failure = assertThrows(ExecutionException.class, () -> get(conflicting.commit()),
                "committing a transaction that repeats sequence 1 of " + order);

        assertEquals("AXONIQ-2000", Errors.axonCode(failure),
                "the rejection carries INVALID_EVENT_SEQUENCE; the failure was:" + Errors.describe(failure));
        assertEquals(last, get(events.getLastToken()), "the last token after the rejected transaction");
        assertEquals(1L, get(events.findHighestSequence(order)), "the highest sequence after the rejected transaction");
        assertEquals(2, readAll(events.openAggregateStream(order, false)).size(),
                "events of " + order + " after the rejected transaction");
    }

    @Test
    void aSnapshotIsLoadedAndAnAggregateReadWithSnapshotsStartsAtIt() throws Exception {
        String order = "order-" + UUID.randomUUID();
        List<Event> appended = new ArrayList<>();
        AppendEventsTransaction transaction = events.startAppendEventsTransaction();
        for (long sequence = 0; sequence < 5; sequence++) {
            appended.add(event(order, sequence));
            transaction.appendEvent(appended.get((int) sequence));
        }
        get(transaction.commit());
        Event snapshot = snapshot(order, 3);

        Confirmation confirmation = get(events.appendSnapshot(snapshot));

        assertTrue(confirmation.getSuccess(), "the snapshot's confirmation says success: " + confirmation);
        assertEquals(List.of(snapshot), readAll(events.loadSnapshot(order)), "the latest snapshot of " + order);
        assertEquals(List.of(snapshot, appended.get(4)), readAll(events.openAggregateStream(order, true)),
                "reading " + order + " with snapshots: the snapshot at 3, then event 4");
        assertEquals(appended, readAll(events.openAggregateStream(order, false)),
                "reading " + order + " without snapshots still gives all 5 events");
    }

    @Test
    void aTrackingStreamDeliversAnEventAppendedAfterItOpened() throws Exception {
        long last = get(events.getLastToken());
        String order = "order-" + UUID.randomUUID();
        try (EventStream stream = events.openStream(last, 16)) {
            Event appended = event(order, 0);
            get(events.appendEvents(appended));

            EventWithToken read = next(stream, "the event appended after the stream opened at " + last);
            assertEquals(last + 1, read.getToken(), "token of the event appended after the stream opened");
            assertEquals(appended, read.getEvent(), "the event the stream delivered");
        }
    }
}
