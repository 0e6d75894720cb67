//! Everything keymount writes into a volume: path validation and the atomic writer.

pub(crate) mod atomic_writer;
pub(crate) mod group;
pub mod paths;
