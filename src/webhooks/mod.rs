//! Webhooks (SPEC §4): endpoints registered per API key receive signed JSON events.
//!
//! | module | what lives there |
//! |---|---|
//! | [`store`] | endpoints, the events outbox, deliveries and their attempts (`migrations/0007_webhooks.sql`) |
//! | [`produce`] | turning database state into outbox events: the index's confirmed contract events, sponsor balances, relayed transactions (a trigger writes those) |
//! | [`deliver`] | fan-out of events to endpoints, signed HTTP deliveries, retries with exponential backoff |
//!
//! Flow: a producer writes one outbox row per event (`webhook_events`, idempotent by a stable
//! key); fan-out creates one delivery per subscribed endpoint; the delivery loop claims due
//! deliveries with `FOR UPDATE SKIP LOCKED` (several replicas share the work), POSTs them and logs
//! every attempt. Delivery is at least once: a receiver dedupes on the `Webhook-Id` header (the
//! event's id, also `id` in the body), which is the same on every retry and redelivery.
//!
//! Signature: `StreamPay-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`
//! (see [`sign`] and `docs/webhooks.md`).

pub mod deliver;
pub mod produce;
pub mod store;

use std::{net::IpAddr, time::Duration};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Every event type an endpoint can subscribe to.
pub const EVENT_TYPES: &[&str] = &[
    "transaction.mined",
    "transaction.failed",
    "stream.created",
    "stream.revoked",
    "payment.completed",
    "deposit.completed",
    "withdrawal.completed",
    "account.liquidated",
    "sponsor.balance_low",
];

/// The event types as an OpenAPI schema (the API takes and returns them as plain strings, one of
/// [`EVENT_TYPES`]).
#[derive(Debug, Clone, Copy, serde::Serialize, utoipa::ToSchema)]
pub enum WebhookEventType {
    #[serde(rename = "transaction.mined")]
    TransactionMined,
    #[serde(rename = "transaction.failed")]
    TransactionFailed,
    #[serde(rename = "stream.created")]
    StreamCreated,
    #[serde(rename = "stream.revoked")]
    StreamRevoked,
    #[serde(rename = "payment.completed")]
    PaymentCompleted,
    #[serde(rename = "deposit.completed")]
    DepositCompleted,
    #[serde(rename = "withdrawal.completed")]
    WithdrawalCompleted,
    #[serde(rename = "account.liquidated")]
    AccountLiquidated,
    #[serde(rename = "sponsor.balance_low")]
    SponsorBalanceLow,
}

/// Tunables of the webhook dispatcher (`[webhooks]` in the config file).
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Whether `serve` runs the dispatcher (endpoints can be managed either way).
    pub enabled: bool,
    /// How often the producer and the delivery loop look for work.
    pub poll_interval: Duration,
    /// An attempt without a complete answer within this is a failure (and retried).
    pub timeout: Duration,
    /// Attempts per delivery, the first included.
    pub max_attempts: u32,
    /// Delay before the 2nd attempt; doubled for every further one …
    pub backoff_base: Duration,
    /// … up to this.
    pub backoff_cap: Duration,
    /// Blocks indexed on top of a contract event's block before it is sent (reorg safety).
    pub confirmations: u64,
    /// How often sponsors' native balances are checked for `sponsor.balance_low`.
    pub balance_check_interval: Duration,
    /// Deliveries attempted concurrently per poll.
    pub batch_size: i64,
    /// Whether endpoints may be on loopback, private, link-local or other non-public addresses.
    /// Off by default: a key holder could otherwise make the relayer POST into its own network
    /// (cloud metadata, admin ports). Checked at registration for IP literals and `localhost`,
    /// and at delivery against every address a host name resolves to.
    pub allow_private_targets: bool,
    /// Events (with their deliveries and attempt log) and deleted endpoints are kept this long,
    /// then pruned; an event with a delivery still pending is kept until it ends.
    pub retention: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            poll_interval: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            max_attempts: 8,
            backoff_base: Duration::from_secs(10),
            backoff_cap: Duration::from_secs(3600),
            confirmations: 2,
            balance_check_interval: Duration::from_secs(60),
            batch_size: 20,
            retention: Duration::from_secs(30 * 86_400),
            allow_private_targets: false,
        }
    }
}

impl WebhookSettings {
    /// Delay after failed attempt number `attempt` (1-based): base × 2^(attempt−1), capped.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(30));
        self.backoff_base.saturating_mul(factor).min(self.backoff_cap)
    }
}

/// Whether `ip` is a public unicast address a webhook may be sent to.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
                || (a == 198 && (b == 18 || b == 19)) // benchmarking
                || a >= 240) // reserved
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public(IpAddr::V4(v4)),
            None => {
                !(v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || v6.is_unique_local()
                    || v6.is_unicast_link_local())
            }
        },
    }
}

/// The `StreamPay-Signature` header value for `body` sent at unix time `t`.
pub fn sign(secret: &str, t: u64, body: &[u8]) -> String {
    format!("t={t},v1={}", alloy::hex::encode(signature(secret, t, body)))
}

/// HMAC-SHA256 over `"<t>.<body>"` keyed with the endpoint's secret.
pub fn signature(secret: &str, t: u64, body: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// Checks a `StreamPay-Signature` header against `body` (constant-time), accepting a timestamp at
/// most `tolerance` seconds from `now`. What a receiver does; used by the tests and documented.
pub fn verify(secret: &str, header: &str, body: &[u8], now: u64, tolerance: u64) -> bool {
    let mut t = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<u64>().ok(),
            Some(("v1", v)) => candidates.extend(alloy::hex::decode(v).ok()),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    if now.abs_diff(t) > tolerance {
        return false;
    }
    candidates.iter().any(|sig| {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
        mac.update(t.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.verify_slice(sig).is_ok()
    })
}

/// Starts the dispatcher (producer + delivery loop) for the API's state, unless disabled. The
/// tasks live as long as the process; every step is a database transaction, so stopping at any
/// point loses nothing.
pub fn spawn(state: &crate::api::AppState) -> Vec<tokio::task::JoinHandle<()>> {
    if !state.settings.webhooks.enabled {
        return Vec::new();
    }
    vec![tokio::spawn(produce::run(state.clone())), tokio::spawn(deliver::run(state.clone()))]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_round_trips_and_rejects_tampering() {
        let h = sign("whsec_x", 1_700_000_000, b"{\"a\":1}");
        assert!(verify("whsec_x", &h, b"{\"a\":1}", 1_700_000_010, 300));
        assert!(!verify("whsec_x", &h, b"{\"a\":2}", 1_700_000_010, 300));
        assert!(!verify("whsec_y", &h, b"{\"a\":1}", 1_700_000_010, 300));
        assert!(!verify("whsec_x", &h, b"{\"a\":1}", 1_700_001_000, 300), "too old");
    }

    #[test]
    fn signature_matches_a_known_vector() {
        // echo -n '1700000000.{}' | openssl dgst -sha256 -hmac 'whsec_test'
        let h = sign("whsec_test", 1_700_000_000, b"{}");
        assert_eq!(h, "t=1700000000,v1=35495024f4ef3f94e5a93e22221544c4b75e9a42300cd965ab81cb85cd994e91");
    }

    #[test]
    fn the_event_type_schema_lists_every_event_type() {
        use utoipa::PartialSchema;
        let schema = serde_json::to_value(WebhookEventType::schema()).unwrap();
        let listed: Vec<&str> = schema["enum"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(listed, EVENT_TYPES);
    }

    #[test]
    fn only_public_addresses_are_targets() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["1.1.1.1", "8.8.8.8", "2606:4700:4700::1111", "::ffff:1.1.1.1"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let s = WebhookSettings {
            backoff_base: Duration::from_secs(10),
            backoff_cap: Duration::from_secs(60),
            ..Default::default()
        };
        assert_eq!(s.backoff(1), Duration::from_secs(10));
        assert_eq!(s.backoff(2), Duration::from_secs(20));
        assert_eq!(s.backoff(3), Duration::from_secs(40));
        assert_eq!(s.backoff(4), Duration::from_secs(60));
        assert_eq!(s.backoff(100), Duration::from_secs(60));
    }
}
