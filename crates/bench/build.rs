//! Compiles the messages of UmaDB's gRPC API (`proto/umadb.proto`, our own file) for the
//! load generator at build time (its calls go through `load::grpc`, so no generated client). `protoc` comes from the `protoc-bin-vendored` crate, as in
//! `crates/proto`, so no system install and no network access are needed.

use std::path::PathBuf;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let proto_dir = manifest_dir.join("proto");
    let file = proto_dir.join("umadb.proto");
    println!("cargo:rerun-if-changed={}", file.display());

    let protoc = protoc_bin_vendored::protoc_bin_path()
        .expect("protoc-bin-vendored has no protoc binary for this host platform");
    prost_build::Config::new()
        .protoc_executable(protoc)
        .compile_protos(&[file], &[proto_dir])
        .expect("compiling proto/umadb.proto failed");
}
