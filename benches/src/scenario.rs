//! A realistic, seeded stream of shop activity, and the state it must lead to.
//!
//! The stream mixes REST and gRPC, restocks and corrections, orders that the simulated
//! gateway will decline (customers on its decline list, totals over its amount limit),
//! line changes and cancellations. [`Scenario::reference`] computes the final views with
//! the pipeline's plain reference model ([`pipeline::model::Model`]) from what was sent
//! and the payment outcomes, in the causal order the sender controls: every order's
//! changes and cancellation are sent before its payment can happen (the end-to-end test
//! holds the payment service back for those orders), so the expected status of every
//! order is determined.

use std::collections::BTreeMap;

use pipeline::logic::{Change, InputEvent, Line as MLine, Pos};
use pipeline::model::Model;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::client::{Api, Line};

/// Proportions of the generated stream.
#[derive(Debug, Clone)]
pub struct Mix {
    /// Orders to create.
    pub orders: usize,
    /// Distinct SKUs.
    pub skus: usize,
    /// Share of requests sent over gRPC (the rest over REST).
    pub grpc_share: f64,
    /// Share of orders by customers on the gateway's decline list.
    pub declined_share: f64,
    /// Share of orders whose total exceeds the gateway's amount limit.
    pub over_limit_share: f64,
    /// Share of orders whose lines are changed after creation.
    pub change_share: f64,
    /// Share of orders cancelled after creation.
    pub cancel_share: f64,
    /// Restocks (and a few corrections) spread over the stream.
    pub restocks: usize,
}

impl Default for Mix {
    fn default() -> Self {
        Mix {
            orders: 1000,
            skus: 12,
            grpc_share: 0.4,
            declined_share: 0.08,
            over_limit_share: 0.05,
            change_share: 0.12,
            cancel_share: 0.10,
            restocks: 40,
        }
    }
}

/// The simulated gateway's decline rules the scenario is built against (the services
/// must be configured with the same ones).
#[derive(Debug, Clone)]
pub struct GatewayRules {
    /// Totals above this are declined (AMOUNT_OVER_LIMIT).
    pub amount_limit_minor: i64,
    /// Customers always declined (CUSTOMER_DECLINED).
    pub declined_customers: Vec<String>,
}

impl Default for GatewayRules {
    fn default() -> Self {
        GatewayRules {
            amount_limit_minor: 1_000_000,
            declined_customers: (0..5).map(|i| format!("blocked-{i}")).collect(),
        }
    }
}

/// One thing the scenario does.
#[derive(Debug, Clone)]
pub enum Action {
    /// Restock (positive) or correction (negative).
    Adjust {
        /// SKU.
        sku: String,
        /// Units.
        delta: i64,
        /// Why.
        reason: &'static str,
        /// Through which API.
        api: Api,
    },
    /// Create order number `order` (index into the scenario's orders).
    Create {
        /// Order index.
        order: usize,
        /// Customer.
        customer: String,
        /// Lines.
        lines: Vec<Line>,
        /// Through which API.
        api: Api,
    },
    /// Replace the lines of order `order`.
    Change {
        /// Order index.
        order: usize,
        /// New lines.
        lines: Vec<Line>,
        /// Through which API.
        api: Api,
    },
    /// Cancel order `order`.
    Cancel {
        /// Order index.
        order: usize,
        /// Through which API.
        api: Api,
    },
}

/// Expected order views: order id → (status, total_minor).
pub type ExpectedOrders = BTreeMap<u128, (String, i64)>;
/// Expected stock views: SKU → (on_hand, reserved, available); all-zero SKUs absent.
pub type ExpectedStock = BTreeMap<String, (i64, i64, i64)>;

/// A generated stream.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The actions, in sending order.
    pub actions: Vec<Action>,
    /// The rules it was built for.
    pub rules: GatewayRules,
    /// All orders are in this currency.
    pub currency: &'static str,
}

fn lines(rng: &mut StdRng, skus: usize, over_limit: bool) -> Vec<Line> {
    (0..rng.random_range(1..=3))
        .map(|i| Line {
            sku: format!("SKU-{:03}", rng.random_range(0..skus)),
            quantity: rng.random_range(1..=4),
            // One line far over the limit makes the whole order over it.
            unit_price_minor: if over_limit && i == 0 {
                2_000_000
            } else {
                rng.random_range(199..=9_999)
            },
        })
        .collect()
}

impl Scenario {
    /// Generates a scenario; the same seed gives the same stream.
    pub fn generate(seed: u64, mix: &Mix, rules: GatewayRules) -> Scenario {
        let mut rng = StdRng::seed_from_u64(seed);
        let api = |rng: &mut StdRng| {
            if rng.random_bool(mix.grpc_share) {
                Api::Grpc
            } else {
                Api::Rest
            }
        };
        let mut actions = Vec::new();
        // Opening stock for every SKU.
        for s in 0..mix.skus {
            let delta = rng.random_range(50..=200);
            actions.push(Action::Adjust {
                sku: format!("SKU-{s:03}"),
                delta,
                reason: "opening stock",
                api: api(&mut rng),
            });
        }
        let restock_every = (mix.orders / mix.restocks.max(1)).max(1);
        for order in 0..mix.orders {
            let declined = rng.random_bool(mix.declined_share);
            let customer = if declined {
                rules.declined_customers[rng.random_range(0..rules.declined_customers.len())]
                    .clone()
            } else {
                format!("customer-{}", rng.random_range(0..500))
            };
            let over = rng.random_bool(mix.over_limit_share);
            actions.push(Action::Create {
                order,
                customer,
                lines: lines(&mut rng, mix.skus, over),
                api: api(&mut rng),
            });
            if rng.random_bool(mix.change_share) {
                actions.push(Action::Change {
                    order,
                    lines: lines(&mut rng, mix.skus, false),
                    api: api(&mut rng),
                });
            }
            if rng.random_bool(mix.cancel_share) {
                actions.push(Action::Cancel {
                    order,
                    api: api(&mut rng),
                });
            }
            if order % restock_every == restock_every - 1 {
                let sku = format!("SKU-{:03}", rng.random_range(0..mix.skus));
                let (delta, reason) = if rng.random_bool(0.85) {
                    (rng.random_range(10..=60), "restock")
                } else {
                    (-rng.random_range(1..=5), "damaged")
                };
                actions.push(Action::Adjust {
                    sku,
                    delta,
                    reason,
                    api: api(&mut rng),
                });
            }
        }
        Scenario {
            actions,
            rules,
            currency: "EUR",
        }
    }

    /// Number of orders in the scenario.
    pub fn orders(&self) -> usize {
        self.actions
            .iter()
            .filter(|a| matches!(a, Action::Create { .. }))
            .count()
    }

    /// Whether the gateway declines order `order` (by its created total and customer).
    pub fn declined(&self, customer: &str, created_lines: &[Line]) -> bool {
        let total: i64 = created_lines
            .iter()
            .map(|l| l.quantity * l.unit_price_minor)
            .sum();
        self.rules.declined_customers.iter().any(|c| c == customer)
            || total > self.rules.amount_limit_minor
    }

    /// The final views: every order's (status, total) by its id, and every SKU's
    /// (on_hand, reserved, available). `ids[i]` is the id ingress gave order `i`;
    /// `paid(i)` is its payment outcome (true = completed). Each order's changes and
    /// cancellation precede its payment outcome.
    pub fn reference(
        &self,
        ids: &[u128],
        paid: impl Fn(usize) -> bool,
    ) -> (ExpectedOrders, ExpectedStock) {
        let mut model = Model::new();
        let mut offset = 0;
        let mut pos = |topic: u8| {
            offset += 1;
            Pos {
                time: 1,
                topic,
                partition: 0,
                offset,
            }
        };
        let to_model = |lines: &[Line]| -> Vec<MLine> {
            lines
                .iter()
                .map(|l| MLine {
                    sku: l.sku.clone(),
                    quantity: l.quantity,
                    unit_price_minor: l.unit_price_minor,
                })
                .collect()
        };
        let mut batch = Vec::new();
        let mut revision = 0;
        for a in &self.actions {
            match a {
                Action::Adjust { sku, delta, .. } => batch.push((
                    pos(4),
                    InputEvent::StockAdjusted {
                        sku: sku.clone(),
                        delta: *delta,
                    },
                )),
                Action::Create { order, lines, .. } => batch.push((
                    pos(0),
                    InputEvent::OrderCreated {
                        order_id: ids[*order],
                        currency: self.currency.into(),
                        lines: to_model(lines),
                    },
                )),
                Action::Change { order, lines, .. } => {
                    revision += 1;
                    batch.push((
                        pos(1),
                        InputEvent::OrderUpdated {
                            order_id: ids[*order],
                            revision,
                            change: Change::Lines(to_model(lines)),
                        },
                    ))
                }
                Action::Cancel { order, .. } => {
                    revision += 1;
                    batch.push((
                        pos(1),
                        InputEvent::OrderUpdated {
                            order_id: ids[*order],
                            revision,
                            change: Change::Cancel,
                        },
                    ))
                }
            }
        }
        for (i, id) in ids.iter().enumerate() {
            let ev = if paid(i) {
                InputEvent::PaymentCompleted { order_id: *id }
            } else {
                InputEvent::PaymentFailed { order_id: *id }
            };
            batch.push((pos(2), ev));
        }
        model.apply_epoch(batch);
        let orders = model
            .orders()
            .into_iter()
            .map(|(id, v)| (id, (v.status.as_str().to_string(), v.total_minor)))
            .collect();
        let stock = model
            .stock()
            .into_iter()
            .map(|(sku, l)| (sku, (l.on_hand, l.reserved, l.available)))
            .collect();
        (orders, stock)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_stream_with_every_kind_of_action() {
        let a = Scenario::generate(3, &Mix::default(), GatewayRules::default());
        let b = Scenario::generate(3, &Mix::default(), GatewayRules::default());
        assert_eq!(format!("{:?}", a.actions), format!("{:?}", b.actions));
        assert_eq!(a.orders(), 1000);
        let count = |f: fn(&Action) -> bool| a.actions.iter().filter(|x| f(x)).count();
        assert!(count(|x| matches!(x, Action::Change { .. })) > 50);
        assert!(count(|x| matches!(x, Action::Cancel { .. })) > 50);
        assert!(count(|x| matches!(x, Action::Adjust { delta, .. } if *delta < 0)) > 0);
        assert!(count(|x| matches!(x, Action::Create { api: Api::Grpc, .. })) > 200);
        let declined = a
            .actions
            .iter()
            .filter(|x| matches!(x, Action::Create { customer, lines, .. } if a.declined(customer, lines)))
            .count();
        assert!(declined > 50 && declined < 300, "{declined}");
    }

    #[test]
    fn the_reference_applies_cancels_before_payments_and_sells_paid_lines() {
        let line = |sku: &str, q| Line {
            sku: sku.into(),
            quantity: q,
            unit_price_minor: 100,
        };
        let s = Scenario {
            actions: vec![
                Action::Adjust {
                    sku: "A".into(),
                    delta: 10,
                    reason: "restock",
                    api: Api::Rest,
                },
                Action::Create {
                    order: 0,
                    customer: "c".into(),
                    lines: vec![line("A", 2)],
                    api: Api::Rest,
                },
                Action::Create {
                    order: 1,
                    customer: "c".into(),
                    lines: vec![line("A", 3)],
                    api: Api::Grpc,
                },
                Action::Cancel {
                    order: 1,
                    api: Api::Rest,
                },
                Action::Create {
                    order: 2,
                    customer: "c".into(),
                    lines: vec![line("A", 1)],
                    api: Api::Rest,
                },
                Action::Change {
                    order: 2,
                    lines: vec![line("A", 4)],
                    api: Api::Grpc,
                },
            ],
            rules: GatewayRules::default(),
            currency: "EUR",
        };
        let (orders, stock) = s.reference(&[10, 11, 12], |i| i != 1);
        assert_eq!(orders[&10], ("PAID".to_string(), 200));
        assert_eq!(orders[&11], ("CANCELLED".to_string(), 300));
        assert_eq!(orders[&12], ("PAID".to_string(), 400));
        assert_eq!(stock["A"], (10 - 2 - 4, 0, 4));
    }
}
