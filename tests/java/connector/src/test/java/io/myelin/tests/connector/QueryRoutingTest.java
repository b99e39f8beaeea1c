package io.myelin.tests.connector;

import static io.myelin.tests.connector.Connector.CALL_TIMEOUT;
import static io.myelin.tests.connector.Connector.CONTEXT;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.UUID;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import com.google.protobuf.ByteString;
import io.axoniq.axonserver.connector.AxonServerConnection;
import io.axoniq.axonserver.connector.AxonServerConnectionFactory;
import io.axoniq.axonserver.connector.Registration;
import io.axoniq.axonserver.connector.ReplyChannel;
import io.axoniq.axonserver.connector.ResultStream;
import io.axoniq.axonserver.connector.query.QueryDefinition;
import io.axoniq.axonserver.connector.query.QueryHandler;
import io.axoniq.axonserver.connector.query.SubscriptionQueryResult;
import io.axoniq.axonserver.grpc.SerializedObject;
import io.axoniq.axonserver.grpc.query.QueryRequest;
import io.axoniq.axonserver.grpc.query.QueryResponse;
import io.axoniq.axonserver.grpc.query.QueryUpdate;
import io.axoniq.axonserver.grpc.query.SubscriptionQuery;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

/**
 * Queries through the connector's {@code QueryChannel}, as Axon Framework's
 * {@code AxonServerQueryBus} drives it: a handler application answers point-to-point queries and
 * subscription queries, a sender application asks (MESSAGING.md §3). Each test uses query names
 * of its own.
 */
@ExtendWith(MyelinExtension.class)
class QueryRoutingTest {

    private final List<AxonServerConnectionFactory> factories = new ArrayList<>();

    @AfterEach
    void disconnect() {
        factories.forEach(AxonServerConnectionFactory::shutdown);
    }

    private AxonServerConnection connect(MyelinServer server) {
        AxonServerConnectionFactory factory = Connector.factory(server).build();
        factories.add(factory);
        AxonServerConnection connection = factory.connect(CONTEXT);
        Connector.awaitConnected(connection, server);
        return connection;
    }

    private static SerializedObject text(String value) {
        return SerializedObject.newBuilder()
                .setType("java.lang.String")
                .setData(ByteString.copyFromUtf8(value))
                .build();
    }

    private static QueryRequest query(String name, String payload) {
        return QueryRequest.newBuilder()
                .setMessageIdentifier(UUID.randomUUID().toString())
                .setQuery(name)
                .setPayload(text(payload))
                .build();
    }

    private static QueryResponse answer(QueryRequest query, String value) {
        return QueryResponse.newBuilder()
                .setMessageIdentifier(UUID.randomUUID().toString())
                .setRequestIdentifier(query.getMessageIdentifier())
                .setPayload(text(value))
                .build();
    }

    private static String payload(QueryResponse response) {
        return response.getPayload().getData().toStringUtf8();
    }

    /** Every answer of a query until its stream ends. */
    private static List<QueryResponse> all(ResultStream<QueryResponse> stream) throws InterruptedException {
        List<QueryResponse> answers = new ArrayList<>();
        long deadline = System.nanoTime() + CALL_TIMEOUT.toNanos();
        while (!stream.isClosed()) {
            QueryResponse next = stream.nextIfAvailable(100, TimeUnit.MILLISECONDS);
            if (next != null) {
                answers.add(next);
            }
            assertTrue(System.nanoTime() < deadline, "the query did not end in time; got " + answers);
        }
        QueryResponse last;
        while ((last = stream.nextIfAvailable()) != null) {
            answers.add(last);
        }
        return answers;
    }

    @Test
    void aQueryIsAnsweredByTheHandlerOfAnotherApplication(MyelinServer server) throws Exception {
        AxonServerConnection handler = connect(server);
        Registration registration = handler.queryChannel().registerQueryHandler(
                (query, reply) -> {
                    reply.send(answer(query, "card " + query.getPayload().getData().toStringUtf8()));
                    reply.complete();
                },
                new QueryDefinition("FindCard", "java.lang.String"));
        registration.awaitAck(CALL_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS);

        AxonServerConnection sender = connect(server);
        List<QueryResponse> answers = all(sender.queryChannel().query(query("FindCard", "7")));
        assertEquals(1, answers.size(), () -> "answers: " + answers);
        assertEquals("", answers.get(0).getErrorCode(), () -> "an error: " + answers.get(0));
        assertEquals("card 7", payload(answers.get(0)));
    }

    @Test
    void aQueryNobodyHandlesIsAnsweredWith5000(MyelinServer server) throws Exception {
        AxonServerConnection sender = connect(server);
        List<QueryResponse> answers = all(sender.queryChannel().query(query("Nobody", "x")));
        assertEquals(1, answers.size(), () -> "answers: " + answers);
        assertEquals("AXONIQ-5000", answers.get(0).getErrorCode());
        assertEquals("No handler for query: Nobody", answers.get(0).getErrorMessage().getMessage());
    }

    @Test
    void aSubscriptionQueryGetsItsInitialResultAndTheHandlersUpdatesUntilItCompletes(MyelinServer server)
            throws Exception {
        CompletableFuture<QueryHandler.UpdateHandler> updates = new CompletableFuture<>();
        AxonServerConnection handler = connect(server);
        QueryHandler summaries = new QueryHandler() {
            @Override
            public void handle(QueryRequest query, ReplyChannel<QueryResponse> reply) {
                reply.send(answer(query, "initial"));
                reply.complete();
            }

            @Override
            public Registration registerSubscriptionQuery(SubscriptionQuery query, UpdateHandler sendUpdate) {
                updates.complete(sendUpdate);
                return () -> CompletableFuture.completedFuture(null);
            }
        };
        handler.queryChannel()
                .registerQueryHandler(summaries, new QueryDefinition("CardSummaries", "java.lang.String"))
                .awaitAck(CALL_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS);

        AxonServerConnection sender = connect(server);
        SubscriptionQueryResult result = sender.queryChannel()
                .subscriptionQuery(query("CardSummaries", "all"), text("java.lang.String"), 32, 4);
        QueryResponse initial = result.initialResult().get(CALL_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS);
        assertEquals("initial", payload(initial));

        QueryHandler.UpdateHandler emitter = updates.get(CALL_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS);
        ResultStream<QueryUpdate> stream = result.updates();
        for (String value : List.of("one", "two", "three")) {
            emitter.sendUpdate(QueryUpdate.newBuilder()
                    .setMessageIdentifier(UUID.randomUUID().toString())
                    .setPayload(text(value))
                    .build());
        }
        List<String> received = new ArrayList<>();
        for (int i = 0; i < 3; i++) {
            QueryUpdate update = stream.nextIfAvailable(CALL_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS);
            assertNotNull(update, "update " + i + " arrived; got " + received);
            received.add(update.getPayload().getData().toStringUtf8());
        }
        assertEquals(List.of("one", "two", "three"), received);
        emitter.complete();
        Connector.await(stream::isClosed, "the updates end once the handler completes them");
    }
}
