//! The rules an AdmissionPolicy can set to `Enforce`, `Warn` or `Off`, and their built-in modes.

use crate::api::admission_policy::{AdmissionPolicySpec, RuleMode};

macro_rules! rules {
    ($($variant:ident => $id:literal, $mode:ident, $doc:literal;)*) => {
        /// A rule an AdmissionPolicy can tune. Its name (e.g. `pool-size`) is the key in
        /// `spec.rules`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Rule { $(#[doc = $doc] $variant,)* }

        impl Rule {
            /// Every rule, in documentation order.
            pub const ALL: &'static [Rule] = &[$(Rule::$variant,)*];

            /// The rule's name in `spec.rules`.
            pub fn name(self) -> &'static str {
                match self { $(Rule::$variant => $id,)* }
            }

            /// The mode the rule has when the AdmissionPolicy does not set one.
            pub fn default_mode(self) -> RuleMode {
                match self { $(Rule::$variant => RuleMode::$mode,)* }
            }

            /// What the rule checks, in one line.
            pub fn description(self) -> &'static str {
                match self { $(Rule::$variant => $doc,)* }
            }
        }
    };
}

rules! {
    Immutable => "immutable-fields", Enforce, "fields that may not change after creation keep their value";
    Names => "names", Enforce, "names, patterns and lengths of databases, roles, projects and services";
    PoolMode => "pool-mode", Enforce, "poolMode is one of the allowed pool modes";
    PoolSize => "pool-size", Enforce, "poolSize is between 1 and limits.maxPoolSize";
    TeamPrefix => "team-prefix", Enforce, "a PostgresCluster's name starts with its teamId and '-'";
    RoleFlags => "role-flags", Enforce, "role flags are consistent (login with nologin is an error) and supported by the engine";
    Superuser => "superuser", Enforce, "superuser only where limits.superuserAllowed / limits.clusterSuperuserAllowed allow it";
    ServerWideFlags => "server-wide-flags", Enforce, "createrole and replication (and createdb on MySQL) on shared services only where limits.serverWideFlagsAllowed";
    ReservedNames => "reserved-names", Enforce, "no object names the server's own roles and databases, dbward's catalog or the connector's user; pg_* roles in inRoles only from limits.allowedInRoles";
    SharedDatabases => "shared-databases", Enforce, "privileges on a service's sharedDatabases stay within their maxLevel, and no Database claims one";
    Parameters => "parameters", Enforce, "a ServiceUser's parameters are among limits.allowedParameters";
    DatabaseOwner => "database-owner", Enforce, "a PostgresCluster's database owners are among its users";
    VolumeShrink => "volume-shrink", Enforce, "a PostgresCluster's volume may grow, never shrink";
    MinVolume => "min-volume", Enforce, "a PostgresCluster's volume is at least limits.minVolumeSize";
    MinResources => "min-resources", Warn, "resources below limits.minCpu / limits.minMemory (the StatefulSet gets the minimum)";
    Sidecars => "sidecars", Enforce, "sidecars only when limits.sidecarsEnabled";
    InitContainers => "init-containers", Enforce, "initContainers only when limits.initContainersEnabled";
    PostgresVersion => "postgres-version", Enforce, "postgresql.version is one of limits.allowedPostgresVersions";
    Standby => "standby", Enforce, "standby.s3_wal_path is not empty";
    Clone => "clone", Enforce, "clone.timestamp has a time zone and comes with clone.uid";
    Query => "query", Enforce, "a DatabaseQueryResource's query is exactly one read-only statement";
    Template => "template", Enforce, "templates compile";
    PollInterval => "poll-interval", Enforce, "pollInterval is a duration of at least limits.minPollInterval";
    AllowedKinds => "allowed-kinds", Enforce, "a DatabaseQueryResource only renders kinds in limits.allowedQueryResourceKinds";
    CrossNamespace => "cross-namespace", Enforce, "a DatabaseQueryResource stays in its namespace unless limits.crossNamespaceAllowed";
    ServiceExists => "service-exists", Enforce, "the DatabaseService named by serviceName exists";
    ProjectMatch => "project-match", Enforce, "project equals the DatabaseService's project";
    NamespaceAllowed => "namespace-allowed", Enforce, "the object's namespace is allowed by the service's allowedNamespaces";
    EngineSupport => "engine-support", Enforce, "the kind or field is supported by the service's engine";
    AuthSecretRef => "auth-secret-ref", Enforce, "authSecretRef is refused: dbward administers a service only through its connector Secret";
    ConnectorSecret => "connector-secret", Enforce, "a DatabaseService's connector Secret exists, is labelled, has the required keys and agrees on the engine";
    OpsRequest => "ops-request", Enforce, "a DatabaseOpsRequest's fields fit its type";
    AdminActions => "admin-actions", Enforce, "a ReconfigureTLS DatabaseOpsRequest comes from dbward's namespace or one of limits.poolerTlsNamespaces";
    TerminationProtection => "termination-protection", Enforce, "objects with terminationProtection cannot be deleted";
}

impl Rule {
    /// The rule with this name.
    pub fn from_name(name: &str) -> Option<Rule> {
        Rule::ALL.iter().copied().find(|r| r.name() == name)
    }

    /// The rule's mode under `policy`.
    pub fn mode(self, policy: &AdmissionPolicySpec) -> RuleMode {
        policy
            .rules
            .get(self.name())
            .copied()
            .unwrap_or_else(|| self.default_mode())
    }
}

/// Every rule name, for error messages.
pub fn rule_names() -> Vec<&'static str> {
    Rule::ALL.iter().map(|r| r.name()).collect()
}
