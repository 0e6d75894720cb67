//! `keymount crd`: prints both CRDs as YAML, made from the Rust types (the chart's `crds/` and
//! `deploy/crds.yaml` are this output, checked in).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::class::crd_schema;

/// Flags of `keymount crd`.
#[derive(Debug, Args)]
pub struct CrdArgs {
    /// Write to this file instead of stdout.
    #[arg(long, env = "KEYMOUNT_CRD_OUT")]
    pub out: Option<PathBuf>,
}

/// Prints (or writes) the CRDs.
pub fn run(args: CrdArgs) -> anyhow::Result<()> {
    let yaml = crd_schema::to_yaml();
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
