//! What every reconciler shares: the Kubernetes side, dbward's namespace, and a registry of
//! [`Server`]s — one per DatabaseService, built from its connector Secret and rebuilt only when
//! the connector changes (so its connection pool is reused across reconciles).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Secret;

use crate::api::DatabaseService;
use crate::api::database_service::{CONNECTOR_LABEL, CONNECTOR_LABEL_VALUE};
use crate::sql::{ConnectionInfo, Server};

use super::{Cluster, Error, sql_engine};

/// A DatabaseService's server, ready to use.
#[derive(Clone)]
pub struct ServiceHandle {
    /// The DatabaseService's name.
    pub name: String,
    /// Where it is (host, port, sslmode, CA: what credential Secrets tell clients).
    pub info: ConnectionInfo,
    /// The server, shared.
    pub server: Arc<Server>,
    /// The connector Secret as it was read for this handle (the controllers' admission re-check
    /// reads its labels, keys, `type` and `user`, so it is not fetched twice).
    pub connector: Secret,
}

/// Shared state of the reconcilers.
pub struct Context<C> {
    /// The Kubernetes side.
    pub cluster: C,
    /// dbward's namespace: the default home of connector Secrets.
    pub operator_namespace: String,
    servers: Mutex<HashMap<String, (ConnectionInfo, Arc<Server>)>>,
}

impl<C: Cluster> Context<C> {
    /// A context without any server yet.
    pub fn new(cluster: C, operator_namespace: impl Into<String>) -> Self {
        Context {
            cluster,
            operator_namespace: operator_namespace.into(),
            servers: Mutex::new(HashMap::new()),
        }
    }

    /// The server of the DatabaseService named `name`.
    pub async fn service(&self, name: &str) -> Result<(DatabaseService, ServiceHandle), Error> {
        let service =
            self.cluster
                .get_service(name)
                .await?
                .ok_or_else(|| Error::ServiceNotFound {
                    name: name.to_owned(),
                })?;
        let handle = self.server_for(&service).await?;
        Ok((service, handle))
    }

    /// The server of `service`, from its connector Secret.
    pub async fn server_for(&self, service: &DatabaseService) -> Result<ServiceHandle, Error> {
        let name = service.metadata.name.clone().unwrap_or_default();
        let reference = &service.spec.connector_secret_ref;
        let namespace = reference
            .namespace
            .clone()
            .unwrap_or_else(|| self.operator_namespace.clone());
        // Admission refuses any other namespace; a service stored while the webhook was away
        // must not make dbward read (and use) a Secret of another namespace either.
        if namespace != self.operator_namespace {
            return Err(Error::Invalid {
                message: format!(
                    "spec.connectorSecretRef.namespace: Invalid value: {namespace:?}: connector Secrets must be in dbward's namespace {:?}, the only one whose Secrets it reads",
                    self.operator_namespace
                ),
            });
        }
        let secret = self
            .cluster
            .get_secret(&namespace, &reference.name)
            .await?
            .ok_or_else(|| Error::ConnectorSecretNotFound {
                namespace: namespace.clone(),
                name: reference.name.clone(),
            })?;
        let labelled = secret
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(CONNECTOR_LABEL))
            .is_some_and(|v| v == CONNECTOR_LABEL_VALUE);
        if !labelled {
            return Err(Error::ConnectorSecretUnlabelled {
                namespace,
                name: reference.name.clone(),
            });
        }
        let data = super::secret::decoded_data(&secret);
        let info = ConnectionInfo::from_connector(&data).map_err(|source| Error::Connector {
            namespace: namespace.clone(),
            name: reference.name.clone(),
            source,
        })?;
        let engine = sql_engine(service.spec.engine);
        if info.engine != engine {
            return Err(Error::EngineMismatch {
                service: name,
                engine,
                connector: info.engine,
            });
        }
        let server = self.registered(&name, &info)?;
        Ok(ServiceHandle {
            name,
            info,
            server,
            connector: secret,
        })
    }

    /// Reuses the server registered for `service` when its connector is unchanged.
    fn registered(&self, service: &str, info: &ConnectionInfo) -> Result<Arc<Server>, Error> {
        let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((known, server)) = servers.get(service)
            && known == info
        {
            return Ok(server.clone());
        }
        let server = Arc::new(Server::new(info)?);
        servers.insert(service.to_owned(), (info.clone(), server.clone()));
        Ok(server)
    }

    /// Forgets a DatabaseService's server (it was deleted).
    pub fn forget(&self, service: &str) {
        let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        servers.remove(service);
    }

    /// Write statements executed so far on every registered server.
    pub fn sql_writes(&self) -> u64 {
        let servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        servers.values().map(|(_, s)| s.writes()).sum()
    }

    /// The registered servers by DatabaseService name (for tests and benchmarks).
    pub fn servers(&self) -> BTreeMap<String, Arc<Server>> {
        let servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        servers
            .iter()
            .map(|(k, (_, s))| (k.clone(), s.clone()))
            .collect()
    }
}
