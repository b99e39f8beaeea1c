//! Which context a request is for: the `AxonIQ-Context` header, then the legacy `Context`
//! header, else `default`. The registry itself is the node's ([`myelin_node::Contexts`]).

use tonic::codegen::http::HeaderMap;

pub use myelin_node::DEFAULT_CONTEXT;

/// Request header naming the context (`AxonIQ-Context`).
pub const CONTEXT_HEADER: &str = myelin_proto::CONTEXT_METADATA_KEY;
/// The header Axon Server accepted before `AxonIQ-Context`.
pub const LEGACY_CONTEXT_HEADER: &str = "context";

/// The context named by request metadata; an empty or non-ASCII header counts as absent.
pub fn context_name(metadata: &HeaderMap) -> &str {
    [CONTEXT_HEADER, LEGACY_CONTEXT_HEADER]
        .iter()
        .filter_map(|key| metadata.get(*key)?.to_str().ok())
        .find(|name| !name.is_empty())
        .unwrap_or(DEFAULT_CONTEXT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_header_precedence() {
        let mut metadata = HeaderMap::new();
        assert_eq!(context_name(&metadata), "default");
        metadata.insert("context", "legacy".parse().expect("ascii"));
        assert_eq!(context_name(&metadata), "legacy");
        metadata.insert("axoniq-context", "modern".parse().expect("ascii"));
        assert_eq!(context_name(&metadata), "modern");
        metadata.insert("axoniq-context", "".parse().expect("ascii"));
        assert_eq!(context_name(&metadata), "legacy");
    }
}
