//! The one place the webhook touches the rule engine and the API constants.
//!
//! TEMPORARY: until `dbward::admission` lands on main, this holds stand-ins
//! with the agreed signatures; it becomes plain re-exports afterwards.

use std::fmt;

pub use crate::api::{GROUP, KINDS};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

pub struct Request<'a> {
    pub operation: Operation,
    pub kind: &'a str,
    pub namespace: Option<&'a str>,
    pub name: &'a str,
    pub object: Option<&'a serde_json::Value>,
    pub old_object: Option<&'a serde_json::Value>,
    pub subresource: Option<&'a str>,
}

#[derive(Debug, Default)]
pub struct Snapshot {
    objects: usize,
}

impl Snapshot {
    pub fn from_objects(
        objects: impl IntoIterator<Item = serde_json::Value>,
        _operator_namespace: &str,
        _complete: bool,
    ) -> Snapshot {
        Snapshot {
            objects: objects.into_iter().count(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    Invalid,
    Required,
}

#[derive(Debug, Clone)]
pub struct FieldError {
    pub field: String,
    pub error_type: ErrorType,
    pub message: String,
}

impl FieldError {
    pub fn reason(&self) -> &'static str {
        match self.error_type {
            ErrorType::Invalid => "FieldValueInvalid",
            ErrorType::Required => "FieldValueRequired",
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.error_type {
            ErrorType::Invalid => write!(f, "{}: Invalid value: {}", self.field, self.message),
            ErrorType::Required => write!(f, "{}: Required value: {}", self.field, self.message),
        }
    }
}

pub struct Verdict {
    pub allowed: bool,
    pub errors: Vec<FieldError>,
    pub warnings: Vec<String>,
    pub patch: json_patch::Patch,
}

impl Verdict {
    pub fn message(&self, kind: &str, name: &str) -> String {
        let errors: Vec<String> = self.errors.iter().map(ToString::to_string).collect();
        format!(
            "{kind}.{GROUP} {name:?} is invalid: [{}]",
            errors.join(", ")
        )
    }
}

pub fn admit(request: &Request<'_>, snapshot: &Snapshot) -> Verdict {
    let _ = (request.kind, snapshot.objects);
    Verdict {
        allowed: true,
        errors: Vec::new(),
        warnings: Vec::new(),
        patch: json_patch::Patch(Vec::new()),
    }
}
