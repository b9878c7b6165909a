//! Probe records and their watcher: each probe is appended (acks=all), and a
//! read_committed consumer notes when its key becomes readable on the watched topic.
//!
//! Why probes beside the load: the load is fire-and-forget at high rates; timing a few
//! records per second precisely (send, acknowledged, readable) measures latency without
//! the bookkeeping of every record slowing the load generator down.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use benches::records::framed;
use benches::stats::Summary;
use eventbus::client::{self, ReaderOptions};
use eventbus::context::BusContext;
use eventbus::kafka::{
    Consumer, FutureProducer, FutureRecord, Message, Offset, TopicPartitionList,
};
use eventbus::{BusMetrics, KafkaSettings};
use schemas::StockAdjusted;
use uuid::Uuid;

/// When each probe was sent, acknowledged and first seen.
#[derive(Default)]
pub(crate) struct Probes {
    /// key -> (before send, acknowledged)
    sent: Mutex<HashMap<String, (Instant, Instant)>>,
    /// key -> first seen by the consumer
    seen: Mutex<HashMap<String, Instant>>,
}

impl Probes {
    /// `(append → readable, send → readable, probes sent)` for every probe seen.
    pub(crate) fn latencies(&self) -> (Vec<Duration>, Vec<Duration>, usize) {
        let sent = self.sent.lock().expect("lock");
        let seen = self.seen.lock().expect("lock");
        let mut from_ack = Vec::new();
        let mut from_send = Vec::new();
        for (key, (t0, ack)) in sent.iter() {
            if let Some(t) = seen.get(key) {
                from_ack.push(t.saturating_duration_since(*ack));
                from_send.push(t.saturating_duration_since(*t0));
            }
        }
        (from_ack, from_send, sent.len())
    }
}

/// One output line: `name: n=<seen>/<sent> p50=… ms p99=… ms max=… ms` (NaN when none
/// was seen).
pub(crate) fn summary(name: &str, mut values: Vec<Duration>, sent: usize) -> String {
    let s = Summary::of(&mut values);
    let ms = |f: fn(&Summary) -> f64| s.as_ref().map_or(f64::NAN, f);
    format!(
        "{name}: n={}/{sent} p50={:.1} ms p99={:.1} ms max={:.1} ms",
        values.len(),
        ms(|s| s.p50_ms),
        ms(|s| s.p99_ms),
        ms(|s| s.max_ms)
    )
}

/// Reads `topic` (read_committed, from its end) on a thread of its own and records when
/// keys starting with `prefix` appear, until `stop`.
pub(crate) fn watch(
    kafka: &KafkaSettings,
    group: String,
    topic: &str,
    prefix: &str,
    probes: Arc<Probes>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let options = ReaderOptions {
        // Latency is measured to "readable by a read_committed consumer".
        read_committed: true,
        group_id: Some(group),
        tuning: client::tuning([
            // Fetch responses return after at most 10 ms (default 500) even when they
            // are nearly empty, so a probe is seen as soon as it is readable.
            ("fetch.wait.max.ms", "10".to_owned()),
        ]),
        ..ReaderOptions::default()
    };
    let context = BusContext::new("bench/watch", None, BusMetrics::default());
    let consumer = client::reader(kafka, &options, context).context("the watcher")?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .with_context(|| format!("metadata of {topic}"))?;
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::End)?;
        }
    }
    consumer.assign(&tpl)?;
    // Make sure the end offsets are resolved before the first probe.
    for _ in 0..10 {
        consumer.poll(Duration::from_millis(100));
    }
    let prefix = prefix.to_owned();
    Ok(std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                let now = Instant::now();
                if let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok())
                    && key.starts_with(&prefix)
                {
                    probes
                        .seen
                        .lock()
                        .expect("lock")
                        .entry(key.to_owned())
                        .or_insert(now);
                }
            }
        }
    }))
}

/// Sends `per_second` probes to `topic` for `seconds`: stock.adjusted of fresh SKUs
/// (encoded for schema id `id`) when `id` is set, else plain bytes.
pub(crate) async fn send_probes(
    producer: &FutureProducer,
    topic: &str,
    prefix: &str,
    id: Option<u32>,
    per_second: u64,
    seconds: u64,
    probes: &Probes,
) {
    let interval = Duration::from_micros(1_000_000 / per_second.max(1));
    let mut ticker = tokio::time::interval(interval);
    let count = per_second * seconds;
    let mut tasks = Vec::new();
    for n in 0..count {
        ticker.tick().await;
        let key = format!("{prefix}{n:06}");
        let value = match id {
            Some(id) => {
                let event = StockAdjusted {
                    event_id: Uuid::new_v4(),
                    sku: key.clone(),
                    delta: 1,
                    reason: "probe".into(),
                    adjusted_at: eventbus::headers::now_ms(),
                };
                framed(id, &event).expect("valid probe")
            }
            None => key.clone().into_bytes(),
        };
        let producer = producer.clone();
        let topic = topic.to_owned();
        let t0 = Instant::now();
        tasks.push(tokio::spawn(async move {
            let record = FutureRecord::to(&topic).key(&key).payload(&value);
            let result = producer.send(record, Duration::from_secs(10)).await;
            (key, t0, Instant::now(), result.is_ok())
        }));
    }
    for task in tasks {
        if let Ok((key, t0, ack, true)) = task.await {
            probes.sent.lock().expect("lock").insert(key, (t0, ack));
        }
    }
    // Give the last probes time to come out.
    tokio::time::sleep(Duration::from_secs(3)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_counts_only_once_seen() {
        let probes = Probes::default();
        let t0 = Instant::now();
        let ack = t0 + Duration::from_millis(5);
        probes.sent.lock().unwrap().insert("a".into(), (t0, ack));
        probes.sent.lock().unwrap().insert("b".into(), (t0, ack));
        probes
            .seen
            .lock()
            .unwrap()
            .insert("a".into(), t0 + Duration::from_millis(25));
        let (from_ack, from_send, sent) = probes.latencies();
        assert_eq!(sent, 2);
        assert_eq!(from_ack, [Duration::from_millis(20)]);
        assert_eq!(from_send, [Duration::from_millis(25)]);
        assert_eq!(
            summary("x", from_ack, sent),
            "x: n=1/2 p50=20.0 ms p99=20.0 ms max=20.0 ms"
        );
        assert_eq!(
            summary("none", vec![], 3),
            "none: n=0/3 p50=NaN ms p99=NaN ms max=NaN ms"
        );
    }
}
