//! The Kubernetes side of the in-cluster controllers: the API server through a `kube::Client`.
//! Secrets are written with server-side apply (field manager [`FIELD_MANAGER`], forced, so
//! dbward owns the fields it sets and nothing else).

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams};

use crate::api::admission_policy::POLICY_NAME;
use crate::api::{AdmissionPolicy, AdmissionPolicySpec, DatabaseService, ServiceUser};

use super::{Cluster, Error, FIELD_MANAGER};

/// The API server.
#[derive(Clone)]
pub struct KubeCluster {
    client: Client,
}

impl KubeCluster {
    /// Wraps a client.
    pub fn new(client: Client) -> Self {
        KubeCluster { client }
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

pub(crate) fn kube_error(verb: &'static str) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Kube {
        verb,
        source: Box::new(source),
    }
}

impl Cluster for KubeCluster {
    async fn get_secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, Error> {
        Api::<Secret>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(kube_error("get Secret"))
    }

    async fn apply_secret(&self, secret: &Secret) -> Result<(), Error> {
        let namespace = secret.metadata.namespace.as_deref().unwrap_or("default");
        let name = secret.metadata.name.as_deref().unwrap_or_default();
        let mut body = secret.clone();
        body.metadata.managed_fields = None;
        body.metadata.resource_version = None;
        Api::<Secret>::namespaced(self.client.clone(), namespace)
            .patch(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await
            .map_err(kube_error("apply Secret"))?;
        Ok(())
    }

    async fn delete_secret(&self, namespace: &str, name: &str) -> Result<(), Error> {
        match Api::<Secret>::namespaced(self.client.clone(), namespace)
            .delete(name, &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(e) => Err(kube_error("delete Secret")(e)),
        }
    }

    async fn get_service(&self, name: &str) -> Result<Option<DatabaseService>, Error> {
        Api::<DatabaseService>::all(self.client.clone())
            .get_opt(name)
            .await
            .map_err(kube_error("get DatabaseService"))
    }

    async fn get_service_user(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ServiceUser>, Error> {
        Api::<ServiceUser>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(kube_error("get ServiceUser"))
    }

    async fn get_policy(&self) -> Result<AdmissionPolicySpec, Error> {
        let policy = Api::<AdmissionPolicy>::all(self.client.clone())
            .get_opt(POLICY_NAME)
            .await
            .map_err(kube_error("get AdmissionPolicy"))?;
        Ok(policy.map(|p| p.spec).unwrap_or_default())
    }

    async fn get_namespace(&self, name: &str) -> Result<Option<Namespace>, Error> {
        Api::<Namespace>::all(self.client.clone())
            .get_opt(name)
            .await
            .map_err(kube_error("get Namespace"))
    }
}
