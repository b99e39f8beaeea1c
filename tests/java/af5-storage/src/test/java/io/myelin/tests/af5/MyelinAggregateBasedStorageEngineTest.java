package io.myelin.tests.af5;

import io.axoniq.axonserver.connector.AxonServerConnection;
import io.axoniq.axonserver.connector.AxonServerConnectionFactory;
import io.axoniq.axonserver.connector.impl.ServerAddress;
import org.axonframework.axonserver.connector.event.AggregateBasedAxonServerEventStorageEngine;
import org.axonframework.eventsourcing.eventstore.AggregateBasedStorageEngineTestSuite;
import org.axonframework.messaging.core.unitofwork.ProcessingContext;
import org.axonframework.messaging.eventhandling.EventMessage;
import org.axonframework.messaging.eventhandling.processing.streaming.token.GlobalSequenceTrackingToken;
import org.axonframework.messaging.eventhandling.processing.streaming.token.TrackingToken;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.extension.BeforeEachCallback;
import org.junit.jupiter.api.extension.RegisterExtension;

import java.time.Duration;
import java.util.List;

/**
 * Axon Framework 5.0.1's {@link AggregateBasedStorageEngineTestSuite}, unchanged, on AF's
 * {@link AggregateBasedAxonServerEventStorageEngine} connected to a real Myelin server. The suite
 * assumes an empty store in every test (it streams from the first token and compares the first
 * and latest tokens of an empty store), so every test gets its own server on a fresh data
 * directory; its log is target/myelin-logs/&lt;test method&gt;.log.
 */
class MyelinAggregateBasedStorageEngineTest
        extends AggregateBasedStorageEngineTestSuite<AggregateBasedAxonServerEventStorageEngine> {

    private static final Duration CONNECT_TIMEOUT = Duration.ofSeconds(10);

    /** The running test's method name, known before the suite's {@code @BeforeEach} builds the engine. */
    private String testName = "unknown";
    private MyelinServer server;
    private AxonServerConnectionFactory factory;

    @RegisterExtension
    final BeforeEachCallback testNameRecorder = context -> testName = context.getRequiredTestMethod().getName();

    @Override
    protected AggregateBasedAxonServerEventStorageEngine buildStorageEngine() {
        server = MyelinServer.start(testName);
        factory = AxonServerConnectionFactory.forClient("myelin-af5-storage")
                .routingServers(new ServerAddress(MyelinServer.HOST, server.grpcPort()))
                .build();
        AxonServerConnection connection = factory.connect("default");
        // The connector connects in the background; a test's first call should not race it.
        long deadline = System.nanoTime() + CONNECT_TIMEOUT.toNanos();
        while (!connection.isConnected()) {
            if (System.nanoTime() > deadline) {
                throw new AssertionError("not connected to " + MyelinServer.HOST + ":" + server.grpcPort()
                        + " within " + CONNECT_TIMEOUT.toSeconds() + " s\n" + server.logTail());
            }
            MyelinServer.sleep(20);
        }
        return new AggregateBasedAxonServerEventStorageEngine(connection, converter);
    }

    @AfterEach
    void stopServer() {
        try {
            if (factory != null) {
                factory.shutdown();
            }
        } finally {
            if (server != null) {
                List<String> problems = server.stop();
                if (!problems.isEmpty()) {
                    throw new AssertionError(String.join("\n", problems));
                }
            }
        }
    }

    @Override
    protected ProcessingContext processingContext() {
        // The engine takes no resources from the context; AF's in-memory engine test passes null too.
        return null;
    }

    /**
     * Axon Server numbers events from token 0 and AF's engine uses that token as the
     * {@link GlobalSequenceTrackingToken}'s index, so the suite's 1-based event {@code n} is at n - 1.
     */
    @Override
    protected long globalSequenceOfEvent(long eventNumber) {
        return eventNumber - 1;
    }

    /**
     * A token that streams from the suite's 0-based {@code position} on: a stream resumes after its
     * token's index (the connector asks the server for index + 1), so position p is index p - 1.
     */
    @Override
    protected TrackingToken trackingTokenAt(long position) {
        return new GlobalSequenceTrackingToken(position - 1);
    }

    /** The engine hands payloads back as stored bytes; the suite compares them with the String it appended. */
    @Override
    protected EventMessage convertPayload(EventMessage original) {
        return converter.convertEvent(original, String.class);
    }
}
