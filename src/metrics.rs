//! `ferry run --metrics ADDR`: the status model as Prometheus metrics,
//! served over HTTP by metrics-exporter-prometheus, refreshed every 2 s.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics::gauge;
use metrics_exporter_prometheus::PrometheusBuilder;

use crate::runner::Runner;
use crate::status;

/// Starts the HTTP listener and a task that refreshes the gauges.
pub fn serve(runner: Arc<Runner>, addr: SocketAddr) -> Result<(), String> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| format!("metrics endpoint {addr}: {e}"))?;
    runner.tasks.clone().spawn(async move {
        // The state label each job had, to zero it when the state changes.
        let mut states: HashMap<String, String> = HashMap::new();
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = runner.cancel.cancelled() => return,
            }
            let Ok(st) = status::build(&runner.store, Some(&runner), None) else {
                continue;
            };
            for j in &st.jobs {
                let job = j.name.clone();
                if let Some(old) = states.insert(job.clone(), j.state.clone()) {
                    if old != j.state {
                        gauge!("ferry_job_state", "job" => job.clone(), "state" => old).set(0.0);
                    }
                }
                gauge!("ferry_job_state", "job" => job.clone(), "state" => j.state.clone())
                    .set(1.0);
                let failed = matches!(j.state.as_str(), "failed" | "precheck_failed");
                gauge!("ferry_job_failed", "job" => job.clone()).set(f64::from(u8::from(failed)));
                gauge!("ferry_job_alert", "job" => job.clone()).set(f64::from(u8::from(j.alert)));
                gauge!("ferry_job_retries", "job" => job.clone()).set(f64::from(j.retries));
                gauge!("ferry_throttle_rows_per_second", "job" => job.clone())
                    .set(j.throttle_rows_per_sec as f64);
                if let Some(f) = &j.full {
                    gauge!("ferry_full_rows_copied", "job" => job.clone()).set(f.rows_done as f64);
                    gauge!("ferry_full_rows_total", "job" => job.clone()).set(f.rows_total as f64);
                    gauge!("ferry_full_rows_per_second", "job" => job.clone())
                        .set(f.rows_per_s as f64);
                }
                if let Some(c) = &j.cdc {
                    gauge!("ferry_cdc_lag_seconds", "job" => job.clone()).set(c.lag_s as f64);
                    gauge!("ferry_cdc_lag_bytes", "job" => job.clone()).set(c.lag_bytes as f64);
                    gauge!("ferry_cdc_rows_per_second", "job" => job.clone())
                        .set(c.rows_per_s as f64);
                    gauge!("ferry_cdc_events_per_second", "job" => job.clone())
                        .set(c.events_per_s as f64);
                    gauge!("ferry_cdc_retention_risk", "job" => job.clone())
                        .set(f64::from(u8::from(c.retention_risk.is_some())));
                }
            }
        }
    });
    Ok(())
}
