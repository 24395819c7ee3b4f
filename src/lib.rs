//! dbward: databases, roles and pools on PostgreSQL and MySQL, declared in Kubernetes, with every
//! mistake rejected at `kubectl apply` time.

pub mod admission;
pub mod api;
pub mod crds;
