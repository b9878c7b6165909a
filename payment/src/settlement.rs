//! Settlement: one order through the gateway, with retries, to exactly one decision.
//!
//! | gateway answer | decision |
//! |---|---|
//! | charge | [`Settlement::Completed`] → `payment.completed` |
//! | declined | [`Settlement::Failed`] with the gateway's code → `payment.failed` (a business outcome, never retried) |
//! | transient, attempts left | wait `retry.delay(failures)` (exponential, full jitter), try again with the **same idempotency key** |
//! | transient, attempts used up | [`Settlement::DeadLetter`] `retries-exhausted`, or `payment.failed` `GATEWAY_UNAVAILABLE` if so configured |
//! | fatal | [`Settlement::DeadLetter`] `handler-fatal` |
//!
//! Settling has no side effect on Kafka: it only decides. The decision is written later,
//! with the batch's offsets, in one transaction ([`crate::processor`]). If that
//! transaction aborts, the order is settled again, and the idempotency key makes the
//! second charge a replay of the first.
//!
//! Backoff waits inside the batch: the batch (and every order in it) commits when its
//! slowest order is decided. That is why the default envelope is short (about 1.5 s over
//! 5 attempts) and why a batch must fit in `max.poll.interval.ms`.

use std::time::Instant;

use eventbus::ErrorClass;
use eventbus::headers::now_ms;
use schemas::{OrderCreated, reason_codes};
use uuid::Uuid;

use crate::config::{OnRetriesExhausted, SettleConfig};
use crate::gateway::{ChargeRequest, GatewayError, PaymentGateway};
use crate::metrics::PaymentMetrics;

/// The decision for one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// Charged: publish `payment.completed`.
    Completed {
        /// The gateway's payment id.
        payment_id: Uuid,
    },
    /// Not charged, for a business reason: publish `payment.failed`.
    Failed {
        /// `UPPER_SNAKE_CASE` reason code.
        reason_code: String,
        /// The reason in words.
        reason: String,
    },
    /// Not decidable: dead-letter the order record.
    DeadLetter {
        /// Why: `handler-fatal` or `retries-exhausted`.
        class: ErrorClass,
        /// The last gateway error.
        message: String,
        /// Gateway attempts made.
        attempts: u32,
        /// When the first attempt failed, ms since the epoch.
        first_failure_ms: i64,
        /// When the last attempt failed, ms since the epoch.
        last_failure_ms: i64,
    },
}

/// Settles `order` (read from `topic`) through `gateway`: see the module docs for the
/// decision table.
pub async fn settle<G: PaymentGateway>(
    gateway: &G,
    order: &OrderCreated,
    config: &SettleConfig,
    metrics: &PaymentMetrics,
    topic: &str,
) -> Settlement {
    let request = ChargeRequest::for_order(order);
    let mut attempts = 0u32;
    let mut first_failure_ms = None;
    loop {
        attempts += 1;
        let started = Instant::now();
        let answer = gateway.charge(&request).await;
        let result = match &answer {
            Ok(_) => "ok",
            Err(GatewayError::Declined { .. }) => "declined",
            Err(GatewayError::Transient(_) | GatewayError::Ledger(_)) => "transient",
            Err(GatewayError::Fatal(_)) => "fatal",
        };
        metrics
            .gateway_latency
            .with_label_values(&[result])
            .observe(started.elapsed().as_secs_f64());
        let failed_at = now_ms();
        match answer {
            Ok(charge) => {
                return Settlement::Completed {
                    payment_id: charge.payment_id,
                };
            }
            Err(GatewayError::Declined { code, reason }) => {
                return Settlement::Failed {
                    reason_code: code,
                    reason,
                };
            }
            Err(GatewayError::Fatal(message)) => {
                tracing::warn!(
                    order_id = %order.order_id, attempts,
                    "gateway refused the charge, dead-lettering the order: {message}"
                );
                return Settlement::DeadLetter {
                    class: ErrorClass::HandlerFatal,
                    message: format!("gateway refused the request: {message}"),
                    attempts,
                    first_failure_ms: first_failure_ms.unwrap_or(failed_at),
                    last_failure_ms: failed_at,
                };
            }
            Err(error @ (GatewayError::Transient(_) | GatewayError::Ledger(_))) => {
                let message = eventbus::chain(&error);
                let first = *first_failure_ms.get_or_insert(failed_at);
                if attempts < config.retry.max_attempts {
                    let delay = config.retry.delay(attempts);
                    metrics.gateway_retries.inc();
                    metrics
                        .bus
                        .retried
                        .with_label_values(&[topic, "gateway-transient"])
                        .inc();
                    tracing::debug!(
                        order_id = %order.order_id, attempts,
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        "gateway unavailable, retrying: {message}"
                    );
                    tokio::time::sleep(delay).await;
                    continue;
                }
                tracing::warn!(
                    order_id = %order.order_id, attempts,
                    "gateway unavailable on every attempt: {message}"
                );
                return match config.on_retries_exhausted {
                    OnRetriesExhausted::DeadLetter => Settlement::DeadLetter {
                        class: ErrorClass::RetriesExhausted,
                        message: format!(
                            "gateway unavailable after {attempts} attempts: {message}"
                        ),
                        attempts,
                        first_failure_ms: first,
                        last_failure_ms: failed_at,
                    },
                    OnRetriesExhausted::Fail => Settlement::Failed {
                        reason_code: reason_codes::GATEWAY_UNAVAILABLE.to_owned(),
                        reason: format!(
                            "the payment gateway did not answer after {attempts} attempts"
                        ),
                    },
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use eventbus::{Jitter, RetryPolicy};
    use schemas::OrderLine;

    use super::*;
    use crate::gateway::Charge;

    /// Answers from a script, one per attempt.
    struct Scripted(Mutex<Vec<Result<Charge, GatewayError>>>);

    impl PaymentGateway for Scripted {
        async fn charge(&self, request: &ChargeRequest) -> Result<Charge, GatewayError> {
            assert_eq!(request.idempotency_key, request.order_id.to_string());
            self.0.lock().unwrap().remove(0)
        }
    }

    fn order() -> OrderCreated {
        OrderCreated {
            event_id: Uuid::from_u128(1),
            order_id: Uuid::from_u128(2),
            customer_id: "c".into(),
            currency: "EUR".into(),
            lines: vec![OrderLine::new("SKU-1", 1, 100)],
            total_minor: 100,
            created_at: 1,
            channel: None,
        }
    }

    fn config(on_exhausted: OnRetriesExhausted) -> SettleConfig {
        SettleConfig {
            max_in_flight: 1,
            retry: RetryPolicy {
                max_attempts: 3,
                base_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(40),
                jitter: Jitter::None,
            },
            on_retries_exhausted: on_exhausted,
        }
    }

    fn transient() -> Result<Charge, GatewayError> {
        Err(GatewayError::Transient("down".into()))
    }

    /// Settles the test order read from topic `orders`.
    async fn run<G: PaymentGateway>(
        g: &G,
        m: &PaymentMetrics,
        on: OnRetriesExhausted,
    ) -> Settlement {
        settle(g, &order(), &config(on), m, "orders").await
    }

    #[tokio::test]
    async fn transient_then_success_retries_with_backoff() {
        let g = Scripted(Mutex::new(vec![
            transient(),
            transient(),
            Ok(Charge {
                payment_id: Uuid::from_u128(9),
            }),
        ]));
        let m = PaymentMetrics::default();
        let started = tokio::time::Instant::now();
        let s = run(&g, &m, OnRetriesExhausted::DeadLetter).await;
        assert_eq!(
            s,
            Settlement::Completed {
                payment_id: Uuid::from_u128(9)
            }
        );
        // Backoff 10 ms then 20 ms (no jitter).
        assert!(started.elapsed() >= Duration::from_millis(30));
        assert_eq!(m.gateway_retries.get(), 2);
        assert_eq!(
            m.bus
                .retried
                .with_label_values(&["orders", "gateway-transient"])
                .get(),
            2
        );
    }

    #[tokio::test]
    async fn exhausted_goes_to_the_dlq_or_fails_as_configured() {
        let m = PaymentMetrics::default();
        let g = Scripted(Mutex::new(vec![transient(), transient(), transient()]));
        match run(&g, &m, OnRetriesExhausted::DeadLetter).await {
            Settlement::DeadLetter {
                class, attempts, ..
            } => {
                assert_eq!(class, ErrorClass::RetriesExhausted);
                assert_eq!(attempts, 3);
            }
            other => panic!("{other:?}"),
        }
        let g = Scripted(Mutex::new(vec![transient(), transient(), transient()]));
        match run(&g, &m, OnRetriesExhausted::Fail).await {
            Settlement::Failed { reason_code, .. } => {
                assert_eq!(reason_code, reason_codes::GATEWAY_UNAVAILABLE)
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn declines_and_fatal_errors_are_not_retried() {
        let m = PaymentMetrics::default();
        let g = Scripted(Mutex::new(vec![Err(GatewayError::Declined {
            code: "CUSTOMER_DECLINED".into(),
            reason: "no".into(),
        })]));
        let s = run(&g, &m, OnRetriesExhausted::DeadLetter).await;
        assert!(
            matches!(s, Settlement::Failed { ref reason_code, .. } if reason_code == "CUSTOMER_DECLINED")
        );
        let g = Scripted(Mutex::new(vec![Err(GatewayError::Fatal("bad".into()))]));
        let s = run(&g, &m, OnRetriesExhausted::DeadLetter).await;
        assert!(matches!(
            s,
            Settlement::DeadLetter {
                class: ErrorClass::HandlerFatal,
                attempts: 1,
                ..
            }
        ));
        assert_eq!(m.gateway_retries.get(), 0);
    }
}
