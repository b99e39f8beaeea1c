package io.myelin.tests.connector;

import java.util.ArrayList;
import java.util.List;

import io.axoniq.axonserver.connector.AxonServerException;
import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;

/** What an error from the server says, wherever the connector wrapped it. */
final class Errors {

    /** The trailer Axon Server names its error code in. */
    static final Metadata.Key<String> ERROR_CODE = Metadata.Key.of("AxonIQ-ErrorCode", Metadata.ASCII_STRING_MARSHALLER);

    private Errors() {
    }

    /** The Axon error code ("AXONIQ-2000") the failure carries, or null when it carries none. */
    static String axonCode(Throwable failure) {
        for (Throwable t : chain(failure)) {
            if (t instanceof AxonServerException axon && axon.getErrorCategory() != null) {
                return axon.getErrorCategory().errorCode();
            }
            if (t instanceof StatusRuntimeException status && status.getTrailers() != null) {
                String code = status.getTrailers().get(ERROR_CODE);
                if (code != null) {
                    return code;
                }
            }
        }
        return null;
    }

    /** The gRPC status in the failure's cause chain, or null. */
    static Status grpcStatus(Throwable failure) {
        for (Throwable t : chain(failure)) {
            if (t instanceof StatusRuntimeException status) {
                return status.getStatus();
            }
        }
        return null;
    }

    /** The failure and its causes, outermost first, each with its message: for assertion messages. */
    static String describe(Throwable failure) {
        StringBuilder text = new StringBuilder();
        for (Throwable t : chain(failure)) {
            text.append("\n  ").append(t.getClass().getName()).append(": ").append(t.getMessage());
        }
        return text.toString();
    }

    private static List<Throwable> chain(Throwable failure) {
        List<Throwable> chain = new ArrayList<>();
        for (Throwable t = failure; t != null && !chain.contains(t); t = t.getCause()) {
            chain.add(t);
        }
        return chain;
    }
}
