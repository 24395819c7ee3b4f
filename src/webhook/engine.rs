//! The one place the webhook touches the rule engine and the API constants.

pub use crate::admission::{
    Operation, Request, Snapshot, Verdict, admit_for_mutation, admit_for_validation,
};
pub use crate::api::{GROUP, KINDS};
