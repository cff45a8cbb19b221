//! Compiles our Talos machine API and COSI resource API subsets (`talos/proto/`) without `protoc`:
//! protox parses the `.proto` files into descriptors in pure Rust, and
//! tonic-prost-build turns them into prost messages plus tonic client and
//! server stubs (the server half is only used by the xtask simulator).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = "talos/proto";
    println!("cargo:rerun-if-changed={root}");
    let fds = protox::compile(
        [
            "machine.proto",
            "v1alpha1/state.proto",
            "v1alpha1/meta.proto",
            "resource/definitions/hardware/hardware.proto",
            "resource/definitions/block/block.proto",
            "resource/definitions/runtime/runtime.proto",
        ],
        [root],
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
