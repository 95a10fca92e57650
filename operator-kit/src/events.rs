//! Kubernetes Events: what an operator tells the people who `kubectl describe` its objects.
use kube::Resource;

/// Publishes a Kubernetes Event about `obj`. Servers before 1.22 refuse an
/// events.k8s.io/v1 Event in `default` about a cluster-scoped object ("involvedObject.namespace
/// does not match event.namespace"); for those the reference names `default` too.
pub async fn publish<K: Resource<DynamicType = ()>>(
    recorder: &kube::runtime::events::Recorder,
    obj: &K,
    event: kube::runtime::events::Event,
) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static DEFAULT_NAMESPACE_FOR_CLUSTER_SCOPED: AtomicBool = AtomicBool::new(false);
    let mut reference = obj.object_ref(&());
    if reference.namespace.is_none() && DEFAULT_NAMESPACE_FOR_CLUSTER_SCOPED.load(Ordering::Relaxed)
    {
        reference.namespace = Some("default".into());
    }
    match recorder.publish(&event, &reference).await {
        Ok(()) => {}
        Err(kube::Error::Api(s))
            if reference.namespace.is_none()
                && s.message.contains("does not match event.namespace") =>
        {
            DEFAULT_NAMESPACE_FOR_CLUSTER_SCOPED.store(true, Ordering::Relaxed);
            reference.namespace = Some("default".into());
            if let Err(e) = recorder.publish(&event, &reference).await {
                tracing::warn!(error = %e, reason = %event.reason, "publishing event failed");
            }
        }
        Err(e) => tracing::warn!(error = %e, reason = %event.reason, "publishing event failed"),
    }
}
