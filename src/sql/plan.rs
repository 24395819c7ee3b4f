//! Desired and observed state of databases, roles and privileges, and the pure functions that
//! turn the difference into a list of [`SqlAction`]s.
//!
//! Nothing here performs I/O: a plan computed from an observation of an object that already is
//! as desired is empty, which is what makes a second reconcile write nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::Engine;
use super::ownership::OwnerMarker;

pub use crate::api::RoleFlag;

/// A role attribute as the server stores it (flags are the manifest's way of setting them;
/// `nologin` is the absence of [`Attribute::Login`]).
///
/// | attribute | PostgreSQL | MySQL / MariaDB |
/// | --- | --- | --- |
/// | `Superuser` | `SUPERUSER` | `ALL PRIVILEGES ON *.* WITH GRANT OPTION` (observed through `Super_priv`); implies `Createdb`, `Createrole`, `Replication` |
/// | `Inherit` | `INHERIT` | no equivalent: always reported as held, never written |
/// | `Login` | `LOGIN` | `ACCOUNT UNLOCK` (absent: `ACCOUNT LOCK`) |
/// | `Createrole` | `CREATEROLE` | global `CREATE USER` privilege |
/// | `Createdb` | `CREATEDB` | global `CREATE` privilege (`ON *.*`) |
/// | `Replication` | `REPLICATION` | global `REPLICATION SLAVE` privilege |
/// | `Bypassrls` | `BYPASSRLS` | not supported: applying it returns [`super::Error::Unsupported`] |
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Attribute {
    /// May do anything.
    Superuser,
    /// Uses the privileges of the roles it is a member of without `SET ROLE`.
    Inherit,
    /// May connect.
    Login,
    /// May create roles.
    Createrole,
    /// May create databases.
    Createdb,
    /// May stream replication.
    Replication,
    /// Bypasses row-level security.
    Bypassrls,
}

impl Attribute {
    /// Every attribute.
    pub const ALL: [Attribute; 7] = [
        Attribute::Superuser,
        Attribute::Inherit,
        Attribute::Login,
        Attribute::Createrole,
        Attribute::Createdb,
        Attribute::Replication,
        Attribute::Bypassrls,
    ];

    /// PostgreSQL's keyword for the attribute when set (`CREATEDB`).
    pub fn pg_keyword(self) -> &'static str {
        match self {
            Attribute::Superuser => "SUPERUSER",
            Attribute::Inherit => "INHERIT",
            Attribute::Login => "LOGIN",
            Attribute::Createrole => "CREATEROLE",
            Attribute::Createdb => "CREATEDB",
            Attribute::Replication => "REPLICATION",
            Attribute::Bypassrls => "BYPASSRLS",
        }
    }

    /// PostgreSQL's keyword for the attribute when unset (`NOCREATEDB`).
    pub fn pg_negated_keyword(self) -> &'static str {
        match self {
            Attribute::Superuser => "NOSUPERUSER",
            Attribute::Inherit => "NOINHERIT",
            Attribute::Login => "NOLOGIN",
            Attribute::Createrole => "NOCREATEROLE",
            Attribute::Createdb => "NOCREATEDB",
            Attribute::Replication => "NOREPLICATION",
            Attribute::Bypassrls => "NOBYPASSRLS",
        }
    }
}

/// The attributes a set of flags asks for, in the engine's terms.
///
/// `login` is the default unless `nologin` is given; `inherit` is always held (PostgreSQL's
/// default; the flag set has no `noinherit`, so listing `inherit` only states the default). On
/// MySQL `superuser` implies `createdb`, `createrole` and `replication`, because the global
/// `ALL PRIVILEGES` it maps to contains their privileges.
pub fn desired_attributes(engine: Engine, flags: &BTreeSet<RoleFlag>) -> BTreeSet<Attribute> {
    let mut attrs = BTreeSet::from([Attribute::Inherit]);
    if !flags.contains(&RoleFlag::Nologin) {
        attrs.insert(Attribute::Login);
    }
    for flag in flags {
        let attr = match flag {
            RoleFlag::Superuser => Attribute::Superuser,
            RoleFlag::Createrole => Attribute::Createrole,
            RoleFlag::Createdb => Attribute::Createdb,
            RoleFlag::Replication => Attribute::Replication,
            RoleFlag::Bypassrls => Attribute::Bypassrls,
            RoleFlag::Inherit | RoleFlag::Login | RoleFlag::Nologin => continue,
        };
        attrs.insert(attr);
    }
    normalize_attributes(engine, attrs)
}

/// Applies the engine's implications between attributes (see [`desired_attributes`]); used on
/// both the desired and the observed side so that they compare equal.
pub fn normalize_attributes(engine: Engine, mut attrs: BTreeSet<Attribute>) -> BTreeSet<Attribute> {
    if engine == Engine::Mysql {
        attrs.insert(Attribute::Inherit);
        if attrs.contains(&Attribute::Superuser) {
            attrs.extend([
                Attribute::Createdb,
                Attribute::Createrole,
                Attribute::Replication,
            ]);
        }
    }
    attrs
}

/// A password in memory; its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a clear-text password.
    pub fn new(password: impl Into<String>) -> Self {
        Password(password.into())
    }

    /// The clear text, for hashing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// The desired state of a database.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DatabaseSpec {
    /// The database's name on the server.
    pub name: String,
    /// PostgreSQL: the owning role. MySQL has no database owners: leave it `None` there and
    /// grant the `owner` privilege level instead (applying an owner on MySQL is refused).
    pub owner: Option<String>,
    /// PostgreSQL: `LC_COLLATE` (e.g. `C`, `en_US.UTF-8`). MySQL: the default collation (e.g.
    /// `utf8mb4_bin`). Set at creation only.
    pub lc_collate: Option<String>,
    /// PostgreSQL: `LC_CTYPE`. MySQL: the default character set (e.g. `utf8mb4`). Set at
    /// creation only.
    pub lc_ctype: Option<String>,
    /// The object it belongs to, written when it is created (and when it differs from the
    /// observed one); `None` leaves markers alone.
    pub marker: Option<OwnerMarker>,
}

/// A database as observed on the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseState {
    /// PostgreSQL: the owner's role name. MySQL: always `None`.
    pub owner: Option<String>,
    /// PostgreSQL `datcollate`; MySQL default collation.
    pub lc_collate: String,
    /// PostgreSQL `datctype`; MySQL default character set.
    pub lc_ctype: String,
    /// dbward's ownership marker, `None` when it has none.
    pub marker: Option<OwnerMarker>,
}

/// The desired state of a role (PostgreSQL) or user account `'name'@'%'` (MySQL).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoleSpec {
    /// The role's name.
    pub name: String,
    /// Its flags; see [`desired_attributes`] for their meaning.
    pub flags: BTreeSet<RoleFlag>,
    /// Roles it is a member of (`GRANT group TO role`; MariaDB roles on MySQL).
    pub in_roles: BTreeSet<String>,
    /// Per-role settings (`ALTER ROLE … SET key = value`); PostgreSQL only.
    pub parameters: BTreeMap<String, String>,
    /// The password to hold, or `None` to leave the password alone.
    pub password: Option<Password>,
    /// The object it belongs to, written when it is created (and when it differs from the
    /// observed one); `None` leaves markers alone.
    pub marker: Option<OwnerMarker>,
}

/// Whether a role's stored password matches the candidate it was observed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordState {
    /// The stored verifier/hash matches the candidate.
    Matches,
    /// It does not, or the role has no password, or it is stored in a form that cannot be
    /// checked (PostgreSQL MD5, another MySQL plugin): setting it again is the repair.
    Differs,
    /// No candidate was given, or the catalog holding passwords is not readable.
    Unknown,
}

/// A role as observed on the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleState {
    /// Attributes held, normalised for the engine ([`normalize_attributes`]).
    pub attributes: BTreeSet<Attribute>,
    /// Roles it is a direct member of.
    pub in_roles: BTreeSet<String>,
    /// Per-role settings (database-independent ones only).
    pub parameters: BTreeMap<String, String>,
    /// The password compared with the candidate.
    pub password: PasswordState,
    /// dbward's ownership marker, `None` when it has none.
    pub marker: Option<OwnerMarker>,
}

pub use crate::api::service_user::PrivilegeLevel;

/// One desired privilege entry of a role.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PrivilegeSpec {
    /// The database's name on the server.
    pub database: String,
    /// The level on it.
    pub level: PrivilegeLevel,
}

/// The object a privilege is held on, relative to one database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PrivilegeObject {
    /// PostgreSQL: the database itself. MySQL: `` `db`.* ``.
    Database,
    /// PostgreSQL: the `public` schema of the database.
    PublicSchema,
    /// PostgreSQL: every table, view, materialized view and foreign table in `public`
    /// (`ON ALL TABLES IN SCHEMA public`), except the role's own.
    AllTables,
    /// PostgreSQL: every sequence in `public`, except the role's own.
    AllSequences,
    /// PostgreSQL: default privileges on tables later created in `public` by the database's
    /// owner (`ALTER DEFAULT PRIVILEGES FOR ROLE <owner> IN SCHEMA public`).
    DefaultTables,
    /// PostgreSQL: the same for sequences.
    DefaultSequences,
}

/// A privilege keyword. Rendered verbatim into statements (never from user input).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PrivilegeKind {
    /// `CONNECT` (PostgreSQL database).
    Connect,
    /// `TEMPORARY` (PostgreSQL database).
    Temporary,
    /// `CREATE`.
    Create,
    /// `USAGE`.
    Usage,
    /// `SELECT`.
    Select,
    /// `INSERT`.
    Insert,
    /// `UPDATE`.
    Update,
    /// `DELETE`.
    Delete,
    /// `TRUNCATE` (PostgreSQL).
    Truncate,
    /// `REFERENCES`.
    References,
    /// `TRIGGER`.
    Trigger,
    /// MySQL `DROP`.
    Drop,
    /// MySQL `INDEX`.
    Index,
    /// MySQL `ALTER`.
    Alter,
    /// MySQL `CREATE TEMPORARY TABLES`.
    CreateTemporaryTables,
    /// MySQL `LOCK TABLES`.
    LockTables,
    /// MySQL `CREATE VIEW`.
    CreateView,
    /// MySQL `SHOW VIEW`.
    ShowView,
    /// MySQL `CREATE ROUTINE`.
    CreateRoutine,
    /// MySQL `ALTER ROUTINE`.
    AlterRoutine,
    /// MySQL `EXECUTE`.
    Execute,
    /// MySQL `EVENT`.
    Event,
    /// MariaDB `DELETE HISTORY`.
    DeleteHistory,
    /// MySQL `ALL PRIVILEGES` on `` `db`.* ``: observed when every privilege of
    /// [`MYSQL_DATABASE_ALL`] is held.
    All,
}

impl PrivilegeKind {
    /// The SQL keyword(s).
    pub fn keyword(self) -> &'static str {
        match self {
            PrivilegeKind::Connect => "CONNECT",
            PrivilegeKind::Temporary => "TEMPORARY",
            PrivilegeKind::Create => "CREATE",
            PrivilegeKind::Usage => "USAGE",
            PrivilegeKind::Select => "SELECT",
            PrivilegeKind::Insert => "INSERT",
            PrivilegeKind::Update => "UPDATE",
            PrivilegeKind::Delete => "DELETE",
            PrivilegeKind::Truncate => "TRUNCATE",
            PrivilegeKind::References => "REFERENCES",
            PrivilegeKind::Trigger => "TRIGGER",
            PrivilegeKind::Drop => "DROP",
            PrivilegeKind::Index => "INDEX",
            PrivilegeKind::Alter => "ALTER",
            PrivilegeKind::CreateTemporaryTables => "CREATE TEMPORARY TABLES",
            PrivilegeKind::LockTables => "LOCK TABLES",
            PrivilegeKind::CreateView => "CREATE VIEW",
            PrivilegeKind::ShowView => "SHOW VIEW",
            PrivilegeKind::CreateRoutine => "CREATE ROUTINE",
            PrivilegeKind::AlterRoutine => "ALTER ROUTINE",
            PrivilegeKind::Execute => "EXECUTE",
            PrivilegeKind::Event => "EVENT",
            PrivilegeKind::DeleteHistory => "DELETE HISTORY",
            PrivilegeKind::All => "ALL PRIVILEGES",
        }
    }

    /// Parses a PostgreSQL `aclexplode` privilege type; `None` for one dbward does not manage
    /// (such as PostgreSQL 17's `MAINTAIN`), which is then left alone.
    pub fn from_pg(privilege_type: &str) -> Option<PrivilegeKind> {
        Some(match privilege_type {
            "CONNECT" => PrivilegeKind::Connect,
            "TEMPORARY" => PrivilegeKind::Temporary,
            "CREATE" => PrivilegeKind::Create,
            "USAGE" => PrivilegeKind::Usage,
            "SELECT" => PrivilegeKind::Select,
            "INSERT" => PrivilegeKind::Insert,
            "UPDATE" => PrivilegeKind::Update,
            "DELETE" => PrivilegeKind::Delete,
            "TRUNCATE" => PrivilegeKind::Truncate,
            "REFERENCES" => PrivilegeKind::References,
            "TRIGGER" => PrivilegeKind::Trigger,
            _ => return None,
        })
    }
}

/// The database-level privileges that MySQL's `ALL PRIVILEGES ON db.*` grants on both MySQL 8
/// and MariaDB, with the `mysql.db` column that records each.
pub const MYSQL_DATABASE_ALL: [(PrivilegeKind, &str); 18] = [
    (PrivilegeKind::Select, "Select_priv"),
    (PrivilegeKind::Insert, "Insert_priv"),
    (PrivilegeKind::Update, "Update_priv"),
    (PrivilegeKind::Delete, "Delete_priv"),
    (PrivilegeKind::Create, "Create_priv"),
    (PrivilegeKind::Drop, "Drop_priv"),
    (PrivilegeKind::References, "References_priv"),
    (PrivilegeKind::Index, "Index_priv"),
    (PrivilegeKind::Alter, "Alter_priv"),
    (
        PrivilegeKind::CreateTemporaryTables,
        "Create_tmp_table_priv",
    ),
    (PrivilegeKind::LockTables, "Lock_tables_priv"),
    (PrivilegeKind::CreateView, "Create_view_priv"),
    (PrivilegeKind::ShowView, "Show_view_priv"),
    (PrivilegeKind::CreateRoutine, "Create_routine_priv"),
    (PrivilegeKind::AlterRoutine, "Alter_routine_priv"),
    (PrivilegeKind::Execute, "Execute_priv"),
    (PrivilegeKind::Event, "Event_priv"),
    (PrivilegeKind::Trigger, "Trigger_priv"),
];

/// One privilege on one object of a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Privilege {
    /// What it is held on.
    pub object: PrivilegeObject,
    /// Which privilege.
    pub kind: PrivilegeKind,
}

impl Privilege {
    /// Shorthand constructor.
    pub const fn new(object: PrivilegeObject, kind: PrivilegeKind) -> Self {
        Privilege { object, kind }
    }
}

/// The privileges a role holds on one database.
///
/// For objects that stand for many (all tables, all sequences) `all` holds what is granted on
/// every one of them and `any` what is granted on at least one; for single objects both hold
/// the same. Privileges the role holds implicitly (as the database's owner) are in `all` but
/// not in `any`, so they are neither granted nor revoked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PrivilegeSet {
    /// Held on every object of the kind.
    pub all: BTreeSet<Privilege>,
    /// Held (explicitly) on at least one object of the kind.
    pub any: BTreeSet<Privilege>,
}

/// Observed privileges: role name → database name → privileges held there.
pub type PrivilegeMap = BTreeMap<String, BTreeMap<String, PrivilegeSet>>;

/// What each privilege level means, per engine.
///
/// PostgreSQL (objects in the database's `public` schema):
/// - `readOnly`: `CONNECT` on the database; `USAGE` on schema `public`; `SELECT` on all
///   tables and sequences; the same as default privileges for tables and sequences the
///   database's owner creates later.
/// - `readWrite`: `readOnly` plus `INSERT, UPDATE, DELETE` on tables and `USAGE, UPDATE` on
///   sequences (so `nextval` works), also as default privileges.
/// - `owner`: `CONNECT, CREATE, TEMPORARY` on the database; `USAGE, CREATE` on `public`; every
///   table privilege (`SELECT INSERT UPDATE DELETE TRUNCATE REFERENCES TRIGGER`) and every
///   sequence privilege, also as default privileges. It does not change the database's owner
///   (that is [`DatabaseSpec::owner`]).
///
/// MySQL / MariaDB (on `` `db`.* ``):
/// - `readOnly`: `SELECT`.
/// - `readWrite`: `SELECT, INSERT, UPDATE, DELETE`.
/// - `owner`: `ALL PRIVILEGES` (without `GRANT OPTION`).
pub fn required_privileges(engine: Engine, level: PrivilegeLevel) -> BTreeSet<Privilege> {
    use PrivilegeKind as K;
    use PrivilegeObject as O;
    let mut set = BTreeSet::new();
    let mut add = |object: O, kinds: &[K]| {
        set.extend(kinds.iter().map(|&kind| Privilege::new(object, kind)));
    };
    match (engine, level) {
        (Engine::Postgres, PrivilegeLevel::ReadOnly) => {
            add(O::Database, &[K::Connect]);
            add(O::PublicSchema, &[K::Usage]);
            add(O::AllTables, &[K::Select]);
            add(O::AllSequences, &[K::Select]);
            add(O::DefaultTables, &[K::Select]);
            add(O::DefaultSequences, &[K::Select]);
        }
        (Engine::Postgres, PrivilegeLevel::ReadWrite) => {
            let tables = [K::Select, K::Insert, K::Update, K::Delete];
            let sequences = [K::Select, K::Usage, K::Update];
            add(O::Database, &[K::Connect]);
            add(O::PublicSchema, &[K::Usage]);
            add(O::AllTables, &tables);
            add(O::AllSequences, &sequences);
            add(O::DefaultTables, &tables);
            add(O::DefaultSequences, &sequences);
        }
        (Engine::Postgres, PrivilegeLevel::Owner) => {
            let tables = [
                K::Select,
                K::Insert,
                K::Update,
                K::Delete,
                K::Truncate,
                K::References,
                K::Trigger,
            ];
            let sequences = [K::Select, K::Usage, K::Update];
            add(O::Database, &[K::Connect, K::Create, K::Temporary]);
            add(O::PublicSchema, &[K::Usage, K::Create]);
            add(O::AllTables, &tables);
            add(O::AllSequences, &sequences);
            add(O::DefaultTables, &tables);
            add(O::DefaultSequences, &sequences);
        }
        (Engine::Mysql, PrivilegeLevel::ReadOnly) => add(O::Database, &[K::Select]),
        (Engine::Mysql, PrivilegeLevel::ReadWrite) => {
            add(O::Database, &[K::Select, K::Insert, K::Update, K::Delete])
        }
        (Engine::Mysql, PrivilegeLevel::Owner) => add(O::Database, &[K::All]),
    }
    set
}

/// One change to make on a server. Plans are lists of these; [`super::Server::apply`] executes
/// them in order. `Display` gives a one-line description without secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlAction {
    /// `CREATE DATABASE`.
    CreateDatabase {
        /// Name.
        name: String,
        /// PostgreSQL owner.
        owner: Option<String>,
        /// Collation (see [`DatabaseSpec::lc_collate`]).
        lc_collate: Option<String>,
        /// Character type / set (see [`DatabaseSpec::lc_ctype`]).
        lc_ctype: Option<String>,
        /// The marker it is created with (PostgreSQL: its comment, set right after; MySQL:
        /// the catalog row, written before).
        marker: Option<OwnerMarker>,
    },
    /// Writes the ownership marker of an existing database.
    MarkDatabase {
        /// Database.
        name: String,
        /// Marker.
        marker: OwnerMarker,
    },
    /// `ALTER DATABASE … OWNER TO` (PostgreSQL only).
    SetDatabaseOwner {
        /// Database.
        name: String,
        /// New owner.
        owner: String,
    },
    /// `DROP DATABASE`, refused with [`super::Error::DatabaseInUse`] while it has connections.
    DropDatabase {
        /// Database.
        name: String,
    },
    /// `CREATE ROLE` / `CREATE USER`, with its attributes and password.
    CreateRole {
        /// Role.
        name: String,
        /// Attributes it gets.
        attributes: BTreeSet<Attribute>,
        /// Password, if any.
        password: Option<Password>,
        /// The marker it is created with (PostgreSQL: its comment, in the same transaction;
        /// MySQL: the catalog row, written before).
        marker: Option<OwnerMarker>,
    },
    /// Writes the ownership marker of an existing role.
    MarkRole {
        /// Role.
        name: String,
        /// Marker.
        marker: OwnerMarker,
    },
    /// Changes attributes from what was observed to what is desired.
    AlterRoleAttributes {
        /// Role.
        name: String,
        /// Observed attributes.
        from: BTreeSet<Attribute>,
        /// Desired attributes.
        to: BTreeSet<Attribute>,
    },
    /// Sets the password (PostgreSQL: a SCRAM-SHA-256 verifier; MySQL: a
    /// `mysql_native_password` hash; never clear text).
    SetPassword {
        /// Role.
        name: String,
        /// New password.
        password: Password,
    },
    /// `GRANT group TO role`.
    GrantMembership {
        /// The member.
        role: String,
        /// The role it becomes a member of.
        group: String,
    },
    /// `REVOKE group FROM role`.
    RevokeMembership {
        /// The member.
        role: String,
        /// The role it leaves.
        group: String,
    },
    /// `ALTER ROLE … SET key = value` (PostgreSQL only).
    SetParameter {
        /// Role.
        role: String,
        /// Setting name.
        key: String,
        /// Value, as a literal.
        value: String,
    },
    /// `ALTER ROLE … RESET key` (PostgreSQL only).
    ResetParameter {
        /// Role.
        role: String,
        /// Setting name.
        key: String,
    },
    /// Grants privileges on a database's objects.
    GrantPrivileges {
        /// Grantee.
        role: String,
        /// Database.
        database: String,
        /// What to grant.
        privileges: BTreeSet<Privilege>,
    },
    /// Revokes privileges on a database's objects.
    RevokePrivileges {
        /// Grantee.
        role: String,
        /// Database.
        database: String,
        /// What to revoke.
        privileges: BTreeSet<Privilege>,
    },
    /// Drops a role (PostgreSQL: after `REASSIGN OWNED` to the admin and `DROP OWNED` in every
    /// database where it has objects or privileges).
    DropRole {
        /// Role.
        name: String,
    },
}

impl fmt::Display for SqlAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn privs(p: &BTreeSet<Privilege>) -> String {
            let mut kinds: Vec<&str> = p.iter().map(|p| p.kind.keyword()).collect();
            kinds.sort_unstable();
            kinds.dedup();
            kinds.join(", ")
        }
        match self {
            SqlAction::CreateDatabase { name, .. } => write!(f, "create database {name:?}"),
            SqlAction::SetDatabaseOwner { name, owner } => {
                write!(f, "set owner of database {name:?} to {owner:?}")
            }
            SqlAction::DropDatabase { name } => write!(f, "drop database {name:?}"),
            SqlAction::CreateRole { name, .. } => write!(f, "create role {name:?}"),
            SqlAction::MarkRole { name, marker } => write!(
                f,
                "mark role {name:?} as {}'s ({}/{})",
                marker.kind, marker.namespace, marker.name
            ),
            SqlAction::MarkDatabase { name, marker } => write!(
                f,
                "mark database {name:?} as {}'s ({}/{})",
                marker.kind, marker.namespace, marker.name
            ),
            SqlAction::AlterRoleAttributes { name, from, to } => {
                let on: Vec<_> = to.difference(from).map(|a| a.pg_keyword()).collect();
                let off: Vec<_> = from
                    .difference(to)
                    .map(|a| a.pg_negated_keyword())
                    .collect();
                write!(f, "alter role {name:?}: {}", [on, off].concat().join(" "))
            }
            SqlAction::SetPassword { name, .. } => write!(f, "set password of role {name:?}"),
            SqlAction::GrantMembership { role, group } => {
                write!(f, "grant role {group:?} to {role:?}")
            }
            SqlAction::RevokeMembership { role, group } => {
                write!(f, "revoke role {group:?} from {role:?}")
            }
            SqlAction::SetParameter { role, key, .. } => {
                write!(f, "set parameter {key} of role {role:?}")
            }
            SqlAction::ResetParameter { role, key } => {
                write!(f, "reset parameter {key} of role {role:?}")
            }
            SqlAction::GrantPrivileges {
                role,
                database,
                privileges,
            } => write!(
                f,
                "grant {} on database {database:?} to {role:?}",
                privs(privileges)
            ),
            SqlAction::RevokePrivileges {
                role,
                database,
                privileges,
            } => write!(
                f,
                "revoke {} on database {database:?} from {role:?}",
                privs(privileges)
            ),
            SqlAction::DropRole { name } => write!(f, "drop role {name:?}"),
        }
    }
}

/// Plans a database: create it when missing, else write its marker when it differs and fix
/// its owner. Collation and ctype are set at creation only (see [`database_immutable_drift`]
/// for reporting a mismatch). Whether the object may use the database at all is decided before
/// (see [`super::ownership::claim`]).
pub fn plan_database(desired: &DatabaseSpec, observed: Option<&DatabaseState>) -> Vec<SqlAction> {
    let Some(state) = observed else {
        return vec![SqlAction::CreateDatabase {
            name: desired.name.clone(),
            owner: desired.owner.clone(),
            lc_collate: desired.lc_collate.clone(),
            lc_ctype: desired.lc_ctype.clone(),
            marker: desired.marker.clone(),
        }];
    };
    let mut actions = Vec::new();
    if let Some(marker) = &desired.marker
        && state.marker.as_ref() != Some(marker)
    {
        actions.push(SqlAction::MarkDatabase {
            name: desired.name.clone(),
            marker: marker.clone(),
        });
    }
    if let Some(owner) = &desired.owner
        && state.owner.as_ref() != Some(owner)
    {
        actions.push(SqlAction::SetDatabaseOwner {
            name: desired.name.clone(),
            owner: owner.clone(),
        });
    }
    actions
}

/// Describes a difference dbward cannot repair in place (collation or ctype of an existing
/// database), for the reconciler to report; `None` when there is none.
pub fn database_immutable_drift(
    desired: &DatabaseSpec,
    observed: &DatabaseState,
) -> Option<String> {
    let mut diffs = Vec::new();
    if let Some(c) = &desired.lc_collate
        && c != &observed.lc_collate
    {
        diffs.push(format!(
            "lc_collate is {:?}, not {c:?}",
            observed.lc_collate
        ));
    }
    if let Some(c) = &desired.lc_ctype
        && c != &observed.lc_ctype
    {
        diffs.push(format!("lc_ctype is {:?}, not {c:?}", observed.lc_ctype));
    }
    (!diffs.is_empty()).then(|| format!("database {:?}: {}", desired.name, diffs.join("; ")))
}

/// Plans a role: create it with everything when missing, else repair attributes, password,
/// memberships and parameters one by one.
pub fn plan_role(
    engine: Engine,
    desired: &RoleSpec,
    observed: Option<&RoleState>,
) -> Vec<SqlAction> {
    let name = &desired.name;
    let attributes = desired_attributes(engine, &desired.flags);
    let mut actions = Vec::new();
    let (in_roles, parameters) = match observed {
        None => {
            actions.push(SqlAction::CreateRole {
                name: name.clone(),
                attributes,
                password: desired.password.clone(),
                marker: desired.marker.clone(),
            });
            (BTreeSet::new(), BTreeMap::new())
        }
        Some(state) => {
            if let Some(marker) = &desired.marker
                && state.marker.as_ref() != Some(marker)
            {
                actions.push(SqlAction::MarkRole {
                    name: name.clone(),
                    marker: marker.clone(),
                });
            }
            let observed_attrs = normalize_attributes(engine, state.attributes.clone());
            if observed_attrs != attributes {
                actions.push(SqlAction::AlterRoleAttributes {
                    name: name.clone(),
                    from: observed_attrs,
                    to: attributes,
                });
            }
            if let Some(password) = &desired.password
                && state.password != PasswordState::Matches
            {
                actions.push(SqlAction::SetPassword {
                    name: name.clone(),
                    password: password.clone(),
                });
            }
            (state.in_roles.clone(), state.parameters.clone())
        }
    };
    for group in in_roles.difference(&desired.in_roles) {
        actions.push(SqlAction::RevokeMembership {
            role: name.clone(),
            group: group.clone(),
        });
    }
    for group in desired.in_roles.difference(&in_roles) {
        actions.push(SqlAction::GrantMembership {
            role: name.clone(),
            group: group.clone(),
        });
    }
    for key in parameters.keys() {
        if !desired.parameters.contains_key(key) {
            actions.push(SqlAction::ResetParameter {
                role: name.clone(),
                key: key.clone(),
            });
        }
    }
    for (key, value) in &desired.parameters {
        if parameters.get(key) != Some(value) {
            actions.push(SqlAction::SetParameter {
                role: name.clone(),
                key: key.clone(),
                value: value.clone(),
            });
        }
    }
    actions
}

/// Plans the privileges of one role: for every database it should have a level on, grant what
/// is missing; everywhere, revoke what the level does not include (all of it on databases no
/// longer listed). Several entries for one database mean the highest of their levels.
/// Revocations come before grants, so narrowing `owner` to `readWrite` on MySQL (revoke
/// `ALL PRIVILEGES`, grant DML) ends in the right state.
pub fn plan_privileges(
    engine: Engine,
    role: &str,
    desired: &[PrivilegeSpec],
    observed: &BTreeMap<String, PrivilegeSet>,
) -> Vec<SqlAction> {
    let mut levels: BTreeMap<&str, PrivilegeLevel> = BTreeMap::new();
    for spec in desired {
        let level = levels.entry(spec.database.as_str()).or_insert(spec.level);
        *level = (*level).max(spec.level);
    }
    let databases: BTreeSet<&str> = levels
        .keys()
        .copied()
        .chain(observed.keys().map(String::as_str))
        .collect();
    let empty = PrivilegeSet::default();
    let mut revokes = Vec::new();
    let mut grants = Vec::new();
    for database in databases {
        let required = levels
            .get(database)
            .map(|&level| required_privileges(engine, level))
            .unwrap_or_default();
        let held = observed.get(database).unwrap_or(&empty);
        let extra: BTreeSet<Privilege> = held.any.difference(&required).copied().collect();
        let missing: BTreeSet<Privilege> = required.difference(&held.all).copied().collect();
        if !extra.is_empty() {
            revokes.push(SqlAction::RevokePrivileges {
                role: role.to_owned(),
                database: database.to_owned(),
                privileges: extra,
            });
        }
        if !missing.is_empty() {
            grants.push(SqlAction::GrantPrivileges {
                role: role.to_owned(),
                database: database.to_owned(),
                privileges: missing,
            });
        }
    }
    revokes.extend(grants);
    revokes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(list: &[RoleFlag]) -> BTreeSet<RoleFlag> {
        list.iter().copied().collect()
    }

    fn role(name: &str) -> RoleSpec {
        RoleSpec {
            name: name.into(),
            flags: flags(&[RoleFlag::Login, RoleFlag::Createdb]),
            in_roles: BTreeSet::from(["readers".to_string()]),
            parameters: BTreeMap::from([("work_mem".to_string(), "8MB".to_string())]),
            password: Some(Password::new("s3cret")),
            marker: None,
        }
    }

    fn as_observed(engine: Engine, spec: &RoleSpec) -> RoleState {
        RoleState {
            attributes: desired_attributes(engine, &spec.flags),
            in_roles: spec.in_roles.clone(),
            parameters: spec.parameters.clone(),
            password: PasswordState::Matches,
            marker: None,
        }
    }

    #[test]
    fn flags_map_to_attributes() {
        let pg = desired_attributes(Engine::Postgres, &flags(&[]));
        assert_eq!(pg, BTreeSet::from([Attribute::Inherit, Attribute::Login]));
        let nologin = desired_attributes(Engine::Postgres, &flags(&[RoleFlag::Nologin]));
        assert_eq!(nologin, BTreeSet::from([Attribute::Inherit]));
        let su = desired_attributes(Engine::Mysql, &flags(&[RoleFlag::Superuser]));
        assert!(su.contains(&Attribute::Createdb) && su.contains(&Attribute::Replication));
        let su_pg = desired_attributes(Engine::Postgres, &flags(&[RoleFlag::Superuser]));
        assert!(!su_pg.contains(&Attribute::Createdb));
        assert_eq!(RoleFlag::parse("CreateDB"), Some(RoleFlag::Createdb));
        assert_eq!(RoleFlag::parse("noinherit"), None);
    }

    #[test]
    fn missing_role_is_created_with_everything() {
        let spec = role("app");
        let plan = plan_role(Engine::Postgres, &spec, None);
        assert_eq!(
            plan,
            vec![
                SqlAction::CreateRole {
                    name: "app".into(),
                    attributes: BTreeSet::from([
                        Attribute::Inherit,
                        Attribute::Login,
                        Attribute::Createdb
                    ]),
                    password: Some(Password::new("s3cret")),
                    marker: None,
                },
                SqlAction::GrantMembership {
                    role: "app".into(),
                    group: "readers".into()
                },
                SqlAction::SetParameter {
                    role: "app".into(),
                    key: "work_mem".into(),
                    value: "8MB".into()
                },
            ]
        );
    }

    #[test]
    fn unchanged_role_plans_nothing() {
        for engine in [Engine::Postgres, Engine::Mysql] {
            let spec = role("app");
            let observed = as_observed(engine, &spec);
            assert_eq!(plan_role(engine, &spec, Some(&observed)), vec![]);
        }
    }

    #[test]
    fn drifted_role_is_repaired() {
        let spec = role("app");
        let mut observed = as_observed(Engine::Postgres, &spec);
        observed.attributes.remove(&Attribute::Login);
        observed.attributes.insert(Attribute::Superuser);
        observed.in_roles = BTreeSet::from(["admins".to_string()]);
        observed.parameters = BTreeMap::from([
            ("work_mem".to_string(), "1MB".to_string()),
            ("search_path".to_string(), "x".to_string()),
        ]);
        observed.password = PasswordState::Differs;
        let plan = plan_role(Engine::Postgres, &spec, Some(&observed));
        assert_eq!(
            plan,
            vec![
                SqlAction::AlterRoleAttributes {
                    name: "app".into(),
                    from: BTreeSet::from([
                        Attribute::Superuser,
                        Attribute::Inherit,
                        Attribute::Createdb
                    ]),
                    to: BTreeSet::from([Attribute::Inherit, Attribute::Login, Attribute::Createdb]),
                },
                SqlAction::SetPassword {
                    name: "app".into(),
                    password: Password::new("s3cret")
                },
                SqlAction::RevokeMembership {
                    role: "app".into(),
                    group: "admins".into()
                },
                SqlAction::GrantMembership {
                    role: "app".into(),
                    group: "readers".into()
                },
                SqlAction::ResetParameter {
                    role: "app".into(),
                    key: "search_path".into()
                },
                SqlAction::SetParameter {
                    role: "app".into(),
                    key: "work_mem".into(),
                    value: "8MB".into()
                },
            ]
        );
    }

    #[test]
    fn password_left_alone_when_not_desired() {
        let mut spec = role("app");
        spec.password = None;
        let mut observed = as_observed(Engine::Postgres, &spec);
        observed.password = PasswordState::Unknown;
        assert_eq!(plan_role(Engine::Postgres, &spec, Some(&observed)), vec![]);
    }

    #[test]
    fn database_plans() {
        let spec = DatabaseSpec {
            name: "db".into(),
            owner: Some("app".into()),
            lc_collate: Some("C".into()),
            lc_ctype: Some("C".into()),
            marker: None,
        };
        assert!(matches!(
            plan_database(&spec, None).as_slice(),
            [SqlAction::CreateDatabase { .. }]
        ));
        let mut state = DatabaseState {
            owner: Some("app".into()),
            lc_collate: "C".into(),
            lc_ctype: "C".into(),
            marker: None,
        };
        assert_eq!(plan_database(&spec, Some(&state)), vec![]);
        assert_eq!(database_immutable_drift(&spec, &state), None);
        state.owner = Some("postgres".into());
        state.lc_collate = "en_US.UTF-8".into();
        assert_eq!(
            plan_database(&spec, Some(&state)),
            vec![SqlAction::SetDatabaseOwner {
                name: "db".into(),
                owner: "app".into()
            }]
        );
        assert!(database_immutable_drift(&spec, &state).is_some());
    }

    fn held(set: BTreeSet<Privilege>) -> PrivilegeSet {
        PrivilegeSet {
            all: set.clone(),
            any: set,
        }
    }

    #[test]
    fn privileges_grant_missing_and_revoke_extra() {
        let e = Engine::Postgres;
        let desired = [PrivilegeSpec {
            database: "a".into(),
            level: PrivilegeLevel::ReadWrite,
        }];
        // Nothing held: grant everything readWrite needs.
        let plan = plan_privileges(e, "u", &desired, &BTreeMap::new());
        assert_eq!(
            plan,
            vec![SqlAction::GrantPrivileges {
                role: "u".into(),
                database: "a".into(),
                privileges: required_privileges(e, PrivilegeLevel::ReadWrite),
            }]
        );
        // Held exactly: nothing.
        let exact = BTreeMap::from([(
            "a".to_string(),
            held(required_privileges(e, PrivilegeLevel::ReadWrite)),
        )]);
        assert_eq!(plan_privileges(e, "u", &desired, &exact), vec![]);
        // Owner held on "a" and readOnly on "b": narrow "a", revoke all of "b".
        let observed = BTreeMap::from([
            (
                "a".to_string(),
                held(required_privileges(e, PrivilegeLevel::Owner)),
            ),
            (
                "b".to_string(),
                held(required_privileges(e, PrivilegeLevel::ReadOnly)),
            ),
        ]);
        let plan = plan_privileges(e, "u", &desired, &observed);
        let owner = required_privileges(e, PrivilegeLevel::Owner);
        let rw = required_privileges(e, PrivilegeLevel::ReadWrite);
        assert_eq!(
            plan,
            vec![
                SqlAction::RevokePrivileges {
                    role: "u".into(),
                    database: "a".into(),
                    privileges: owner.difference(&rw).copied().collect(),
                },
                SqlAction::RevokePrivileges {
                    role: "u".into(),
                    database: "b".into(),
                    privileges: required_privileges(e, PrivilegeLevel::ReadOnly),
                },
            ]
        );
    }

    #[test]
    fn partially_granted_tables_are_completed() {
        let e = Engine::Postgres;
        let ro = required_privileges(e, PrivilegeLevel::ReadOnly);
        let select_tables = Privilege::new(PrivilegeObject::AllTables, PrivilegeKind::Select);
        let mut all = ro.clone();
        all.remove(&select_tables);
        // SELECT on some tables but not all.
        let observed = BTreeMap::from([("a".to_string(), PrivilegeSet { all, any: ro })]);
        let desired = [PrivilegeSpec {
            database: "a".into(),
            level: PrivilegeLevel::ReadOnly,
        }];
        assert_eq!(
            plan_privileges(e, "u", &desired, &observed),
            vec![SqlAction::GrantPrivileges {
                role: "u".into(),
                database: "a".into(),
                privileges: BTreeSet::from([select_tables]),
            }]
        );
    }

    #[test]
    fn mysql_owner_narrowed_to_read_write() {
        let e = Engine::Mysql;
        let observed = BTreeMap::from([(
            "a".to_string(),
            held(required_privileges(e, PrivilegeLevel::Owner)),
        )]);
        let desired = [
            PrivilegeSpec {
                database: "a".into(),
                level: PrivilegeLevel::ReadOnly,
            },
            PrivilegeSpec {
                database: "a".into(),
                level: PrivilegeLevel::ReadWrite,
            },
        ];
        let plan = plan_privileges(e, "u", &desired, &observed);
        assert_eq!(
            plan,
            vec![
                SqlAction::RevokePrivileges {
                    role: "u".into(),
                    database: "a".into(),
                    privileges: required_privileges(e, PrivilegeLevel::Owner),
                },
                SqlAction::GrantPrivileges {
                    role: "u".into(),
                    database: "a".into(),
                    privileges: required_privileges(e, PrivilegeLevel::ReadWrite),
                },
            ]
        );
    }

    #[test]
    fn display_hides_passwords() {
        let action = SqlAction::SetPassword {
            name: "u".into(),
            password: Password::new("hunter2"),
        };
        assert!(!format!("{action} {action:?}").contains("hunter2"));
    }
}
