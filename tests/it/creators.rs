//! Creators, live: `GET /api/v1/{contract}/authors/{author}/events` (server-sent events) and the
//! creator page. Snapshots are checked against the chain's own view functions at the snapshot's
//! block; every wait is bounded.

use std::time::Duration;

use alloy::{
    eips::BlockId,
    primitives::{Address, I256, U256},
    providers::Provider,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use streampay_relayer::api::Settings;

use crate::harness::{TestApp, assert_error, internal, serve_settings, spawn_app, spawn_app_with, wallet};

/// The longest a test waits for one event.
const EVENT_TIMEOUT: Duration = Duration::from_secs(30);

/// An open event stream, parsed as the SSE format says: events end at a blank line; `event:`
/// names one, `data:` lines are its payload; lines starting with `:` are comments (keep-alives).
struct EventStream {
    resp: reqwest::Response,
    buf: String,
}

#[derive(Debug)]
struct SseEvent {
    name: String,
    data: String,
}

impl EventStream {
    async fn open(app: &TestApp, author: Address) -> Self {
        let resp = open(app, &format!("/api/v1/USDC/authors/{author}/events")).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        Self { resp, buf: String::new() }
    }

    /// The next event (comments skipped), waiting at most [`EVENT_TIMEOUT`]; `None` when the
    /// server ended the stream.
    async fn next(&mut self) -> Option<SseEvent> {
        tokio::time::timeout(EVENT_TIMEOUT, self.next_unbounded())
            .await
            .unwrap_or_else(|_| panic!("no event within {EVENT_TIMEOUT:?}; buffered: {:?}", self.buf))
    }

    async fn next_unbounded(&mut self) -> Option<SseEvent> {
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut name, mut data) = (String::from("message"), Vec::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim_start().to_string();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push(v.strip_prefix(' ').unwrap_or(v).to_string());
                    }
                }
                if !data.is_empty() {
                    return Some(SseEvent { name, data: data.join("\n") });
                }
            }
            let chunk = self.resp.chunk().await.expect("reading the event stream")?;
            self.buf.push_str(std::str::from_utf8(&chunk).expect("UTF-8 events"));
        }
    }

    /// The next event, which must be a `snapshot`.
    async fn snapshot(&mut self) -> Value {
        let e = self.next().await.expect("the stream ended before a snapshot");
        assert_eq!(e.name, "snapshot", "{e:?}");
        serde_json::from_str(&e.data).expect("a snapshot is JSON")
    }
}

/// A GET without any key (the event streams and the page are public), with no overall timeout:
/// the callers bound each wait.
async fn open(app: &TestApp, path: &str) -> reqwest::Response {
    let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).build().unwrap();
    tokio::time::timeout(EVENT_TIMEOUT, http.get(app.url(path)).header("Origin", "https://dapp.example").send())
        .await
        .expect("the answer's head within the timeout")
        .expect("request")
}

async fn error_of(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = tokio::time::timeout(EVENT_TIMEOUT, resp.text()).await.expect("body in time").expect("body");
    (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("non-JSON ({status}): {text}")))
}

fn u256(v: &Value) -> U256 {
    v.as_str().unwrap_or_else(|| panic!("{v} is not a string")).parse().expect("a decimal U256")
}

fn i256(v: &Value) -> I256 {
    I256::from_dec_str(v.as_str().unwrap_or_else(|| panic!("{v} is not a string"))).expect("a decimal I256")
}

/// Every amount of `snap` equals the chain's view functions at the snapshot's block.
async fn assert_matches_chain(app: &TestApp, author: Address, snap: &Value) {
    let block = snap["BlockNumber"].as_u64().expect("BlockNumber");
    assert_eq!(snap["IndexedBlock"], json!(block), "streams and balance of one commit: {snap}");
    let at = BlockId::number(block);
    let sp = app.streampay();
    let info = sp.accountInfo(author).block(at).call().await.unwrap();
    assert_eq!(u256(&snap["IncomeRate"]), info.incomeRate, "{snap}");
    assert_eq!(u256(&snap["OutgoingRate"]), info.outgoingRate, "{snap}");
    assert_eq!(i256(&snap["NetRate"]), I256::from_raw(info.incomeRate) - I256::from_raw(info.outgoingRate));
    assert_eq!(i256(&snap["SignedBalanceRaw"]), sp.signedBalanceOf(author).block(at).call().await.unwrap(), "{snap}");
    assert_eq!(u256(&snap["BalanceRaw"]), sp.balanceOf(author).block(at).call().await.unwrap(), "{snap}");
    let header = app.provider.get_block_by_number(block.into()).await.unwrap().expect("the block").header;
    assert_eq!(snap["BlockTimestamp"], json!(header.timestamp));
    assert_eq!(snap["Author"], json!(author.to_checksum(None)));
    assert_eq!(snap["Contract"], "USDC");
    assert_eq!(snap["Decimals"], 18);
    assert_eq!(snap["TokenDecimals"], crate::harness::TOKEN_DECIMALS);
    let streams = snap["Streams"].as_array().expect("Streams");
    let mut sum = U256::ZERO;
    for s in streams {
        let from: Address = s["From"].as_str().unwrap().parse().unwrap();
        let on_chain = sp.subscriptions(from, author).block(at).call().await.unwrap();
        assert!(on_chain._0, "the chain has the stream from {from}");
        assert_eq!(u256(&s["EncodedRates"]), on_chain._1);
        sum += u256(&s["IncomeRate"]);
    }
    assert_eq!(u256(&snap["StreamsIncomeRate"]), sum);
}

#[tokio::test]
async fn author_events_send_a_snapshot_then_each_relayed_change_matching_the_chain() {
    let app = spawn_app().await;
    let (user, author) = (wallet(), wallet());
    app.fund(&user, 100).await;
    app.sync_index().await;

    let mut events = EventStream::open(&app, author.address()).await;
    assert_eq!(events.resp.headers()["access-control-allow-origin"], "*", "usable by dapps on any origin");
    let first = events.snapshot().await;
    assert_eq!(first["Streams"], json!([]), "{first}");
    assert_eq!(first["BalanceRaw"], "0");
    assert_eq!(first["NetRate"], "0");
    assert_matches_chain(&app, author.address(), &first).await;

    // A stream starts: relayed through the API with the subscriber's signature.
    let built = app
        .build(
            "/api/v1/USDC/subscriptions/",
            &json!({"from": user.address(), "author": author.address(), "subscription_rate": "30"}),
        )
        .await;
    app.execute_ok(&user, &built).await;
    let started = events.snapshot().await;
    let streams = started["Streams"].as_array().expect("Streams");
    assert_eq!(streams.len(), 1, "{started}");
    assert_eq!(streams[0]["From"], json!(user.address().to_checksum(None)));
    assert_eq!(streams[0]["IncomeRate"], built["RatePerSecond"]);
    assert!(streams[0]["SinceTimestamp"].as_u64().unwrap() >= first["BlockTimestamp"].as_u64().unwrap());
    assert_eq!(started["IncomeRate"], built["RatePerSecond"]);
    assert_eq!(started["NetRate"], built["RatePerSecond"]);
    assert_matches_chain(&app, author.address(), &started).await;
    // The event's payload is what the document publishes for the stream.
    let (_, doc) = app.get_with_key("/openapi.json", None).await;
    let op = &doc["paths"]["/api/v1/{contract}/authors/{author}/events"]["get"];
    let event = &op["responses"]["200"]["content"]["text/event-stream"]["schema"];
    assert_eq!(event["$ref"], "#/components/schemas/CreatorEvent", "the stream's events: {op}");
    let event = &doc["components"]["schemas"]["CreatorEvent"];
    assert_eq!(event["properties"]["event"]["enum"], json!(["snapshot", "stream_error"]));
    assert_eq!(event["properties"]["data"]["contentMediaType"], "application/json");
    let schema = &json!({"$ref": "#/components/schemas/CreatorSnapshot"});
    let mut drift = Vec::new();
    crate::openapi_drift::check(&doc, schema, &started, "$", &mut drift);
    assert!(drift.is_empty(), "the snapshot drifted from its schema:\n{}", drift.join("\n"));

    // Time passes (a block with nothing of the author's), then a payment arrives: the next
    // snapshot is the payment's, and its balance is exactly the previous one extrapolated by the
    // net rate plus the payment.
    app.advance(600).await;
    let built = app
        .build("/api/v1/USDC/payments/", &json!({"From": user.address(), "To": author.address(), "Amount": "1"}))
        .await;
    app.execute_ok(&user, &built).await;
    let paid = events.snapshot().await;
    assert_matches_chain(&app, author.address(), &paid).await;
    let elapsed = paid["BlockTimestamp"].as_u64().unwrap() - started["BlockTimestamp"].as_u64().unwrap();
    assert!(elapsed >= 600, "{elapsed}");
    let extrapolated = i256(&started["SignedBalanceRaw"])
        + i256(&started["NetRate"]) * I256::try_from(elapsed).unwrap()
        + I256::from_raw(internal(1));
    assert_eq!(i256(&paid["SignedBalanceRaw"]), extrapolated);
    assert_eq!(paid["Streams"], started["Streams"]);

    // The stream stops.
    let (status, built) =
        app.delete(&format!("/api/v1/USDC/subscriptions/{}?From={}", author.address(), user.address())).await;
    assert_eq!(status, StatusCode::OK, "{built}");
    app.execute_ok(&user, &built).await;
    let stopped = events.snapshot().await;
    assert_eq!(stopped["Streams"], json!([]), "{stopped}");
    assert_eq!(stopped["NetRate"], "0");
    assert_matches_chain(&app, author.address(), &stopped).await;

    // At shutdown every open stream ends (a graceful stop must not wait for clients).
    app.state.events.close();
    assert!(events.next().await.is_none(), "the stream ends when the server closes");
}

#[tokio::test]
async fn author_events_and_the_creator_page_refuse_bad_input_with_typed_codes() {
    let app = spawn_app().await;
    let author = wallet().address();
    for base in ["/api/v1/USDC/authors/{}/events", "/creators/USDC/{}"] {
        let bad = open(&app, &base.replace("{}", "0xnope")).await;
        assert_error(&error_of(bad).await, StatusCode::BAD_REQUEST, "invalid_address");
        // A mixed-case address with a wrong EIP-55 checksum is refused too.
        let wrong_case = {
            let s = author.to_checksum(None);
            let flipped: String = s[2..]
                .chars()
                .map(|c| if c.is_ascii_lowercase() { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() })
                .collect();
            format!("0x{flipped}")
        };
        if wrong_case.chars().any(|c| c.is_ascii_uppercase()) && wrong_case.chars().any(|c| c.is_ascii_lowercase()) {
            let bad = open(&app, &base.replace("{}", &wrong_case)).await;
            assert_error(&error_of(bad).await, StatusCode::UNPROCESSABLE_ENTITY, "address_refused");
        }
        let unknown = open(&app, &base.replace("USDC", "NOPE").replace("{}", &author.to_string())).await;
        assert_error(&error_of(unknown).await, StatusCode::NOT_FOUND, "unknown_contract");
    }

    // Before the index has reached the deployment there is nothing to stream yet.
    let early = open(&app, &format!("/api/v1/USDC/authors/{author}/events")).await;
    assert_error(&error_of(early).await, StatusCode::SERVICE_UNAVAILABLE, "index_not_ready");

    // The page: public, HTML, self-contained (nothing fetched from elsewhere), reads the events.
    let page = open(&app, &format!("/creators/usdc/{author}")).await;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(html.contains("EventSource") && html.contains("/authors/") && html.contains("/events"));
    for testid in ["connection", "balance", "income-month", "streams", "stream-count"] {
        assert!(html.contains(&format!("data-testid=\"{testid}\"")), "no data-testid {testid}");
    }
    for external in ["http://", "https://", "src=\"//", "href=\"//", "@import"] {
        assert!(!html.contains(external), "the page must load nothing from elsewhere ({external})");
    }
}

#[tokio::test]
async fn event_streams_beyond_the_cap_are_503_too_many_event_streams() {
    let app = spawn_app_with(Settings { max_event_streams: 1, ..serve_settings() }).await;
    app.sync_index().await;
    let (a, b) = (wallet().address(), wallet().address());
    let mut first = EventStream::open(&app, a).await;
    first.snapshot().await;

    let full = open(&app, &format!("/api/v1/USDC/authors/{b}/events")).await;
    assert_eq!(full.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string()), Some("5".into()));
    assert_error(&error_of(full).await, StatusCode::SERVICE_UNAVAILABLE, "too_many_event_streams");
    assert_eq!(app.state.events.open(), 1);
    let scraped = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(scraped.lines().any(|l| l == "streampay_event_streams_open 1"), "no open-streams gauge of 1:\n{scraped}");

    // A client that goes away frees its place (the server notices at its next write at the
    // latest: a keep-alive every 15 s).
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while app.state.events.open() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the closed stream still holds its place");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut again = EventStream::open(&app, b).await;
    assert_eq!(again.snapshot().await["Author"], json!(b.to_checksum(None)));
}

#[tokio::test]
async fn event_streams_configured_off_are_503_too_many_event_streams() {
    let app = spawn_app_with(Settings { max_event_streams: 0, ..serve_settings() }).await;
    app.sync_index().await;
    let resp = open(&app, &format!("/api/v1/USDC/authors/{}/events", wallet().address())).await;
    assert_error(&error_of(resp).await, StatusCode::SERVICE_UNAVAILABLE, "too_many_event_streams");
}

#[tokio::test]
async fn many_event_streams_share_one_database_listener() {
    let app = spawn_app().await;
    app.sync_index().await;
    // Connections of this test's database whose last statement was a LISTEN on the index channel.
    let listeners = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%streampay_index%'",
        )
        .fetch_one(app.store.pool())
        .await
        .unwrap()
    };
    // Bounded wait until `listeners()` reaches `n`.
    let reach = |n: i64| async move {
        let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
        loop {
            let now = listeners().await;
            if now >= n {
                return now;
            }
            assert!(tokio::time::Instant::now() < deadline, "{now} LISTEN connections, expected {n}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    // The read cache's own listener (serve's settings have it on) connects in the background.
    let before = reach(1).await;
    let mut first = EventStream::open(&app, wallet().address()).await;
    first.snapshot().await;
    // The first stream starts the process's one event listener.
    let with_one = reach(before + 1).await;
    assert_eq!(with_one, before + 1);
    let mut more = Vec::new();
    for _ in 0..4 {
        let mut s = EventStream::open(&app, wallet().address()).await;
        s.snapshot().await;
        more.push(s);
    }
    assert_eq!(app.state.events.open(), 5);
    assert_eq!(listeners().await, with_one, "more streams, no more database listeners");
}

#[tokio::test]
async fn a_quiet_event_stream_sends_keep_alive_comments() {
    let app = spawn_app().await;
    app.sync_index().await;
    let mut events = EventStream::open(&app, wallet().address()).await;
    events.snapshot().await;
    // Nothing of this author's changes: within the keep-alive interval (plus slack) a comment line
    // (`:`) arrives, so proxies do not close the idle connection.
    let limit = streampay_relayer::api::creators::KEEP_ALIVE + Duration::from_secs(10);
    let comment = tokio::time::timeout(limit, async {
        loop {
            if let Some(line) = events.buf.lines().find(|l| l.starts_with(':')) {
                return line.to_string();
            }
            let chunk = events.resp.chunk().await.expect("reading").expect("the stream ended");
            events.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no keep-alive comment within {limit:?}: {:?}", events.buf));
    assert!(comment.starts_with(':'), "{comment}");
}
