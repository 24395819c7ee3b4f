//! The Kubernetes API requests this process makes, counted on the client's side by verb and
//! resource and served on every `/metrics` as `dbward_kube_requests_total`. The API server's own
//! counters cannot tell one client from another (the garbage collector reads the owners of
//! dbward's Secrets, for instance), so a benchmark of dbward's requests reads these.
//!
//! [`client`] builds the process's client with the counting layer; [`classify`] is pure.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::task::{Context, Poll};

use hyper::{Method, Request};
use kube::Client;
use kube::client::ClientBuilder;

use crate::exposition::{Exposition, Type};

/// The family served on `/metrics`.
pub const METRIC: &str = "dbward_kube_requests_total";

/// Requests made so far, by (verb, resource).
static COUNTS: Mutex<BTreeMap<(&'static str, String), u64>> = Mutex::new(BTreeMap::new());

/// A client for `config` whose requests are counted.
pub fn client(config: kube::Config) -> Result<Client, kube::Error> {
    Ok(ClientBuilder::try_from(config)?
        .with_layer(&CountLayer)
        .build())
}

/// The verb and resource of a request, named as the API server's `apiserver_request_total`
/// names them: `GET`, `LIST`, `WATCH`, `POST`, `PUT`, `PATCH`, `DELETE`, `DELETECOLLECTION`;
/// the plural resource, with `/subresource` when there is one (`serviceusers/status`), or
/// `-` for a path that names no resource (`/version`, discovery).
pub fn classify(method: &Method, path: &str, query: Option<&str>) -> (&'static str, String) {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match segments.first() {
        Some(&"api") if segments.len() > 2 => &segments[2..],
        Some(&"apis") if segments.len() > 3 => &segments[3..],
        _ => &[][..],
    };
    // namespaces/NS/RESOURCE/... is a namespaced resource; namespaces[/NS[/status|finalize]]
    // the namespaces themselves (as the API server's request info reads a path).
    let rest = match rest {
        ["namespaces", _, resource, tail @ ..] if !matches!(*resource, "status" | "finalize") => {
            let mut r = vec![*resource];
            r.extend_from_slice(tail);
            r
        }
        other => other.to_vec(),
    };
    let resource = match rest.as_slice() {
        [] => "-".to_owned(),
        [resource] | [resource, _] => (*resource).to_owned(),
        [resource, _, sub, ..] => format!("{resource}/{sub}"),
    };
    let named = rest.len() > 1;
    let watching = query
        .unwrap_or_default()
        .split('&')
        .any(|pair| pair == "watch=true" || pair == "watch=1");
    let verb = match *method {
        Method::GET if watching => "WATCH",
        Method::GET if named || rest.is_empty() => "GET",
        Method::GET => "LIST",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE if named => "DELETE",
        Method::DELETE => "DELETECOLLECTION",
        _ => "OTHER",
    };
    (verb, resource)
}

fn record(verb: &'static str, resource: String) {
    let mut counts = COUNTS.lock().unwrap_or_else(|e| e.into_inner());
    *counts.entry((verb, resource)).or_insert(0) += 1;
}

/// Writes `dbward_kube_requests_total{verb, resource}`.
pub fn render(text: &mut Exposition) {
    let counts = COUNTS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    text.family(
        METRIC,
        Type::Counter,
        "Kubernetes API requests this process made, by verb and resource (counted by the client).",
    );
    for ((verb, resource), n) in &counts {
        text.sample(METRIC, &[("verb", verb), ("resource", resource)], n);
    }
}

/// Counts every request that passes.
#[derive(Clone, Copy, Debug)]
struct CountLayer;

impl<S> tower_layer::Layer<S> for CountLayer {
    type Service = Counted<S>;
    fn layer(&self, inner: S) -> Counted<S> {
        Counted(inner)
    }
}

#[derive(Clone, Debug)]
struct Counted<S>(S);

impl<S, B> tower_service::Service<Request<B>> for Counted<S>
where
    S: tower_service::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> S::Future {
        let (verb, resource) = classify(
            request.method(),
            request.uri().path(),
            request.uri().query(),
        );
        record(verb, resource);
        self.0.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(method: Method, url: &str) -> (&'static str, String) {
        let (path, query) = url
            .split_once('?')
            .map_or((url, None), |(p, q)| (p, Some(q)));
        classify(&method, path, query)
    }

    #[test]
    fn verbs_and_resources_are_named_as_the_api_server_names_them() {
        let g = "/apis/dbward.dev/v1alpha1";
        let cases = [
            (
                c(Method::GET, &format!("{g}/serviceusers?&limit=500")),
                ("LIST", "serviceusers"),
            ),
            (
                c(
                    Method::GET,
                    &format!("{g}/serviceusers?&watch=true&timeoutSeconds=290"),
                ),
                ("WATCH", "serviceusers"),
            ),
            (
                c(Method::GET, &format!("{g}/namespaces/a/serviceusers/u1")),
                ("GET", "serviceusers"),
            ),
            (
                c(
                    Method::PATCH,
                    &format!("{g}/namespaces/a/serviceusers/u1/status?&force=true"),
                ),
                ("PATCH", "serviceusers/status"),
            ),
            (
                c(Method::GET, &format!("{g}/admissionpolicies/default")),
                ("GET", "admissionpolicies"),
            ),
            (
                c(Method::GET, "/api/v1/namespaces/a/secrets?labelSelector=x"),
                ("LIST", "secrets"),
            ),
            (
                c(Method::POST, "/apis/events.k8s.io/v1/namespaces/a/events?"),
                ("POST", "events"),
            ),
            (
                c(Method::DELETE, "/api/v1/namespaces/a/configmaps/x"),
                ("DELETE", "configmaps"),
            ),
            (
                c(Method::DELETE, "/api/v1/namespaces/a/configmaps"),
                ("DELETECOLLECTION", "configmaps"),
            ),
            (c(Method::GET, "/api/v1/namespaces"), ("LIST", "namespaces")),
            (
                c(Method::GET, "/api/v1/namespaces/a"),
                ("GET", "namespaces"),
            ),
            (
                c(Method::PUT, "/api/v1/namespaces/a/finalize"),
                ("PUT", "namespaces/finalize"),
            ),
            (c(Method::GET, "/version"), ("GET", "-")),
            (c(Method::GET, "/apis/dbward.dev/v1alpha1"), ("GET", "-")),
        ];
        for (got, (verb, resource)) in cases {
            assert_eq!(got, (verb, resource.to_owned()));
        }
    }

    #[tokio::test]
    async fn a_counted_client_counts_each_request_it_sends() {
        use tower_service::Service as _;
        let before = |counts: &BTreeMap<(&'static str, String), u64>| {
            counts
                .get(&("GET", "widgets".to_owned()))
                .copied()
                .unwrap_or(0)
        };
        let start = before(&COUNTS.lock().unwrap());
        /// Answers every request at once.
        struct Answer;
        impl tower_service::Service<Request<()>> for Answer {
            type Response = ();
            type Error = std::convert::Infallible;
            type Future = std::future::Ready<Result<(), Self::Error>>;
            fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
                Poll::Ready(Ok(()))
            }
            fn call(&mut self, _: Request<()>) -> Self::Future {
                std::future::ready(Ok(()))
            }
        }
        let mut service = tower_layer::Layer::layer(&CountLayer, Answer);
        for _ in 0..3 {
            let request = Request::get("https://h/apis/x.io/v1/namespaces/n/widgets/w")
                .body(())
                .unwrap();
            service.call(request).await.unwrap();
        }
        assert_eq!(before(&COUNTS.lock().unwrap()) - start, 3);
        let mut text = Exposition::new();
        render(&mut text);
        assert!(
            text.finish()
                .contains("dbward_kube_requests_total{verb=\"GET\",resource=\"widgets\"}"),
        );
    }
}
