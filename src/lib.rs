//! keymount: a node-level CSI secrets driver for Kubernetes.

#![forbid(unsafe_code)]

pub mod class;
pub mod cli;
pub mod cmd;
pub mod controller;
mod csi;
pub mod fs;
mod http;
mod kube_errors;
pub mod metrics;
pub mod mount;
mod names;
mod parse;
mod process_metrics;
pub mod proto;
pub mod provider;
pub mod redact;
mod restart;
mod shutdown;
mod sync;
pub mod telemetry;
pub mod text;
mod transform;
mod ttl_cache;
pub mod unix_channel;
pub mod volume;
