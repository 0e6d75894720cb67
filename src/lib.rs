//! keymount: a node-level CSI secrets driver for Kubernetes.

#![forbid(unsafe_code)]

pub mod class;
pub mod cli;
pub mod cmd;
pub mod csi;
pub mod fs;
pub mod http;
pub mod kube_errors;
pub mod metrics;
pub mod mount;
pub mod names;
pub mod parse;
pub mod process_metrics;
pub mod proto;
pub mod provider;
pub mod redact;
pub mod shutdown;
pub mod sync;
pub mod telemetry;
pub mod text;
pub mod ttl_cache;
pub mod unix_channel;
pub mod volume;
