//! The records benchmarks send and size: orders built one way, and an event's size as it
//! lies in Kafka.
//!
//! Why: every benchmark compares the project against a baseline fed with "the same
//! bytes" (Kafka's tools get records of the size of a real `order.created`, the bare
//! produce the same framed Avro). That comparison only holds if the orders and their
//! sizes are made by one function, not by a near copy in each binary.

use eventbus::codec::{frame, validate_and_encode};
use rand::Rng;
use schemas::{Event, OrderCreated, OrderLine};
use uuid::Uuid;

/// Bytes the Confluent wire format puts before the Avro datum (magic byte + schema id).
pub const FRAME_HEADER_BYTES: usize = 5;

/// A day in 2025 (UTC, ms): the creation time of orders that are only sized, so that
/// sizes do not depend on the clock.
pub const FIXED_CREATED_AT_MS: i64 = 1_764_000_000_000;

/// An `order.created` of `order_id` by `customer` (EUR, over REST, a fresh event id),
/// its total the sum of its lines.
pub fn order_created(
    order_id: Uuid,
    customer: impl Into<String>,
    lines: Vec<OrderLine>,
    created_at: i64,
) -> OrderCreated {
    OrderCreated {
        event_id: Uuid::new_v4(),
        order_id,
        customer_id: customer.into(),
        currency: "EUR".into(),
        total_minor: schemas::order_total(&lines).unwrap_or(0),
        lines,
        created_at,
        channel: Some("REST".into()),
    }
}

/// 1 to `max_lines` lines of SKUs `SKU-0000` .. `SKU-<skus - 1>`, 1 to `max_quantity`
/// units each at 1.00 to `max_price_minor`.
pub fn random_lines(
    rng: &mut impl Rng,
    max_lines: u32,
    skus: u32,
    max_quantity: i32,
    max_price_minor: i64,
) -> Vec<OrderLine> {
    (0..rng.random_range(1..=max_lines.max(1)))
        .map(|_| OrderLine {
            sku: format!("SKU-{:04}", rng.random_range(0..skus.max(1))),
            quantity: rng.random_range(1..=max_quantity.max(1)),
            unit_price_minor: rng.random_range(100..=max_price_minor.max(100)),
        })
        .collect()
}

/// The size of `event` as a record value: Avro datum + the 5-byte header (keys and
/// headers not counted); 0 if it does not encode.
pub fn framed_size<E: Event>(event: &E) -> usize {
    event
        .to_avro()
        .map(|v| v.len() + FRAME_HEADER_BYTES)
        .unwrap_or(0)
}

/// The mean [`framed_size`] of `events` (0 for none).
pub fn mean_framed_size<'a, E: Event + 'a>(events: impl IntoIterator<Item = &'a E>) -> usize {
    let (count, bytes) = events
        .into_iter()
        .fold((0usize, 0usize), |(n, b), e| (n + 1, b + framed_size(e)));
    bytes / count.max(1)
}

/// `event` validated, Avro-encoded and framed with `schema_id`: a record value as the
/// services write it.
pub fn framed<E: Event>(schema_id: u32, event: &E) -> Result<Vec<u8>, eventbus::BusError> {
    Ok(frame(schema_id, &validate_and_encode(event)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn random_orders_stay_in_their_bounds_and_encode() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..200 {
            let lines = random_lines(&mut rng, 3, 50, 4, 9_000);
            assert!((1..=3).contains(&lines.len()));
            assert!(lines.iter().all(|l| l.sku.as_str() < "SKU-0050"
                && (1..=4).contains(&l.quantity)
                && (100..=9_000).contains(&l.unit_price_minor)));
            let order = order_created(Uuid::new_v4(), "c", lines, FIXED_CREATED_AT_MS);
            assert!(framed(1, &order).is_ok());
            assert!(framed_size(&order) > FRAME_HEADER_BYTES);
        }
    }

    #[test]
    fn the_mean_size_is_the_framed_datum() {
        let order = order_created(
            Uuid::new_v4(),
            "c",
            vec![OrderLine::new("SKU-1", 2, 1999)],
            FIXED_CREATED_AT_MS,
        );
        let framed_len = framed(9, &order).unwrap().len();
        assert_eq!(framed_size(&order), framed_len);
        assert_eq!(mean_framed_size([&order, &order]), framed_len);
        assert_eq!(mean_framed_size::<OrderCreated>([]), 0);
        // An order that does not validate is refused, not framed.
        let empty = order_created(Uuid::new_v4(), "c", vec![], FIXED_CREATED_AT_MS);
        assert!(framed(9, &empty).is_err());
    }
}
