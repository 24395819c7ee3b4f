//! The one place the webhook touches the rule engine and the API constants.

pub use crate::admission::{
    METADATA_FIELDS, OBJECT_FIELDS, Operation, Request, Snapshot, Verdict, admit_for_mutation,
    admit_for_validation,
};
pub use crate::api::{GROUP, KINDS};
