//! Generated files are checked: `crds/` must be what `dbward crds` prints.

use std::path::Path;

#[test]
fn committed_crds_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let crds = dbward::crds::all();
    for crd in &crds {
        let path = dir.join(dbward::crds::file_name(crd));
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == dbward::crds::to_yaml(crd),
            "{} differs from the API types; regenerate with `cargo run -- crds --out crds`",
            path.display()
        );
    }
    let files = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(files, crds.len(), "crds/ holds a file no kind generates");
}

#[test]
fn crds_carry_what_the_schema_can_say() {
    let all = dbward::crds::all_yaml();
    for expected in [
        "pattern: ^[a-zA-Z0-9_-]+$",
        "pattern: ^[a-z][-a-z0-9]+$",
        "maxLength: 40",
        "rule: self == oldSelf",
        "default: transaction",
        "- statement",
        "name: Pool Mode",
    ] {
        assert!(all.contains(expected), "the CRDs lack {expected:?}");
    }
    let pool: serde_json::Value = serde_json::to_value(dbward::crds::all().remove(3)).unwrap();
    let columns: Vec<&str> = pool["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        [
            "Service Name",
            "Project",
            "Database",
            "Username",
            "Pool Size",
            "Pool Mode"
        ]
    );
}
