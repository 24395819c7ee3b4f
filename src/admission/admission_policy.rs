//! Rules of AdmissionPolicy itself: an admin's typo must not silently loosen the cluster.

use serde_json::Value;

use super::checks::{Checker, Meta, parse_duration};
use super::field::{FieldError, key};
use super::policy::{Rule, rule_names};
use super::quantity;
use crate::api::AdmissionPolicySpec;
use crate::api::admission_policy::POLICY_NAME;

pub(crate) fn validate(
    checker: &mut Checker<'_>,
    meta: &Meta,
    object: &Value,
    old: Option<&Value>,
) {
    if !meta.name.is_empty() && meta.name != POLICY_NAME {
        checker.structural(FieldError::invalid(
            "metadata.name",
            meta.name.as_str(),
            format!("dbward reads only the AdmissionPolicy named {POLICY_NAME:?}; this one would have no effect"),
        ));
    }
    let spec = match object.get("spec") {
        None => AdmissionPolicySpec::default(),
        Some(_) => match checker.spec::<AdmissionPolicySpec>(object, old) {
            Some((spec, _)) => spec,
            None => return,
        },
    };
    for name in spec.rules.keys() {
        if Rule::from_name(name).is_none() {
            checker.structural(FieldError::not_supported(
                key("spec.rules", name),
                name.as_str(),
                &rule_names(),
            ));
        }
    }
    let limits = &spec.limits;
    for (field, value) in [
        ("spec.limits.minCpu", &limits.min_cpu),
        ("spec.limits.minMemory", &limits.min_memory),
        ("spec.limits.minVolumeSize", &limits.min_volume_size),
    ] {
        if quantity::parse(value).is_none() {
            checker.structural(FieldError::invalid(
                field,
                value.as_str(),
                "must be a quantity such as \"250m\" or \"1Gi\"",
            ));
        }
    }
    if parse_duration(&limits.min_poll_interval).is_none() {
        checker.structural(FieldError::invalid(
            "spec.limits.minPollInterval",
            limits.min_poll_interval.as_str(),
            "must be a duration such as \"30s\"",
        ));
    }
    if limits.max_pool_size < 1 {
        checker.structural(FieldError::invalid(
            "spec.limits.maxPoolSize",
            limits.max_pool_size,
            "must be at least 1",
        ));
    }
    if limits.allowed_pool_modes.is_empty() {
        checker.structural(FieldError::required(
            "spec.limits.allowedPoolModes",
            "an empty list would refuse every ConnectionPool",
        ));
    }
}
