//! Webhooks (SPEC §4): endpoints registered per API key receive signed JSON events.
//!
//! | module | what lives there |
//! |---|---|
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

use std::{net::IpAddr, time::Duration};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Every event type an endpoint can subscribe to.
pub const EVENT_TYPES: &[&str] = &[
    "transaction.mined",
    "transaction.failed",
    "transaction.reorged",
    "transaction.finalized",
    "stream.created",
    "stream.revoked",
    "payment.completed",
    "deposit.completed",
    "withdrawal.completed",
    "account.liquidated",
    "sponsor.balance_low",
    "event.retracted",
];

pub use crate::store::webhooks::WebhookEventType;

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
    /// `None` (the default): the chain's finality depth, so a contract event is sent once final.
    /// A shallower setting sends sooner; an event whose block an index rollback then orphans is
    /// retracted (`event.retracted`) and the canonical events are sent.
    pub confirmations: Option<u64>,
    /// How often sponsors' native balances are checked for `sponsor.balance_low`.
    pub balance_check_interval: Duration,
    /// Deliveries in flight at once in one process (at most one per endpoint, so a slow
    /// endpoint holds only its own slot).
    pub batch_size: i64,
    /// Whether endpoints may be on loopback, private, link-local or other non-public addresses.
    /// Off by default: a key holder could otherwise make the relayer POST into its own network
    /// (cloud metadata, admin ports). Checked at registration for IP literals and `localhost`,
    /// and at delivery against every address a host name resolves to.
    pub allow_private_targets: bool,
    /// Events (with their deliveries and attempt log) and deleted endpoints are kept this long,
    /// then pruned; an event with a delivery still pending is kept until it ends.
    pub retention: Duration,
    /// Live endpoints one API key (with the keys it was rotated from or into) may register.
    pub max_endpoints_per_key: u32,
    /// Redeliveries one API key may request per hour, over all its endpoints.
    pub max_redeliveries_per_hour: u32,
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
            confirmations: None,
            balance_check_interval: Duration::from_secs(60),
            batch_size: 20,
            retention: Duration::from_secs(30 * 86_400),
            allow_private_targets: false,
            max_endpoints_per_key: 20,
            max_redeliveries_per_hour: 100,
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
///
/// IPv6 forms that carry an IPv4 address the network may route to it (IPv4-mapped and
/// IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::/96` and `64:ff9b:1::/48`, 6to4 `2002::/16`,
/// Teredo `2001::/32`, whose client address is stored inverted) are judged by that IPv4 address;
/// Teredo and the local-use NAT64 prefix are refused outright, as are site-local `fec0::/10` and
/// documentation `2001:db8::/32`.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
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
                || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
                || (a == 192 && b == 88 && c == 99) // deprecated 6to4 relay anycast
                || a >= 240) // reserved
        }
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            let o = v6.octets();
            let v4_at = |i: usize| IpAddr::V4(std::net::Ipv4Addr::new(o[i], o[i + 1], o[i + 2], o[i + 3]));
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            // IPv4-compatible ::a.b.c.d (deprecated; `::` and `::1` are handled below).
            if seg[..6] == [0; 6] && (seg[6] != 0 || seg[7] > 1) {
                return is_public(v4_at(12));
            }
            // NAT64: the well-known prefix embeds the IPv4 address in the last 32 bits.
            if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return is_public(v4_at(12));
            }
            // 6to4: 2002:AABB:CCDD::/48 routes to AA.BB.CC.DD.
            if seg[0] == 0x2002 {
                return is_public(v4_at(2));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || v6.is_unique_local()
                || v6.is_unicast_link_local()
                || (seg[0] == 0x64 && seg[1] == 0xff9b) // local-use NAT64 64:ff9b:1::/48 and the rest
                || (seg[0] == 0x2001 && seg[1] == 0) // Teredo
                || (seg[0] == 0x2001 && seg[1] == 0xdb8) // documentation
                || (seg[0] & 0xffc0) == 0xfec0) // site-local (deprecated)
        }
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

/// What the webhook dispatcher (producer and delivery loop) works with: the database, the
/// chains whose events and sponsors it watches, and its settings.
#[derive(Debug)]
pub struct Dispatcher {
    pub store: crate::store::Store,
    pub chains: Vec<std::sync::Arc<crate::chains::Chain>>,
    pub settings: WebhookSettings,
    /// Native balance (wei) under which a sponsor fires `sponsor.balance_low` (the same
    /// threshold as `/health`'s).
    pub sponsor_min_balance_wei: alloy::primitives::U256,
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
            // IPv6 forms that reach a private IPv4 address.
            "64:ff9b::a00:7",                       // NAT64 of 10.0.0.7
            "64:ff9b::7f00:1",                      // NAT64 of 127.0.0.1
            "64:ff9b:1::a00:7",                     // local-use NAT64
            "2002:c0a8:101::1",                     // 6to4 of 192.168.1.1
            "2002:7f00:1::",                        // 6to4 of 127.0.0.1
            "::a00:7",                              // IPv4-compatible 10.0.0.7
            "::7f00:1",                             // IPv4-compatible 127.0.0.1
            "2001:0:4136:e378:8000:63bf:3fff:fdd2", // Teredo
            "fec0::1",                              // site-local
            "2001:db8::1",                          // documentation
            "192.0.0.8",
            "192.88.99.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in
            ["1.1.1.1", "8.8.8.8", "2606:4700:4700::1111", "::ffff:1.1.1.1", "64:ff9b::808:808", "2002:808:808::1"]
        {
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
