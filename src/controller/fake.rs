//! An in-memory Kubernetes API behind a real `kube::Client`, for the controllers' scenario tests:
//! the reconcile under test runs unchanged (its requests built and its answers parsed by kube),
//! without a cluster, in milliseconds.
//!
//! It keeps objects by path and answers what the controllers ask: get, list (label and field
//! selectors of equalities), create (409 AlreadyExists on a taken name), delete (with a uid
//! precondition), status by server-side apply (409 Conflict when the resourceVersion it names is
//! not the current one) and merge patches. Anything else is answered 405, so a scenario never
//! passes through a request the fake ignored.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use super::tests_support::merge;

/// The fake's objects and the requests it answered.
#[derive(Clone, Default)]
pub(crate) struct FakeApi {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// Objects by item path (`/apis/batch/v1/namespaces/a/jobs/name`).
    objects: BTreeMap<String, Value>,
    /// The last resourceVersion (and uid) handed out.
    version: u64,
    /// `METHOD path?query`, in order.
    requests: Vec<String>,
}

/// An item path: its collection, and its name and subresource when it names one.
struct Target {
    collection: String,
    name: Option<String>,
    status: bool,
}

fn target(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let namespaces = segments.iter().position(|s| *s == "namespaces")?;
    let collection_end = namespaces + 3;
    let collection = format!("/{}", segments.get(..collection_end)?.join("/"));
    match segments.get(collection_end..)? {
        [] => Some(Target {
            collection,
            name: None,
            status: false,
        }),
        [name] => Some(Target {
            collection,
            name: Some(name.to_string()),
            status: false,
        }),
        [name, "status"] => Some(Target {
            collection,
            name: Some(name.to_string()),
            status: true,
        }),
        _ => None,
    }
}

/// Whether `object` has `path` (dotted) equal to `value`.
fn field_is(object: &Value, path: &str, value: &str) -> bool {
    let found = path
        .split('.')
        .try_fold(object, |v, key| v.get(key))
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
    found.as_deref() == Some(value)
}

/// Whether `object` matches every `key=value` of a label or field selector.
fn selected(object: &Value, selector: &str, labels: bool) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let Some((key, value)) = term.split_once('=') else {
            return false;
        };
        match labels {
            true => object["metadata"]["labels"][key].as_str() == Some(value),
            false => field_is(object, key, value),
        }
    })
}

fn status_response(code: StatusCode, reason: &str, message: &str) -> Response<Full<Bytes>> {
    respond(
        code,
        &json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code.as_u16(),
        }),
    )
}

fn respond(code: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = code;
    response
}

impl FakeApi {
    /// A `kube::Client` whose every request this fake answers.
    pub(crate) fn client(&self) -> kube::Client {
        let fake = self.clone();
        let service = tower::service_fn(move |request: Request<kube::client::Body>| {
            let fake = fake.clone();
            async move { Ok::<_, Infallible>(fake.answer(request).await) }
        });
        kube::Client::new(service, "default")
    }

    /// Stores `object` at the item path of its kind, name and namespace, as the API server would
    /// have it (uid and resourceVersion kept when given).
    pub(crate) fn insert(&self, collection: &str, mut object: Value) -> Value {
        let mut state = self.lock();
        let version = state.bump();
        let metadata = &mut object["metadata"];
        if metadata["uid"].is_null() {
            metadata["uid"] = json!(format!("uid-{version}"));
        }
        metadata["resourceVersion"] = json!(version);
        if metadata["creationTimestamp"].is_null() {
            metadata["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        let name = metadata["name"].as_str().unwrap_or_default().to_string();
        state
            .objects
            .insert(format!("{collection}/{name}"), object.clone());
        object
    }

    /// The object at `collection`/`name`, if any.
    pub(crate) fn get(&self, collection: &str, name: &str) -> Option<Value> {
        self.lock()
            .objects
            .get(&format!("{collection}/{name}"))
            .cloned()
    }

    /// The objects of `collection`.
    pub(crate) fn list(&self, collection: &str) -> Vec<Value> {
        self.lock().items(collection).cloned().collect()
    }

    /// Changes the object at `collection`/`name` as a controller of the cluster would.
    pub(crate) fn update(&self, collection: &str, name: &str, change: impl FnOnce(&mut Value)) {
        let mut state = self.lock();
        let version = state.bump();
        if let Some(object) = state.objects.get_mut(&format!("{collection}/{name}")) {
            change(object);
            object["metadata"]["resourceVersion"] = json!(version);
        }
    }

    /// The requests answered so far (`METHOD path?query`).
    pub(crate) fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn answer(&self, request: Request<kube::client::Body>) -> Response<Full<Bytes>> {
        let (parts, body) = request.into_parts();
        let body = body.collect_bytes().await.unwrap_or_default();
        let path = parts.uri.path().to_string();
        let query: BTreeMap<String, String> =
            url::form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
                .into_owned()
                .collect();
        let content_type = parts
            .headers
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let mut state = self.lock();
        state.requests.push(format!(
            "{} {}{}",
            parts.method,
            path,
            parts
                .uri
                .query()
                .map(|q| format!("?{q}"))
                .unwrap_or_default()
        ));
        let Some(target) = target(&path) else {
            return status_response(StatusCode::NOT_FOUND, "NotFound", "no such path");
        };
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        match (&parts.method, &target.name) {
            (&Method::GET, Some(name)) => state.get(&target, name),
            (&Method::GET, None) if query.contains_key("watch") => status_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "the fake does not watch",
            ),
            (&Method::GET, None) => state.list(&target, &query),
            (&Method::POST, None) => state.create(&target, body),
            (&Method::DELETE, Some(name)) => state.delete(&target, name, &body),
            (&Method::PATCH, Some(name)) => state.patch(&target, name, &content_type, body),
            _ => status_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "the fake does not answer this",
            ),
        }
    }
}

impl State {
    fn item(target: &Target, name: &str) -> String {
        format!("{}/{name}", target.collection)
    }

    fn bump(&mut self) -> String {
        self.version += 1;
        self.version.to_string()
    }

    /// The objects of `collection` (item paths are `<collection>/<name>`).
    fn items<'a>(&'a self, collection: &str) -> impl Iterator<Item = &'a Value> + use<'a> {
        let prefix = format!("{collection}/");
        self.objects
            .iter()
            .filter(move |(path, _)| path.strip_prefix(&prefix).is_some_and(|n| !n.contains('/')))
            .map(|(_, object)| object)
    }

    fn get(&self, target: &Target, name: &str) -> Response<Full<Bytes>> {
        match self.objects.get(&Self::item(target, name)) {
            Some(object) => respond(StatusCode::OK, object),
            None => status_response(StatusCode::NOT_FOUND, "NotFound", "not found"),
        }
    }

    fn list(&self, target: &Target, query: &BTreeMap<String, String>) -> Response<Full<Bytes>> {
        let labels = query.get("labelSelector").map(String::as_str);
        let fields = query.get("fieldSelector").map(String::as_str);
        let items: Vec<&Value> = self
            .items(&target.collection)
            .filter(|object| labels.is_none_or(|s| selected(object, s, true)))
            .filter(|object| fields.is_none_or(|s| selected(object, s, false)))
            .collect();
        respond(
            StatusCode::OK,
            &json!({
                "kind": "List", "apiVersion": "v1",
                "metadata": {"resourceVersion": self.version.to_string()},
                "items": items,
            }),
        )
    }

    fn create(&mut self, target: &Target, mut object: Value) -> Response<Full<Bytes>> {
        let name = match (
            object["metadata"]["name"].as_str(),
            object["metadata"]["generateName"].as_str(),
        ) {
            (Some(name), _) => name.to_string(),
            (None, Some(prefix)) => format!("{prefix}{}", self.version + 1),
            (None, None) => {
                return status_response(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", "no name");
            }
        };
        let path = Self::item(target, &name);
        if self.objects.contains_key(&path) {
            return status_response(
                StatusCode::CONFLICT,
                "AlreadyExists",
                &format!("{name:?} already exists"),
            );
        }
        let version = self.bump();
        let metadata = &mut object["metadata"];
        metadata["name"] = json!(name);
        metadata["uid"] = json!(format!("uid-{version}"));
        metadata["resourceVersion"] = json!(version);
        metadata["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        self.objects.insert(path, object.clone());
        respond(StatusCode::CREATED, &object)
    }

    fn delete(&mut self, target: &Target, name: &str, options: &Value) -> Response<Full<Bytes>> {
        let path = Self::item(target, name);
        let Some(object) = self.objects.get(&path) else {
            return status_response(StatusCode::NOT_FOUND, "NotFound", "not found");
        };
        if let Some(uid) = options["preconditions"]["uid"].as_str()
            && object["metadata"]["uid"].as_str() != Some(uid)
        {
            return status_response(StatusCode::CONFLICT, "Conflict", "the uid precondition");
        }
        let object = self.objects.remove(&path).unwrap_or_default();
        respond(StatusCode::OK, &object)
    }

    fn patch(
        &mut self,
        target: &Target,
        name: &str,
        content_type: &str,
        patch: Value,
    ) -> Response<Full<Bytes>> {
        let path = Self::item(target, name);
        let version = self.version + 1;
        let Some(object) = self.objects.get_mut(&path) else {
            return status_response(StatusCode::NOT_FOUND, "NotFound", "not found");
        };
        match content_type {
            "application/apply-patch+yaml" if target.status => {
                let expected = patch["metadata"]["resourceVersion"].as_str();
                if expected
                    .is_some_and(|v| Some(v) != object["metadata"]["resourceVersion"].as_str())
                {
                    return status_response(
                        StatusCode::CONFLICT,
                        "Conflict",
                        "the object has been modified",
                    );
                }
                object["status"] = patch["status"].clone();
            }
            "application/merge-patch+json" => merge(object, patch),
            _ => {
                return status_response(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UnsupportedMediaType",
                    "the fake takes status applies and merge patches",
                );
            }
        }
        object["metadata"]["resourceVersion"] = json!(version.to_string());
        let object = object.clone();
        self.version = version;
        respond(StatusCode::OK, &object)
    }
}
