//! Read-your-writes for `GET /v1/orders/{id}` and gRPC `GetOrder`: the orders this
//! process accepted lately.
//!
//! Orders are read from the pipeline's view, which trails the events by one epoch (tens
//! of milliseconds to a second). A client that reads its order right after the 201
//! would otherwise get 404 for an order that exists. So ingress remembers the ids of the
//! orders it accepted in the last [`RecentOrders::ttl`] (bounded by a count), and a read
//! of such an order that the view does not hold yet *waits*, up to a bound, until the
//! view has it, instead of answering 404. The answer still comes from the view: it is
//! never made up from the request.
//!
//! The choice (rather than a consistency token that the client passes back) keeps the
//! API as it is and covers the common case, a client reading through the instance that
//! accepted its order. A read through another instance, or after this process
//! restarted, still sees the view as it is, 404 included: the OpenAPI document says so.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

/// How long a read of a recently accepted order waits for the view, at most.
pub const READ_YOUR_WRITES_WAIT: Duration = Duration::from_secs(3);
/// How often the view is asked again while waiting.
pub const READ_YOUR_WRITES_POLL: Duration = Duration::from_millis(50);
/// How many accepted order ids are remembered (16 bytes and an instant each).
pub const RECENT_ORDERS: usize = 100_000;
/// How long an accepted order id is remembered: far longer than the view trails.
pub const RECENT_ORDERS_TTL: Duration = Duration::from_secs(60);

/// The ids of the orders accepted within the last `ttl`, at most `capacity` of them.
#[derive(Debug)]
pub struct RecentOrders {
    capacity: usize,
    ttl: Duration,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Id → when it was accepted (the newest acceptance).
    at: HashMap<Uuid, Instant>,
    /// Acceptances oldest first; an id accepted twice is here twice.
    order: VecDeque<(Uuid, Instant)>,
}

impl RecentOrders {
    /// Remembers at most `capacity` ids, each for `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        RecentOrders {
            capacity: capacity.max(1),
            ttl,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// How long an id is remembered.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Records that `id` was accepted now.
    pub fn accepted(&self, id: Uuid) {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.at.insert(id, now);
        inner.order.push_back((id, now));
        self.evict(&mut inner, now);
    }

    /// Whether `id` was accepted within the ttl.
    pub fn contains(&self, id: &Uuid) -> bool {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        self.evict(&mut inner, now);
        inner.at.contains_key(id)
    }

    fn evict(&self, inner: &mut Inner, now: Instant) {
        while let Some(&(id, at)) = inner.order.front() {
            let expired = now.duration_since(at) > self.ttl;
            if !expired && inner.order.len() <= self.capacity {
                break;
            }
            inner.order.pop_front();
            // Only the newest acceptance of an id removes it.
            if inner.at.get(&id) == Some(&at) {
                inner.at.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_within_capacity_and_ttl() {
        let recent = RecentOrders::new(2, Duration::from_secs(60));
        let (a, b, c) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        recent.accepted(a);
        recent.accepted(b);
        assert!(recent.contains(&a) && recent.contains(&b));
        assert!(!recent.contains(&c), "never accepted");
        recent.accepted(c);
        assert!(
            !recent.contains(&a),
            "the oldest is evicted past the capacity"
        );
        assert!(recent.contains(&b) && recent.contains(&c));
        // Accepted again: the newer acceptance keeps it.
        recent.accepted(b);
        recent.accepted(b);
        assert!(recent.contains(&b));

        let short = RecentOrders::new(10, Duration::from_millis(20));
        short.accepted(a);
        assert!(short.contains(&a));
        std::thread::sleep(Duration::from_millis(40));
        assert!(!short.contains(&a), "expired after the ttl");
    }
}
