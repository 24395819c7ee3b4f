//! Ownership markers (pure): which dbward object a role or database on a shared server belongs
//! to, and whether an object may act on a name it finds there.
//!
//! Every role and database dbward creates carries a marker of the object that asked for it —
//! namespace, kind, name and UID. On PostgreSQL the marker is the role's or database's comment
//! (`COMMENT ON ROLE/DATABASE`, stored with the object itself, so it goes with a drop and follows a
//! rename); on MySQL and MariaDB, whose account comments differ between versions, it is a row of
//! dbward's catalog table [`MYSQL_CATALOG`]`.owners`, written before the account or database is
//! created and deleted after it is dropped. A name without a marker, or with another object's,
//! is never changed, granted on or dropped.

use serde::{Deserialize, Serialize};

/// What a PostgreSQL comment holding a marker starts with; the JSON of the marker follows.
pub const MARKER_PREFIX: &str = "dbward.dev/owner ";

/// dbward's catalog database on MySQL/MariaDB (table `owners`). Reserved: no object may name it.
pub const MYSQL_CATALOG: &str = "_dbward";

/// The object a role or database belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OwnerMarker {
    /// The owning object's namespace.
    pub namespace: String,
    /// Its kind (`ServiceUser`, `Database`, `DatabaseClaim`, …).
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Its UID; `None` for objects reconciled without a cluster (`dbward reconcile --local`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

impl OwnerMarker {
    /// A marker for `kind` `namespace`/`name`.
    pub fn new(namespace: &str, kind: &str, name: &str, uid: Option<&str>) -> OwnerMarker {
        OwnerMarker {
            namespace: namespace.to_owned(),
            kind: kind.to_owned(),
            name: name.to_owned(),
            uid: uid.map(str::to_owned),
        }
    }

    /// The PostgreSQL comment that carries the marker.
    pub fn encode(&self) -> String {
        let json = serde_json::to_string(self).expect("a marker serializes");
        format!("{MARKER_PREFIX}{json}")
    }

    /// Reads a comment; `None` when it is not a marker (no comment, a comment of somebody else's,
    /// or a damaged one).
    pub fn decode(comment: &str) -> Option<OwnerMarker> {
        let json = comment.strip_prefix(MARKER_PREFIX)?;
        let marker: OwnerMarker = serde_json::from_str(json).ok()?;
        (!marker.namespace.is_empty() && !marker.kind.is_empty() && !marker.name.is_empty())
            .then_some(marker)
    }

    /// Whether both name the same object. Kubernetes objects are never renamed, and one that is
    /// deleted and created again under the same name (a `Retain`ed database, say) is the same
    /// owner with a new UID: the UID is recorded, not compared.
    pub fn same_object(&self, other: &OwnerMarker) -> bool {
        self.namespace == other.namespace && self.kind == other.kind && self.name == other.name
    }
}

/// What an object may do with a name it wants on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Nothing has the name: create it, with the marker.
    Free,
    /// It carries this object's marker, exactly.
    Ours,
    /// It carries this object's marker with another UID (the object was recreated): use it and
    /// write the current marker.
    Recreated,
    /// It has no marker and the AdmissionPolicy lets this namespace adopt it: write the marker,
    /// then use it.
    Adopt,
    /// It exists without a marker, or with another object's: never touched.
    Taken,
}

impl Claim {
    /// Whether the object may act on the name.
    pub fn permitted(self) -> bool {
        !matches!(self, Claim::Taken)
    }

    /// Whether the marker has to be (re)written before the name is used.
    pub fn needs_mark(self) -> bool {
        matches!(self, Claim::Recreated | Claim::Adopt)
    }
}

/// Pure: may the object `desired` names act on a name that `exists` on the server with
/// `observed` as its marker? `adoptable`: the AdmissionPolicy lets this namespace adopt the name.
pub fn claim(
    desired: &OwnerMarker,
    exists: bool,
    observed: Option<&OwnerMarker>,
    adoptable: bool,
) -> Claim {
    match (exists, observed) {
        (false, _) => Claim::Free,
        (true, Some(marker)) if marker == desired => Claim::Ours,
        (true, Some(marker)) if marker.same_object(desired) => Claim::Recreated,
        (true, Some(_)) => Claim::Taken,
        (true, None) if adoptable => Claim::Adopt,
        (true, None) => Claim::Taken,
    }
}

/// Whether a role or database marked `observed` belongs to an object of `namespace` (what grants
/// and memberships may name).
pub fn owned_by_namespace(observed: Option<&OwnerMarker>, namespace: &str) -> bool {
    observed.is_some_and(|m| m.namespace == namespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(ns: &str, name: &str, uid: &str) -> OwnerMarker {
        OwnerMarker::new(ns, "ServiceUser", name, Some(uid))
    }

    #[test]
    fn markers_round_trip_and_foreign_comments_are_not_markers() {
        let m = marker("team-a", "app", "u1");
        assert_eq!(OwnerMarker::decode(&m.encode()), Some(m.clone()));
        let local = OwnerMarker::new("ns", "Database", "orders", None);
        assert_eq!(OwnerMarker::decode(&local.encode()), Some(local));
        for foreign in [
            "",
            "created by hand",
            "dbward.dev/owner ",
            "dbward.dev/owner {}",
            "dbward.dev/owner {\"namespace\":\"\",\"kind\":\"X\",\"name\":\"y\"}",
            "dbward.dev/owner not json",
        ] {
            assert_eq!(OwnerMarker::decode(foreign), None, "{foreign:?}");
        }
    }

    #[test]
    fn claims() {
        let me = marker("team-a", "app", "u1");
        assert_eq!(claim(&me, false, None, false), Claim::Free);
        assert_eq!(claim(&me, true, Some(&me), false), Claim::Ours);
        assert_eq!(
            claim(&me, true, Some(&marker("team-a", "app", "u0")), false),
            Claim::Recreated
        );
        assert_eq!(
            claim(&me, true, Some(&marker("team-b", "app", "u1")), true),
            Claim::Taken
        );
        assert_eq!(
            claim(&me, true, Some(&marker("team-a", "other", "u1")), true),
            Claim::Taken
        );
        assert_eq!(claim(&me, true, None, false), Claim::Taken);
        assert_eq!(claim(&me, true, None, true), Claim::Adopt);
        assert!(owned_by_namespace(Some(&me), "team-a"));
        assert!(!owned_by_namespace(Some(&me), "team-b"));
        assert!(!owned_by_namespace(None, "team-a"));
    }
}
