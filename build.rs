//! Compiles the project's .proto files with a pure-Rust protobuf compiler (no protoc needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/csi.proto",
        "proto/provider.proto",
        "proto/pluginregistration.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        // These carry secrets and tokens: their Debug is written by hand and redacts them
        // (src/csi/wire_debug.rs, src/provider/wire_debug.rs).
        .skip_debug([
            ".csi.v1.NodePublishVolumeRequest",
            ".csi.v1.NodeStageVolumeRequest",
            ".v1alpha1.MountRequest",
        ])
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
