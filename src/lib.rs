//! dbward: databases, roles and pools on PostgreSQL and MySQL, declared in Kubernetes.
pub mod sql;
