//! Rules of DatabaseClaim.

use serde_json::Value;

use super::checks::{
    Checker, Defaults, Meta, check_binding, check_secret_target, default_secret_target,
};
use super::field::FieldError;
use super::policy::Rule;
use crate::api::DatabaseClaimSpec;
use crate::api::database_claim::SECRET_PREFIX;

pub(crate) fn default(defaults: &mut Defaults, meta: &Meta) {
    default_secret_target(defaults, meta, SECRET_PREFIX);
    defaults.fill("/spec/deletionPolicy", Value::from("Retain"));
}

pub(crate) fn validate(
    checker: &mut Checker<'_>,
    meta: &Meta,
    object: &Value,
    old: Option<&Value>,
) {
    let Some((spec, old_spec)) = checker.spec::<DatabaseClaimSpec>(object, old) else {
        return;
    };
    let old_spec = old_spec.as_ref();
    check_binding(checker, meta, &spec.binding, old_spec.map(|o| &o.binding));
    check_secret_target(checker, &spec.secret, old_spec.map(|o| &o.secret));
    if meta.namespace.is_empty() {
        checker.report(
            Rule::Names,
            FieldError::required(
                "metadata.namespace",
                "a claim's names derive from its namespace",
            ),
        );
    }
}
