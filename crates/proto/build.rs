//! Compiles the `.proto` files under `proto/` into Rust at build time.
//!
//! `protoc` comes from the `protoc-bin-vendored` crate, so no system install
//! and no network access are needed.

use std::path::PathBuf;

/// Our proto files, in dependency order (imports first).
const PROTOS: &[&str] = &[
    "common.proto",
    "event.proto",
    "dcb.proto",
    "control.proto",
    "command.proto",
    "query.proto",
    "admin.proto",
    "streams.proto",
    "license.proto",
    "myelin/cluster.proto",
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let proto_dir = manifest_dir.join("proto");

    let protoc = protoc_bin_vendored::protoc_bin_path()
        .expect("protoc-bin-vendored has no protoc binary for this host platform");
    // Well-known types (google/protobuf/empty.proto) ship with the vendored protoc.
    let wkt_include = protoc_bin_vendored::include_path()
        .expect("protoc-bin-vendored has no include directory for this host platform");

    println!("cargo:rerun-if-changed={}", proto_dir.display());
    let files: Vec<PathBuf> = PROTOS
        .iter()
        .map(|name| {
            let path = proto_dir.join(name);
            println!("cargo:rerun-if-changed={}", path.display());
            path
        })
        .collect();

    // Point prost-build at the vendored protoc directly (equivalent to setting
    // PROTOC, without mutating the process environment).
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);

    #[cfg(feature = "services")]
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_with_config(config, &files, &[proto_dir, wkt_include])
        .expect("compiling the Axon Server .proto files failed");
    #[cfg(not(feature = "services"))]
    config
        .compile_protos(&files, &[proto_dir, wkt_include])
        .expect("compiling the Axon Server .proto files failed");
}
