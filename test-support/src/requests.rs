//! What the API server counts of the requests it served: `apiserver_request_total`, by
//! verb and resource, read from its `/metrics`.
use std::collections::BTreeMap;

/// `apiserver_request_total` by (verb, resource[/subresource]).
pub async fn apiserver_requests(
    client: &kube::Client,
) -> anyhow::Result<BTreeMap<(String, String), u64>> {
    Ok(parse_request_totals(&metrics(client).await?))
}

/// `apiserver_request_total` by (verb, resource[/subresource]), of the requests answered
/// with HTTP status `code` only.
pub async fn apiserver_requests_answered(
    client: &kube::Client,
    code: u16,
) -> anyhow::Result<BTreeMap<(String, String), u64>> {
    Ok(totals(&metrics(client).await?, Some(code)))
}

async fn metrics(client: &kube::Client) -> anyhow::Result<String> {
    let req = http::Request::get("/metrics").body(Vec::new())?;
    Ok(client.request_text(req).await?)
}

/// Sums `apiserver_request_total` by verb and resource (with subresource).
pub fn parse_request_totals(text: &str) -> BTreeMap<(String, String), u64> {
    totals(text, None)
}

fn totals(text: &str, code: Option<u16>) -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |name: &str| label(labels, name);
        if code.is_some_and(|c| label("code") != c.to_string()) {
            continue;
        }
        let (resource, sub) = (label("resource"), label("subresource"));
        let resource = if sub.is_empty() {
            resource
        } else {
            format!("{resource}/{sub}")
        };
        let value: f64 = value.trim().parse().unwrap_or(0.0);
        *out.entry((label("verb"), resource)).or_insert(0) += value as u64;
    }
    out
}

/// The value of label `name` in the label set of one Prometheus sample (`a="x",b="y"`);
/// empty when it has none.
pub fn label(labels: &str, name: &str) -> String {
    labels
        .split("\",")
        .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
        .map(|v| v.trim_end_matches('"').to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_summed_by_verb_and_resource_or_kept_to_one_code() {
        let text = r#"# HELP apiserver_request_total x
apiserver_request_total{code="201",component="apiserver",contentType="application/json",dry_run="",group="",resource="nodes",scope="cluster",subresource="",verb="POST",version="v1"} 2000
apiserver_request_total{code="409",component="apiserver",contentType="application/json",dry_run="",group="",resource="nodes",scope="cluster",subresource="",verb="POST",version="v1"} 3
apiserver_request_total{code="404",component="apiserver",contentType="application/merge-patch+json",dry_run="",group="coordination.k8s.io",resource="leases",scope="namespace",subresource="",verb="PATCH",version="v1"} 7
apiserver_request_total{code="200",component="apiserver",contentType="application/apply-patch+yaml",dry_run="",group="nodepool.dev",resource="nodepools",scope="cluster",subresource="status",verb="APPLY",version="v1alpha1"} 1000
"#;
        let all = parse_request_totals(text);
        assert_eq!(all[&("POST".into(), "nodes".into())], 2003);
        assert_eq!(all[&("APPLY".into(), "nodepools/status".into())], 1000);
        let missing = totals(text, Some(404));
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[&("PATCH".into(), "leases".into())], 7);
        assert_eq!(totals(text, Some(409))[&("POST".into(), "nodes".into())], 3);
    }
}
