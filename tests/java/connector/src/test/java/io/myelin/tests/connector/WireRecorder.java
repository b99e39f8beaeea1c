package io.myelin.tests.connector;

import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.atomic.AtomicInteger;

import io.axoniq.axonserver.grpc.InstructionAck;
import io.axoniq.axonserver.grpc.control.PlatformInboundInstruction;
import io.axoniq.axonserver.grpc.control.PlatformOutboundInstruction;
import io.grpc.CallOptions;
import io.grpc.Channel;
import io.grpc.ClientCall;
import io.grpc.ClientInterceptor;
import io.grpc.ForwardingClientCall;
import io.grpc.ForwardingClientCallListener;
import io.grpc.Metadata;
import io.grpc.MethodDescriptor;
import io.grpc.Status;

/**
 * A gRPC client interceptor that records what the connector says and hears, installed through
 * {@code AxonServerConnectionFactory.Builder#customize}, which the connector applies to every
 * channel it builds (also the one for {@code GetPlatformServer}). It counts calls per method, so a
 * reconnect shows as a second {@code GetPlatformServer} or {@code OpenStream}; and on the platform
 * instruction stream it records every heartbeat the client sends, every ack and heartbeat the
 * server sends, and how the stream ended.
 */
final class WireRecorder implements ClientInterceptor {

    static final String GET_PLATFORM_SERVER = "io.axoniq.axonserver.grpc.control.PlatformService/GetPlatformServer";
    static final String PLATFORM_OPEN_STREAM = "io.axoniq.axonserver.grpc.control.PlatformService/OpenStream";

    private final Map<String, AtomicInteger> calls = new ConcurrentHashMap<>();
    /** Heartbeat instruction ids the client sent, with the time it sent them (System.nanoTime). */
    private final Map<String, Long> heartbeatsSent = new ConcurrentHashMap<>();
    /** Heartbeats the client sent without an id: its answers to the server's heartbeats. */
    private final AtomicInteger heartbeatAnswersSent = new AtomicInteger();
    private final List<InstructionAck> acksReceived = new CopyOnWriteArrayList<>();
    private final AtomicInteger serverHeartbeatsReceived = new AtomicInteger();
    private final List<Status> platformStreamsClosed = new CopyOnWriteArrayList<>();

    int calls(String fullMethodName) {
        AtomicInteger count = calls.get(fullMethodName);
        return count == null ? 0 : count.get();
    }

    Map<String, Integer> callCounts() {
        Map<String, Integer> counts = new java.util.TreeMap<>();
        calls.forEach((method, count) -> counts.put(method, count.get()));
        return counts;
    }

    Map<String, Long> heartbeatsSent() {
        return Map.copyOf(heartbeatsSent);
    }

    int heartbeatAnswersSent() {
        return heartbeatAnswersSent.get();
    }

    List<InstructionAck> acksReceived() {
        return List.copyOf(acksReceived);
    }

    int serverHeartbeatsReceived() {
        return serverHeartbeatsReceived.get();
    }

    List<Status> platformStreamsClosed() {
        return List.copyOf(platformStreamsClosed);
    }

    @Override
    public <ReqT, RespT> ClientCall<ReqT, RespT> interceptCall(
            MethodDescriptor<ReqT, RespT> method, CallOptions options, Channel next) {
        calls.computeIfAbsent(method.getFullMethodName(), m -> new AtomicInteger()).incrementAndGet();
        ClientCall<ReqT, RespT> call = next.newCall(method, options);
        if (!PLATFORM_OPEN_STREAM.equals(method.getFullMethodName())) {
            return call;
        }
        return new ForwardingClientCall.SimpleForwardingClientCall<>(call) {
            @Override
            public void start(Listener<RespT> listener, Metadata headers) {
                super.start(new ForwardingClientCallListener.SimpleForwardingClientCallListener<>(listener) {
                    @Override
                    public void onMessage(RespT message) {
                        received(message);
                        super.onMessage(message);
                    }

                    @Override
                    public void onClose(Status status, Metadata trailers) {
                        platformStreamsClosed.add(status);
                        super.onClose(status, trailers);
                    }
                }, headers);
            }

            @Override
            public void sendMessage(ReqT message) {
                sent(message);
                super.sendMessage(message);
            }
        };
    }

    private void sent(Object message) {
        if (message instanceof PlatformInboundInstruction instruction && instruction.hasHeartbeat()) {
            if (instruction.getInstructionId().isEmpty()) {
                heartbeatAnswersSent.incrementAndGet();
            } else {
                heartbeatsSent.put(instruction.getInstructionId(), System.nanoTime());
            }
        }
    }

    private void received(Object message) {
        if (message instanceof PlatformOutboundInstruction instruction) {
            if (instruction.hasAck()) {
                acksReceived.add(instruction.getAck());
            } else if (instruction.hasHeartbeat()) {
                serverHeartbeatsReceived.incrementAndGet();
            }
        }
    }
}
