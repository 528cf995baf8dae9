//! Health reports over the adapters' [`HealthCheck`]s, for `/health`.

use std::sync::Arc;
use std::time::Duration;

use osago_core::ports::HealthCheck;

/// Runs every check (each bounded by `timeout`, all at once); returns
/// whether all passed and a JSON object `{name: "ok" | "unavailable" | "timeout"}`.
pub async fn report(
    checks: &[Arc<dyn HealthCheck>],
    timeout: Duration,
) -> (bool, serde_json::Value) {
    let results = futures::future::join_all(checks.iter().map(|check| async move {
        let status = match tokio::time::timeout(timeout, check.check()).await {
            Ok(Ok(())) => "ok",
            Ok(Err(err)) => {
                tracing::warn!(check = check.name(), error = %err, "health check failed");
                "unavailable"
            }
            Err(_) => "timeout",
        };
        (check.name(), status)
    }))
    .await;
    let healthy = results.iter().all(|(_, status)| *status == "ok");
    let map: serde_json::Map<String, serde_json::Value> = results
        .into_iter()
        .map(|(name, status)| (name.to_owned(), status.into()))
        .collect();
    (healthy, serde_json::Value::Object(map))
}
