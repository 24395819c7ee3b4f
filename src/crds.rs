//! The CustomResourceDefinitions, generated from the API types. `dbward crds` prints them and
//! `crds/` holds the same output, one file per kind (a test fails when they drift).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::api;

/// Every CRD, in the order of [`api::KINDS`].
pub fn all() -> Vec<CustomResourceDefinition> {
    [
        api::DatabaseService::crd(),
        api::Database::crd(),
        api::ServiceUser::crd(),
        api::ConnectionPool::crd(),
        api::DatabaseClaim::crd(),
        api::PostgresCluster::crd(),
        api::DatabaseQueryResource::crd(),
        api::DatabaseOpsRequest::crd(),
        api::AdmissionPolicy::crd(),
    ]
    .into_iter()
    .map(without_null_enum_values)
    .collect()
}

/// kube-derive lists `null` among the `enum` values of an optional enum field (next to
/// `nullable: true`, which already admits null). API servers before 1.22 and kubectl's
/// client-side validation reject such a CRD, so the value is dropped.
fn without_null_enum_values(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn strip(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::Array(options)) = map.get_mut("enum") {
                    options.retain(|o| !o.is_null());
                }
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(&crd).expect("a CRD serializes");
    strip(&mut value);
    serde_json::from_value(value).expect("a CRD without null enum values still deserializes")
}

/// One CRD as a YAML document.
pub fn to_yaml(crd: &CustomResourceDefinition) -> String {
    quote_yaml11_booleans(&serde_yaml::to_string(crd).expect("a CRD always serializes"))
}

/// Plain scalars that YAML 1.1 reads as booleans. serde_yaml writes them unquoted, as YAML 1.2
/// allows, but Go's YAML (kubectl, Helm) follows 1.1 and would turn the enum value `Off` of
/// AdmissionPolicy rules into `false`.
const YAML11_BOOLEANS: [&str; 16] = [
    "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off",
    "OFF",
];

/// Quotes the YAML 1.1 booleans that stand as a whole scalar (a sequence item or a mapping
/// value), leaving block scalars (descriptions) as they are.
fn quote_yaml11_booleans(yaml: &str) -> String {
    let indent = |line: &str| line.len() - line.trim_start().len();
    let mut block: Option<usize> = None;
    let mut out = String::with_capacity(yaml.len() + 16);
    for line in yaml.split_inclusive('\n') {
        let text = line.trim_end_matches('\n');
        if let Some(key_indent) = block {
            if text.trim().is_empty() || indent(text) > key_indent {
                out.push_str(line);
                continue;
            }
            block = None;
        }
        let trimmed = text.trim_end();
        if ["|", "|-", "|+", ">", ">-", ">+"]
            .iter()
            .any(|marker| trimmed.ends_with(&format!(" {marker}")))
        {
            block = Some(indent(text));
        }
        let split = if let Some(item) = text.trim_start().strip_prefix("- ") {
            Some(text.len() - item.len())
        } else {
            text.rfind(": ").map(|at| at + 2)
        };
        match split {
            Some(at) if YAML11_BOOLEANS.contains(&&text[at..]) => {
                out.push_str(&text[..at]);
                out.push('\'');
                out.push_str(&text[at..]);
                out.push('\'');
                out.push_str(&line[text.len()..]);
            }
            _ => out.push_str(line),
        }
    }
    out
}

/// All CRDs as one multi-document YAML stream, as `dbward crds` prints it.
pub fn all_yaml() -> String {
    all()
        .iter()
        .map(|crd| format!("---\n{}", to_yaml(crd)))
        .collect()
}

/// The file under `crds/` that holds a kind's CRD.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::quote_yaml11_booleans;

    #[test]
    fn yaml11_booleans_are_quoted_outside_block_scalars() {
        let yaml = "enum:\n- Enforce\n- Off\nmode: on\ndescription: |-\n  a list:\n  - Off\nname: Offline\n";
        assert_eq!(
            quote_yaml11_booleans(yaml),
            "enum:\n- Enforce\n- 'Off'\nmode: 'on'\ndescription: |-\n  a list:\n  - Off\nname: Offline\n"
        );
    }
}
