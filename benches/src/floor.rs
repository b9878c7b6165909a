//! Kafka's own floor: its `ProducerPerformance` tool, run from the same jars as the local
//! cluster (`deploy/local/.cache/kafka-libs`), against the same cluster.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// One `ProducerPerformance` result line.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ProducerPerf {
    /// Records sent.
    pub records: u64,
    /// Records per second.
    pub records_per_sec: f64,
    /// MB per second.
    pub mb_per_sec: f64,
    /// Mean send-to-ack latency.
    pub avg_ms: f64,
    /// Median latency.
    pub p50_ms: f64,
    /// 99th percentile latency.
    pub p99_ms: f64,
}

/// The folder with the Kafka jars, found from the workspace root.
pub fn kafka_libs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/local/.cache/kafka-libs")
}

/// Parses the final summary line of ProducerPerformance, e.g.
/// `20000 records sent, 9000.1 records/sec (1.72 MB/sec), 80.01 ms avg latency,
/// 400.00 ms max latency, 70 ms 50th, 200 ms 95th, 300 ms 99th, 390 ms 99.9th.`
pub fn parse_summary(text: &str) -> Option<ProducerPerf> {
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains("records sent") && l.contains("50th"))?;
    let num = |s: &str| s.split_whitespace().next()?.parse::<f64>().ok();
    let parts: Vec<&str> = line.split(',').collect();
    let field = |suffix: &str| {
        parts
            .iter()
            .find(|p| p.contains(suffix))
            .and_then(|p| num(p))
    };
    let rps_part = parts.iter().find(|p| p.contains("records/sec"))?;
    let mbps = rps_part.split('(').nth(1).and_then(num)?;
    Some(ProducerPerf {
        records: num(parts[0])? as u64,
        records_per_sec: num(rps_part)?,
        mb_per_sec: mbps,
        avg_ms: field("avg latency")?,
        p50_ms: field("50th")?,
        p99_ms: parts
            .iter()
            .find(|p| p.contains(" 99th"))
            .and_then(|p| num(p))?,
    })
}

/// Runs ProducerPerformance with acks=all and idempotence on `topic`.
pub fn producer_performance(
    bootstrap: &str,
    topic: &str,
    records: u64,
    record_size: usize,
    extra_props: &[(&str, &str)],
) -> anyhow::Result<ProducerPerf> {
    let libs = kafka_libs();
    if !libs.is_dir() {
        bail!(
            "{} is missing: run `make up` first (it fetches the Kafka jars)",
            libs.display()
        );
    }
    let mut props = vec![
        format!("bootstrap.servers={bootstrap}"),
        "acks=all".to_string(),
        "enable.idempotence=true".to_string(),
    ];
    props.extend(extra_props.iter().map(|(k, v)| format!("{k}={v}")));
    let out = Command::new("java")
        .args(["-Xmx512m", "-cp"])
        .arg(format!("{}/*", libs.display()))
        .arg("org.apache.kafka.tools.ProducerPerformance")
        .args(["--topic", topic, "--num-records", &records.to_string()])
        .args([
            "--record-size",
            &record_size.to_string(),
            "--throughput",
            "-1",
        ])
        .arg("--producer-props")
        .args(&props)
        .output()
        .context("running java ProducerPerformance")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "ProducerPerformance failed: {}\n{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_summary(&stdout)
        .with_context(|| format!("no summary line in ProducerPerformance output:\n{stdout}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_summary_line() {
        let text = "1000 records sent, 500.0 records/sec (0.10 MB/sec), 10.0 ms avg latency, 20.0 ms max latency.\n\
            20000 records sent, 9000.1 records/sec (1.72 MB/sec), 80.01 ms avg latency, 400.00 ms max latency, 70 ms 50th, 200 ms 95th, 300 ms 99th, 390 ms 99.9th.\n";
        let p = parse_summary(text).unwrap();
        assert_eq!(p.records, 20000);
        assert_eq!(p.records_per_sec, 9000.1);
        assert_eq!(p.mb_per_sec, 1.72);
        assert_eq!(p.avg_ms, 80.01);
        assert_eq!(p.p50_ms, 70.0);
        assert_eq!(p.p99_ms, 300.0);
        assert!(parse_summary("nothing here").is_none());
    }
}
