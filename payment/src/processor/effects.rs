//! What a decided batch turns into: the records its transaction writes (outcomes in
//! the order's partition, dead letters) and the effects that must wait until that
//! transaction has committed (the settled index, the metrics, one log line per
//! payment), so that an aborted batch leaves no trace but its retry.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use eventbus::ErrorClass;
use eventbus::headers::{TraceParent, now_ms};
use eventbus::kafka::{Message, OwnedMessage};
use schemas::OrderCreated;
use uuid::Uuid;

use super::Processor;
use crate::gateway::PaymentGateway;
use crate::outcome::OutRecord;
use crate::settlement::Settlement;

/// What one record of a batch turned into.
pub(super) enum Work {
    /// A valid order to settle.
    Order(OrderCreated),
    /// An order that already has an outcome.
    Duplicate,
    /// A record that never became an order.
    Dead { class: ErrorClass, message: String },
}

/// Effects of a batch that happen only once its transaction has committed.
#[derive(Default)]
pub(super) struct Tally {
    settled: Vec<(i32, Uuid)>,
    /// One log line per settled payment, written once the transaction committed.
    lines: Vec<SettledLine>,
    completed: u64,
    failed: BTreeMap<String, u64>,
    dead: HashMap<ErrorClass, u64>,
    duplicates: u64,
}

/// What the log line of one settled payment says (see [`SettledLine::log`]).
struct SettledLine {
    order_id: Uuid,
    partition: i32,
    offset: i64,
    /// `completed` or `failed`.
    outcome: &'static str,
    /// The reason code of a failed payment.
    reason_code: Option<String>,
    /// The trace context written on the outcome record.
    trace: TraceParent,
    /// The order record's trace context, when it carried a valid `traceparent`.
    parent: Option<TraceParent>,
}

impl SettledLine {
    /// One INFO line per settled payment, with the fields the log store correlates on:
    /// `order_id`, `trace_id` (the order's trace), the input's `topic`, `partition`
    /// and `offset`.
    fn log(&self, input_topic: &str) {
        tracing::info!(
            order_id = %self.order_id,
            trace_id = %self.trace.trace_id_hex(),
            span_id = %self.trace.span_id_hex(),
            parent_span_id = self.parent.map(|t| t.span_id_hex()).as_deref(),
            topic = input_topic,
            partition = self.partition,
            offset = self.offset,
            outcome = self.outcome,
            reason_code = self.reason_code.as_deref(),
            "payment settled"
        );
    }
}

/// How long a batch's steps took, for its debug line.
pub(super) struct Timings {
    pub(super) index: Duration,
    pub(super) settle: Duration,
    pub(super) build: Duration,
}

impl<G: PaymentGateway> Processor<G> {
    /// Step 4: the records to produce for `records` (the batch) given what each became
    /// and, for orders, its settlement; and the tally of effects to apply on commit.
    pub(super) fn build(
        &self,
        batch: &[OwnedMessage],
        works: &[Work],
        settlements: Vec<Option<Settlement>>,
    ) -> (Vec<OutRecord>, Tally) {
        let mut records: Vec<OutRecord> = Vec::with_capacity(batch.len());
        let mut tally = Tally::default();
        for ((record, work), settlement) in batch.iter().zip(works).zip(settlements) {
            let p = record.partition();
            match (work, settlement) {
                (Work::Duplicate, _) => tally.duplicates += 1,
                (Work::Dead { class, message }, _) => {
                    let now = now_ms();
                    records.push(
                        self.encoder
                            .dead_letter(record, *class, message, 0, now, now),
                    );
                    *tally.dead.entry(*class).or_default() += 1;
                }
                (Work::Order(order), Some(settlement)) => {
                    let parent = TraceParent::from_headers(record.headers());
                    let trace = parent.map_or_else(TraceParent::generate, |t| t.child());
                    let line = |outcome, reason_code| SettledLine {
                        order_id: order.order_id,
                        partition: p,
                        offset: record.offset(),
                        outcome,
                        reason_code,
                        trace,
                        parent,
                    };
                    let built = match settlement {
                        Settlement::Completed { payment_id } => self
                            .encoder
                            .completed(order, payment_id, p, &trace)
                            .map(|r| (r, None, line("completed", None))),
                        Settlement::Failed {
                            reason_code,
                            reason,
                        } => self
                            .encoder
                            .failed(order, &reason_code, &reason, p, &trace)
                            .map(|r| {
                                let logged = line("failed", Some(reason_code.clone()));
                                (r, Some(reason_code), logged)
                            }),
                        Settlement::DeadLetter {
                            class,
                            message,
                            attempts,
                            first_failure_ms,
                            last_failure_ms,
                        } => {
                            records.push(self.encoder.dead_letter(
                                record,
                                class,
                                &message,
                                attempts,
                                first_failure_ms,
                                last_failure_ms,
                            ));
                            *tally.dead.entry(class).or_default() += 1;
                            continue;
                        }
                    };
                    match built {
                        Ok((out, failed_code, logged)) => {
                            records.push(out);
                            tally.settled.push((p, order.order_id));
                            tally.lines.push(logged);
                            match failed_code {
                                None => tally.completed += 1,
                                Some(code) => *tally.failed.entry(code).or_default() += 1,
                            }
                        }
                        Err(e) => {
                            // Our own event does not fit its schema: a bug, not the
                            // order's fault, but the order cannot be settled either.
                            tracing::warn!(order_id = %order.order_id, "outcome cannot be encoded, dead-lettering the order: {e}");
                            let now = now_ms();
                            records.push(self.encoder.dead_letter(
                                record,
                                ErrorClass::HandlerFatal,
                                &format!("outcome cannot be encoded: {e}"),
                                1,
                                now,
                                now,
                            ));
                            *tally.dead.entry(ErrorClass::HandlerFatal).or_default() += 1;
                        }
                    }
                }
                (Work::Order(_), None) => unreachable!("every order is settled"),
            }
        }

        (records, tally)
    }

    /// The committed batch's effects: the settled index, the metrics, the log lines.
    pub(super) fn on_committed(
        &mut self,
        tally: Tally,
        records: usize,
        took: Duration,
        timings: &Timings,
    ) {
        self.metrics
            .transactions
            .with_label_values(&["committed"])
            .inc();
        self.metrics
            .transaction_duration
            .observe(took.as_secs_f64());
        self.metrics.batch_records.observe(records as f64);
        for (p, id) in &tally.settled {
            self.settled.insert(*p, *id);
        }
        let m = &self.metrics;
        m.payments
            .with_label_values(&["completed", ""])
            .inc_by(tally.completed);
        for (code, n) in &tally.failed {
            m.payments.with_label_values(&["failed", code]).inc_by(*n);
        }
        for (class, n) in &tally.dead {
            m.bus
                .dead_lettered
                .with_label_values(&[&self.topics.order_created, class.as_str()])
                .inc_by(*n);
        }
        m.duplicates_skipped.inc_by(tally.duplicates);
        // Records out, per topic, as they are now visible to read_committed readers.
        let failed: u64 = tally.failed.values().sum();
        let dead: u64 = tally.dead.values().sum();
        for (topic, n) in [
            (&self.topics.payment_completed, tally.completed),
            (&self.topics.payment_failed, failed),
            (&self.topics.dlq, dead),
        ] {
            if n > 0 {
                m.bus.produced.with_label_values(&[topic]).inc_by(n);
            }
        }
        for line in &tally.lines {
            line.log(&self.topics.order_created);
        }
        tracing::debug!(
            records = records,
            completed = tally.completed,
            failed = tally.failed.values().sum::<u64>(),
            dead = tally.dead.values().sum::<u64>(),
            duplicates = tally.duplicates,
            index_ms = timings.index.as_millis() as u64,
            settle_ms = timings.settle.as_millis() as u64,
            build_ms = timings.build.as_millis() as u64,
            transaction_ms = took.as_millis() as u64,
            "batch committed"
        );
    }
}
