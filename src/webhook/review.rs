//! `admission.k8s.io/v1` AdmissionReview in, AdmissionReview out.
//!
//! The review is parsed once, borrowing its strings from the request body; the engine gets a
//! [`Request`] pointing into it, and the answer is serialized straight from the verdict.

use std::borrow::Cow;

use base64::Engine as _;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::engine::{self, GROUP, Operation, Request, Snapshot, Verdict};
use super::metrics::{Endpoint, Outcome};

const API_VERSION: &str = "admission.k8s.io/v1";
const REVIEW_KIND: &str = "AdmissionReview";

#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("the body is not JSON: {0}")]
    NotJson(serde_json::Error),
    #[error("the body is not an admission.k8s.io/v1 AdmissionReview: {0}")]
    NotAReview(String),
    #[error("the AdmissionReview has no request")]
    NoRequest,
    #[error("the AdmissionReview's request is malformed: {0}")]
    MalformedRequest(serde_json::Error),
    #[error("unknown operation {0:?}")]
    UnknownOperation(String),
}

/// The parts of an AdmissionReview the webhook reads; everything else is skipped unparsed.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReview<'a> {
    #[serde(borrow, default)]
    pub api_version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub request: Option<AdmissionRequest<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest<'a> {
    #[serde(borrow)]
    pub uid: Cow<'a, str>,
    #[serde(borrow)]
    pub kind: GroupVersionKind<'a>,
    #[serde(borrow, default)]
    pub sub_resource: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub namespace: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub operation: Cow<'a, str>,
    #[serde(default, deserialize_with = "engine_object")]
    pub object: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "engine_object")]
    pub old_object: Option<serde_json::Value>,
    #[serde(default)]
    pub dry_run: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct GroupVersionKind<'a> {
    #[serde(borrow, default)]
    pub group: Cow<'a, str>,
    #[serde(borrow, default)]
    pub version: Cow<'a, str>,
    #[serde(borrow)]
    pub kind: Cow<'a, str>,
}

/// Reads an object as the engine needs it: only the fields the engine reads
/// ([`engine::OBJECT_FIELDS`], and of `metadata` only [`engine::METADATA_FIELDS`]). The rest —
/// `status`, `metadata.managedFields`, kubectl's escaped last-applied copy of the whole object,
/// often most of a review's bytes — is skipped without building a tree of maps or unescaping a
/// string; both objects of an UPDATE are read the same way.
fn engine_object<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<serde_json::Value>, D::Error> {
    deserializer.deserialize_option(OptionalObject)
}

struct OptionalObject;

impl<'de> Visitor<'de> for OptionalObject {
    type Value = Option<serde_json::Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Kubernetes object or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer
            .deserialize_map(ObjectMap {
                level: Level::Object,
            })
            .map(Some)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Object,
    Metadata,
}

/// A JSON object, keeping only the engine's fields at its level.
struct ObjectMap {
    level: Level,
}

impl<'de> Visitor<'de> for ObjectMap {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.level {
            Level::Object => "a Kubernetes object",
            Level::Metadata => "object metadata",
        })
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let kept = match self.level {
                Level::Object => engine::OBJECT_FIELDS.contains(&&*key),
                Level::Metadata => engine::METADATA_FIELDS.contains(&&*key),
            };
            if !kept {
                map.next_value::<de::IgnoredAny>()?;
                continue;
            }
            let value = if self.level == Level::Object && key == "metadata" {
                map.next_value_seed(Metadata)?
            } else {
                map.next_value()?
            };
            out.insert(key.into_owned(), value);
        }
        Ok(serde_json::Value::Object(out))
    }
}

struct Metadata;

impl<'de> DeserializeSeed<'de> for Metadata {
    type Value = serde_json::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(ObjectMap {
            level: Level::Metadata,
        })
    }
}

/// Just enough to find the uid of a review whose request is otherwise malformed.
#[derive(Deserialize)]
struct UidOnly<'a> {
    #[serde(borrow)]
    request: Option<UidOnlyRequest<'a>>,
}

#[derive(Deserialize)]
struct UidOnlyRequest<'a> {
    #[serde(borrow)]
    uid: Option<Cow<'a, str>>,
}

/// A request that cannot be judged: answered with 400, or with a denying review when its uid
/// could be read.
#[derive(Debug)]
pub struct Rejected {
    pub error: ReviewError,
    /// The answer to send: a denying AdmissionReview (HTTP 200) when `Some`.
    pub review: Option<Vec<u8>>,
}

/// Parses the body, once, and returns its request.
pub fn parse(body: &[u8]) -> Result<AdmissionRequest<'_>, Rejected> {
    let review: AdmissionReview<'_> = match serde_json::from_slice(body) {
        Ok(review) => review,
        Err(error) if error.is_syntax() || error.is_eof() => {
            return Err(Rejected {
                error: ReviewError::NotJson(error),
                review: None,
            });
        }
        Err(error) => {
            return Err(rejected_with_uid(
                body,
                ReviewError::MalformedRequest(error),
            ));
        }
    };
    if review.api_version.as_deref() != Some(API_VERSION)
        || review.kind.as_deref() != Some(REVIEW_KIND)
    {
        return Err(Rejected {
            error: ReviewError::NotAReview(format!(
                "apiVersion {:?}, kind {:?}",
                review.api_version.as_deref().unwrap_or(""),
                review.kind.as_deref().unwrap_or("")
            )),
            review: None,
        });
    }
    review.request.ok_or(Rejected {
        error: ReviewError::NoRequest,
        review: None,
    })
}

fn rejected_with_uid(body: &[u8], error: ReviewError) -> Rejected {
    let uid = serde_json::from_slice::<UidOnly<'_>>(body)
        .ok()
        .and_then(|r| r.request)
        .and_then(|r| r.uid)
        .filter(|uid| !uid.is_empty());
    let review = uid.map(|uid| deny_bad_request(&uid, &error.to_string()));
    Rejected { error, review }
}

/// The object's name: the request's, or the object's own (empty under `generateName`).
fn name<'r>(request: &'r AdmissionRequest<'_>) -> &'r str {
    if let Some(name) = request.name.as_deref().filter(|n| !n.is_empty()) {
        return name;
    }
    request
        .object
        .as_ref()
        .or(request.old_object.as_ref())
        .and_then(|o| o.pointer("/metadata/name"))
        .and_then(|n| n.as_str())
        .unwrap_or("")
}

/// What the handler logs and counts about an answer.
#[derive(Debug, Clone, Copy)]
pub struct Answered {
    pub outcome: Outcome,
    pub warnings: usize,
    pub patch_ops: usize,
}

/// Judges a parsed request and serializes the answering AdmissionReview.
///
/// Objects of other API groups, and kinds the engine does not know, are allowed untouched.
/// `/mutate` always allows and carries the defaults as a JSON Patch; `/validate` carries the
/// verdict, every field error, and the warnings. `dryRun` changes nothing: there are no side
/// effects to skip.
pub fn answer(
    endpoint: Endpoint,
    request: &AdmissionRequest<'_>,
    snapshot: &Snapshot,
) -> (Vec<u8>, Answered) {
    let Some(operation) = Operation::parse(&request.operation) else {
        let error = ReviewError::UnknownOperation(request.operation.to_string());
        let answered = Answered {
            outcome: Outcome::BadRequest,
            warnings: 0,
            patch_ops: 0,
        };
        return (deny_bad_request(&request.uid, &error.to_string()), answered);
    };
    if request.kind.group != GROUP {
        let answered = Answered {
            outcome: Outcome::Allowed,
            warnings: 0,
            patch_ops: 0,
        };
        return (allow_untouched(&request.uid), answered);
    }
    let name = name(request);
    let engine_request = Request {
        operation,
        kind: &request.kind.kind,
        namespace: request.namespace.as_deref().filter(|ns| !ns.is_empty()),
        name,
        object: request.object.as_ref(),
        old_object: request.old_object.as_ref(),
        subresource: request.sub_resource.as_deref().filter(|s| !s.is_empty()),
    };
    match endpoint {
        Endpoint::Mutate => mutate_answer(
            &request.uid,
            &engine::admit_for_mutation(&engine_request, snapshot),
        ),
        Endpoint::Validate => {
            let verdict = engine::admit_for_validation(&engine_request, snapshot);
            validate_answer(&request.uid, &request.kind.kind, name, &verdict)
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<StatusOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
}

#[derive(Serialize)]
struct StatusOut<'a> {
    code: u16,
    message: String,
    reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<DetailsOut<'a>>,
}

#[derive(Serialize)]
struct DetailsOut<'a> {
    name: &'a str,
    group: &'static str,
    kind: &'a str,
    causes: Vec<CauseOut<'a>>,
}

#[derive(Serialize)]
struct CauseOut<'a> {
    reason: &'static str,
    message: String,
    field: &'a str,
}

fn to_json(response: ResponseOut<'_>) -> Vec<u8> {
    let review = ReviewOut {
        api_version: API_VERSION,
        kind: REVIEW_KIND,
        response,
    };
    // Room for an allowed answer with a patch or a few warnings at once, instead of growing
    // from serde_json's 128 bytes several times.
    let mut out = Vec::with_capacity(1024);
    // Serializing these plain structs of strings and numbers into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, &review);
    out
}

fn allow_untouched(uid: &str) -> Vec<u8> {
    to_json(ResponseOut {
        uid,
        allowed: true,
        status: None,
        patch: None,
        patch_type: None,
        warnings: &[],
    })
}

/// A denying answer for a request that could not be judged (HTTP semantics: 400).
pub fn deny_bad_request(uid: &str, message: &str) -> Vec<u8> {
    to_json(ResponseOut {
        uid,
        allowed: false,
        status: Some(StatusOut {
            code: 400,
            message: message.to_string(),
            reason: "BadRequest",
            details: None,
        }),
        patch: None,
        patch_type: None,
        warnings: &[],
    })
}

fn mutate_answer(uid: &str, verdict: &Verdict) -> (Vec<u8>, Answered) {
    let patch_ops = verdict.patch.0.len();
    let patch = (patch_ops > 0).then(|| {
        let json = serde_json::to_vec(&verdict.patch).unwrap_or_default();
        base64::engine::general_purpose::STANDARD.encode(json)
    });
    let body = to_json(ResponseOut {
        uid,
        allowed: true,
        status: None,
        patch_type: patch.as_ref().map(|_| "JSONPatch"),
        patch,
        // Warnings come from /validate only, so kubectl prints each once.
        warnings: &[],
    });
    let answered = Answered {
        outcome: Outcome::Allowed,
        warnings: 0,
        patch_ops,
    };
    (body, answered)
}

fn validate_answer(uid: &str, kind: &str, name: &str, verdict: &Verdict) -> (Vec<u8>, Answered) {
    let status = (!verdict.allowed).then(|| StatusOut {
        code: 422,
        message: verdict.message(kind, name),
        reason: "Invalid",
        details: Some(DetailsOut {
            name,
            group: GROUP,
            kind,
            causes: verdict
                .errors
                .iter()
                .map(|error| {
                    // The API server's cause message is the error without its field path.
                    let full = error.to_string();
                    let message = full
                        .strip_prefix(error.field.as_str())
                        .and_then(|rest| rest.strip_prefix(": "))
                        .map_or_else(|| full.clone(), str::to_string);
                    CauseOut {
                        reason: error.reason(),
                        message,
                        field: &error.field,
                    }
                })
                .collect(),
        }),
    });
    let body = to_json(ResponseOut {
        uid,
        allowed: verdict.allowed,
        status,
        patch: None,
        patch_type: None,
        warnings: &verdict.warnings,
    });
    let answered = Answered {
        outcome: if verdict.allowed {
            Outcome::Allowed
        } else {
            Outcome::Denied
        },
        warnings: verdict.warnings.len(),
        patch_ops: 0,
    };
    (body, answered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn review(request: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": request,
        }))
        .unwrap()
    }

    #[test]
    fn rejects_what_is_not_a_review() {
        let not_json = parse(b"{not json").unwrap_err();
        assert!(matches!(not_json.error, ReviewError::NotJson(_)));
        assert!(not_json.review.is_none());

        let other = parse(br#"{"apiVersion":"v1","kind":"Pod"}"#).unwrap_err();
        assert!(
            matches!(other.error, ReviewError::NotAReview(_)),
            "{other:?}"
        );

        let no_request =
            parse(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#).unwrap_err();
        assert!(matches!(no_request.error, ReviewError::NoRequest));

        let no_uid = review(
            json!({"kind": {"group": "dbward.dev", "version": "v1alpha1", "kind": "Database"}, "operation": "CREATE"}),
        );
        let no_uid = parse(&no_uid).unwrap_err();
        assert!(matches!(no_uid.error, ReviewError::MalformedRequest(_)));
        assert!(no_uid.review.is_none());
    }

    #[test]
    fn denies_a_malformed_request_whose_uid_is_readable() {
        let body = review(json!({"uid": "u-1", "kind": "Database", "operation": "CREATE"}));
        let rejected = parse(&body).unwrap_err();
        let answer: Value = serde_json::from_slice(&rejected.review.unwrap()).unwrap();
        assert_eq!(answer["response"]["uid"], "u-1");
        assert_eq!(answer["response"]["allowed"], false);
        assert_eq!(answer["response"]["status"]["code"], 400);
    }

    #[test]
    fn allows_other_groups_untouched_and_denies_unknown_operations() {
        let body = review(json!({
            "uid": "u-2", "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "operation": "CREATE", "object": {"metadata": {"name": "x"}}
        }));
        let parsed = parse(&body).unwrap();
        let (out, answered) = answer(
            Endpoint::Mutate,
            &parsed,
            &Snapshot::from_objects([], "dbward-system", false),
        );
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            out,
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {"uid": "u-2", "allowed": true}})
        );
        assert_eq!(answered.outcome, Outcome::Allowed);

        let body = review(json!({
            "uid": "u-3", "kind": {"group": "dbward.dev", "version": "v1alpha1", "kind": "Database"},
            "operation": "PATCH"
        }));
        let parsed = parse(&body).unwrap();
        let (out, answered) = answer(
            Endpoint::Validate,
            &parsed,
            &Snapshot::from_objects([], "dbward-system", false),
        );
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(out["response"]["allowed"], false);
        assert_eq!(answered.outcome, Outcome::BadRequest);
    }

    #[test]
    fn objects_reach_the_engine_as_far_as_it_reads_them() {
        let object = json!({
            "apiVersion": "dbward.dev/v1alpha1", "kind": "Database",
            "metadata": {
                "name": "orders", "namespace": "shop", "managedFields": [{"manager": "kubectl"}],
                "labels": {"a": "b"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"a\": 1}"}
            },
            "spec": {"project": "acme", "nested": {"managedFields": 1}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}
        });
        let body = review(json!({
            "uid": "u-5", "kind": {"group": "dbward.dev", "version": "v1alpha1", "kind": "Database"},
            "operation": "UPDATE", "object": object, "oldObject": null
        }));
        let request = parse(&body).unwrap();
        assert_eq!(
            request.object,
            Some(json!({
                "metadata": {"name": "orders", "namespace": "shop"},
                "spec": {"project": "acme", "nested": {"managedFields": 1}}
            }))
        );
        assert_eq!(request.old_object, None);

        let not_an_object = review(json!({
            "uid": "u-6", "kind": {"group": "dbward.dev", "version": "v1alpha1", "kind": "Database"},
            "operation": "CREATE", "object": [1]
        }));
        let rejected = parse(&not_an_object).unwrap_err();
        assert!(matches!(rejected.error, ReviewError::MalformedRequest(_)));
        assert!(rejected.review.is_some(), "the uid is readable");
    }

    #[test]
    fn borrows_strings_from_the_body() {
        let body = review(json!({
            "uid": "u-4", "kind": {"group": "dbward.dev", "version": "v1alpha1", "kind": "Database"},
            "operation": "CREATE", "name": "orders", "namespace": "shop"
        }));
        let parsed = parse(&body).unwrap();
        let request = parsed;
        assert!(matches!(request.uid, Cow::Borrowed("u-4")));
        assert!(matches!(request.kind.kind, Cow::Borrowed("Database")));
    }
}
