//! Where reconciles come from and what they cost on the API server:
//! - [`TriggerLayer`], a tracing layer that counts each reconcile by its trigger. kube-runtime
//!   knows why it runs a reconcile and records it as `object.reason` on its
//!   `reconciling object` span, without handing it to the reconciler.
//! - [`ApiMetricsLayer`], a tower layer on the kube client that counts API requests by verb,
//!   resource and status code.
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Method, Request, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tracing::field::{Field, Visit};
use tracing::span::Attributes;
use tracing::{Id, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context as LayerContext;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerLabels {
    /// Kind of the reconciled object, e.g. `NodePool`.
    pub kind: String,
    /// `object_updated`, `related_object_updated`, `reconciler_requeue`, `error_requeue`,
    /// `resync` or `unknown`.
    pub trigger: &'static str,
    /// For `related_object_updated`: the kind of the related object; else empty.
    pub related: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// get, list, watch, create, update, patch, apply, delete.
    pub verb: &'static str,
    /// Plural resource, with its subresource: `nodepools/status`.
    pub resource: String,
    /// HTTP status code, or `error` when no response came.
    pub code: String,
}

/// Counters fed by the two layers.
#[derive(Clone, Debug, Default)]
pub struct ObserveMetrics {
    pub triggers: Family<TriggerLabels, Counter>,
    pub requests: Family<RequestLabels, Counter>,
}

impl ObserveMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "reconcile_triggers",
            "Reconciles by the kind reconciled and what triggered them",
            self.triggers.clone(),
        );
        registry.register(
            "api_requests",
            "API server requests by verb, resource and status code",
            self.requests.clone(),
        );
    }
}

/// Turns kube-runtime's reconcile reason into bounded labels.
pub fn classify_trigger(reason: &str) -> (&'static str, String) {
    if let Some(rest) = reason.strip_prefix("related object updated: ") {
        let kind = rest.split('.').next().unwrap_or_default().to_owned();
        return ("related_object_updated", kind);
    }
    let trigger = match reason {
        "object updated" => "object_updated",
        "reconciler requested retry" => "reconciler_requeue",
        "error policy requested retry" => "error_requeue",
        "bulk reconcile requested" => "resync",
        _ => "unknown",
    };
    (trigger, String::new())
}

/// Counts `reconciling object` spans by `object.reason`. Give it a filter that passes
/// only that span (see [`TriggerLayer::filter`]) so it enables nothing else.
pub struct TriggerLayer(pub Arc<ObserveMetrics>);

impl TriggerLayer {
    /// Passes only kube-runtime's `reconciling object` spans.
    pub fn filter() -> tracing_subscriber::filter::FilterFn<fn(&tracing::Metadata<'_>) -> bool> {
        tracing_subscriber::filter::FilterFn::new(|m: &tracing::Metadata<'_>| {
            m.is_span() && m.name() == "reconciling object"
        })
    }
}

#[derive(Default)]
struct ReasonVisitor {
    reason: Option<String>,
    object: Option<String>,
}

impl Visit for ReasonVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "object.reason" => self.reason = Some(format!("{value:?}")),
            "object.ref" => self.object = Some(format!("{value:?}")),
            _ => {}
        }
    }
}

impl<S: Subscriber> Layer<S> for TriggerLayer {
    fn on_new_span(&self, attrs: &Attributes<'_>, _id: &Id, _ctx: LayerContext<'_, S>) {
        let mut visitor = ReasonVisitor::default();
        attrs.record(&mut visitor);
        let (Some(reason), Some(object)) = (visitor.reason, visitor.object) else {
            return;
        };
        let (trigger, related) = classify_trigger(&reason);
        let kind = object.split('.').next().unwrap_or_default().to_owned();
        self.0
            .triggers
            .get_or_create(&TriggerLabels {
                kind,
                trigger,
                related,
            })
            .inc();
    }
}

/// Counts the kube client's requests.
#[derive(Clone)]
pub struct ApiMetricsLayer(pub Arc<ObserveMetrics>);

impl<S> tower::Layer<S> for ApiMetricsLayer {
    type Service = ApiMetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ApiMetricsService {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct ApiMetricsService<S> {
    inner: S,
    metrics: Arc<ObserveMetrics>,
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for ApiMetricsService<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let is_apply = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/apply-patch"));
        let (verb, resource) =
            describe(req.method(), req.uri().path(), req.uri().query(), is_apply);
        let metrics = self.metrics.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await;
            let code = match &res {
                Ok(r) => r.status().as_u16().to_string(),
                Err(_) => "error".to_owned(),
            };
            metrics
                .requests
                .get_or_create(&RequestLabels {
                    verb,
                    resource,
                    code,
                })
                .inc();
            res
        })
    }
}

/// The verb and resource of an API request path, e.g. `PUT
/// /apis/nodepool.dev/v1alpha1/nodepools/a/status` is (`update`, `nodepools/status`).
pub fn describe(
    method: &Method,
    path: &str,
    query: Option<&str>,
    is_apply: bool,
) -> (&'static str, String) {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest: &[&str] = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => return (verb_of(method, false, false, is_apply), "other".to_owned()),
    };
    let rest = match rest {
        ["namespaces", _ns, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    let resource = match rest {
        [plural] => (*plural).to_owned(),
        [plural, _name] => (*plural).to_owned(),
        [plural, _name, sub, ..] => format!("{plural}/{sub}"),
        [] => "other".to_owned(),
    };
    let named = rest.len() >= 2;
    let watch = query.is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    (verb_of(method, named, watch, is_apply), resource)
}

fn verb_of(method: &Method, named: bool, watch: bool, is_apply: bool) -> &'static str {
    match *method {
        Method::GET if watch => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH if is_apply => "apply",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_paths_name_verb_and_resource() {
        let d = |m: Method, p: &str, q: Option<&str>, apply: bool| describe(&m, p, q, apply);
        assert_eq!(
            d(
                Method::PUT,
                "/apis/nodepool.dev/v1alpha1/nodepools/a/status",
                None,
                false
            ),
            ("update", "nodepools/status".into())
        );
        assert_eq!(
            d(
                Method::PATCH,
                "/apis/nodepool.dev/v1alpha1/nodepools/a",
                None,
                true
            ),
            ("apply", "nodepools".into())
        );
        assert_eq!(
            d(
                Method::GET,
                "/api/v1/pods",
                Some("watch=true&resourceVersion=5"),
                false
            ),
            ("watch", "pods".into())
        );
        assert_eq!(
            d(Method::GET, "/api/v1/nodes", Some("labelSelector=x"), false),
            ("list", "nodes".into())
        );
        assert_eq!(
            d(Method::GET, "/api/v1/nodes/n1", None, false),
            ("get", "nodes".into())
        );
        assert_eq!(
            d(
                Method::POST,
                "/api/v1/namespaces/default/pods/p/eviction",
                None,
                false
            ),
            ("create", "pods/eviction".into())
        );
        assert_eq!(
            d(
                Method::DELETE,
                "/api/v1/namespaces/default/pods/p",
                None,
                false
            ),
            ("delete", "pods".into())
        );
        assert_eq!(
            d(Method::GET, "/api/v1/namespaces", None, false),
            ("list", "namespaces".into())
        );
        assert_eq!(
            d(
                Method::POST,
                "/apis/events.k8s.io/v1/namespaces/default/events",
                None,
                false
            ),
            ("create", "events".into())
        );
    }

    #[test]
    fn reconcile_reasons_become_bounded_triggers() {
        assert_eq!(
            classify_trigger("object updated"),
            ("object_updated", String::new())
        );
        assert_eq!(
            classify_trigger("related object updated: Node.v1./general-z7tc6"),
            ("related_object_updated", "Node".to_owned())
        );
        assert_eq!(
            classify_trigger("reconciler requested retry").0,
            "reconciler_requeue"
        );
        assert_eq!(
            classify_trigger("error policy requested retry").0,
            "error_requeue"
        );
        assert_eq!(classify_trigger("bulk reconcile requested").0, "resync");
        assert_eq!(classify_trigger("something new").0, "unknown");
    }
}
