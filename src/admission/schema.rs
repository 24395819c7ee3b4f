//! The CRDs' OpenAPI schemas as offline validators, so `dbward validate` catches what the API
//! server's schema check would, worded the way the API server words it.

use std::collections::HashMap;
use std::sync::OnceLock;

use jsonschema::error::ValidationErrorKind;
use jsonschema::paths::LocationSegment;
use jsonschema::{ValidationError, Validator};
use serde_json::Value;

use super::field::FieldError;

/// Schema errors of `object` (a dbward kind) against its CRD; empty when it conforms or the kind
/// is not dbward's.
pub fn check(kind: &str, object: &Value) -> Vec<FieldError> {
    let Some(validator) = validators().get(kind) else {
        return Vec::new();
    };
    let mut errors: Vec<FieldError> = validator
        .iter_errors(object)
        .map(|e| field_error(&e))
        .collect();
    errors.dedup();
    errors
}

fn validators() -> &'static HashMap<String, Validator> {
    static VALIDATORS: OnceLock<HashMap<String, Validator>> = OnceLock::new();
    VALIDATORS.get_or_init(|| {
        crate::crds::all()
            .into_iter()
            .map(|crd| {
                let version = &crd.spec.versions[0];
                let schema = version
                    .schema
                    .as_ref()
                    .and_then(|s| s.open_api_v3_schema.as_ref());
                let mut schema = serde_json::to_value(schema).expect("a CRD schema serializes");
                to_json_schema(&mut schema);
                let validator = jsonschema::validator_for(&schema)
                    .expect("the generated CRD schemas are valid JSON Schema");
                (crd.spec.names.kind, validator)
            })
            .collect()
    })
}

/// OpenAPI's `nullable: true` is JSON Schema's `type: [T, "null"]`.
fn to_json_schema(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            if map.get("nullable") == Some(&Value::Bool(true)) {
                if let Some(Value::String(t)) = map.get("type").cloned() {
                    map.insert("type".into(), serde_json::json!([t, "null"]));
                }
                if let Some(Value::Array(options)) = map.get_mut("enum") {
                    options.push(Value::Null);
                }
            }
            for value in map.values_mut() {
                to_json_schema(value);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(to_json_schema),
        _ => {}
    }
}

fn field_error(error: &ValidationError<'_>) -> FieldError {
    let mut path = String::new();
    for segment in error.instance_path() {
        match segment {
            LocationSegment::Property(p) => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&p);
            }
            LocationSegment::Index(i) => path.push_str(&format!("[{i}]")),
        }
    }
    let value = error.instance().clone().into_owned();
    let at = |p: &str| {
        if p.is_empty() {
            "<root>".to_string()
        } else {
            p.to_string()
        }
    };
    match error.kind() {
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            let field = if path.is_empty() {
                name.to_string()
            } else {
                format!("{path}.{name}")
            };
            FieldError::required(field, "")
        }
        ValidationErrorKind::Enum { options } => {
            let supported: Vec<String> = options
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|o| o.as_str().map(str::to_string))
                .collect();
            FieldError::not_supported(at(&path), value, &supported)
        }
        ValidationErrorKind::MaxLength { limit } => {
            FieldError::too_long(at(&path), *limit as usize)
        }
        ValidationErrorKind::Pattern { pattern } => FieldError::invalid(
            at(&path),
            value,
            format!("{} in body should match '{pattern}'", at(&path)),
        ),
        ValidationErrorKind::MinLength { limit } => FieldError::invalid(
            at(&path),
            value,
            format!(
                "{} in body should be at least {limit} chars long",
                at(&path)
            ),
        ),
        ValidationErrorKind::Minimum { limit } => FieldError::invalid(
            at(&path),
            value,
            format!(
                "{} in body should be greater than or equal to {limit}",
                at(&path)
            ),
        ),
        ValidationErrorKind::Type { kind } => {
            let expected = format!("{kind:?}").to_lowercase();
            FieldError::invalid(
                at(&path),
                value,
                format!(
                    "{} in body must be of type {}",
                    at(&path),
                    expected.trim_start_matches("single(").trim_end_matches(')')
                ),
            )
        }
        _ => FieldError::invalid(at(&path), value, error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::check;

    #[test]
    fn schema_errors_read_like_the_api_server() {
        let pool = json!({
            "apiVersion": "dbward.dev/v1alpha1", "kind": "ConnectionPool", "metadata": {"name": "p"},
            "spec": {"project": "a b", "serviceName": "my-pg", "poolMode": "bulk"}
        });
        let errors: Vec<String> = check("ConnectionPool", &pool)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(
            errors.contains(&"spec.databaseName: Required value".to_string()),
            "{errors:?}"
        );
        assert!(
            errors.contains(&r#"spec.poolMode: Unsupported value: "bulk": supported values: "session", "statement", "transaction""#.to_string()),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.starts_with(
                r#"spec.project: Invalid value: "a b": spec.project in body should match"#
            )),
            "{errors:?}"
        );
    }
}
