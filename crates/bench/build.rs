//! Compiles the load generator's client for UmaDB's gRPC API (`proto/umadb.proto`, our own
//! file) at build time. `protoc` comes from the `protoc-bin-vendored` crate, as in
//! `crates/proto`, so no system install and no network access are needed.

use std::path::PathBuf;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let proto_dir = manifest_dir.join("proto");
    let file = proto_dir.join("umadb.proto");
    println!("cargo:rerun-if-changed={}", file.display());

    let protoc = protoc_bin_vendored::protoc_bin_path()
        .expect("protoc-bin-vendored has no protoc binary for this host platform");
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);

    // Only the client: the load generator never serves this API.
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .compile_with_config(config, &[file], &[proto_dir])
        .expect("compiling proto/umadb.proto failed");
}
