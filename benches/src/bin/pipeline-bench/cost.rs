//! What one load costs: the CPU seconds of every process that takes part, per 1,000
//! orders; the records Kafka moved for it; the services' transactions.
//!
//! Why: a latency or a rate alone cannot say where the two cores went. On this machine
//! three brokers, the registry, the monitoring stack, the three services and the load
//! generator share them, so each process's CPU seconds over the same step (read from
//! `/proc/<pid>/stat`, user + system) are the breakdown that tells which part to cut.
//! The benchmark's own process is split by thread: the `stock.updated` reader (its own
//! named thread) and the rest, the load generator. Kafka's work is counted the way
//! `ProducerPerformance` counts its own: records appended to the stack's topics (end
//! offsets; transaction markers take an offset each, so they count too), and records
//! read by the consumers that read each topic.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use benches::cluster::run_dir;
use benches::machine::{process_cpu_seconds, thread_cpu_seconds};
use benches::stack::Stack;
use eventbus::client::{self, ReaderOptions};
use eventbus::context::BusContext;
use eventbus::kafka::{BaseConsumer, Consumer};
use eventbus::{BusMetrics, KafkaSettings};
use serde::Serialize;

/// The bench's reader threads as `/proc` names them (names are cut at 15 bytes), and
/// as the report does.
const READER_THREADS: &[(&str, &str)] = &[
    ("stock-updated-r", "stock.updated reader"),
    ("stage-reader", "stage reader"),
];

/// The platform's processes (from `make up`'s pid files) whose CPU counts.
const PLATFORM: &[&str] = &[
    "kafka-1",
    "kafka-2",
    "kafka-3",
    "registry",
    "prometheus",
    "victoria-metrics",
    "victoria-logs",
    "vlagent",
];

/// How many of the stack's services read each topic, by the topic's unprefixed name:
/// payment and the pipeline read order.created, the pipeline its four other inputs,
/// the benchmark's matcher stock.updated; nothing reads the progress topic, the DLQs
/// or snapshots while running.
fn readers(topic: &str) -> u64 {
    match topic {
        "order-service.order.created" => 2,
        "order-service.order.updated"
        | "inventory-service.stock.adjusted"
        | "payment-service.payment.completed"
        | "payment-service.payment.failed"
        | "inventory-service.stock.updated" => 1,
        _ => 0,
    }
}

/// The processes of one run: `(name, pid)`.
pub(crate) struct Processes(Vec<(String, u32)>);

impl Processes {
    /// The platform's processes that are running, the stack's services, and this
    /// process.
    pub(crate) fn of(stack: &Stack) -> Processes {
        let mut list = Vec::new();
        for name in PLATFORM {
            let pid = std::fs::read_to_string(run_dir().join("pids").join(format!("{name}.pid")))
                .ok()
                // `<pid> <start time>`: the platform script's pid files.
                .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
                .filter(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
            match pid {
                Some(pid) => list.push((name.to_string(), pid)),
                // Not running here, or another checkout's `.run` (set RUN_DIR): its CPU
                // is left out of the tables rather than counted as zero.
                None if name.starts_with("kafka-") => eprintln!(
                    "cost: no running {name} under {}; its CPU is not counted (RUN_DIR?)",
                    run_dir().display()
                ),
                None => {}
            }
        }
        for name in ["ingress", "payment", "pipeline"] {
            if let Some(pid) = stack.pid(name) {
                list.push((name.to_string(), pid));
            }
        }
        Processes(list)
    }

    /// CPU seconds of each process now; this process as its reader threads and the
    /// rest, the `load generator`.
    pub(crate) fn read(&self) -> CpuReading {
        let mut seconds: BTreeMap<String, f64> = self
            .0
            .iter()
            .map(|(name, pid)| (name.clone(), process_cpu_seconds(*pid)))
            .collect();
        let me = std::process::id();
        let threads = thread_cpu_seconds(me);
        let mut readers = 0.0;
        for (thread, label) in READER_THREADS {
            let s = threads.get(*thread).copied().unwrap_or(0.0);
            readers += s;
            seconds.insert((*label).into(), s);
        }
        seconds.insert(
            "load generator".into(),
            (process_cpu_seconds(me) - readers).max(0.0),
        );
        CpuReading {
            at: Instant::now(),
            seconds,
        }
    }
}

/// CPU seconds per process at one moment.
#[derive(Debug, Clone)]
pub(crate) struct CpuReading {
    at: Instant,
    seconds: BTreeMap<String, f64>,
}

/// One process's share of a step.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ProcessCpu {
    pub(crate) cpu_seconds: f64,
    /// CPU seconds per 1,000 accepted orders.
    pub(crate) per_1000_orders: Option<f64>,
    /// Share of one core over the step, %.
    pub(crate) core_pct: f64,
}

/// The CPU of a step, per process and summed.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CpuCost {
    pub(crate) seconds: f64,
    pub(crate) per_process: BTreeMap<String, ProcessCpu>,
    /// The three services (ingress, payment, pipeline), per 1,000 orders.
    pub(crate) services_per_1000_orders: Option<f64>,
    /// The three brokers, per 1,000 orders.
    pub(crate) brokers_per_1000_orders: Option<f64>,
    /// Every process counted, per 1,000 orders.
    pub(crate) all_per_1000_orders: Option<f64>,
}

impl CpuReading {
    /// What happened between `earlier` and this reading, for `orders` accepted orders.
    pub(crate) fn since(&self, earlier: &CpuReading, orders: usize) -> CpuCost {
        let wall = (self.at - earlier.at).as_secs_f64().max(1e-9);
        let per_1000 = |s: f64| (orders > 0).then(|| s * 1000.0 / orders as f64);
        let per_process: BTreeMap<String, ProcessCpu> = self
            .seconds
            .iter()
            .map(|(name, now)| {
                let s = (now - earlier.seconds.get(name).copied().unwrap_or(*now)).max(0.0);
                (
                    name.clone(),
                    ProcessCpu {
                        cpu_seconds: s,
                        per_1000_orders: per_1000(s),
                        core_pct: 100.0 * s / wall,
                    },
                )
            })
            .collect();
        let sum = |pick: &dyn Fn(&str) -> bool| -> f64 {
            per_process
                .iter()
                .filter(|(n, _)| pick(n))
                .map(|(_, p)| p.cpu_seconds)
                .sum()
        };
        CpuCost {
            seconds: wall,
            services_per_1000_orders: per_1000(sum(&|n| {
                matches!(n, "ingress" | "payment" | "pipeline")
            })),
            brokers_per_1000_orders: per_process
                .keys()
                .any(|n| n.starts_with("kafka-"))
                .then(|| per_1000(sum(&|n| n.starts_with("kafka-"))))
                .flatten(),
            all_per_1000_orders: per_1000(sum(&|_| true)),
            per_process,
        }
    }
}

/// The end offsets of the stack's topics, read with a reader that never fetches (so its
/// ListOffsets requests never wait behind a long-polling Fetch).
pub(crate) struct Offsets {
    reader: BaseConsumer,
    /// `(prefixed topic, unprefixed name, partitions)`.
    topics: Vec<(String, String, i32)>,
}

/// Records appended to the stack's topics over a step, and read by their consumers.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct KafkaRecords {
    pub(crate) written: u64,
    pub(crate) read: u64,
    pub(crate) written_per_sec: f64,
    /// Written + read, per second: the figure to set beside ProducerPerformance's.
    pub(crate) moved_per_sec: f64,
    /// Records written per unprefixed topic.
    pub(crate) written_per_topic: BTreeMap<String, u64>,
}

/// End offsets per unprefixed topic name.
pub(crate) type Ends = BTreeMap<String, u64>;

impl Offsets {
    /// A reader for `stack`'s topics.
    pub(crate) fn new(kafka: &KafkaSettings, stack: &Stack) -> anyhow::Result<Offsets> {
        let reader = client::reader(
            kafka,
            &ReaderOptions::default(),
            BusContext::new("pipeline-bench/offsets", None, BusMetrics::default()),
        )?;
        let mut topics = Vec::new();
        for topic in stack.topics() {
            let partitions = client::partition_count(&reader, topic, Duration::from_secs(10))?;
            let name = topic
                .strip_prefix(&stack.prefix)
                .unwrap_or(topic)
                .to_owned();
            topics.push((topic.clone(), name, partitions));
        }
        Ok(Offsets { reader, topics })
    }

    /// The sum of the end offsets of each topic (blocking; partitions that do not
    /// answer count as 0).
    pub(crate) fn ends(&self) -> Ends {
        self.topics
            .iter()
            .map(|(topic, name, partitions)| {
                let sum = (0..*partitions)
                    .filter_map(|p| {
                        self.reader
                            .fetch_watermarks(topic, p, Duration::from_secs(5))
                            .ok()
                    })
                    .map(|(_, high)| high.max(0) as u64)
                    .sum();
                (name.clone(), sum)
            })
            .collect()
    }
}

/// The records between two readings of [`Offsets::ends`], `seconds` apart.
pub(crate) fn records_between(before: &Ends, after: &Ends, seconds: f64) -> KafkaRecords {
    let written_per_topic: BTreeMap<String, u64> = after
        .iter()
        .map(|(name, end)| {
            (
                name.clone(),
                end.saturating_sub(before.get(name).copied().unwrap_or(*end)),
            )
        })
        .collect();
    let written = written_per_topic.values().sum();
    let read = written_per_topic
        .iter()
        .map(|(name, n)| n * readers(name))
        .sum();
    let seconds = seconds.max(1e-9);
    KafkaRecords {
        written,
        read,
        written_per_sec: written as f64 / seconds,
        moved_per_sec: (written + read) as f64 / seconds,
        written_per_topic,
    }
}

/// The brokers' GC logs (`-Xlog:gc` to `logs/kafka-N/gc.log`, written by the platform
/// script), read from where a step began.
pub(crate) struct GcLogs(Vec<(String, std::path::PathBuf)>);

/// Where each GC log ended at one moment.
pub(crate) type GcMarks = Vec<u64>;

/// One broker's GC pauses over a step.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub(crate) struct GcPauses {
    pub(crate) pauses: u64,
    pub(crate) total_ms: f64,
    pub(crate) max_ms: f64,
}

impl GcLogs {
    /// The three brokers' logs (those that exist are read).
    pub(crate) fn of_brokers() -> GcLogs {
        GcLogs(
            (1..=3)
                .map(|n| {
                    let name = format!("kafka-{n}");
                    let path = run_dir().join("logs").join(&name).join("gc.log");
                    (name, path)
                })
                .collect(),
        )
    }

    /// The logs' lengths now.
    pub(crate) fn mark(&self) -> GcMarks {
        self.0
            .iter()
            .map(|(_, p)| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .collect()
    }

    /// The pauses logged since `marks` (from the start of a log that was rotated).
    pub(crate) fn since(&self, marks: &GcMarks) -> BTreeMap<String, GcPauses> {
        self.0
            .iter()
            .zip(marks)
            .filter_map(|((name, path), mark)| {
                let bytes = std::fs::read(path).ok()?;
                let from = if (*mark as usize) <= bytes.len() {
                    *mark as usize
                } else {
                    0
                };
                Some((
                    name.clone(),
                    gc_pauses(&String::from_utf8_lossy(&bytes[from..])),
                ))
            })
            .collect()
    }
}

/// The pauses of a `-Xlog:gc` text: lines such as `[…] GC(7) Pause Young (Normal) (G1
/// Evacuation Pause) 80M->20M(512M) 3.456ms`; concurrent phases (`Concurrent Mark
/// Cycle 12.3ms`) are not pauses.
pub(crate) fn gc_pauses(text: &str) -> GcPauses {
    let mut out = GcPauses::default();
    for line in text.lines() {
        let Some(rest) = line.split_once("] GC(").map(|(_, r)| r) else {
            continue;
        };
        if !rest.contains(" Pause ") {
            continue;
        }
        let Some(ms) = rest
            .rsplit(' ')
            .next()
            .and_then(|t| t.strip_suffix("ms"))
            .and_then(|t| t.parse::<f64>().ok())
        else {
            continue;
        };
        out.pauses += 1;
        out.total_ms += ms;
        out.max_ms = out.max_ms.max(ms);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gc_pauses_are_summed_and_concurrent_phases_left_out() {
        let log = "[2026-12-02T15:50:01.123+0000][12.345s] GC(7) Pause Young (Normal) (G1 Evacuation Pause) 80M->20M(512M) 3.500ms\n\
                   [2026-12-02T15:50:02.000+0000][13.000s] GC(8) Concurrent Mark Cycle 12.300ms\n\
                   [2026-12-02T15:50:02.100+0000][13.100s] GC(8) Pause Remark 30M->30M(512M) 1.500ms\n\
                   [2026-12-02T15:50:03.000+0000][14.000s] Using G1\n\
                   broken line 9ms\n";
        assert_eq!(
            gc_pauses(log),
            GcPauses {
                pauses: 2,
                total_ms: 5.0,
                max_ms: 3.5
            }
        );
        assert_eq!(gc_pauses(""), GcPauses::default());
    }

    fn reading(at: Instant, pairs: &[(&str, f64)]) -> CpuReading {
        CpuReading {
            at,
            seconds: pairs.iter().map(|(n, s)| (n.to_string(), *s)).collect(),
        }
    }

    #[test]
    fn cpu_is_split_per_process_and_per_thousand_orders() {
        let t0 = Instant::now();
        let a = reading(
            t0,
            &[
                ("kafka-1", 10.0),
                ("ingress", 1.0),
                ("payment", 2.0),
                ("load generator", 0.5),
            ],
        );
        let b = reading(
            t0 + Duration::from_secs(10),
            &[
                ("kafka-1", 14.0),
                ("ingress", 2.0),
                ("payment", 2.5),
                ("load generator", 1.5),
            ],
        );
        let cost = b.since(&a, 500);
        assert_eq!(cost.per_process["kafka-1"].cpu_seconds, 4.0);
        assert_eq!(cost.per_process["kafka-1"].per_1000_orders, Some(8.0));
        assert_eq!(cost.per_process["kafka-1"].core_pct, 40.0);
        assert_eq!(cost.services_per_1000_orders, Some(3.0));
        assert_eq!(cost.brokers_per_1000_orders, Some(8.0));
        assert_eq!(cost.all_per_1000_orders, Some(13.0));
        // No orders, no per-order figure.
        assert_eq!(b.since(&a, 0).all_per_1000_orders, None);
        // No broker found (another checkout's pid files): no brokers' figure, not 0.
        let c = reading(t0, &[("ingress", 1.0)]);
        let d = reading(t0 + Duration::from_secs(1), &[("ingress", 2.0)]);
        assert_eq!(d.since(&c, 500).brokers_per_1000_orders, None);
        assert_eq!(d.since(&c, 500).services_per_1000_orders, Some(2.0));
    }

    #[test]
    fn records_count_appends_and_their_readers() {
        let before: Ends = [
            ("order-service.order.created".to_string(), 100),
            ("inventory-service.progress".to_string(), 7),
        ]
        .into();
        let after: Ends = [
            ("order-service.order.created".to_string(), 150),
            ("inventory-service.progress".to_string(), 17),
        ]
        .into();
        let r = records_between(&before, &after, 10.0);
        assert_eq!(r.written, 60);
        // order.created is read twice (payment, pipeline), progress by nobody.
        assert_eq!(r.read, 100);
        assert_eq!(r.written_per_sec, 6.0);
        assert_eq!(r.moved_per_sec, 16.0);
        // An offset that went backwards (a recreated topic) counts as nothing.
        let r = records_between(&after, &before, 1.0);
        assert_eq!(r.written, 0);
    }
}
