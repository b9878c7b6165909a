//! Kafka's own floor: its `ProducerPerformance` and `EndToEndLatency` tools, run from the
//! same jars as the local cluster (`deploy/local/.cache/kafka-libs`), against the same
//! cluster.
//!
//! They are the baselines the benchmarks divide by: `ProducerPerformance` is the most one
//! producer can push through with our safety settings (acks=all, idempotence), and
//! `EndToEndLatency` is the cost of one synchronous hop (produce with acks, then the
//! record read back by a consumer). A pipeline path that crosses Kafka twice (ingress →
//! dataflow → `stock.updated`) cannot be faster than that hop; the ratio says how many
//! hops' worth it costs.
//!
//! On the secure cluster the tools connect like every other client: with the TLS and
//! SCRAM settings of the principal the Rust clients use, from the Java properties file
//! `make up` writes beside its librdkafka config (`.run/secrets/admin.properties`), passed
//! as `--command-config`. So the floor crosses the same listener, TLS and authentication
//! as the pipeline it is compared with.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use eventbus::{KafkaSettings, SecurityProtocol};

/// How Kafka's Java tools reach the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolConnection {
    /// `--bootstrap-server`: the same brokers the Rust clients use.
    pub bootstrap: String,
    /// `--command-config`: the Java client properties with the security settings
    /// (`.run/secrets/<principal>.properties`), if the cluster needs any.
    pub command_config: Option<PathBuf>,
}

impl ToolConnection {
    /// The connection of `settings` (its client config file resolved): the bootstrap,
    /// and the Java properties beside the client config file. A secured cluster without
    /// those properties is an error that says where they should be.
    pub fn for_settings(settings: &KafkaSettings) -> anyhow::Result<ToolConnection> {
        let resolved = settings
            .resolved()
            .context("resolving the Kafka settings for Kafka's tools")?;
        let command_config = crate::cluster::java_properties(settings);
        if command_config.is_none() && resolved.security.protocol != SecurityProtocol::Plaintext {
            bail!(
                "the cluster uses {} but no Java client properties were found beside {}                  (`make up` writes <principal>.properties next to <principal>.conf)",
                resolved.security.protocol.as_str(),
                settings
                    .client_config_file
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "the client config file".to_owned())
            );
        }
        Ok(ToolConnection {
            bootstrap: resolved.bootstrap,
            command_config,
        })
    }

    /// `--command-config <file>`, when there is one.
    fn command_config_args(&self) -> Vec<String> {
        self.command_config
            .iter()
            .flat_map(|p| ["--command-config".to_owned(), p.display().to_string()])
            .collect()
    }
}

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
    connection: &ToolConnection,
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
    // Properties given here win over the --command-config file's.
    let mut props = vec![
        format!("bootstrap.servers={}", connection.bootstrap),
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
        .args(connection.command_config_args())
        .arg("--command-property")
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

/// The result of `EndToEndLatency`: one record at a time, produced (with the given acks)
/// and read back by a consumer, so every figure is a full produce → fetch round.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct EndToEnd {
    /// Records sent (and read back).
    pub records: u64,
    /// Mean latency.
    pub avg_ms: f64,
    /// Median latency.
    pub p50_ms: f64,
    /// 99th percentile latency.
    pub p99_ms: f64,
    /// 99.9th percentile latency.
    pub p999_ms: f64,
}

/// Parses the two closing lines of `EndToEndLatency` (Kafka 4.x):
/// `Avg latency: 9.5590 ms` and `Percentiles: 50th = 6, 99th = 41, 99.9th = 236`.
/// `records` is what was asked for; the tool fails rather than report fewer.
pub fn parse_end_to_end(text: &str, records: u64) -> Option<EndToEnd> {
    let avg = text
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("Avg latency:"))?
        .split_whitespace()
        .next()?
        .parse::<f64>()
        .ok()?;
    let pct = text
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("Percentiles:"))?;
    let field = |name: &str| {
        pct.split(',').find_map(|part| {
            let (k, v) = part.split_once('=')?;
            if k.trim() == name {
                v.trim().parse::<f64>().ok()
            } else {
                None
            }
        })
    };
    Some(EndToEnd {
        records,
        avg_ms: avg,
        p50_ms: field("50th")?,
        p99_ms: field("99th")?,
        p999_ms: field("99.9th")?,
    })
}

/// Runs `EndToEndLatency` on `topic` (which should exist, with the replication the
/// comparison needs): `records` records of `record_size` bytes, produced one at a time
/// with `acks` (`all` or `1`), each awaited by its consumer before the next is sent.
pub fn end_to_end_latency(
    connection: &ToolConnection,
    topic: &str,
    records: u64,
    record_size: usize,
    acks: &str,
) -> anyhow::Result<EndToEnd> {
    let libs = kafka_libs();
    if !libs.is_dir() {
        bail!(
            "{} is missing: run `make up` first (it fetches the Kafka jars)",
            libs.display()
        );
    }
    let out = Command::new("java")
        .args(["-Xmx512m", "-cp"])
        .arg(format!("{}/*", libs.display()))
        .arg("org.apache.kafka.tools.EndToEndLatency")
        .args([
            "--bootstrap-server",
            &connection.bootstrap,
            "--topic",
            topic,
        ])
        .args(connection.command_config_args())
        .args(["--num-records", &records.to_string()])
        .args(["--producer-acks", acks])
        .args(["--record-size", &record_size.to_string()])
        .output()
        .context("running java EndToEndLatency")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "EndToEndLatency failed: {}\n{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_end_to_end(&stdout, records)
        .with_context(|| format!("no latency lines in EndToEndLatency output:\n{stdout}"))
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

    #[test]
    fn tools_get_the_security_settings_of_the_client_config() {
        let dir = std::env::temp_dir().join(format!("floor-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.crt");
        std::fs::write(&ca, "not checked here").unwrap();
        let conf = dir.join("admin.conf");
        std::fs::write(
            &conf,
            format!(
                "bootstrap.servers=h:1\nsecurity.protocol=SASL_SSL\nsasl.mechanisms=SCRAM-SHA-512\n\
                 sasl.username=admin\nsasl.password=pw\nssl.ca.location={}\n",
                ca.display()
            ),
        )
        .unwrap();
        let settings = KafkaSettings {
            client_config_file: Some(conf),
            ..KafkaSettings::default()
        };
        // Secure without the Java properties: a clear error, not a hanging tool.
        let e = ToolConnection::for_settings(&settings).unwrap_err();
        assert!(format!("{e:#}").contains("admin.conf"), "{e:#}");
        let properties = dir.join("admin.properties");
        std::fs::write(&properties, "security.protocol=SASL_SSL\n").unwrap();
        let c = ToolConnection::for_settings(&settings).unwrap();
        assert_eq!(c.bootstrap, "h:1");
        assert_eq!(
            c.command_config_args(),
            [
                "--command-config".to_owned(),
                properties.display().to_string()
            ]
        );
        // Plaintext without files: just the bootstrap.
        let plain = ToolConnection::for_settings(&KafkaSettings::default()).unwrap();
        assert!(plain.command_config_args().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn parses_the_end_to_end_lines() {
        let text = "0\t236.05215900000002\n1000\t5.2\nAvg latency: 9.5590 ms\n\
            Percentiles: 50th = 6, 99th = 41, 99.9th = 236\n";
        let e = parse_end_to_end(text, 2000).unwrap();
        assert_eq!(e.records, 2000);
        assert_eq!(e.avg_ms, 9.559);
        assert_eq!((e.p50_ms, e.p99_ms, e.p999_ms), (6.0, 41.0, 236.0));
        assert!(parse_end_to_end("Avg latency: 3 ms\n", 1).is_none());
        assert!(parse_end_to_end("", 1).is_none());
    }
}
