//! The `dbward` command line: argument structs per concern, each a few lines of wiring.

pub mod crds;
pub mod validate;
