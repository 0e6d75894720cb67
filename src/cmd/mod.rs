//! The subcommands of the `keymount` binary.

pub mod controller;
pub mod crd;
pub mod csi_client;
pub mod fetch;
pub mod node;
