// The creator page in a real headless Chromium (Debian's, through puppeteer-core; nothing is
// downloaded) against the dev stack. Run by scripts/test-creator-page.sh, which starts the stack
// and sets the variables test/helpers.ts reads (STREAMPAY_URL, STREAMPAY_API_KEY, ...).
//
// 1. A fresh author; a fresh subscriber with tokens deposited gaslessly (this package's client).
// 2. The browser opens the relayer's page for the author, GET /creators/{contract}/{author}: it
//    connects to the author's event stream and shows no stream and a zero balance.
// 3. The subscriber starts a stream to the author through the API (client.subscribe, signed with
//    viem): without a reload the page lists it (subscriber, rate per month, since when) and the
//    total income, both exactly what the relayer built; then the balance it shows moves, second
//    by second, and agrees with the relayer's own balance read.
// 4. The subscriber stops the stream: the page drops it, still without a reload.
// 5. Everything the page loaded came from the relayer's origin (it works offline: no CDN).
// Every wait is bounded (each at most 60 s, the whole test 300 s); any failure exits non-zero.
import assert from "node:assert/strict";
import puppeteer, { type Browser, type Page } from "puppeteer-core";
import { getAddress } from "viem";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { viemSigner } from "@streampay/relayer-client/viem";
import { assertRelayed, client, env, mintTokens } from "../test/helpers.js";

const CHROMIUM = process.env.STREAMPAY_CHROMIUM || "/usr/bin/chromium";
const WAIT_MS = 60_000; // any one thing the page should show
const TOTAL_MS = 300_000; // the whole test
const TOKEN = 10n ** 6n; // mUSDC has 6 decimals
const MONTH = 2_592_000n; // 30 days, as the relayer's monthly rates

const started = Date.now();
const say = (msg: string) => console.log(`  [creator page ${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}`);

/** `[data-testid=<id>]`'s text and `data-raw`. */
async function read(page: Page, id: string): Promise<{ text: string; raw: string }> {
  return page.$eval(`[data-testid="${id}"]`, (el) => ({
    text: el.textContent ?? "",
    raw: (el as HTMLElement).dataset["raw"] ?? "",
  }));
}

/** Waits (at most WAIT_MS) until `fn` holds in the page; `what` names it in the failure. */
async function until(page: Page, what: string, fn: string, log: string[]): Promise<void> {
  try {
    await page.waitForFunction(fn, { timeout: WAIT_MS, polling: 100 });
  } catch (e) {
    const state = await page.evaluate(() => document.querySelector("main")?.textContent ?? "").catch(() => "?");
    throw new Error(`the page did not show ${what} within ${WAIT_MS / 1000} s: ${String(e)}\npage: ${state}\n${log.join("\n")}`);
  }
}

const streamRow = (from: string) => `document.querySelector('[data-testid="stream"][data-from="${from}"]')`;

async function main(): Promise<void> {
  const author = privateKeyToAccount(generatePrivateKey()).address;
  const subscriber = privateKeyToAccount(generatePrivateKey());
  const signer = viemSigner(subscriber);
  await mintTokens(subscriber.address, 100n * TOKEN);
  await assertRelayed(await client.deposit({ signer, amount: "100" }), subscriber.address);
  say(`author ${author}; subscriber ${subscriber.address} deposited 100`);

  let browser: Browser | undefined;
  try {
    browser = await puppeteer.launch({
      executablePath: CHROMIUM,
      args: ["--no-sandbox", "--headless=new"],
      headless: true,
      timeout: 30_000,
      protocolTimeout: 60_000,
    });
    say(`browser: ${await browser.version()}`);
    const page = await browser.newPage();
    page.setDefaultTimeout(WAIT_MS);
    const log: string[] = [];
    const requested: string[] = [];
    page.on("console", (m) => log.push(`console.${m.type()}: ${m.text()}`));
    page.on("pageerror", (e) => log.push(`pageerror: ${e instanceof Error ? e.message : String(e)}`));
    page.on("request", (r) => requested.push(r.url()));

    // 2. The page, connected, with nothing yet.
    const url = client.creatorPageUrl(author);
    const response = await page.goto(url, { waitUntil: "load", timeout: 30_000 });
    assert.equal(response?.status(), 200, `GET ${url}`);
    await until(page, "a live connection and a first snapshot", `document.querySelector('[data-testid="connection"]').dataset.state === "live" && Number(document.querySelector('[data-testid="snapshots"]').textContent) >= 1`, log);
    assert.equal(getAddress((await read(page, "author")).text), getAddress(author));
    assert.equal((await read(page, "stream-count")).text, "0");
    assert.equal((await read(page, "balance")).raw, "0");
    // Marks this document: still there after the updates means they came without a reload.
    await page.evaluate(() => {
      (window as unknown as { __sameDocument: boolean }).__sameDocument = true;
    });
    say(`opened ${url}: live, no streams, balance 0`);

    // 3. A stream starts, through the API.
    const sub = await client.subscribe({ signer, author, monthlyRate: "30" });
    await assertRelayed(sub, subscriber.address);
    const perSecond = BigInt(sub.built.RatePerSecond ?? "0");
    assert.ok(perSecond > 0n, JSON.stringify(sub.built));
    const from = getAddress(subscriber.address);
    await until(page, `the stream from ${from}`, `${streamRow(from)} !== null`, log);
    const row = await page.$eval(`[data-testid="stream"][data-from="${from}"]`, (tr) => ({
      from: tr.querySelector('[data-testid="stream-from"]')?.textContent ?? "",
      rate: tr.querySelector('[data-testid="stream-rate"]')?.textContent ?? "",
      rateRaw: (tr.querySelector('[data-testid="stream-rate"]') as HTMLElement | null)?.dataset["raw"] ?? "",
      since: Number((tr.querySelector('[data-testid="stream-since"]') as HTMLElement | null)?.dataset["timestamp"] ?? "0"),
    }));
    assert.equal(row.from, from);
    assert.equal(BigInt(row.rateRaw), perSecond * MONTH, "rate per month = the built per-second rate × 30 days");
    assert.equal(row.rate, "30.000000", "shown with the token's 6 decimals");
    assert.ok(row.since > 0);
    assert.equal((await read(page, "stream-count")).text, "1");
    const income = await read(page, "income-month");
    assert.equal(BigInt(income.raw), perSecond * MONTH);
    assert.equal(income.text, "30.000000");
    say(`the stream appeared without a reload: ${row.from} at ${row.rate} per month`);

    // ... and the balance moves, second by second.
    const first = await read(page, "balance");
    await until(page, "the balance moving", `BigInt(document.querySelector('[data-testid="balance"]').dataset.raw || "0") > ${BigInt(first.raw || "0")}n`, log);
    const second = await read(page, "balance");
    await until(page, "the balance moving again", `BigInt(document.querySelector('[data-testid="balance"]').dataset.raw || "0") > ${BigInt(second.raw)}n`, log);
    const third = await read(page, "balance");
    assert.ok(BigInt(third.raw) > BigInt(second.raw) && BigInt(second.raw) > BigInt(first.raw || "0"));
    // Whole seconds of the stream: every displayed value is a multiple of the rate.
    assert.equal(BigInt(third.raw) % perSecond, 0n, `${third.raw} is not whole seconds of ${perSecond}`);
    assert.notEqual(third.text, first.text, "the shown balance changes too");
    // The relayer's own read (at its indexed head's chain time) agrees with what the page
    // extrapolates, within a few seconds of income: the page estimates chain time from its clock,
    // and a dev chain's block times can run a second or two ahead of it.
    const relayer = await client.balance(author);
    const shown = await read(page, "balance");
    const gap = BigInt(relayer.BalanceRaw) - BigInt(shown.raw);
    const slack = 5n * perSecond;
    assert.ok(gap <= slack && -gap <= 10n * slack, `relayer ${relayer.BalanceRaw} vs page ${shown.raw}`);
    say(`the balance moves: ${first.text} -> ${second.text} -> ${third.text} (relayer reads ${relayer.Balance})`);

    // 4. The stream stops.
    await assertRelayed(await client.unsubscribe({ signer, author }), subscriber.address);
    await until(page, "the stream gone", `${streamRow(from)} === null && document.querySelector('[data-testid="stream-count"]').textContent === "0"`, log);
    assert.equal((await read(page, "income-month")).raw, "0");
    assert.equal(await page.evaluate(() => (window as unknown as { __sameDocument?: boolean }).__sameDocument), true, "no reload");
    say("the stream was dropped from the page when it stopped");

    // 5. Only the relayer's origin was ever asked for anything.
    const origin = new URL(env.url).origin;
    const elsewhere = requested.filter((u) => !u.startsWith("data:") && new URL(u).origin !== origin);
    assert.deepEqual(elsewhere, [], "the page loaded something from another origin");
    assert.ok(requested.some((u) => u.includes(`/authors/${author}/events`)), requested.join("\n"));
    say(`${requested.length} requests, all to ${origin}`);
    const errors = log.filter((l) => l.startsWith("pageerror") || l.startsWith("console.error"));
    assert.deepEqual(errors, [], "the page logged errors");
  } finally {
    await browser?.close().catch((e) => console.error(`closing the browser: ${String(e)}`));
  }
}

const watchdog = setTimeout(() => {
  console.error(`the creator page test did not finish within ${TOTAL_MS / 1000} s`);
  process.exit(1);
}, TOTAL_MS);
watchdog.unref();

main().then(
  () => {
    say("passed");
    process.exit(0);
  },
  (e: unknown) => {
    console.error("the creator page test failed:", e);
    process.exit(1);
  },
);
