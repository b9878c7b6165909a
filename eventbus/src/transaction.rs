//! The transactional producer both exactly-once paths use: payment's
//! consume-transform-produce batches and the pipeline's `stock.updated` sink.
//!
//! [`TransactionalProducer`] wraps a librdkafka `BaseProducer` built by
//! [`crate::client::transactional_producer`] and offers
//! the transaction's steps, each blocking (call them from a blocking thread):
//!
//! ```text
//! init            once: registers the transactional.id, aborts what a predecessor left
//!                 open and fences it
//! begin
//! send ...        records; a full local queue is served, not an error
//! send_offsets    (consume-transform-produce) the input offsets with the group metadata
//! commit          waits for the records' delivery reports first, then commits
//! abort           after an abortable error
//! ```
//!
//! `commit` waits for delivery reports itself, polling every 0.2-2 ms, before calling
//! `commit_transaction`: rust-rdkafka's `commit_transaction` flushes by polling in
//! 100 ms steps, which would add up to 100 ms to every transaction.
//!
//! Every failure is mapped onto what the caller must do ([`TxnError`]):
//!
//! | librdkafka says | [`TxnError`] | the caller |
//! |---|---|---|
//! | retriable (timeout, coordinator moving) | — | the call is retried here, a few times |
//! | `txn_requires_abort`, a failed delivery, retries exhausted | [`TxnError::Abortable`] | `abort`, then redo the work (rewind) |
//! | fenced (`PRODUCER_FENCED`, `INVALID_PRODUCER_EPOCH`, `_FENCED`) | [`TxnError::Fenced`] | stop: a newer instance owns the id |
//! | fatal, other | [`TxnError::Fatal`] | stop; a restart's `init` cleans up |
//!
//! [`TransactionalProducer::commit_records`] runs the whole sequence with that policy
//! (aborting on an abortable error) for callers that have all records at hand.
//!
//! # Offsets after the records
//!
//! `commit_records` sends the offsets only once every record is acknowledged. A
//! record's first send to a partition makes librdkafka register the partition with the
//! coordinator (`AddPartitionsToTxn`) in the background; `send_offsets` sends
//! `AddOffsetsToTxn` to the same coordinator at once. Both change the same transaction,
//! so the coordinator refuses whichever comes second with CONCURRENT_TRANSACTIONS, and
//! librdkafka retries a refused `AddOffsetsToTxn` after `retry.backoff.ms` (100 ms).
//! librdkafka's debug log showed it in most of payment's transactions. An acknowledged
//! record means its partition is registered, so after the deliveries nothing races.
//! Measured with payment at 50 orders/s, 40 s per run, the two orders alternated
//! (3 December, 2-core machine, the local stack running): mean per transaction, offsets
//! step / whole transaction, before 74-96 / 90-116 ms, after 10-15 / 45-65 ms; lowering
//! `retry.backoff.ms` to 10 ms instead gave 29-34 / 48-57 ms, and nothing more on top.
//!
//! # The settle pause between transactions
//!
//! `commit_transaction` returns once the coordinator has logged PrepareCommit; it then
//! writes the commit markers and logs CompleteCommit. Until it has, it refuses the next
//! transaction's `AddPartitionsToTxn` with CONCURRENT_TRANSACTIONS, and librdkafka
//! retries that after a fixed 20 ms (`rdkafka_txnmgr.c`). So a transaction begun right
//! after the previous commit paid ~20 ms for nothing. `begin` (and [`settle`]) therefore
//! waits until [`DEFAULT_SETTLE`] has passed since the previous commit or abort
//! returned; a caller that batches calls [`settle`] before it picks the batch, so what
//! arrives meanwhile joins it. Measured with pipeline-bench's transactional hop (one
//! record per transaction, 3 December, quiet 2-core machine), begin → delivery
//! acknowledged / begin → commit returned, p50: begun at once 28.7 / 30.7 ms; 4 ms
//! after the previous commit 26.6 / 28.3; 6 ms after 26.6 / 28.2; 8 ms after 8.0 /
//! 10.1; 12 ms after 8.0 / 10.3. The default, 10 ms, keeps a margin above that knee.
//!
//! # Where a transaction's time goes
//!
//! Every step is timed into `eventbus_transaction_step_seconds{producer,step}`
//! ([`BusMetrics::transaction_step`]), `producer` being the name given to
//! [`TransactionalProducer::new`]: `settle` (the pause above, 0 when none was due),
//! `begin`, `send` (one record handed over), `offsets` (`send_offsets_to_transaction`:
//! AddOffsetsToTxn and TxnOffsetCommit), `deliveries` (until every record is
//! acknowledged), `commit` (`commit_transaction`: EndTxn) and `abort`. Retries of a call
//! are inside its step.
//!
//! [`settle`]: TransactionalProducer::settle

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use prometheus::Histogram;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::ToBytes;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use rdkafka::topic_partition_list::TopicPartitionList;

use crate::client::{self, TransactionalOptions};
use crate::config::KafkaSettings;
use crate::context::BusContext;
use crate::error::{BusError, Fault};
use crate::metrics::BusMetrics;

/// How often a retriable transactional call is tried before it counts as abortable.
const CALL_ATTEMPTS: u32 = 5;

/// The least time between the end of one transaction (commit or abort returned) and the
/// start of the next: see the module docs' "settle pause".
pub const DEFAULT_SETTLE: Duration = Duration::from_millis(10);

/// Why a transactional step failed, and what the caller must do.
#[derive(Debug, thiserror::Error)]
pub enum TxnError {
    /// The transaction cannot commit. From a step: call
    /// [`TransactionalProducer::abort`]; from [`TransactionalProducer::commit_records`]:
    /// it has been aborted already. Nothing of it is visible; redo the work.
    #[error("transaction must be aborted: {0}")]
    Abortable(#[source] KafkaError),
    /// A newer instance with the same `transactional.id` fenced this one.
    #[error("producer fenced by a newer instance: {0}")]
    Fenced(#[source] KafkaError),
    /// The producer cannot continue.
    #[error("fatal transaction error: {0}")]
    Fatal(#[source] KafkaError),
}

impl TxnError {
    /// Whose fault it is: a fenced producer is a second instance with the same
    /// transactional id (a deployment matter); an abortable or fatal failure is judged
    /// by its Kafka error.
    pub fn fault(&self) -> Fault {
        match self {
            TxnError::Fenced(_) => Fault::Setup,
            other => Fault::of_kafka(other.kafka_error()),
        }
    }

    /// The underlying client error.
    pub fn kafka_error(&self) -> &KafkaError {
        match self {
            TxnError::Abortable(e) | TxnError::Fenced(e) | TxnError::Fatal(e) => e,
        }
    }
}

/// What to do after a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Retry,
    Abort,
    Fenced,
    Fatal,
}

fn is_fenced_code(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::Fenced
            | RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::InvalidProducerEpoch
            | RDKafkaErrorCode::TransactionCoordinatorFenced
    )
}

/// What to do after a fatal error: a fenced producer is a newer instance's doing.
fn fatal(code: RDKafkaErrorCode) -> Next {
    if is_fenced_code(code) {
        Next::Fenced
    } else {
        Next::Fatal
    }
}

fn classify(e: &KafkaError) -> Next {
    match e {
        KafkaError::Transaction(err) => {
            if err.is_fatal() {
                fatal(err.code())
            } else if err.txn_requires_abort() {
                Next::Abort
            } else if err.is_retriable() {
                Next::Retry
            } else if is_fenced_code(err.code()) {
                Next::Fenced
            } else if err.code() == RDKafkaErrorCode::TransactionalIdAuthorizationFailed {
                Next::Fatal
            } else {
                // A state error: the producer and the caller disagree about where the
                // transaction is. Not safe to go on.
                Next::Fatal
            }
        }
        other => match other.rdkafka_error_code() {
            Some(code) if is_fenced_code(code) => Next::Fenced,
            Some(RDKafkaErrorCode::Fatal) => Next::Fatal,
            _ => Next::Abort,
        },
    }
}

fn to_error(next: Next, e: KafkaError) -> TxnError {
    match next {
        Next::Fenced => TxnError::Fenced(e),
        Next::Fatal => TxnError::Fatal(e),
        Next::Retry | Next::Abort => TxnError::Abortable(e),
    }
}

/// Calls `f` until it succeeds, fails non-retriably, or [`CALL_ATTEMPTS`] are used.
fn with_retries(what: &str, mut f: impl FnMut() -> Result<(), KafkaError>) -> Result<(), TxnError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match f() {
            Ok(()) => return Ok(()),
            Err(e) => {
                let next = classify(&e);
                if next == Next::Retry && attempt < CALL_ATTEMPTS {
                    tracing::warn!(attempt, "{what}: {e}; retrying");
                    continue;
                }
                return Err(to_error(next, e));
            }
        }
    }
}

/// The step timers of one producer (see the module docs).
struct Steps {
    settle: Histogram,
    begin: Histogram,
    send: Histogram,
    offsets: Histogram,
    deliveries: Histogram,
    commit: Histogram,
    abort: Histogram,
}

impl Steps {
    fn new(metrics: &BusMetrics, producer: &str) -> Self {
        let step = |s: &str| metrics.transaction_step.with_label_values(&[producer, s]);
        Steps {
            settle: step("settle"),
            begin: step("begin"),
            send: step("send"),
            offsets: step("offsets"),
            deliveries: step("deliveries"),
            commit: step("commit"),
            abort: step("abort"),
        }
    }
}

/// A transactional producer with a stable `transactional.id`. See the module docs.
pub struct TransactionalProducer {
    inner: BaseProducer<BusContext>,
    transactional_id: String,
    call_timeout: Duration,
    /// See [`DEFAULT_SETTLE`].
    settle: Duration,
    /// When the last transaction ended (commit or abort returned).
    ended: Mutex<Option<Instant>>,
    steps: Steps,
}

impl std::fmt::Debug for TransactionalProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransactionalProducer")
            .field("transactional_id", &self.transactional_id)
            .finish_non_exhaustive()
    }
}

impl TransactionalProducer {
    /// Creates the producer (not initialised; see [`TransactionalProducer::init`]).
    /// `name` names the client in logs and its step timers.
    pub fn new(
        settings: &KafkaSettings,
        options: &TransactionalOptions,
        name: &str,
        metrics: BusMetrics,
    ) -> Result<Self, BusError> {
        let steps = Steps::new(&metrics, name);
        let context = BusContext::new(format!("{}/{name}", settings.client_id), None, metrics);
        let inner = client::transactional_producer(settings, options, context)?;
        Ok(TransactionalProducer {
            inner,
            transactional_id: options.transactional_id.clone(),
            call_timeout: options.call_timeout,
            settle: DEFAULT_SETTLE,
            ended: Mutex::new(None),
            steps,
        })
    }

    /// Sets the settle pause (see the module docs); [`DEFAULT_SETTLE`] unless set.
    pub fn with_settle(mut self, settle: Duration) -> Self {
        self.settle = settle;
        self
    }

    /// Sleeps until the settle pause since the last transaction's end has passed (at
    /// once when it has, or before the first transaction).
    pub fn settle(&self) {
        let ended = *self.ended.lock().unwrap_or_else(|e| e.into_inner());
        let left = ended.and_then(|t| (t + self.settle).checked_duration_since(Instant::now()));
        self.steps.settle.observe_closure_duration(|| {
            if let Some(left) = left {
                std::thread::sleep(left);
            }
        });
    }

    fn mark_ended(&self) {
        *self.ended.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// The `transactional.id`.
    pub fn transactional_id(&self) -> &str {
        &self.transactional_id
    }

    /// `init_transactions`: registers the id with its coordinator, aborts whatever a
    /// previous instance with the same id left open, and fences that instance.
    /// Retriable failures (a coordinator still loading) are retried for a while.
    pub fn init(&self) -> Result<(), TxnError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.inner.init_transactions(self.call_timeout) {
                Ok(()) => return Ok(()),
                Err(e) => match classify(&e) {
                    Next::Retry | Next::Abort if attempt < CALL_ATTEMPTS * 2 => {
                        tracing::warn!(attempt, "init_transactions: {e}; retrying");
                        std::thread::sleep(Duration::from_millis(500));
                    }
                    next => return Err(to_error(next, e)),
                },
            }
        }
    }

    /// `begin_transaction`, after the settle pause ([`TransactionalProducer::settle`]).
    pub fn begin(&self) -> Result<(), TxnError> {
        self.settle();
        self.steps
            .begin
            .observe_closure_duration(|| self.inner.begin_transaction())
            .map_err(|e| to_error(classify(&e), e))
    }

    /// Hands one record to the transaction. A full local queue is served (delivery
    /// reports polled) until the record fits or the call timeout passes.
    pub fn send<K, P>(&self, record: BaseRecord<'_, K, P>) -> Result<(), TxnError>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let _timer = self.steps.send.start_timer();
        let deadline = Instant::now() + self.call_timeout;
        let mut record = record;
        loop {
            match self.inner.send(record) {
                Ok(()) => {
                    self.inner.context().deliveries().sent();
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if Instant::now() < deadline =>
                {
                    record = back;
                    self.inner.poll(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(to_error(Next::Abort.max_with(classify(&e)), e)),
            }
        }
    }

    /// `send_offsets_to_transaction`: the consumed offsets (the next offset to read per
    /// partition) commit with the transaction, in the group's current generation
    /// (KIP-447), so a member that lost its partitions cannot commit them.
    pub fn send_offsets(
        &self,
        offsets: &TopicPartitionList,
        group: &ConsumerGroupMetadata,
    ) -> Result<(), TxnError> {
        let _timer = self.steps.offsets.start_timer();
        with_retries("send_offsets_to_transaction", || {
            self.inner
                .send_offsets_to_transaction(offsets, group, self.call_timeout)
        })
    }

    /// Serves queued events (delivery reports, logs) without blocking.
    pub fn poll(&self) {
        self.inner.poll(Duration::ZERO);
    }

    /// Records of the open transaction whose delivery report has not been served yet.
    pub fn in_flight(&self) -> u64 {
        self.inner.context().deliveries().in_flight()
    }

    /// Waits until every record sent is acknowledged (polling every 0.2-2 ms), or the
    /// call timeout passes. A failed delivery is [`TxnError::Abortable`]; a producer that
    /// became fenced or fatal meanwhile is [`TxnError::Fenced`] or [`TxnError::Fatal`] at
    /// once (its records may never get a report).
    pub fn await_deliveries(&self) -> Result<(), TxnError> {
        let _timer = self.steps.deliveries.start_timer();
        let deadline = Instant::now() + self.call_timeout;
        let mut pause = Duration::from_micros(200);
        loop {
            self.inner.poll(Duration::ZERO);
            // A fenced or otherwise fatal producer may leave its records queued without a
            // delivery report until they time out: say so at once instead.
            if let Some((code, reason)) = self.inner.client().fatal_error() {
                tracing::debug!(transactional_id = %self.transactional_id, "fatal while awaiting deliveries: {reason}");
                return Err(to_error(fatal(code), KafkaError::MessageProduction(code)));
            }
            if let Some(e) = self.inner.context().deliveries().take_error() {
                return Err(TxnError::Abortable(e));
            }
            if self.in_flight() == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(TxnError::Abortable(KafkaError::MessageProduction(
                    RDKafkaErrorCode::MessageTimedOut,
                )));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(2));
        }
    }

    /// Waits for the deliveries, then `commit_transaction` (which then has nothing
    /// left to flush).
    pub fn commit(&self) -> Result<(), TxnError> {
        self.await_deliveries()?;
        let result = self.steps.commit.observe_closure_duration(|| {
            with_retries("commit_transaction", || {
                self.inner.commit_transaction(self.call_timeout)
            })
        });
        self.mark_ended();
        result
    }

    /// `abort_transaction`: nothing of the open transaction becomes visible.
    pub fn abort(&self) -> Result<(), TxnError> {
        // abort_transaction purges the queued records and then waits until every delivery
        // report is served; a BaseProducer's reports are served only by polling, so a
        // thread polls while it runs (librdkafka: "the event queue must be polled for
        // delivery report events in a separate thread or prior to calling abort"; without
        // it, an abort with records still queued can only time out).
        let _timer = self.steps.abort.start_timer();
        let aborted = AtomicBool::new(false);
        let result = std::thread::scope(|scope| {
            scope.spawn(|| {
                while !aborted.load(Ordering::Acquire) {
                    self.inner.poll(Duration::from_millis(1));
                }
            });
            let result = with_retries("abort_transaction", || {
                self.inner.abort_transaction(self.call_timeout)
            });
            aborted.store(true, Ordering::Release);
            result
        });
        self.mark_ended();
        // Serve what is left, so that the next transaction neither waits for the aborted
        // records' reports nor fails on their errors.
        if result.is_ok() {
            let deadline = Instant::now() + self.call_timeout;
            while self.in_flight() > 0 && Instant::now() < deadline {
                self.inner.poll(Duration::from_millis(1));
            }
        }
        // Delivery reports of the aborted records carry errors nobody needs any more.
        let _ = self.inner.context().deliveries().take_error();
        match result {
            // An abort that needs an abort is a state librdkafka cannot leave: fatal.
            Err(TxnError::Abortable(e)) => Err(TxnError::Fatal(e)),
            other => other,
        }
    }

    /// The whole transaction: `begin`, `send` each record, (when offsets are given) wait
    /// for the deliveries and `send_offsets` (see "Offsets after the records"), `commit`;
    /// on an abortable error, `abort` and return [`TxnError::Abortable`]. Returns how
    /// long it took.
    pub fn commit_records<'a, I>(
        &self,
        records: I,
        offsets: Option<(&TopicPartitionList, &ConsumerGroupMetadata)>,
    ) -> Result<Duration, TxnError>
    where
        I: IntoIterator<Item = BaseRecord<'a, [u8], [u8]>>,
    {
        let started = Instant::now();
        self.begin()?;
        let result = (|| {
            for record in records {
                self.send(record)?;
            }
            if let Some((offsets, group)) = offsets {
                // After the deliveries: see "Offsets after the records" in the module docs.
                self.await_deliveries()?;
                self.send_offsets(offsets, group)?;
            }
            self.commit()
        })();
        match result {
            Ok(()) => Ok(started.elapsed()),
            Err(TxnError::Abortable(e)) => {
                tracing::warn!(transactional_id = %self.transactional_id, "aborting the transaction: {e}");
                self.abort()?;
                Err(TxnError::Abortable(e))
            }
            Err(other) => Err(other),
        }
    }
}

impl Next {
    /// The more severe of `self` and `other` (a produce error is at least abortable).
    fn max_with(self, other: Next) -> Next {
        let rank = |n: Next| match n {
            Next::Retry => 0,
            Next::Abort => 1,
            Next::Fenced => 2,
            Next::Fatal => 3,
        };
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn produce_errors_abort_unless_fenced_or_fatal() {
        let e = KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge);
        assert_eq!(classify(&e), Next::Abort);
        let e = KafkaError::MessageProduction(RDKafkaErrorCode::Fenced);
        assert_eq!(classify(&e), Next::Fenced);
        let e = KafkaError::MessageProduction(RDKafkaErrorCode::Fatal);
        assert_eq!(classify(&e), Next::Fatal);
        let e = KafkaError::MessageProduction(RDKafkaErrorCode::InvalidProducerEpoch);
        assert_eq!(classify(&e), Next::Fenced);
        assert_eq!(Next::Abort.max_with(Next::Retry), Next::Abort);
        assert_eq!(Next::Abort.max_with(Next::Fenced), Next::Fenced);
        // A fatal error is fenced only when a newer instance caused it.
        assert_eq!(fatal(RDKafkaErrorCode::Fenced), Next::Fenced);
        assert_eq!(fatal(RDKafkaErrorCode::ProducerFenced), Next::Fenced);
        assert_eq!(fatal(RDKafkaErrorCode::Fatal), Next::Fatal);
    }

    /// A producer handle that never connects (librdkafka connects on first use).
    fn unconnected(settle: Duration) -> TransactionalProducer {
        let settings = KafkaSettings {
            bootstrap: "127.0.0.1:1".to_owned(),
            ..KafkaSettings::default()
        };
        let options = TransactionalOptions {
            transactional_id: "settle-test".to_owned(),
            transaction_timeout: Duration::from_secs(10),
            call_timeout: Duration::from_secs(1),
            tuning: Default::default(),
        };
        TransactionalProducer::new(&settings, &options, "settle-test", BusMetrics::default())
            .expect("producer")
            .with_settle(settle)
    }

    #[test]
    fn the_next_transaction_waits_out_the_settle_pause_only_after_an_end() {
        let producer = unconnected(Duration::from_millis(600));
        let t = Instant::now();
        producer.settle();
        assert!(
            t.elapsed() < Duration::from_millis(300),
            "no transaction ended yet"
        );
        let t = Instant::now();
        producer.mark_ended();
        producer.settle();
        assert!(
            t.elapsed() >= Duration::from_millis(600),
            "{:?}",
            t.elapsed()
        );
        // Once it has passed, no further wait.
        let t = Instant::now();
        producer.settle();
        assert!(t.elapsed() < Duration::from_millis(300));
        // A zero pause never waits.
        let producer = unconnected(Duration::ZERO);
        producer.mark_ended();
        let t = Instant::now();
        producer.settle();
        assert!(t.elapsed() < Duration::from_millis(300));
    }
}
