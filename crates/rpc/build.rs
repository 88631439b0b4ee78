//! Compiles `proto/walletd/v1/*.proto` in pure Rust (protox): no protoc on any machine. The file
//! descriptor set is kept for server reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let mut files = ["common", "supply", "order", "claim", "wallet", "chain"]
        .map(|f| root.join(format!("walletd/v1/{f}.proto")))
        .to_vec();
    // Described by reflection, not generated: the status details are built with tonic-types.
    files.push(root.join("google/rpc/error_details.proto"));
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let descriptors = protox::compile(&files, [&root])?;
    println!("cargo:rerun-if-changed={}", root.join("google/rpc/error_details.proto").display());
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("walletd_v1_descriptor.bin"), prost::Message::encode_to_vec(&descriptors))?;
    tonic_prost_build::configure()
        .type_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
        .type_attribute(".", "#[serde(default)]")
        .compile_fds(descriptors)?;
    Ok(())
}
