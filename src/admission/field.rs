//! Kubernetes-style field errors: `spec.project: Invalid value: "b": field is immutable`.

use std::fmt;

use serde::Serialize;
use serde_json::Value;

/// The kinds of field error, as Kubernetes names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ErrorType {
    Invalid,
    Required,
    NotSupported,
    Forbidden,
    TooLong,
    Duplicate,
    NotFound,
}

impl ErrorType {
    /// The `reason` of a `status.details.causes` entry.
    pub fn reason(self) -> &'static str {
        match self {
            ErrorType::Invalid => "FieldValueInvalid",
            ErrorType::Required => "FieldValueRequired",
            ErrorType::NotSupported => "FieldValueNotSupported",
            ErrorType::Forbidden => "FieldValueForbidden",
            ErrorType::TooLong => "FieldValueTooLong",
            ErrorType::Duplicate => "FieldValueDuplicate",
            ErrorType::NotFound => "FieldValueNotFound",
        }
    }
}

/// One thing wrong with one field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the field, e.g. `spec.users[alice][1]`.
    pub field: String,
    pub error_type: ErrorType,
    /// What the API server puts after the field: `Invalid value: "b": field is immutable`.
    pub message: String,
}

impl FieldError {
    fn new(field: impl Into<String>, error_type: ErrorType, message: String) -> Self {
        FieldError {
            field: field.into(),
            error_type,
            message,
        }
    }

    /// `Invalid value: <value>: <detail>`.
    pub fn invalid(
        field: impl Into<String>,
        value: impl Into<Value>,
        detail: impl fmt::Display,
    ) -> Self {
        let value = render(&value.into());
        Self::new(
            field,
            ErrorType::Invalid,
            format!("Invalid value: {value}: {detail}"),
        )
    }

    /// `Required value[: <detail>]`.
    pub fn required(field: impl Into<String>, detail: &str) -> Self {
        let message = if detail.is_empty() {
            "Required value".to_string()
        } else {
            format!("Required value: {detail}")
        };
        Self::new(field, ErrorType::Required, message)
    }

    /// `Unsupported value: <value>: supported values: "a", "b"` (sorted, as the API server does).
    pub fn not_supported<S: AsRef<str>>(
        field: impl Into<String>,
        value: impl Into<Value>,
        supported: &[S],
    ) -> Self {
        let mut quoted: Vec<String> = supported
            .iter()
            .map(|s| render(&Value::from(s.as_ref())))
            .collect();
        quoted.sort();
        let value = render(&value.into());
        let message = format!(
            "Unsupported value: {value}: supported values: {}",
            quoted.join(", ")
        );
        Self::new(field, ErrorType::NotSupported, message)
    }

    /// `Forbidden: <detail>`.
    pub fn forbidden(field: impl Into<String>, detail: impl fmt::Display) -> Self {
        Self::new(field, ErrorType::Forbidden, format!("Forbidden: {detail}"))
    }

    /// `Too long: must have at most <max> bytes`.
    pub fn too_long(field: impl Into<String>, max: usize) -> Self {
        Self::new(
            field,
            ErrorType::TooLong,
            format!("Too long: must have at most {max} bytes"),
        )
    }

    /// `Duplicate value: <value>`.
    pub fn duplicate(field: impl Into<String>, value: impl Into<Value>) -> Self {
        let value = render(&value.into());
        Self::new(
            field,
            ErrorType::Duplicate,
            format!("Duplicate value: {value}"),
        )
    }

    /// `Not found: <value>[: <detail>]`.
    pub fn not_found(field: impl Into<String>, value: impl Into<Value>, detail: &str) -> Self {
        let value = render(&value.into());
        let message = if detail.is_empty() {
            format!("Not found: {value}")
        } else {
            format!("Not found: {value}: {detail}")
        };
        Self::new(field, ErrorType::NotFound, message)
    }

    /// The `reason` of a `status.details.causes` entry.
    pub fn reason(&self) -> &'static str {
        self.error_type.reason()
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// A value as the API server prints it: strings quoted, everything else as JSON.
fn render(value: &Value) -> String {
    match value {
        Value::String(_) | Value::Number(_) | Value::Bool(_) | Value::Null => value.to_string(),
        other => other.to_string(),
    }
}

/// Path of a child field.
pub fn child(parent: &str, name: &str) -> String {
    format!("{parent}.{name}")
}

/// Path of a list element.
pub fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

/// Path of a map entry.
pub fn key(parent: &str, k: &str) -> String {
    format!("{parent}[{k}]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_like_the_api_server() {
        assert_eq!(
            FieldError::invalid("spec.project", "b", "field is immutable").to_string(),
            r#"spec.project: Invalid value: "b": field is immutable"#
        );
        assert_eq!(
            FieldError::not_supported(
                "spec.poolMode",
                "bulk",
                &["transaction", "session", "statement"]
            )
            .to_string(),
            r#"spec.poolMode: Unsupported value: "bulk": supported values: "session", "statement", "transaction""#
        );
        assert_eq!(
            FieldError::invalid("spec.poolSize", 0, "must be at least 1").to_string(),
            "spec.poolSize: Invalid value: 0: must be at least 1"
        );
        assert_eq!(
            FieldError::required("spec.teamId", "").to_string(),
            "spec.teamId: Required value"
        );
    }
}
