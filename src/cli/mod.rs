//! The `dbward` command line: argument structs per concern, each a few lines of wiring.

pub mod controller;
pub mod crds;
pub mod reconcile;
pub mod run;
pub mod validate;
pub mod webhook;
