//! dbward: databases, roles and pools on PostgreSQL and MySQL, declared in Kubernetes.

pub mod certs;
pub mod webhook;
pub mod webhook_config;
