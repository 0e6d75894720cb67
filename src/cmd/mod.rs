//! The subcommands of the `keymount` binary.

pub mod node;
