//! Everything keymount writes into a volume: path validation and the atomic writer.

pub mod atomic_writer;
pub mod group;
pub mod paths;
