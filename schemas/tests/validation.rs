//! Domain validation: valid events pass, invalid ones list every broken rule with its
//! field path, and nothing panics on extreme numbers.

mod common;

use schemas::{
    Event, MAX_LINES_PER_ORDER, OrderChangeKind, OrderCreated, OrderLine, OrderUpdated,
    PaymentCompleted, PaymentFailed, StockAdjusted, StockUpdated, Violations, order_total,
    validate_currency, validate_lines, validate_sku, validation,
};
use uuid::Uuid;

/// The violated field paths of `event`, in order.
fn fields<E: Event>(event: &E) -> Vec<String> {
    match event.validate() {
        Ok(()) => Vec::new(),
        Err(violations) => violations.fields().map(str::to_owned).collect(),
    }
}

#[test]
fn the_samples_are_valid() {
    assert_eq!(common::order_created().validate(), Ok(()));
    assert_eq!(common::order_updated().validate(), Ok(()));
    assert_eq!(common::order_cancelled().validate(), Ok(()));
    assert_eq!(common::payment_completed().validate(), Ok(()));
    assert_eq!(common::payment_failed().validate(), Ok(()));
    assert_eq!(common::stock_adjusted().validate(), Ok(()));
    assert_eq!(common::stock_updated().validate(), Ok(()));
}

#[test]
fn order_created_lists_every_violation() {
    let event = OrderCreated {
        event_id: Uuid::nil(),
        customer_id: "bad\u{7}".to_owned(),
        currency: "eur".to_owned(),
        lines: vec![
            OrderLine::new("SKU-1", 1, 100),
            OrderLine::new("sku-lower", 0, 100),
            OrderLine::new("-DASH", 10_001, 0),
        ],
        total_minor: 1,
        created_at: 0,
        channel: Some("EMAIL".to_owned()),
        ..common::order_created()
    };
    assert_eq!(
        fields(&event),
        [
            "event_id",
            "customer_id",
            "currency",
            "lines[1].sku",
            "lines[1].quantity",
            "lines[2].sku",
            "lines[2].quantity",
            "lines[2].unit_price_minor",
            "total_minor",
            "created_at",
            "channel",
        ]
    );
    let violations = event.validate().unwrap_err();
    let currency = &violations.0[2];
    assert!(
        currency.description.contains("upper case: EUR"),
        "{currency:?}"
    );
    // The Display form names every field, for logs and DLQ headers.
    let text = violations.to_string();
    assert!(
        text.starts_with("11 invalid field(s): event_id: "),
        "{text}"
    );
    assert!(text.contains("lines[2].unit_price_minor: "), "{text}");
}

#[test]
fn order_created_line_count_limits() {
    let empty = OrderCreated {
        lines: Vec::new(),
        total_minor: 0,
        ..common::order_created()
    };
    assert_eq!(fields(&empty), ["lines"]);

    let lines = vec![OrderLine::new("A", 1, 1); MAX_LINES_PER_ORDER];
    let full = OrderCreated {
        total_minor: order_total(&lines).unwrap(),
        lines,
        ..common::order_created()
    };
    assert_eq!(full.validate(), Ok(()));

    let lines = vec![OrderLine::new("A", 1, 1); MAX_LINES_PER_ORDER + 1];
    let too_many = OrderCreated {
        total_minor: order_total(&lines).unwrap(),
        lines,
        ..common::order_created()
    };
    assert_eq!(fields(&too_many), ["lines"]);
}

#[test]
fn order_created_without_channel_is_valid() {
    for channel in [None, Some("REST"), Some("GRPC")] {
        let event = OrderCreated {
            channel: channel.map(str::to_owned),
            ..common::order_created()
        };
        assert_eq!(event.validate(), Ok(()), "{channel:?}");
    }
}

#[test]
fn overflowing_totals_are_a_violation_not_a_panic() {
    let huge = vec![
        OrderLine::new("A", i32::MAX, i64::MAX),
        OrderLine::new("B", i32::MIN, i64::MIN),
    ];
    assert_eq!(order_total(&huge), None);
    assert_eq!(order_total(&huge[..1]), None);
    // Overflow in the sum rather than in a product.
    let sum = vec![OrderLine::new("A", 1, i64::MAX), OrderLine::new("B", 1, 1)];
    assert_eq!(order_total(&sum), None);

    let event = OrderCreated {
        lines: sum,
        total_minor: i64::MAX,
        ..common::order_created()
    };
    let violations = event.validate().unwrap_err();
    let total = violations
        .0
        .iter()
        .find(|v| v.field == "total_minor")
        .unwrap();
    assert!(total.description.contains("overflows"), "{total:?}");

    let update = OrderUpdated {
        lines: huge,
        total_minor: 0,
        ..common::order_updated()
    };
    assert!(fields(&update).contains(&"total_minor".to_owned()));
}

#[test]
fn the_largest_valid_order_does_not_overflow() {
    let lines = vec![
        OrderLine::new(
            "A",
            validation::MAX_QUANTITY,
            validation::MAX_UNIT_PRICE_MINOR
        );
        MAX_LINES_PER_ORDER
    ];
    let total = order_total(&lines).unwrap();
    assert_eq!(total, 100 * 10_000 * 100_000_000);
}

#[test]
fn order_updated_rules_depend_on_the_kind() {
    let bad_change = OrderUpdated {
        revision: 0,
        lines: Vec::new(),
        total_minor: 5,
        currency: "XXX".to_owned(),
        updated_at: -1,
        ..common::order_updated()
    };
    assert_eq!(
        fields(&bad_change),
        ["revision", "currency", "lines", "total_minor", "updated_at"]
    );

    let bad_cancel = OrderUpdated {
        kind: OrderChangeKind::Cancelled,
        order_id: Uuid::nil(),
        ..common::order_updated()
    };
    assert_eq!(fields(&bad_cancel), ["order_id", "lines", "total_minor"]);

    let bad_line = OrderUpdated {
        lines: vec![OrderLine::new("OK", 1, 1), OrderLine::new("", 1, 1)],
        total_minor: 2,
        ..common::order_updated()
    };
    assert_eq!(fields(&bad_line), ["lines[1].sku"]);
}

#[test]
fn payment_rules() {
    let completed = PaymentCompleted {
        payment_id: Uuid::nil(),
        amount_minor: 0,
        currency: "EURO".to_owned(),
        completed_at: 0,
        ..common::payment_completed()
    };
    assert_eq!(
        fields(&completed),
        ["payment_id", "amount_minor", "currency", "completed_at"]
    );

    let failed = PaymentFailed {
        event_id: Uuid::nil(),
        amount_minor: -5,
        currency: String::new(),
        reason_code: "declined".to_owned(),
        reason: String::new(),
        failed_at: i64::MIN,
        ..common::payment_failed()
    };
    assert_eq!(
        fields(&failed),
        [
            "event_id",
            "amount_minor",
            "currency",
            "reason_code",
            "reason",
            "failed_at"
        ]
    );
    for code in schemas::reason_codes::KNOWN {
        assert_eq!(validation::validate_reason_code(code), None, "{code}");
    }
    assert!(validation::validate_reason_code("NEW_CODE_2").is_none());
    assert!(validation::validate_reason_code("_X").is_some());
    assert!(validation::validate_reason_code(&"A".repeat(65)).is_some());
}

#[test]
fn stock_adjusted_rules() {
    let event = StockAdjusted {
        sku: "A".repeat(65),
        delta: 0,
        reason: "x".repeat(201),
        adjusted_at: 0,
        ..common::stock_adjusted()
    };
    assert_eq!(fields(&event), ["sku", "delta", "reason", "adjusted_at"]);
    for delta in [i64::MIN, -1_000_000_001, 1_000_000_001, i64::MAX] {
        assert!(validation::validate_stock_delta(delta).is_some(), "{delta}");
    }
    for delta in [-1_000_000_000, -1, 1, 1_000_000_000] {
        assert_eq!(validation::validate_stock_delta(delta), None, "{delta}");
    }
    let ok = StockAdjusted {
        reason: "é".repeat(200),
        ..common::stock_adjusted()
    };
    assert_eq!(ok.validate(), Ok(()));
}

#[test]
fn stock_updated_rules() {
    let event = StockUpdated {
        sku: "A B".to_owned(),
        on_hand: 10,
        reserved: -1,
        available: 10,
        version: 0,
        updated_at: 0,
    };
    assert_eq!(
        fields(&event),
        ["sku", "reserved", "available", "version", "updated_at"]
    );
    let overflow = StockUpdated {
        on_hand: i64::MIN,
        reserved: 1,
        available: i64::MIN,
        ..common::stock_updated()
    };
    let violations = overflow.validate().unwrap_err();
    assert_eq!(violations.fields().collect::<Vec<_>>(), ["available"]);
    assert!(violations.0[0].description.contains("overflows"));
    // Oversold is valid and visible.
    let oversold = StockUpdated::new("SKU-1", 0, 7, 1, common::T);
    assert_eq!(oversold.available, -7);
    assert_eq!(oversold.validate(), Ok(()));
}

#[test]
fn stock_updated_ids_are_deterministic() {
    let a = common::stock_updated();
    let b = common::stock_updated();
    assert_eq!(a.event_id(), b.event_id());
    assert_eq!(a.derived_event_id().get_version_num(), 5);
    let next = StockUpdated {
        version: a.version + 1,
        ..a.clone()
    };
    assert_ne!(a.event_id(), next.event_id());
    let other = StockUpdated {
        sku: "SKU-2".to_owned(),
        ..a.clone()
    };
    assert_ne!(a.event_id(), other.event_id());
    // Pinned: changing the namespace or the name format would change every id.
    assert_eq!(
        StockUpdated::new("SKU-1", 0, 0, 1, 1).event_id(),
        Uuid::new_v5(&schemas::STOCK_UPDATED_ID_NAMESPACE, b"SKU-1@1").to_string()
    );
}

#[test]
fn sku_rule() {
    for ok in ["A", "0", "SKU-1", "SKU_1", "9-_", &"Z".repeat(64)] {
        assert_eq!(validate_sku(ok), None, "{ok}");
    }
    for bad in [
        "",
        "-A",
        "_A",
        "sku",
        "SKU 1",
        "SKU.1",
        "ÄB",
        &"Z".repeat(65),
    ] {
        assert!(validate_sku(bad).is_some(), "{bad}");
    }
}

#[test]
fn currency_rule() {
    for ok in ["EUR", "USD", "JPY", "CHF", "XOF", "XCG", "ZWG"] {
        assert_eq!(validate_currency(ok), None, "{ok}");
    }
    for bad in [
        "", "eur", "Eur", "EURO", "EU", "XXX", "XTS", "XAU", "HRK", "ABC", "€",
    ] {
        assert!(validate_currency(bad).is_some(), "{bad}");
    }
    assert!(validate_currency("usd").unwrap().contains("USD"));
}

#[test]
fn the_currency_list_is_sorted_unique_upper_case() {
    let codes = validation::ACTIVE_CURRENCIES;
    assert!(codes.windows(2).all(|w| w[0] < w[1]), "sorted and unique");
    assert!(
        codes
            .iter()
            .all(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()))
    );
    assert!(codes.iter().all(|c| validation::is_active_currency(c)));
}

#[test]
fn customer_id_rule() {
    assert_eq!(validation::validate_customer_id(&"ü".repeat(128)), None);
    for bad in [
        String::new(),
        "x".repeat(129),
        "a\nb".to_owned(),
        "\u{0}".to_owned(),
    ] {
        assert!(validation::validate_customer_id(&bad).is_some(), "{bad:?}");
    }
}

#[test]
fn validate_lines_uses_the_given_prefix() {
    let mut violations = Violations::default();
    validate_lines(
        &[OrderLine::new("OK", 1, 1), OrderLine::new("ok", -1, 0)],
        "order.lines",
        &mut violations,
    );
    assert_eq!(
        violations.fields().collect::<Vec<_>>(),
        [
            "order.lines[1].sku",
            "order.lines[1].quantity",
            "order.lines[1].unit_price_minor"
        ]
    );
    let mut none = Violations::default();
    validate_lines(&[], "lines", &mut none);
    assert_eq!(none.fields().collect::<Vec<_>>(), ["lines"]);
}

#[test]
fn ids_from_text() {
    let id = validation::parse_id("67E55044-10B1-426F-9247-BB680E5FE0C8").unwrap();
    assert_eq!(id.to_string(), "67e55044-10b1-426f-9247-bb680e5fe0c8");
    for bad in [
        "",
        "67e5504410b1426f9247bb680e5fe0c8",
        "{67e55044-10b1-426f-9247-bb680e5fe0c8}",
        "67e55044-10b1-426f-9247-bb680e5fe0cz",
        "00000000-0000-0000-0000-000000000000",
    ] {
        assert!(validation::parse_id(bad).is_err(), "{bad}");
    }
    // The error says which rule, and a parse failure keeps the parser's error as its cause.
    assert!(matches!(
        validation::parse_id("00000000-0000-0000-0000-000000000000"),
        Err(schemas::SchemaError::NilId)
    ));
    let syntax = validation::parse_id("67e55044-10b1-426f-9247-bb680e5fe0cz").unwrap_err();
    assert!(std::error::Error::source(&syntax).is_some(), "{syntax:?}");
    assert!(syntax.to_string().starts_with("must be a UUID"), "{syntax}");
}

#[test]
fn random_orders_validate_iff_their_parts_do_and_never_panic() {
    use rand::{Rng, SeedableRng, rngs::StdRng};
    let mut rng = StdRng::seed_from_u64(42);
    for _ in 0..2_000 {
        let n = rng.random_range(0..=MAX_LINES_PER_ORDER + 2);
        let lines: Vec<_> = (0..n)
            .map(|i| {
                let quantity = if rng.random_bool(0.05) {
                    rng.random()
                } else {
                    rng.random_range(1..=10_000)
                };
                let price = if rng.random_bool(0.05) {
                    rng.random()
                } else {
                    rng.random_range(1..=100_000_000)
                };
                OrderLine::new(format!("SKU-{i}"), quantity, price)
            })
            .collect();
        let total = order_total(&lines);
        let event = OrderCreated {
            total_minor: total.unwrap_or(0),
            lines,
            ..common::order_created()
        };
        let lines_ok = (1..=MAX_LINES_PER_ORDER).contains(&event.lines.len())
            && event.lines.iter().all(|l| {
                (1..=10_000).contains(&l.quantity)
                    && (1..=100_000_000).contains(&l.unit_price_minor)
            });
        assert_eq!(event.validate().is_ok(), lines_ok && total.is_some());
        if lines_ok {
            // Valid lines never overflow, and a valid event always encodes and decodes.
            assert!(total.is_some());
            let back = OrderCreated::from_avro(OrderCreated::schema(), &event.to_avro().unwrap());
            assert_eq!(back.unwrap(), event);
        }
    }
}
