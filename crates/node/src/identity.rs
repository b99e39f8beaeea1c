//! Who this node is: the one description every API gives of it (GetPlatformServer's NodeInfo,
//! `/v1/public/me`, `/v1/public/context`, backup listings), so that a name or a port is never
//! spelled twice.

/// This node, as clients and operators see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    /// `axoniq.axonserver.name`; defaults to the host name.
    pub name: String,
    /// `axoniq.axonserver.hostname`: where clients reach this node.
    pub host_name: String,
    /// `axoniq.axonserver.internal-hostname`: where other nodes reach it.
    pub internal_host_name: String,
    /// The client gRPC port (`axoniq.axonserver.port`). 0 in a configuration means "the port
    /// the listener was bound to"; the server fills it in before anyone reads it.
    pub grpc_port: u16,
    /// The HTTP port (`server.port`).
    pub http_port: u16,
    /// The node-to-node gRPC port (`axoniq.axonserver.internal-port`).
    pub internal_port: u16,
    /// Sent as NodeInfo's `version`; Axon clients ignore it.
    pub version: i32,
}

/// Axon Server's client gRPC port.
pub const DEFAULT_GRPC_PORT: u16 = 8124;
/// Axon Server's HTTP port.
pub const DEFAULT_HTTP_PORT: u16 = 8024;
/// Axon Server's internal (node-to-node) gRPC port.
pub const DEFAULT_INTERNAL_PORT: u16 = 8224;

impl Default for NodeIdentity {
    fn default() -> Self {
        NodeIdentity {
            name: "myelin".into(),
            host_name: "localhost".into(),
            internal_host_name: "localhost".into(),
            grpc_port: DEFAULT_GRPC_PORT,
            http_port: DEFAULT_HTTP_PORT,
            internal_port: DEFAULT_INTERNAL_PORT,
            version: 0,
        }
    }
}
