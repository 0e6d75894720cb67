//! `keymount crd`: prints the driver's two CRDs (or, `--api secret-sync`, SecretSync) as YAML, made from the Rust types (the chart's `crds/` and
//! `deploy/crds.yaml` are this output, checked in).

use std::io::Write;

use anyhow::Context;

use crate::class::crd_schema;
use crate::cli::{CrdApi, CrdArgs};

/// Prints (or writes) the CRDs.
pub fn run(args: CrdArgs) -> anyhow::Result<()> {
    let yaml = match args.api {
        CrdApi::Csi => crd_schema::to_yaml(),
        CrdApi::SecretSync => crate::controller::crd::to_yaml(),
    };
    match &args.out {
        Some(path) => {
            std::fs::write(path, yaml).with_context(|| format!("write {}", path.display()))
        }
        None => std::io::stdout()
            .lock()
            .write_all(yaml.as_bytes())
            .context("write CRDs to stdout"),
    }
}
