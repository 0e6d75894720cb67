//! Test harness for the CSI node: the real `keymount node` binary on a real unix socket, a CSI
//! client, an in-test provider plugin, and mount-table checks.
#![allow(dead_code)]

pub(crate) mod grpcio;
pub(crate) mod mounts;
pub(crate) mod node;
pub(crate) mod plugin;
