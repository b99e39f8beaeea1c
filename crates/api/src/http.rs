//! The HTTP listener (Axon's port 8024). For now only the landing page, which a client test
//! checks for; the REST API joins it here.

use std::future::Future;

use axum::Router;
use axum::response::Html;
use axum::routing::get;
use tokio::net::TcpListener;

/// Serves HTTP on `listener` until `shutdown` completes.
pub async fn serve_http(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(address = %listener.local_addr()?, "HTTP listener serving");
    axum::serve(listener, router()).with_graceful_shutdown(shutdown).await
}

pub fn router() -> Router {
    Router::new().route("/", get(landing_page))
}

async fn landing_page() -> Html<String> {
    let version = env!("CARGO_PKG_VERSION");
    Html(format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Myelin {version}</title></head>\n\
         <body><h1>Myelin</h1><p>A drop-in Axon Server, version {version}.</p></body></html>\n"
    ))
}
