//! dbward: databases, roles and pools on PostgreSQL and MySQL, declared in Kubernetes, with every
//! mistake rejected at `kubectl apply` time.

pub mod admin;
pub mod admission;
// kube's `printcolumn(...)` repeats `type_ = …` per column, which clippy takes for a duplicate.
#[allow(clippy::duplicated_attributes)]
pub mod api;
pub mod certs;
pub mod cli;
pub mod crds;
pub mod duration;
pub mod exposition;
pub mod http;
pub mod kube_requests;
pub mod manifests;
pub mod pgbouncer;
pub mod private_file;
pub mod query_template;
pub mod reconcile;
pub mod runtime;
pub mod sql;
pub mod webhook;
pub mod webhook_config;
