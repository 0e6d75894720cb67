//! keymount: a node-level CSI secrets driver for Kubernetes.

#![forbid(unsafe_code)]

pub mod proto;
pub mod class;
pub mod fs;
pub mod metrics;
pub mod mount;
pub mod provider;
pub mod redact;
pub mod volume;
