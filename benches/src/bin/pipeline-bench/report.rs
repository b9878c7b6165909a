//! The reports: `bench.md` (the tables, also printed) and `bench.json` written to the
//! output folder.
//!
//! Why one place: `benches/README.md` and the top-level README quote these tables and
//! JSON keys, so their wording and layout change only here, on purpose.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::Context;

use crate::cost::CpuCost;
use crate::floor::Floor;
use crate::pipeline::PipelineReport;
use crate::step::StepReport;

/// `v` with `digits` decimals, or `–` when there is none.
pub(crate) fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "–".into())
}

/// The sustained rule, written into both reports.
pub(crate) const RULE: &str = "a load is sustained when errors ≤ 1 %, at least 95 % of the offered rate is accepted, \
the end-to-end p99 is below the limit and the backlog (accepted orders not yet readable) drains within \
the drain limit after the load stops; the highest sustained load is the largest sustained step";

/// `bench.md`: the tables of `report` (the JSON document).
pub(crate) fn markdown(
    report: &serde_json::Value,
    floor: Option<&Floor>,
    pipe: Option<&PipelineReport>,
) -> String {
    let m = &report["machine"];
    let mut s = String::new();
    s.push_str(&format!(
        "## Order pipeline benchmark ({} mode)\n\n",
        report["mode"].as_str().unwrap_or("?")
    ));
    s.push_str(&format!(
        "Machine: {} × {}, {} MiB RAM, Linux {}; CPU {} % busy before the run; load average {} at start, {} at end.  \n",
        m["nproc"],
        m["cpu_model"].as_str().unwrap_or("?"),
        m["mem_total_mib"],
        m["kernel"].as_str().unwrap_or("?"),
        fmt_opt(m["cpu_busy_pct_before"].as_f64(), 0),
        m["loadavg_at_start"].as_str().unwrap_or("?"),
        m["loadavg_at_end"].as_str().unwrap_or("?")
    ));
    let c = &m["cluster"];
    if c.is_object() {
        s.push_str(&format!(
            "Cluster at the start: {} topics, {} partitions ({} of them of other runs' scratch stacks).  \n",
            c["topics"], c["partitions"], c["scratch_partitions"]
        ));
    }
    s.push_str(&format!(
        "Records: {} B (an order.created event: Avro + 5-byte header), acks=all, idempotence, RF 3, \
         min.insync.replicas 2, 6 partitions. Everything (3 brokers, registry, services, load, tools) \
         shares this machine.\n\n",
        report["record_size_bytes"]
    ));
    s.push_str(
        "### Kafka's floor (measured with the services running idle, before and after the loads)\n\n\
         | tool | when | records | records/s | avg ms | p50 ms | p99 ms |\n|---|---|---|---|---|---|---|\n",
    );
    let after = pipe.and_then(|p| p.floors.after.as_ref());
    match floor {
        Some(f) => {
            for (when, f) in [("before", Some(f)), ("after", after)] {
                let Some(f) = f else { continue };
                let (p, e) = (&f.producer_performance, &f.end_to_end_latency);
                s.push_str(&format!(
                    "| ProducerPerformance (max throughput, lz4, linger 5 ms) | {when} | {} | {:.0} | {:.1} | {:.0} | {:.0} |\n",
                    p.records, p.records_per_sec, p.avg_ms, p.p50_ms, p.p99_ms
                ));
                s.push_str(&format!(
                    "| EndToEndLatency (one hop, one record at a time) | {when} | {} | – | {:.2} | {:.0} | {:.0} |\n",
                    e.records, e.avg_ms, e.p50_ms, e.p99_ms
                ));
                let t = &f.transactional_hop;
                s.push_str(&format!(
                    "| transactional hop (eventbus, one record per transaction, read_committed): begin → readable | {when} | {} | – | – | {:.1} | {:.1} |\n",
                    t.transactions, t.visible.p50_ms, t.visible.p99_ms
                ));
            }
            s.push('\n');
            for (when, f) in [("before", Some(f)), ("after", after)] {
                let Some(t) = f.map(|f| &f.transactional_hop) else {
                    continue;
                };
                s.push_str(&format!(
                    "Transactional hop {when}: {:.1} transactions/s one after another; begin → delivery acknowledged p50 {:.1} / p99 {:.1} ms, \
                     begin → commit returned p50 {:.1} / p99 {:.1} ms, \
                     commit returned → readable p50 {:.1} / p99 {:.1} ms.  \n",
                    t.per_sec,
                    t.produce.p50_ms,
                    t.produce.p99_ms,
                    t.commit.p50_ms,
                    t.commit.p99_ms,
                    t.after_commit.p50_ms,
                    t.after_commit.p99_ms
                ));
            }
            s.push('\n');
        }
        None => s.push_str(&format!(
            "| not measured: {} | | | | | | |\n\n",
            report["floor_error"].as_str().unwrap_or("skipped")
        )),
    }
    s.push_str(
        "### Pipeline: `POST /v1/orders` answered 201 → its `stock.updated` readable (read_committed)\n\n\
         | offered /s | accepted /s | errors | POST p50 / p99 ms | e2e p50 ms | p95 ms | p99 ms | max ms \
         | sale p50 / p99 ms | backlog at end | drain s | CPU busy | sustained (p99 ≤ 4 × floor) | sustained (p99 < fixed limit) \
         | p50 / floor p50 | p99 / floor p99 | rate / ProducerPerformance | Kafka records/s (written + read) / ProducerPerformance |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    match pipe {
        Some(p) => {
            for st in &p.steps {
                let e = st.end_to_end;
                s.push_str(&format!(
                    "| {} | {:.1} | {} | {} / {} | {} | {} | {} | {} | {} / {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                    st.offered_per_sec,
                    st.achieved_per_sec,
                    st.failed + st.skipped,
                    fmt_opt(st.post_latency.map(|x| x.p50_ms), 1),
                    fmt_opt(st.post_latency.map(|x| x.p99_ms), 1),
                    fmt_opt(e.map(|x| x.p50_ms), 1),
                    fmt_opt(e.map(|x| x.p95_ms), 1),
                    fmt_opt(e.map(|x| x.p99_ms), 1),
                    fmt_opt(e.map(|x| x.max_ms), 1),
                    fmt_opt(st.sale.map(|x| x.p50_ms), 1),
                    fmt_opt(st.sale.map(|x| x.p99_ms), 1),
                    st.outstanding_at_end,
                    st.drain_s.map(|d| format!("{d:.2}")).unwrap_or_else(|| "did not".into()),
                    st.cpu_busy_pct.map(|c| format!("{c:.0} %")).unwrap_or_default(),
                    if st.sustained {
                        format!("yes (≤ {:.0} ms)", st.p99_limit_ms)
                    } else {
                        format!("no (> {:.0} ms)", st.p99_limit_ms)
                    },
                    if st.sustained_fixed_limit { "yes" } else { "no" },
                    fmt_opt(st.ratio_p50_vs_floor, 1),
                    fmt_opt(st.ratio_p99_vs_floor, 1),
                    fmt_opt(st.ratio_rate_vs_producer_performance, 4),
                    match &st.kafka_records {
                        Some(k) => format!(
                            "{:.0} ({})",
                            k.moved_per_sec,
                            fmt_opt(st.ratio_kafka_records_vs_producer_performance, 3)
                        ),
                        None => "–".into(),
                    },
                ));
            }
            for r in &p.skipped_rates {
                s.push_str(&format!(
                    "| {r} | not run: a lower load was overloaded | | | | | | | | | | | | | | | | |\n"
                ));
            }
            let pp = floor.map(|f| f.producer_performance.records_per_sec);
            s.push_str(&format!(
                "\nHighest sustained load: **{}** orders/s{} (under the fixed p99 limit: {} orders/s).  \nRule: {RULE} (p99 limit 4 × the floor's one-hop p99 of the run, or the fixed {} ms; drain limit {} s).\n",
                fmt_opt(p.highest_sustained_per_sec, 0),
                match (p.highest_sustained_per_sec, pp) {
                    (Some(h), Some(pp)) if pp > 0.0 => format!(
                        " = {:.4} × ProducerPerformance's {pp:.0} records/s",
                        h / pp
                    ),
                    _ => String::new(),
                },
                fmt_opt(p.highest_sustained_fixed_limit_per_sec, 0),
                report["settings"]["p99_limit_ms"],
                report["settings"]["drain_limit_s"],
            ));
            s.push_str(&format!(
                "Matching consumer (read_committed, fetch.wait.max.ms {}): {} records read, {} orders first \
                 seen as the sale (order and payment taken in in one epoch), {} undecodable.  \n",
                p.consumer["fetch_wait_max_ms"],
                p.consumer["records"],
                p.consumer["orders_first_seen_as_sale"],
                p.consumer["undecodable"],
            ));
            for st in p.steps.iter().filter(|st| !st.sustained) {
                s.push_str(&format!(
                    "{}/s not sustained: {}.  \n",
                    st.offered_per_sec,
                    st.not_sustained_because.join("; ")
                ));
            }
            s.push_str(&cost_tables(&p.steps));
        }
        None => s.push_str(&format!(
            "| not measured: {} | | | | | | | | | | | | | | | | | |\n",
            report["pipeline_error"].as_str().unwrap_or("?")
        )),
    }
    s
}

/// Per load: CPU seconds per 1,000 orders of every process, and the transactions.
fn cost_tables(steps: &[StepReport]) -> String {
    let mut s = String::new();
    let names: BTreeSet<&String> = steps
        .iter()
        .filter_map(|st| st.cpu.as_ref())
        .flat_map(|c| c.per_process.keys())
        .collect();
    if names.is_empty() {
        return s;
    }
    s.push_str("\n### CPU seconds per 1,000 accepted orders, per process (the load and its drain)\n\n| process |");
    for st in steps {
        s.push_str(&format!(" {}/s |", st.offered_per_sec));
    }
    s.push_str("\n|---|");
    s.push_str(&"---|".repeat(steps.len()));
    s.push('\n');
    let row = |label: &str, pick: &dyn Fn(&CpuCost) -> Option<f64>| {
        let mut line = format!("| {label} |");
        for st in steps {
            line.push_str(&format!(
                " {} |",
                fmt_opt(st.cpu.as_ref().and_then(pick), 2)
            ));
        }
        line.push('\n');
        line
    };
    for name in names {
        s.push_str(&row(name, &|c| {
            c.per_process.get(name).and_then(|p| p.per_1000_orders)
        }));
    }
    s.push_str(&row("**the three services**", &|c| {
        c.services_per_1000_orders
    }));
    s.push_str(&row("**the three brokers**", &|c| {
        c.brokers_per_1000_orders
    }));
    s.push_str(&row("**all**", &|c| c.all_per_1000_orders));
    s.push_str("\nBrokers' GC pauses over each load (count, total ms, longest ms):");
    for st in steps {
        s.push_str(&format!(" {}/s:", st.offered_per_sec));
        if st.gc.is_empty() {
            s.push_str(" no GC log;");
        }
        for (broker, g) in &st.gc {
            s.push_str(&format!(
                " {broker} {} / {:.1} / {:.1};",
                g.pauses, g.total_ms, g.max_ms
            ));
        }
    }
    s.push('\n');
    s.push_str(&stage_table(steps));
    s.push_str(
        "\n### Transactions (from the services' /metrics, over the load and its drain)\n\n\
         | offered /s | payment txns | payment mean ms | orders per payment txn | sink txns | sink mean ms \
         | records per sink txn | epochs per sink txn | Kafka records written /s |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for st in steps {
        let t = st.transactions.clone().unwrap_or_default();
        s.push_str(&format!(
            "| {} | {:.0} | {} | {} | {:.0} | {} | {} | {} | {} |\n",
            st.offered_per_sec,
            t.payment.transactions,
            fmt_opt(t.payment.mean_ms, 1),
            fmt_opt(t.payment.records_per_transaction, 1),
            t.sink.transactions,
            fmt_opt(t.sink.mean_ms, 1),
            fmt_opt(t.sink.records_per_transaction, 1),
            fmt_opt(t.sink.epochs_per_transaction, 1),
            fmt_opt(st.kafka_records.as_ref().map(|k| k.written_per_sec), 0),
        ));
    }
    s.push_str(&steps_table(steps));
    s
}

/// Per load and writer: the mean ms per committed transaction in each step.
fn steps_table(steps: &[StepReport]) -> String {
    use crate::transactions::STEPS;
    let mut s = String::from(
        "\n### Where a transaction's time goes: mean ms per committed transaction, by step \
         (eventbus_transaction_step_seconds)\n\n| offered /s | writer |",
    );
    for step in STEPS {
        s.push_str(&format!(" {step} |"));
    }
    s.push_str("\n|---|---|");
    s.push_str(&"---|".repeat(STEPS.len()));
    s.push('\n');
    for st in steps {
        let t = st.transactions.clone().unwrap_or_default();
        for (writer, w) in [("payment", &t.payment), ("sink", &t.sink)] {
            s.push_str(&format!("| {} | {writer} |", st.offered_per_sec));
            for step in STEPS {
                s.push_str(&format!(" {} |", fmt_opt(w.steps_ms.get(step).copied(), 1)));
            }
            s.push('\n');
        }
    }
    s
}

/// Per load: the sale's latency by stage (p50 / p99 ms), from the records' timestamps.
fn stage_table(steps: &[StepReport]) -> String {
    let mut s = String::from(
        "\n### One order's time by stage: p50 / p99 ms (from record timestamps; see `stages.rs`)\n\n| stage |",
    );
    for st in steps {
        s.push_str(&format!(" {}/s |", st.offered_per_sec));
    }
    s.push_str("\n|---|");
    s.push_str(&"---|".repeat(steps.len()));
    s.push('\n');
    for (k, name) in crate::stages::NAMES.iter().enumerate() {
        s.push_str(&format!("| {name} |"));
        for st in steps {
            let summary = st.stages.get(k).and_then(|x| x.summary);
            s.push_str(&format!(
                " {} / {} |",
                fmt_opt(summary.map(|x| x.p50_ms), 1),
                fmt_opt(summary.map(|x| x.p99_ms), 1)
            ));
        }
        s.push('\n');
    }
    s
}

/// Writes `bench.json` and `bench.md` into `out`.
pub(crate) fn write_out(out: &Path, report: &serde_json::Value, table: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(
        out.join("bench.json"),
        serde_json::to_string_pretty(report)?,
    )?;
    std::fs::write(out.join("bench.md"), table)?;
    Ok(())
}
