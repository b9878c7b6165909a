//! The payment gateway: the port a real payment provider plugs into, and a simulated
//! one that is deterministic enough to test retries, declines and the DLQ for real.
//!
//! # The port
//!
//! [`PaymentGateway::charge`] takes a [`ChargeRequest`] and answers one of:
//! - `Ok(`[`Charge`]`)`: the money was taken; the order becomes `payment.completed`;
//! - [`GatewayError::Declined`]: a *business* answer (card declined, over the limit). The
//!   order becomes `payment.failed` with the code and reason. Never retried, never
//!   dead-lettered: a decline is a valid outcome;
//! - [`GatewayError::Transient`]: the provider could not answer (timeout, 5xx, rate
//!   limit). The service retries with exponential backoff and full jitter, and when the
//!   attempts are used up dead-letters the order (or fails it, see
//!   [`OnRetriesExhausted`](crate::config::OnRetriesExhausted));
//! - [`GatewayError::Fatal`]: the request itself is wrong (unsupported currency, an
//!   idempotency key reused with other parameters). Retrying cannot help: the order
//!   is dead-lettered for an operator.
//!
//! **Idempotency is the gateway's half of exactly-once.** Kafka transactions make the
//! *outcome events* exactly-once, but a charge is a side effect outside Kafka: if the
//! service crashes after charging and before its transaction commits, the order is
//! processed again and charged again, unless the provider deduplicates. Every request
//! therefore carries [`ChargeRequest::idempotency_key`], which is the **order id**: the
//! same for every attempt, every re-run after a crash or an aborted transaction, and
//! every replica. A provider that supports idempotency keys (Stripe's
//! `Idempotency-Key`, Adyen's `idempotency-key`, ...) returns the first result again
//! instead of charging twice. An implementation for a real provider must send it and
//! must map the provider's answers onto the three error kinds above; a timeout after
//! the request was sent is `Transient` (the retry with the same key is safe).
//!
//! Implementations must be `Send + Sync`: the service calls `charge` concurrently (up to
//! `settle.max_in_flight` calls) from one task.
//!
//! # The simulation
//!
//! [`SimulatedGateway`] answers, per attempt, in this order:
//! 1. it waits `latency + uniform(0..=latency_jitter)`;
//! 2. it fails with `Transient` with probability `transient_failure_rate`;
//! 3. a key that was charged before returns the same [`Charge`] (idempotent replay),
//!    or `Fatal` if the amount or currency differ from the first request;
//! 4. a currency in `unsupported_currencies` is `Fatal`;
//! 5. a customer in `declined_customers` is declined with `CUSTOMER_DECLINED`;
//! 6. an amount over `amount_limit_minor` (when not 0) is declined with
//!    `AMOUNT_OVER_LIMIT`;
//! 7. otherwise the charge succeeds and is recorded under its key.
//!
//! Randomness is **seeded per attempt**: the draws for (seed, key, attempt number) are
//! always the same, whatever the concurrency or the order in which orders arrive, so a
//! run can be replayed. The payment id is a name-based UUID of the key, so even a
//! gateway that forgot its records (a restarted simulation without a ledger) answers a
//! re-charge with the same payment id. With `ledger_path` set, every charge is also
//! appended to a file and loaded again at start: the simulation then remembers charges
//! across restarts like a real provider, and tests can count charges across a `kill -9`.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventbus::config::duration_serde;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use schemas::reason_codes;
use serde::Deserialize;
use servicekit::ConfigError;
use uuid::Uuid;

use crate::error::PaymentError;

/// What the service asks the gateway to do for one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeRequest {
    /// The order being paid.
    pub order_id: Uuid,
    /// Who pays.
    pub customer_id: String,
    /// How much, in minor units of `currency`.
    pub amount_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// The provider-side deduplication key: the order id, so that every retry and every
    /// re-run of the order is recognised as the same charge (see the module docs).
    pub idempotency_key: String,
}

impl ChargeRequest {
    /// The request for an order, keyed by the order id.
    pub fn for_order(order: &schemas::OrderCreated) -> Self {
        ChargeRequest {
            order_id: order.order_id,
            customer_id: order.customer_id.clone(),
            amount_minor: order.total_minor,
            currency: order.currency.clone(),
            idempotency_key: order.order_id.to_string(),
        }
    }
}

/// A successful charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// The provider's id of the payment.
    pub payment_id: Uuid,
}

/// Why a charge did not succeed; decides what the service does (module docs).
#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    /// The provider refused the payment: a business outcome, `payment.failed`.
    #[error("declined ({code}): {reason}")]
    Declined {
        /// Machine-readable reason (`UPPER_SNAKE_CASE`), see [`schemas::reason_codes`].
        code: String,
        /// The reason in words.
        reason: String,
    },
    /// The provider could not answer now; retry with backoff.
    #[error("gateway unavailable: {0}")]
    Transient(String),
    /// The charge could not be recorded in the local ledger; retry with backoff (the
    /// same idempotency key makes the retry a replay).
    #[error("ledger write failed: {0}")]
    Ledger(#[source] Arc<std::io::Error>),
    /// The request cannot succeed; dead-letter the order.
    #[error("gateway refused the request: {0}")]
    Fatal(String),
}

/// A payment provider. See the module docs for the contract.
pub trait PaymentGateway: Send + Sync + 'static {
    /// Charges `request.amount_minor` to the customer, idempotently by
    /// `request.idempotency_key`.
    fn charge(
        &self,
        request: &ChargeRequest,
    ) -> impl Future<Output = Result<Charge, GatewayError>> + Send;
}

/// Settings of the [`SimulatedGateway`].
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimulatedGatewayConfig {
    /// Orders whose total is above this many minor units are declined with
    /// `AMOUNT_OVER_LIMIT`; 0 means no limit.
    pub amount_limit_minor: i64,
    /// Customers whose charges are declined with `CUSTOMER_DECLINED`.
    pub declined_customers: Vec<String>,
    /// Currencies the gateway refuses as a bad request (`Fatal`: the order is
    /// dead-lettered).
    pub unsupported_currencies: Vec<String>,
    /// Probability in `[0, 1]` that an attempt fails transiently.
    pub transient_failure_rate: f64,
    /// Fixed latency of every attempt.
    #[serde(with = "duration_serde")]
    pub latency: Duration,
    /// Extra latency, uniform in `[0, latency_jitter]`.
    #[serde(with = "duration_serde")]
    pub latency_jitter: Duration,
    /// Seed of the per-attempt draws.
    pub seed: u64,
    /// Append every charge to this file and load it at start (charges then survive
    /// restarts, as with a real provider).
    pub ledger_path: Option<PathBuf>,
}

impl Default for SimulatedGatewayConfig {
    fn default() -> Self {
        SimulatedGatewayConfig {
            amount_limit_minor: 1_000_000,
            declined_customers: Vec::new(),
            unsupported_currencies: Vec::new(),
            transient_failure_rate: 0.02,
            latency: Duration::from_millis(2),
            latency_jitter: Duration::from_millis(3),
            seed: 0,
            ledger_path: None,
        }
    }
}

impl SimulatedGatewayConfig {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.transient_failure_rate) {
            return Err(ConfigError::rule(
                "gateway.transient_failure_rate",
                format!("must be in [0, 1], got {}", self.transient_failure_rate),
            ));
        }
        if self.amount_limit_minor < 0 {
            return Err(ConfigError::rule(
                "gateway.amount_limit_minor",
                format!(
                    "must be 0 (no limit) or positive, got {}",
                    self.amount_limit_minor
                ),
            ));
        }
        Ok(())
    }

    /// What a fault-free gateway answers for `request` (steps 4-6 of the module docs):
    /// `None` for a successful charge. Tests use it to compute expected outcomes.
    pub fn verdict(&self, request: &ChargeRequest) -> Option<GatewayError> {
        if self.unsupported_currencies.contains(&request.currency) {
            return Some(GatewayError::Fatal(format!(
                "currency {} is not supported",
                request.currency
            )));
        }
        if self.declined_customers.contains(&request.customer_id) {
            return Some(GatewayError::Declined {
                code: reason_codes::CUSTOMER_DECLINED.to_owned(),
                reason: format!(
                    "the payment method of customer {} was declined",
                    request.customer_id
                ),
            });
        }
        if self.amount_limit_minor > 0 && request.amount_minor > self.amount_limit_minor {
            return Some(GatewayError::Declined {
                code: reason_codes::AMOUNT_OVER_LIMIT.to_owned(),
                reason: format!(
                    "amount {} {} is over the limit of {}",
                    request.amount_minor, request.currency, self.amount_limit_minor
                ),
            });
        }
        None
    }
}

/// The namespace of the simulated payment ids (UUID v5 of the idempotency key).
pub const PAYMENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6a1c_3f52_9d4e_4b7a_8e21_5c0f_d3b6_a947);

#[derive(Debug, Clone, PartialEq, Eq)]
struct LedgerEntry {
    payment_id: Uuid,
    amount_minor: i64,
    currency: String,
}

#[derive(Debug, Default)]
struct State {
    /// Attempts per idempotency key, ever.
    requests: HashMap<String, u32>,
    /// Successful charges per idempotency key.
    charges: HashMap<String, LedgerEntry>,
    ledger: Option<File>,
}

/// A deterministic stand-in for a payment provider; see the module docs.
///
/// It remembers every key it saw (like a provider's idempotency store), so its memory
/// grows with the number of orders: a test and demo double, not a production component.
#[derive(Debug)]
pub struct SimulatedGateway {
    config: SimulatedGatewayConfig,
    state: Mutex<State>,
}

impl SimulatedGateway {
    /// A gateway with `config`; loads (and then appends to) the ledger file if one is set.
    pub fn new(config: SimulatedGatewayConfig) -> Result<Self, PaymentError> {
        config.validate()?;
        let mut state = State::default();
        if let Some(path) = &config.ledger_path {
            let ledger = |source| PaymentError::Ledger {
                path: path.display().to_string(),
                source,
            };
            let mut torn = false;
            if path.exists() {
                let text = std::fs::read_to_string(path).map_err(ledger)?;
                torn = !text.is_empty() && !text.ends_with('\n');
                for (number, line) in text.lines().enumerate() {
                    match parse_ledger_line(line) {
                        Some((key, entry)) => {
                            state.charges.insert(key, entry);
                        }
                        // A line torn by a crash in the middle of a write: the charge it
                        // was recording is redone (and rewritten) on the next attempt.
                        None => tracing::warn!(
                            path = %path.display(), line = number + 1,
                            "ignoring malformed ledger line"
                        ),
                    }
                }
            }
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(ledger)?;
            if torn {
                // End the torn line, so the next record starts on a line of its own.
                file.write_all(b"\n").map_err(ledger)?;
            }
            state.ledger = Some(file);
        }
        Ok(SimulatedGateway {
            config,
            state: Mutex::new(state),
        })
    }

    /// The settings.
    pub fn config(&self) -> &SimulatedGatewayConfig {
        &self.config
    }

    /// How many attempts were made with `key` (by this process).
    pub fn requests(&self, key: &str) -> u32 {
        self.lock().requests.get(key).copied().unwrap_or(0)
    }

    /// Attempts in total (by this process).
    pub fn total_requests(&self) -> u64 {
        self.lock().requests.values().map(|n| u64::from(*n)).sum()
    }

    /// The charge recorded for `key`, if any.
    pub fn charged(&self, key: &str) -> Option<Charge> {
        self.lock().charges.get(key).map(|e| Charge {
            payment_id: e.payment_id,
        })
    }

    /// Distinct keys charged (a key is never charged twice).
    pub fn charges(&self) -> usize {
        self.lock().charges.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The deterministic random source of one attempt.
    fn rng(&self, key: &str, attempt: u32) -> StdRng {
        let mixed =
            splitmix64(splitmix64(self.config.seed ^ fnv1a(key.as_bytes())) ^ u64::from(attempt));
        StdRng::seed_from_u64(mixed)
    }

    fn settle(&self, request: &ChargeRequest) -> Result<Charge, GatewayError> {
        let mut state = self.lock();
        if let Some(entry) = state.charges.get(&request.idempotency_key) {
            if entry.amount_minor != request.amount_minor || entry.currency != request.currency {
                return Err(GatewayError::Fatal(format!(
                    "idempotency key {} was first used for {} {}, now for {} {}",
                    request.idempotency_key,
                    entry.amount_minor,
                    entry.currency,
                    request.amount_minor,
                    request.currency
                )));
            }
            return Ok(Charge {
                payment_id: entry.payment_id,
            });
        }
        if let Some(refusal) = self.config.verdict(request) {
            return Err(refusal);
        }
        let entry = LedgerEntry {
            payment_id: Uuid::new_v5(&PAYMENT_ID_NAMESPACE, request.idempotency_key.as_bytes()),
            amount_minor: request.amount_minor,
            currency: request.currency.clone(),
        };
        if let Some(file) = state.ledger.as_mut() {
            let line = format!(
                "{} {} {} {}\n",
                request.idempotency_key, entry.payment_id, entry.amount_minor, entry.currency
            );
            // One write per line: a kill -9 can tear at most the line being written.
            file.write_all(line.as_bytes())
                .map_err(|e| GatewayError::Ledger(Arc::new(e)))?;
        }
        let charge = Charge {
            payment_id: entry.payment_id,
        };
        state.charges.insert(request.idempotency_key.clone(), entry);
        Ok(charge)
    }
}

impl PaymentGateway for SimulatedGateway {
    async fn charge(&self, request: &ChargeRequest) -> Result<Charge, GatewayError> {
        let attempt = {
            let mut state = self.lock();
            let n = state
                .requests
                .entry(request.idempotency_key.clone())
                .or_insert(0);
            *n += 1;
            *n
        };
        let (delay, transient) = {
            let mut rng = self.rng(&request.idempotency_key, attempt);
            let jitter_nanos = u64::try_from(self.config.latency_jitter.as_nanos()).unwrap_or(0);
            let jitter = Duration::from_nanos(rng.random_range(0..=jitter_nanos));
            let transient = rng.random_bool(self.config.transient_failure_rate);
            (self.config.latency + jitter, transient)
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if transient {
            return Err(GatewayError::Transient(format!(
                "simulated outage (attempt {attempt} of key {})",
                request.idempotency_key
            )));
        }
        self.settle(request)
    }
}

fn parse_ledger_line(line: &str) -> Option<(String, LedgerEntry)> {
    let mut parts = line.split_whitespace();
    let key = parts.next()?.to_owned();
    let payment_id = Uuid::try_parse(parts.next()?).ok()?;
    let amount_minor = parts.next()?.parse().ok()?;
    let currency = parts.next()?.to_owned();
    if parts.next().is_some() || currency.len() != 3 {
        return None;
    }
    Some((
        key,
        LedgerEntry {
            payment_id,
            amount_minor,
            currency,
        },
    ))
}

/// FNV-1a, 64 bit: a hash that is the same in every build (std's is not promised to be).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// SplitMix64's finaliser: spreads nearby inputs (attempt 1, 2, 3) over the whole range.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(n: u128, customer: &str, amount: i64) -> ChargeRequest {
        let order_id = Uuid::from_u128(n);
        ChargeRequest {
            order_id,
            customer_id: customer.into(),
            amount_minor: amount,
            currency: "EUR".into(),
            idempotency_key: order_id.to_string(),
        }
    }

    fn quiet(config: SimulatedGatewayConfig) -> SimulatedGateway {
        SimulatedGateway::new(SimulatedGatewayConfig {
            latency: Duration::ZERO,
            latency_jitter: Duration::ZERO,
            ..config
        })
        .unwrap()
    }

    #[tokio::test]
    async fn declines_are_deterministic_and_ordered() {
        let g = quiet(SimulatedGatewayConfig {
            amount_limit_minor: 1_000,
            declined_customers: vec!["mallory".into()],
            unsupported_currencies: vec!["XAU".into()],
            transient_failure_rate: 0.0,
            ..Default::default()
        });
        let ok = g.charge(&request(1, "alice", 1_000)).await.unwrap();
        assert_eq!(
            ok.payment_id,
            Uuid::new_v5(
                &PAYMENT_ID_NAMESPACE,
                Uuid::from_u128(1).to_string().as_bytes()
            )
        );
        let over = g.charge(&request(2, "alice", 1_001)).await.unwrap_err();
        assert!(
            matches!(&over, GatewayError::Declined { code, .. } if code == "AMOUNT_OVER_LIMIT")
        );
        // The decline list is checked before the limit.
        let declined = g.charge(&request(3, "mallory", 5_000)).await.unwrap_err();
        assert!(
            matches!(&declined, GatewayError::Declined { code, .. } if code == "CUSTOMER_DECLINED")
        );
        let mut gold = request(4, "mallory", 5);
        gold.currency = "XAU".into();
        assert!(matches!(
            g.charge(&gold).await.unwrap_err(),
            GatewayError::Fatal(_)
        ));
        assert_eq!(g.charges(), 1);
        assert_eq!(g.total_requests(), 4);
    }

    #[tokio::test]
    async fn a_key_is_charged_once_and_replayed() {
        let g = quiet(SimulatedGatewayConfig {
            transient_failure_rate: 0.0,
            ..Default::default()
        });
        let r = request(7, "bob", 100);
        let first = g.charge(&r).await.unwrap();
        let again = g.charge(&r).await.unwrap();
        assert_eq!(first, again);
        assert_eq!(g.charges(), 1);
        assert_eq!(g.requests(&r.idempotency_key), 2);
        // Same key, other amount: the provider refuses rather than guess.
        let changed = ChargeRequest {
            amount_minor: 101,
            ..r
        };
        assert!(matches!(
            g.charge(&changed).await.unwrap_err(),
            GatewayError::Fatal(_)
        ));
    }

    #[tokio::test]
    async fn transient_failures_follow_the_seed_per_attempt() {
        let config = SimulatedGatewayConfig {
            transient_failure_rate: 0.5,
            seed: 99,
            ..Default::default()
        };
        // Two gateways, orders asked in opposite orders: the same attempts fail.
        let a = quiet(config.clone());
        let b = quiet(config);
        let requests: Vec<_> = (0..200).map(|n| request(n, "c", 10)).collect();
        let mut seen_a = Vec::new();
        for r in &requests {
            seen_a.push(a.charge(r).await.is_err());
        }
        let mut seen_b = Vec::new();
        for r in requests.iter().rev() {
            seen_b.push(b.charge(r).await.is_err());
        }
        seen_b.reverse();
        assert_eq!(seen_a, seen_b);
        let failures = seen_a.iter().filter(|f| **f).count();
        assert!(
            (70..=130).contains(&failures),
            "{failures} of 200 at rate 0.5"
        );
        // A retry is a new draw: most failed keys succeed on attempt 2 or 3.
        let mut recovered = 0;
        for (r, failed) in requests.iter().zip(&seen_a) {
            if *failed && (a.charge(r).await.is_ok() || a.charge(r).await.is_ok()) {
                recovered += 1;
            }
        }
        assert!(recovered > failures / 2, "{recovered} of {failures}");
    }

    #[tokio::test]
    async fn latency_is_fixed_plus_bounded_jitter() {
        let g = SimulatedGateway::new(SimulatedGatewayConfig {
            latency: Duration::from_millis(10),
            latency_jitter: Duration::from_millis(5),
            transient_failure_rate: 0.0,
            ..Default::default()
        })
        .unwrap();
        for n in 0..20 {
            let started = tokio::time::Instant::now();
            g.charge(&request(n, "c", 10)).await.unwrap();
            let took = started.elapsed();
            // At least the fixed part; at most fixed + jitter, plus scheduling slack.
            assert!(
                took >= Duration::from_millis(10) && took <= Duration::from_millis(60),
                "{took:?}"
            );
        }
    }

    #[tokio::test]
    async fn the_ledger_survives_a_restart_and_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.txt");
        let config = SimulatedGatewayConfig {
            transient_failure_rate: 0.0,
            latency: Duration::ZERO,
            latency_jitter: Duration::ZERO,
            ledger_path: Some(path.clone()),
            ..Default::default()
        };
        let first = SimulatedGateway::new(config.clone()).unwrap();
        let charge = first.charge(&request(1, "a", 10)).await.unwrap();
        first.charge(&request(2, "a", 20)).await.unwrap();
        drop(first);
        // A crash in the middle of writing a third line.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"00000000-0000-0000-0000-000000000003 6a1c")
            .unwrap();
        drop(f);
        let second = SimulatedGateway::new(config).unwrap();
        assert_eq!(second.charges(), 2);
        assert_eq!(
            second.charged(&Uuid::from_u128(1).to_string()),
            Some(charge.clone())
        );
        assert_eq!(second.charge(&request(1, "a", 10)).await.unwrap(), charge);
        second.charge(&request(4, "a", 40)).await.unwrap();
        assert_eq!(second.charges(), 3);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text.lines()
                .filter(|l| parse_ledger_line(l).is_some())
                .count(),
            3
        );
    }

    #[test]
    fn rates_outside_0_1_are_refused() {
        for bad in [-0.1, 1.1, f64::NAN] {
            let c = SimulatedGatewayConfig {
                transient_failure_rate: bad,
                ..Default::default()
            };
            assert!(c.validate().is_err(), "{bad}");
        }
    }
}
