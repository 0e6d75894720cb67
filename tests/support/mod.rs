//! Shared test bed for integration tests: a real kube-apiserver, OpenBao and moto.
//!
//! An integration test file uses it with `mod support;`. Not every test binary uses every
//! helper, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod kube;
pub mod moto;
pub mod mount_input;
pub mod node;
pub mod openbao;
pub mod postgres;
pub mod proc;
