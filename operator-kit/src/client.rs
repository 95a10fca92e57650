//! The operators' kube client: client-go's retry semantics instead of kube-rs's default.
//!
//! A kube-rs 5 client retries every 429, 503 and 504 on its own, up to 15 times, with an
//! exponential backoff from 5 ms to 1000 s, whatever the server said. Two things go wrong
//! in an operator:
//! - an eviction refused by a PodDisruptionBudget (a 429 with no `Retry-After`) hangs its
//!   reconcile for minutes instead of returning "blocked" at once;
//! - an API server shedding load is hidden from the per-object backoff, and the retries
//!   are not in the request metrics (the layer counting them sits outside).
//!
//! client-go's REST client retries only when the server asks for it: a 429 or a 5xx that
//! carries `Retry-After: N` is sent again after N seconds, at most 10 times. Anything else
//! is the caller's to handle (here: the per-object backoff of the controllers). That is
//! what [`RetryAfterLayer`] does, and each attempt is counted by the metrics layer.
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::client::{Body, ClientBuilder};
use tower::buffer::BufferLayer;
use tower::retry::{Policy, RetryLayer};

use crate::observe::{ApiMetricsLayer, ObserveMetrics};

/// client-go's `maxRetries` for a request the server asked to retry.
pub const MAX_RETRIES: u32 = 10;

/// A client from `config`, retrying as client-go does, counting every request it sends
/// (each retry too) in `metrics`.
pub fn build(
    mut config: kube::Config,
    metrics: Arc<ObserveMetrics>,
) -> Result<kube::Client, kube::Error> {
    config.default_retry = false;
    // Layers added later wrap the earlier ones: the retries go through the metrics layer.
    // A retry sends through a clone of the service below it; the buffer makes it one (as
    // kube's own Client does around the whole stack).
    Ok(ClientBuilder::try_from(config)?
        .with_layer(&ApiMetricsLayer(metrics))
        .with_layer(&BufferLayer::new(1024))
        .with_layer(&RetryLayer::new(RetryAfter::default()))
        .build())
}

/// Retries a request when, and only when, the server answered 429 or 5xx with a
/// `Retry-After` header in seconds, after that long; at most [`MAX_RETRIES`] times.
#[derive(Clone, Debug, Default)]
pub struct RetryAfter {
    retries: u32,
}

/// The wait the server asked for: `Retry-After` in seconds on a 429 or a 5xx.
pub fn requested_wait(status: StatusCode, headers: &http::HeaderMap) -> Option<Duration> {
    if status != StatusCode::TOO_MANY_REQUESTS && !status.is_server_error() {
        return None;
    }
    let seconds = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(Duration::from_secs(seconds))
}

impl<Res, E> Policy<Request<Body>, Response<Res>, E> for RetryAfter {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        req: &mut Request<Body>,
        result: &mut Result<Response<Res>, E>,
    ) -> Option<Self::Future> {
        let response = result.as_ref().ok()?;
        if self.retries >= MAX_RETRIES {
            return None;
        }
        let wait = requested_wait(response.status(), response.headers())?;
        self.retries += 1;
        tracing::debug!(
            uri = %req.uri(), status = %response.status(), ?wait, retry = self.retries,
            "the API server asked to retry"
        );
        Some(tokio::time::sleep(wait))
    }

    fn clone_request(&mut self, req: &Request<Body>) -> Option<Request<Body>> {
        // Watches and other streamed bodies cannot be sent twice; they are not retried.
        let body = req.body().try_clone()?;
        let mut clone = Request::builder()
            .method(req.method().clone())
            .uri(req.uri().clone())
            .version(req.version())
            .body(body)
            .ok()?;
        *clone.headers_mut() = req.headers().clone();
        *clone.extensions_mut() = req.extensions().clone();
        Some(clone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(retry_after: Option<&str>) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        if let Some(v) = retry_after {
            h.insert(http::header::RETRY_AFTER, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_a_server_that_asks_gets_a_retry() {
        let too_many = StatusCode::TOO_MANY_REQUESTS;
        assert_eq!(
            requested_wait(too_many, &headers(Some("3"))),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            requested_wait(StatusCode::SERVICE_UNAVAILABLE, &headers(Some("1"))),
            Some(Duration::from_secs(1))
        );
        // A PodDisruptionBudget's refusal: 429 without Retry-After, the caller's to handle.
        assert_eq!(requested_wait(too_many, &headers(None)), None);
        assert_eq!(requested_wait(too_many, &headers(Some("soon"))), None);
        assert_eq!(
            requested_wait(StatusCode::CONFLICT, &headers(Some("1"))),
            None
        );
    }

    #[tokio::test]
    async fn retries_stop_after_ten() {
        let mut policy = RetryAfter::default();
        let mut req = Request::new(Body::empty());
        for _ in 0..MAX_RETRIES {
            let mut result: Result<Response<()>, ()> = Ok(Response::builder()
                .status(429)
                .header("Retry-After", "1")
                .body(())
                .unwrap());
            assert!(policy.retry(&mut req, &mut result).is_some());
        }
        let mut result: Result<Response<()>, ()> = Ok(Response::builder()
            .status(429)
            .header("Retry-After", "1")
            .body(())
            .unwrap());
        assert!(policy.retry(&mut req, &mut result).is_none());
    }
}
