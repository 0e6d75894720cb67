//! Shared test bed for integration tests: a real kube-apiserver, OpenBao and moto.
//!
//! An integration test file uses it with `mod support;`. Not every test binary uses every
//! helper, hence the `dead_code` allowance.
#![allow(dead_code)]

pub(crate) mod argocd;
pub(crate) mod kube;
pub(crate) mod moto;
pub(crate) mod mount_input;
pub(crate) mod node;
pub(crate) mod openbao;
pub(crate) mod postgres;
pub(crate) mod proc;
