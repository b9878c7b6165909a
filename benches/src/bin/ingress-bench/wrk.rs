//! wrk against `POST /v1/orders`: the command line, and the figures read back from its
//! `--latency` report.
//!
//! Why wrk: a separate, well-kept HTTP load tool with keep-alive connections measures
//! the service as clients see it, without this process's runtime in the way. Its Lua
//! script (`benches/wrk/post_order.lua`) sends a valid order with a fresh
//! Idempotency-Key per request, so every request is a new order.

use std::process::Command;

use anyhow::{Context, bail};

use crate::figures::Figures;

/// The request script wrk runs.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/wrk/post_order.lua");

/// Parses a wrk duration such as `812.00us`, `4.21ms` or `1.02s` into milliseconds.
pub(crate) fn wrk_ms(text: &str) -> Option<f64> {
    let text = text.trim();
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * factor)
}

/// The figures of a wrk `--latency` report.
pub(crate) fn parse(text: &str) -> Figures {
    let mut f = Figures {
        requests: 0,
        per_second: f64::NAN,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        failures: 0,
    };
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => f.p50_ms = wrk_ms(v).unwrap_or(f64::NAN),
            ["99%", v] => f.p99_ms = wrk_ms(v).unwrap_or(f64::NAN),
            ["Requests/sec:", v] => f.per_second = v.parse().unwrap_or(f64::NAN),
            [n, "requests", "in", ..] => f.requests = n.parse().unwrap_or(0),
            ["Non-2xx", "or", "3xx", "responses:", n] => {
                f.failures += n.parse::<u64>().unwrap_or(0)
            }
            ["Socket", "errors:", ..] => f.failures += 1,
            _ => {}
        }
    }
    f
}

/// Runs wrk against `base` with `connections` connections on `threads` threads for
/// `seconds`; returns its figures and its report.
pub(crate) fn run(
    base: &str,
    connections: usize,
    threads: usize,
    seconds: u64,
) -> anyhow::Result<(Figures, String)> {
    let output = Command::new("wrk")
        .args([
            "-t",
            &threads.clamp(1, connections).to_string(),
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{seconds}s"),
            "--latency",
            "-s",
            SCRIPT,
            base,
        ])
        .output()
        .context("running wrk (apt-get install -y wrk)")?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "wrk failed: {}{}",
            text,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok((parse(&text), text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latency_report_is_read() {
        let report = "Running 10s test @ http://127.0.0.1:1\n  1 threads and 32 connections\n\
            \x20 Latency Distribution\n     50%    4.21ms\n     75%    6.00ms\n     99%    1.02s\n\
            \x20 12000 requests in 10.00s, 3.00MB read\n  Non-2xx or 3xx responses: 7\n\
            Requests/sec:   1200.50\n";
        let f = parse(report);
        assert_eq!(f.requests, 12000);
        assert_eq!(f.per_second, 1200.5);
        assert_eq!(f.p50_ms, 4.21);
        assert_eq!(f.p99_ms, 1020.0);
        assert_eq!(f.failures, 7);
        assert_eq!(wrk_ms("812.00us"), Some(0.812));
        assert_eq!(wrk_ms("12"), None);
        // Nothing recognisable: no figures rather than zeros.
        let none = parse("wrk: connection refused\n");
        assert!(none.per_second.is_nan() && none.p99_ms.is_nan());
        assert_eq!(none.requests, 0);
    }
}
