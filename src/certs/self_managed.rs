//! `dbward webhook --self-managed-certs`: dbward's own CA in a Secret, a serving certificate
//! signed by it in another Secret and in the files the webhook serves from, and the CA bundle
//! in the webhook configurations — checked before the listener binds and then every
//! `--certs-check-interval`.
//!
//! Observe → plan (`super::plan`, pure) → act. Several replicas share the Secrets: creates
//! that lose a race (409) and updates whose resourceVersion went stale (409) re-read what the
//! other replica wrote and plan again, so a CA is never overwritten by one made concurrently.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};

use super::plan::{
    self, Action, CaMaterial, CertReadError, ConfigurationKind, Desired, Found, Lifetimes,
    Observed, ObservedConfiguration, PlanError, ServingMaterial,
};
use super::{CertsError, KeyedCert, new_ca, service_dns_names, sign_serving};
use crate::webhook_config::CONFIGURATION_NAME;

/// The field manager of every write.
const FIELD_MANAGER: &str = "dbward";
/// New certificates start this much in the past, for clocks a little behind ours.
const BACKDATE_SECONDS: i64 = 5 * 60;
/// How often a round that lost a race is planned again before giving up until the next check.
const ATTEMPTS: usize = 3;

/// Flags of `dbward webhook` for the self-managed CA.
#[derive(Debug, Clone, clap::Args)]
pub struct SelfManagedCertsArgs {
    /// Make and renew the serving certificate with dbward's own CA, kept in Secrets in
    /// --namespace, and inject the CA bundle into the webhook configurations. The files at
    /// --tls-cert and --tls-key are written (their directory must be writable).
    #[arg(long, conflicts_with = "no_kube")]
    pub self_managed_certs: bool,
    /// Name of the webhook's Service: the serving certificate is for `NAME`, `NAME.NS`,
    /// `NAME.NS.svc` and `NAME.NS.svc.cluster.local`, NS being --namespace.
    #[arg(long, default_value = "dbward-webhook")]
    pub service: String,
    /// Extra DNS name for the serving certificate (repeatable), e.g. `localhost`.
    #[arg(long = "certs-dns", value_name = "NAME")]
    pub certs_dns: Vec<String>,
    /// Extra IP address for the serving certificate (repeatable), e.g. `127.0.0.1`.
    #[arg(long = "certs-ip", value_name = "ADDR")]
    pub certs_ip: Vec<IpAddr>,
    /// Secret (in --namespace) holding the CA and its key.
    #[arg(long, default_value = "dbward-webhook-ca")]
    pub ca_secret: String,
    /// Secret (in --namespace, type kubernetes.io/tls) holding the serving certificate.
    #[arg(long, default_value = "dbward-webhook-tls")]
    pub tls_secret: String,
    /// Name of the Validating- and MutatingWebhookConfiguration whose CA bundle is kept current.
    #[arg(long, default_value = CONFIGURATION_NAME)]
    pub webhook_configuration: String,
    /// How often the certificates and the CA bundles are checked after the start.
    #[arg(long, default_value = "2m", value_parser = crate::duration::flag)]
    pub certs_check_interval: Duration,
}

impl Default for SelfManagedCertsArgs {
    fn default() -> Self {
        SelfManagedCertsArgs {
            self_managed_certs: false,
            service: "dbward-webhook".into(),
            certs_dns: Vec::new(),
            certs_ip: Vec::new(),
            ca_secret: "dbward-webhook-ca".into(),
            tls_secret: "dbward-webhook-tls".into(),
            webhook_configuration: CONFIGURATION_NAME.into(),
            certs_check_interval: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SelfManagedError {
    #[error("reading Secret {namespace}/{name}: {source}")]
    ReadSecret {
        namespace: String,
        name: String,
        source: Box<kube::Error>,
    },
    #[error("writing Secret {namespace}/{name}: {source}")]
    WriteSecret {
        namespace: String,
        name: String,
        source: Box<kube::Error>,
    },
    #[error("Secret {namespace}/{name} was written by someone else meanwhile")]
    Conflict { namespace: String, name: String },
    #[error("reading {kind} {name}: {source}")]
    ReadConfiguration {
        kind: &'static str,
        name: String,
        source: Box<kube::Error>,
    },
    #[error("setting the CA bundle of {kind} {name}: {source}")]
    PatchConfiguration {
        kind: &'static str,
        name: String,
        source: Box<kube::Error>,
    },
    #[error("Secret {namespace}/{name}: {source}")]
    Plan {
        namespace: String,
        name: String,
        source: PlanError,
    },
    #[error("making a certificate: {0}")]
    Certificate(#[source] CertsError),
    #[error("reading back a certificate just made: {0}")]
    ReadBack(#[source] CertReadError),
    #[error("writing the serving certificate files: {0}")]
    WriteFiles(#[source] CertsError),
}

/// What was observed, with what acting needs besides the plan's input.
struct World {
    observed: Observed,
    ca_secret: Option<Secret>,
    tls_secret: Option<Secret>,
    webhook_names: BTreeMap<ConfigurationKind, Vec<String>>,
}

/// The self-managed certificates of one webhook replica.
pub struct SelfManagedCerts {
    secrets: Api<Secret>,
    validating: Api<ValidatingWebhookConfiguration>,
    mutating: Api<MutatingWebhookConfiguration>,
    namespace: String,
    ca_secret: String,
    tls_secret: String,
    configuration: String,
    desired: Desired,
    ca_common_name: String,
    serving_common_name: String,
    cert_file: PathBuf,
    key_file: PathBuf,
}

impl std::fmt::Debug for SelfManagedCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfManagedCerts")
            .field("namespace", &self.namespace)
            .field("ca_secret", &self.ca_secret)
            .field("tls_secret", &self.tls_secret)
            .field("configuration", &self.configuration)
            .finish_non_exhaustive()
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn at(seconds: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(seconds).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn secret_data(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(key, value)| (key.clone(), value.0.clone()))
        .collect()
}

/// A Secret's content as the plan sees it.
fn found<T>(
    secret: &Option<Secret>,
    read: impl Fn(&BTreeMap<String, Vec<u8>>) -> Result<T, CertReadError>,
) -> Found<T> {
    match secret {
        None => Found::Missing,
        Some(secret) => match read(&secret_data(secret)) {
            Ok(material) => Found::Usable(material),
            Err(error) => Found::Unusable(error.to_string()),
        },
    }
}

fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

impl SelfManagedCerts {
    /// `cert_file` and `key_file` are the webhook's `--tls-cert` and `--tls-key`.
    pub fn new(
        client: Client,
        namespace: &str,
        args: &SelfManagedCertsArgs,
        cert_file: PathBuf,
        key_file: PathBuf,
    ) -> SelfManagedCerts {
        let dns_names: BTreeSet<String> = service_dns_names(&args.service, namespace)
            .into_iter()
            .chain(args.certs_dns.iter().cloned())
            .collect();
        SelfManagedCerts {
            secrets: Api::namespaced(client.clone(), namespace),
            validating: Api::all(client.clone()),
            mutating: Api::all(client),
            namespace: namespace.to_string(),
            ca_secret: args.ca_secret.clone(),
            tls_secret: args.tls_secret.clone(),
            configuration: args.webhook_configuration.clone(),
            desired: Desired {
                dns_names,
                ips: args.certs_ip.iter().copied().collect(),
                lifetimes: Lifetimes::default(),
            },
            ca_common_name: format!("dbward webhook CA ({namespace})"),
            serving_common_name: format!("{}.{namespace}.svc", args.service),
            cert_file,
            key_file,
        }
    }

    /// One check: observe, plan, act; a round that lost a race to another replica is planned
    /// again from what that replica wrote. Returns the actions taken.
    pub async fn reconcile(&self) -> Result<Vec<Action>, SelfManagedError> {
        let mut attempt = 1;
        loop {
            let world = self.observe().await?;
            let now = now();
            let actions = plan::plan(now, &world.observed, &self.desired).map_err(|source| {
                SelfManagedError::Plan {
                    namespace: self.namespace.clone(),
                    name: self.ca_secret.clone(),
                    source,
                }
            })?;
            if actions.is_empty() {
                return Ok(actions);
            }
            match self.act(&actions, world, now).await {
                Ok(()) => return Ok(actions),
                Err(error @ SelfManagedError::Conflict { .. }) if attempt < ATTEMPTS => {
                    tracing::info!(%error, "another replica wrote first; reading its result");
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Checks every `interval` until the task is dropped; a failed check is logged and the
    /// certificate in use stays.
    pub async fn run(self, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            if let Err(error) = self.reconcile().await {
                tracing::warn!(
                    %error,
                    "checking the webhook certificates failed; keeping the current certificate and retrying"
                );
            }
        }
    }

    async fn read_secret(&self, name: &str) -> Result<Option<Secret>, SelfManagedError> {
        self.secrets
            .get_opt(name)
            .await
            .map_err(|source| SelfManagedError::ReadSecret {
                namespace: self.namespace.clone(),
                name: name.to_string(),
                source: Box::new(source),
            })
    }

    async fn observe(&self) -> Result<World, SelfManagedError> {
        let ca_secret = self.read_secret(&self.ca_secret).await?;
        let tls_secret = self.read_secret(&self.tls_secret).await?;
        let ca = found(&ca_secret, CaMaterial::from_data);
        let serving = found(&tls_secret, ServingMaterial::from_data);
        if let Found::Unusable(reason) = &serving {
            tracing::warn!(
                secret = %self.tls_secret,
                reason = %reason,
                "the serving certificate Secret is not usable; issuing a new one"
            );
        }
        let files = match (
            std::fs::read(&self.cert_file),
            std::fs::read(&self.key_file),
        ) {
            (Ok(cert), Ok(key)) => Some((cert, key)),
            _ => None,
        };

        let mut configurations = Vec::new();
        let mut webhook_names = BTreeMap::new();
        let name = &self.configuration;
        let read_error = |kind: ConfigurationKind| {
            let name = name.clone();
            move |source| SelfManagedError::ReadConfiguration {
                kind: kind.as_str(),
                name,
                source: Box::new(source),
            }
        };
        // Each webhook's name and CA bundle, or `None` when the configuration does not exist.
        fn bundles(
            webhooks: impl IntoIterator<Item = (String, WebhookClientConfig)>,
        ) -> Vec<(String, Option<Vec<u8>>)> {
            webhooks
                .into_iter()
                .map(|(name, client)| (name, client.ca_bundle.map(|b| b.0)))
                .collect()
        }
        let validating = self
            .validating
            .get_opt(name)
            .await
            .map_err(read_error(ConfigurationKind::Validating))?
            .map(|c| {
                bundles(
                    c.webhooks
                        .into_iter()
                        .flatten()
                        .map(|w| (w.name, w.client_config)),
                )
            });
        let mutating = self
            .mutating
            .get_opt(name)
            .await
            .map_err(read_error(ConfigurationKind::Mutating))?
            .map(|c| {
                bundles(
                    c.webhooks
                        .into_iter()
                        .flatten()
                        .map(|w| (w.name, w.client_config)),
                )
            });
        for (kind, webhooks) in [
            (ConfigurationKind::Validating, validating),
            (ConfigurationKind::Mutating, mutating),
        ] {
            match webhooks {
                None => {
                    tracing::info!(
                        kind = kind.as_str(),
                        name = %name,
                        "webhook configuration not found; its CA bundle is set once it exists"
                    );
                    configurations.push(ObservedConfiguration {
                        kind,
                        ca_bundles: None,
                    });
                }
                Some(webhooks) => {
                    let (names, bundles): (Vec<_>, Vec<_>) = webhooks.into_iter().unzip();
                    webhook_names.insert(kind, names);
                    configurations.push(ObservedConfiguration {
                        kind,
                        ca_bundles: Some(bundles),
                    });
                }
            }
        }
        Ok(World {
            observed: Observed {
                ca,
                serving,
                files,
                configurations,
            },
            ca_secret,
            tls_secret,
            webhook_names,
        })
    }

    /// Creates the Secret, or replaces the observed one (its resourceVersion is the
    /// precondition). A 409 means another replica wrote first.
    async fn write_secret(
        &self,
        name: &str,
        observed: Option<&Secret>,
        type_: &str,
        data: BTreeMap<String, Vec<u8>>,
    ) -> Result<Secret, SelfManagedError> {
        let data = Some(
            data.into_iter()
                .map(|(key, value)| (key, ByteString(value)))
                .collect(),
        );
        let params = PostParams {
            dry_run: false,
            field_manager: Some(FIELD_MANAGER.to_string()),
        };
        let result = match observed {
            None => {
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(name.to_string()),
                        namespace: Some(self.namespace.clone()),
                        labels: Some(BTreeMap::from([
                            ("app.kubernetes.io/name".into(), "dbward".into()),
                            ("app.kubernetes.io/component".into(), "webhook-certs".into()),
                            ("app.kubernetes.io/managed-by".into(), "dbward".into()),
                        ])),
                        ..ObjectMeta::default()
                    },
                    type_: Some(type_.to_string()),
                    data,
                    ..Secret::default()
                };
                self.secrets.create(&params, &secret).await
            }
            Some(observed) => {
                let mut secret = observed.clone();
                secret.data = data;
                secret.metadata.managed_fields = None;
                self.secrets.replace(name, &params, &secret).await
            }
        };
        result.map_err(|source| {
            if is_status(&source, 409) {
                SelfManagedError::Conflict {
                    namespace: self.namespace.clone(),
                    name: name.to_string(),
                }
            } else {
                SelfManagedError::WriteSecret {
                    namespace: self.namespace.clone(),
                    name: name.to_string(),
                    source: Box::new(source),
                }
            }
        })
    }

    fn fresh_ca(&self, now: i64) -> Result<KeyedCert, SelfManagedError> {
        new_ca(
            &self.ca_common_name,
            at(now - BACKDATE_SECONDS),
            at(now + self.desired.lifetimes.ca),
        )
        .map_err(SelfManagedError::Certificate)
    }

    async fn act(
        &self,
        actions: &[Action],
        world: World,
        now: i64,
    ) -> Result<(), SelfManagedError> {
        let mut ca = match world.observed.ca {
            Found::Usable(ca) => Some(ca),
            _ => None,
        };
        let mut serving = match world.observed.serving {
            Found::Usable(serving) => Some(serving),
            _ => None,
        };
        let mut ca_secret = world.ca_secret;
        let mut tls_secret = world.tls_secret;
        for action in actions {
            match *action {
                Action::CreateCa | Action::RotateCa | Action::DropExpiredCas => {
                    let next = match (action, &ca) {
                        (Action::CreateCa, _) | (_, None) => {
                            CaMaterial::new(self.fresh_ca(now)?, Vec::new())
                        }
                        (Action::RotateCa, Some(current)) => {
                            current.rotated(self.fresh_ca(now)?, now)
                        }
                        (_, Some(current)) => Ok(current.without_expired(now)),
                    }
                    .map_err(SelfManagedError::ReadBack)?;
                    let written = self
                        .write_secret(
                            &self.ca_secret,
                            ca_secret.as_ref(),
                            "Opaque",
                            next.to_data(),
                        )
                        .await?;
                    tracing::info!(
                        secret = %self.ca_secret,
                        action = ?action,
                        ca_not_after = next.current.not_after,
                        cas_in_bundle = 1 + next.previous.len(),
                        "CA Secret written"
                    );
                    ca_secret = Some(written);
                    ca = Some(next);
                }
                Action::InjectBundle(kind) => {
                    let Some(ca) = &ca else { continue };
                    self.inject(kind, &world.webhook_names, &ca.bundle(now))
                        .await?;
                }
                Action::IssueServing(reason) => {
                    let Some(ca) = &ca else { continue };
                    let dns: Vec<String> = self.desired.dns_names.iter().cloned().collect();
                    let ips: Vec<IpAddr> = self.desired.ips.iter().copied().collect();
                    let not_after =
                        (now + self.desired.lifetimes.serving).min(ca.current.not_after);
                    let keyed = sign_serving(
                        &ca.keyed,
                        &self.serving_common_name,
                        &dns,
                        &ips,
                        at(now - BACKDATE_SECONDS),
                        at(not_after),
                    )
                    .map_err(SelfManagedError::Certificate)?;
                    let next = ServingMaterial::new(keyed).map_err(SelfManagedError::ReadBack)?;
                    let written = self
                        .write_secret(
                            &self.tls_secret,
                            tls_secret.as_ref(),
                            "kubernetes.io/tls",
                            next.to_data(&ca.current),
                        )
                        .await?;
                    tracing::info!(
                        secret = %self.tls_secret,
                        reason = reason.as_str(),
                        not_after,
                        "serving certificate issued"
                    );
                    tls_secret = Some(written);
                    serving = Some(next);
                }
                Action::WriteFiles => {
                    let Some(serving) = &serving else { continue };
                    self.write_files(&serving.keyed)?;
                    tracing::info!(
                        cert = %self.cert_file.display(),
                        key = %self.key_file.display(),
                        not_after = serving.cert.not_after,
                        "serving certificate files written"
                    );
                }
            }
        }
        Ok(())
    }

    fn write_files(&self, keyed: &KeyedCert) -> Result<(), SelfManagedError> {
        for file in [&self.cert_file, &self.key_file] {
            if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|source| {
                    SelfManagedError::WriteFiles(CertsError::Write {
                        path: dir.to_path_buf(),
                        source,
                    })
                })?;
            }
        }
        // The key before the certificate: a reader that sees the new certificate finds its key.
        super::write_file(&self.key_file, &keyed.key_pem, true)
            .map_err(SelfManagedError::WriteFiles)?;
        super::write_file(&self.cert_file, &keyed.cert_pem, false)
            .map_err(SelfManagedError::WriteFiles)
    }

    /// Sets `bundle` on every webhook of the configuration, matched by name (a strategic merge
    /// patch leaves everything else as it is).
    async fn inject(
        &self,
        kind: ConfigurationKind,
        webhook_names: &BTreeMap<ConfigurationKind, Vec<String>>,
        bundle: &str,
    ) -> Result<(), SelfManagedError> {
        let encoded = base64::engine::general_purpose::STANDARD.encode(bundle);
        let webhooks: Vec<serde_json::Value> = webhook_names
            .get(&kind)
            .into_iter()
            .flatten()
            .map(|name| serde_json::json!({"name": name, "clientConfig": {"caBundle": encoded}}))
            .collect();
        if webhooks.is_empty() {
            return Ok(());
        }
        let patch = Patch::Strategic(serde_json::json!({ "webhooks": webhooks }));
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        let name = &self.configuration;
        let result = match kind {
            ConfigurationKind::Validating => {
                self.validating.patch(name, &params, &patch).await.map(drop)
            }
            ConfigurationKind::Mutating => {
                self.mutating.patch(name, &params, &patch).await.map(drop)
            }
        };
        match result {
            Ok(()) => {
                tracing::info!(
                    kind = kind.as_str(),
                    name = %name,
                    webhooks = webhooks.len(),
                    "CA bundle injected"
                );
                Ok(())
            }
            Err(source) if is_status(&source, 404) => {
                tracing::info!(
                    kind = kind.as_str(),
                    name = %name,
                    "webhook configuration deleted meanwhile; its CA bundle is set once it exists"
                );
                Ok(())
            }
            Err(source) => Err(SelfManagedError::PatchConfiguration {
                kind: kind.as_str(),
                name: name.clone(),
                source: Box::new(source),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{Args, Command, FromArgMatches};

    use crate::runtime::webhook::WebhookCommand;

    fn parse(args: &[&str]) -> Result<WebhookCommand, clap::Error> {
        let command = WebhookCommand::augment_args(Command::new("webhook"));
        let matches =
            command.try_get_matches_from(std::iter::once("webhook").chain(args.iter().copied()))?;
        WebhookCommand::from_arg_matches(&matches)
    }

    #[test]
    fn flags_and_defaults() {
        let args = parse(&["--self-managed-certs"]).unwrap();
        assert!(args.certs.self_managed_certs);
        assert_eq!(args.certs.ca_secret, "dbward-webhook-ca");
        assert_eq!(args.certs.tls_secret, "dbward-webhook-tls");
        assert_eq!(args.certs.service, "dbward-webhook");
        assert_eq!(args.certs.webhook_configuration, "dbward");
        assert_eq!(
            args.certs.certs_check_interval,
            std::time::Duration::from_secs(120)
        );
        let args = parse(&[
            "--self-managed-certs",
            "--certs-dns",
            "localhost",
            "--certs-ip",
            "127.0.0.1",
            "--certs-check-interval",
            "30s",
        ])
        .unwrap();
        assert_eq!(args.certs.certs_dns, ["localhost"]);
        assert_eq!(
            args.certs.certs_ip,
            ["127.0.0.1".parse::<std::net::IpAddr>().unwrap()]
        );
        assert_eq!(
            args.certs.certs_check_interval,
            std::time::Duration::from_secs(30)
        );
    }

    #[test]
    fn not_with_no_kube() {
        let error = parse(&["--self-managed-certs", "--no-kube"]).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::ArgumentConflict);
    }
}
