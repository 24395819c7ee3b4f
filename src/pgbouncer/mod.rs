//! PgBouncer, the pooler behind ConnectionPools: pure rendering of its files ([`config`]), the
//! SQL text of the `auth_query` lookup function ([`lookup`]), and the admin-console verbs
//! ([`admin`]). What is realised where — the server-side roles and functions, the files, the
//! Kubernetes objects — is decided in `crate::reconcile::pooler`.

pub mod admin;
pub mod config;
pub mod lookup;
pub mod tls_probe;
