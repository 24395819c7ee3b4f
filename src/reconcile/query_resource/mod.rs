//! DatabaseQueryResource: every `pollInterval`, a read-only query's rows become Kubernetes
//! objects (konnektr's db-query-operator, with Jinja templates and the holes of the original
//! closed).
//!
//! - [`connection`] (pure): the connection Secret, with konnektr's keys, as a target.
//! - [`plan`] (pure): rows → rendered children → what to apply, leave, prune, and what failed.
//! - [`kube`]: discovery, the children by the CR's UID label, server-side apply, deletion.
//! - [`poll`]: one poll end to end; its result is the CR's next status.
//!
//! The controller (`controller/query_resource.rs`) decides when to poll, writes the status
//! and runs the finalizer.

pub mod connection;
pub mod kube;
pub mod plan;
pub mod poll;
pub mod preview;

/// Label on every child: the UID of the DatabaseQueryResource that made it (names repeat
/// across namespaces; UIDs do not).
pub const UID_LABEL: &str = "dbward.dev/query-resource-uid";
/// Annotation on every child: the hash of the object as rendered, so an unchanged row is
/// recognised without a write.
pub const HASH_ANNOTATION: &str = "dbward.dev/query-hash";
