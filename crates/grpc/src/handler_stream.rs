//! The loop both handler streams run (`CommandService.OpenStream` and `QueryService.OpenStream`):
//! read the handler's messages until it half-closes, goes away or the server stops, apply each,
//! and acknowledge each one that carries an instruction id — success, or Axon code 1002 for a kind
//! the stream does not take — except an ack, which SE only logs. When it ends, the router
//! forgets the stream.

use tokio::sync::{mpsc, watch};
use tonic::Streaming;

/// What differs between the command and the query handler stream.
pub(crate) trait HandlerProtocol: Send + 'static {
    /// A message from the handler.
    type In: Send + 'static;
    /// A message to the handler.
    type Out: Send + 'static;

    fn instruction_id(message: &Self::In) -> &str;
    fn is_ack(message: &Self::In) -> bool;
    /// Applies one message; answers whether its kind is one the stream takes.
    fn handle(&mut self, message: Self::In) -> bool;
    /// The acknowledgement of instruction `id`.
    fn ack(id: String, supported: bool, node_name: &str) -> Self::Out;
    /// The stream ended: the router forgets it.
    fn disconnect(&mut self);
}

pub(crate) async fn serve<P: HandlerProtocol>(
    mut protocol: P,
    mut inbound: Streaming<P::In>,
    outbound: mpsc::Sender<P::Out>,
    node_name: String,
    mut stopping: watch::Receiver<bool>,
) {
    loop {
        let message = tokio::select! {
            message = inbound.message() => message,
            _ = crate::stopped(&mut stopping) => break,
        };
        let Ok(Some(message)) = message else {
            break;
        };
        let id = P::instruction_id(&message).to_string();
        let is_ack = P::is_ack(&message);
        let supported = protocol.handle(message);
        if !id.is_empty() && !is_ack && outbound.send(P::ack(id, supported, &node_name)).await.is_err() {
            break;
        }
    }
    protocol.disconnect();
}
