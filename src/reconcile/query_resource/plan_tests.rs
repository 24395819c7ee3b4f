use super::*;

fn owner() -> Owner {
    Owner {
        name: "users".into(),
        namespace: "team-a".into(),
        uid: "uid-1".into(),
        owned: true,
    }
}

fn child(name: &str, email: &str) -> Child {
    Child {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        namespace: None,
        name: name.into(),
        object: json!({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": name}, "data": {"email": email}}),
    }
}

fn namespaced(_: &str, _: &str) -> Scope {
    Scope::Namespaced
}

fn key(name: &str) -> ChildKey {
    ChildKey {
        kind: "ConfigMap".into(),
        namespace: Some("team-a".into()),
        name: name.into(),
    }
}

const PRUNE: PruneOptions = PruneOptions {
    prune: true,
    allow_empty: false,
    max: 10,
};

fn observed_from(desired: &[Desired]) -> Observed {
    Observed {
        ours: desired
            .iter()
            .map(|d| (d.key.clone(), Some(d.hash.clone())))
            .collect(),
        foreign: BTreeSet::new(),
    }
}

#[test]
fn placed_children_carry_labels_owner_namespace_and_hash() {
    let (desired, failures) = place(vec![Ok(child("a", "a@x"))], namespaced, &owner());
    assert!(failures.is_empty());
    let d = &desired[0];
    assert_eq!(d.key, key("a"));
    let m = &d.object["metadata"];
    assert_eq!(m["namespace"], "team-a");
    assert_eq!(m["labels"][UID_LABEL], "uid-1");
    assert_eq!(m["labels"][MANAGED_BY_LABEL], "users");
    assert_eq!(m["ownerReferences"][0]["uid"], "uid-1");
    assert_eq!(m["annotations"][HASH_ANNOTATION], d.hash.as_str());
    // The hash covers the content: another email is another hash.
    let (other, _) = place(vec![Ok(child("a", "b@x"))], namespaced, &owner());
    assert_ne!(other[0].hash, d.hash);
}

#[test]
fn cross_namespace_and_cluster_scoped_children_have_no_owner() {
    let mut elsewhere = child("a", "a@x");
    elsewhere.namespace = Some("team-b".into());
    let (desired, _) = place(vec![Ok(elsewhere)], namespaced, &owner());
    assert!(desired[0].object["metadata"]["ownerReferences"].is_null());
    let (desired, _) = place(vec![Ok(child("a", "a@x"))], |_, _| Scope::Cluster, &owner());
    assert_eq!(desired[0].key.namespace, None);
    assert!(desired[0].object["metadata"]["ownerReferences"].is_null());
    let mut placed = child("a", "a@x");
    placed.namespace = Some("team-a".into());
    let (_, failures) = place(vec![Ok(placed)], |_, _| Scope::Cluster, &owner());
    assert!(
        failures[0].message.contains("cluster-scoped"),
        "{failures:?}"
    );
    let (_, failures) = place(
        vec![Ok(child("a", "a@x"))],
        |_, _| Scope::Unknown("not served".into()),
        &owner(),
    );
    assert_eq!(failures[0].key.as_ref().unwrap().name, "a");
}

#[test]
fn two_rows_rendering_one_object_fail_the_second() {
    let (desired, failures) = place(
        vec![Ok(child("a", "1")), Ok(child("a", "2"))],
        namespaced,
        &owner(),
    );
    assert_eq!(desired.len(), 1);
    assert_eq!(failures[0].row, 1);
    assert!(failures[0].message.contains("as row 0"), "{failures:?}");
}

#[test]
fn unchanged_rows_write_nothing_and_changed_ones_exactly_themselves() {
    let (desired, _) = place(
        vec![Ok(child("a", "1")), Ok(child("b", "2"))],
        namespaced,
        &owner(),
    );
    let observed = observed_from(&desired);
    let again = plan(2, desired.clone(), vec![], &observed, false, PRUNE);
    assert!(again.apply.is_empty() && again.prune.is_empty());
    assert_eq!(again.unchanged, 2);
    let (changed, _) = place(
        vec![Ok(child("a", "1")), Ok(child("b", "3"))],
        namespaced,
        &owner(),
    );
    let p = plan(2, changed, vec![], &observed, false, PRUNE);
    assert_eq!(p.apply.len(), 1);
    assert_eq!(p.apply[0].key, key("b"));
    // A full pass applies all of them again (drift repair), as unchanged.
    let full = plan(2, desired, vec![], &observed, true, PRUNE);
    assert!(full.apply.is_empty());
    assert_eq!((full.refresh.len(), full.unchanged), (2, 2));
    assert!(full.refresh.iter().all(|d| d.refresh));
}

#[test]
fn a_foreign_object_is_a_conflict_never_adopted() {
    let (desired, _) = place(vec![Ok(child("a", "1"))], namespaced, &owner());
    let observed = Observed {
        ours: BTreeMap::new(),
        foreign: BTreeSet::from([key("a")]),
    };
    let p = plan(1, desired, vec![], &observed, false, PRUNE);
    assert!(p.apply.is_empty());
    assert_eq!(p.failures[0].phase, Phase::Conflict);
}

#[test]
fn removed_rows_are_pruned_within_the_limit() {
    let (all, _) = place(
        (0..5).map(|i| Ok(child(&format!("c{i}"), "x"))).collect(),
        namespaced,
        &owner(),
    );
    let observed = observed_from(&all);
    let (kept, _) = place(vec![Ok(child("c0", "x"))], namespaced, &owner());
    let p = plan(1, kept.clone(), vec![], &observed, false, PRUNE);
    assert_eq!(p.prune.len(), 4);
    assert_eq!(p.prune_held, None);
    let limited = PruneOptions { max: 3, ..PRUNE };
    let p = plan(1, kept.clone(), vec![], &observed, false, limited);
    assert_eq!(p.prune.len(), 3);
    assert!(p.prune_held.unwrap().starts_with("1 of 4"));
    let off = PruneOptions {
        prune: false,
        ..PRUNE
    };
    let p = plan(1, kept, vec![], &observed, false, off);
    assert!(p.prune.is_empty() && p.prune_held.is_none());
}

#[test]
fn an_empty_result_prunes_nothing_unless_allowed() {
    let (all, _) = place(vec![Ok(child("a", "x"))], namespaced, &owner());
    let observed = observed_from(&all);
    let p = plan(0, vec![], vec![], &observed, false, PRUNE);
    assert!(p.prune.is_empty());
    assert!(p.prune_held.unwrap().contains("allowEmptyPrune"));
    let allowed = PruneOptions {
        allow_empty: true,
        ..PRUNE
    };
    assert_eq!(
        plan(0, vec![], vec![], &observed, false, allowed)
            .prune
            .len(),
        1
    );
}

#[test]
fn a_failing_row_keeps_its_object_and_a_nameless_failure_holds_all_prunes() {
    let (all, _) = place(
        vec![
            Ok(child("a", "x")),
            Ok(child("b", "x")),
            Ok(child("c", "x")),
        ],
        namespaced,
        &owner(),
    );
    let observed = observed_from(&all);
    // Row 1 ("b") now fails by the rules, its name known; "c" is gone.
    let rules = RowFailure {
        row: 1,
        key: Some(ChildKey {
            kind: String::new(),
            namespace: None,
            name: "b".into(),
        }),
        phase: Phase::Rules,
        message: "kind: Secret is not allowed".into(),
    };
    let p = plan(
        3,
        vec![all[0].clone()],
        vec![rules],
        &observed,
        false,
        PRUNE,
    );
    assert_eq!(p.prune, vec![key("c")]);
    // A row that failed to render (no name): nothing is pruned.
    let render = RowFailure {
        row: 2,
        key: None,
        phase: Phase::Render,
        message: "undefined value".into(),
    };
    let p = plan(
        3,
        vec![all[0].clone()],
        vec![render],
        &observed,
        false,
        PRUNE,
    );
    assert!(p.prune.is_empty());
    assert!(p.prune_held.unwrap().contains("row 2 failed before"));
}

#[test]
fn the_status_lists_at_most_twenty_short_failures() {
    let failures: Vec<RowFailure> = (0..50)
        .map(|row| RowFailure {
            row,
            key: None,
            phase: Phase::Render,
            message: "é".repeat(400),
        })
        .collect();
    let listed = failed_rows(&failures);
    assert_eq!(listed.len(), MAX_FAILED_ROWS);
    assert_eq!(listed[0].message.chars().count(), 300);
    assert_eq!(listed[0].phase, "Render");
}
