// The browser test: a real headless Chromium (Debian's, through puppeteer-core; nothing is
// downloaded) runs a dapp page that uses this package to make a gasless deposit against the dev
// stack. Run by scripts/test-browser.sh, which starts the stack and sets the variables that
// test/helpers.ts reads (STREAMPAY_URL, STREAMPAY_API_KEY, ...).
//
// 1. Bundles page.ts (the client, viem's privateKeyToAccount) into one script with esbuild, in
//    memory, and serves it with index.html from two static servers: an origin the keys list
//    (STREAMPAY_BROWSER_ALLOWED_PORT, 18091) and one no key lists (..._OTHER_PORT, 18092).
// 2. With the dev key, through the admin API: a publishable key (pk_) listing only the allowed
//    origin, and a secret key with that origin for minting client tokens.
// 3. In the browser:
//    a. allowed origin, publishable key: the deposit is mined; the page says so, and the relayer
//       (balance read with the dev key, exact string) and the chain agree;
//    b. the other origin, same key: the browser refuses (fetch rejects with TypeError "Failed to
//       fetch", the console names CORS) and nothing is deposited;
//    c. allowed origin, a client token minted on the server for the page's wallet: mined, and the
//       relayer and the chain agree;
//    d. allowed origin, a client token minted with the dev key (which lists no origin): the
//       browser refuses to hand the answer to the page, and nothing is deposited.
// Every wait is bounded; any failure exits non-zero.
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import { readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";
import puppeteer, { type Browser } from "puppeteer-core";
import { getAddress, type Hash } from "viem";
import { StreamPayClient } from "@streampay/relayer-client";
import { generatePrivateKey, privateKeyToAccount } from "viem/accounts";
import { client, contracts, env, ethBalance, mintTokens, publicClient, tokenBalance } from "../test/helpers.js";
import type { PageResult } from "./page.js";

const HERE = dirname(fileURLToPath(import.meta.url));
const CHROMIUM = process.env.STREAMPAY_CHROMIUM || "/usr/bin/chromium";
const ALLOWED_PORT = Number(process.env.STREAMPAY_BROWSER_ALLOWED_PORT || 18091);
const OTHER_PORT = Number(process.env.STREAMPAY_BROWSER_OTHER_PORT || 18092);
const ALLOWED = `http://127.0.0.1:${ALLOWED_PORT}`;
const OTHER = `http://127.0.0.1:${OTHER_PORT}`;
const PAGE_RESULT_MS = 60_000; // the page's outcome, once loaded
const TOTAL_MS = 300_000; // the whole test
const TOKEN = 10n ** 6n; // mUSDC has 6 decimals

const started = Date.now();
const say = (msg: string) => console.log(`  [browser ${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}`);

// ---------------------------------------------------------------------------------------------
// The page: bundled in memory, served by two plain Node servers.

async function bundle(): Promise<string> {
  const out = await esbuild.build({
    entryPoints: [join(HERE, "page.ts")],
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    write: false,
    logLevel: "warning",
  });
  const file = out.outputFiles[0];
  assert.ok(file, "esbuild produced no output");
  return file.text;
}

function serve(port: number, files: Record<string, { type: string; body: string }>): Promise<Server> {
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? "/", "http://x").pathname;
    const file = files[path];
    if (req.method !== "GET" || !file) {
      res.writeHead(404, { "Content-Type": "text/plain" }).end("not found");
      return;
    }
    res.writeHead(200, { "Content-Type": file.type, "Cache-Control": "no-store" }).end(file.body);
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve(server));
  });
}

const close = (server: Server) => new Promise<void>((resolve) => server.close(() => resolve()));

// ---------------------------------------------------------------------------------------------
// The relayer, as the dapp's server and the test see it (the dev key).

async function createKey(body: Record<string, unknown>): Promise<string> {
  const created = await client.request<{ Key: string }>("POST", "/api/v1/admin/keys", { body });
  assert.equal(created.status, 201);
  return created.data.Key;
}

/** The balance as the relayer reads it, with the dev key, by a plain fetch (not the client under test). */
async function relayerBalance(address: string): Promise<string> {
  const res = await fetch(`${env.url}/api/v1/${env.contract}/payments/balance/${address}`, {
    headers: { "X-API-Key": env.apiKey },
    signal: AbortSignal.timeout(15_000),
  });
  const text = await res.text();
  assert.equal(res.status, 200, text);
  const view = JSON.parse(text) as { Address: string; Balance: string };
  assert.equal(getAddress(view.Address), getAddress(address));
  return view.Balance;
}

async function freshWallet(tokens: bigint): Promise<{ key: `0x${string}`; address: string }> {
  const key = generatePrivateKey();
  const { address } = privateKeyToAccount(key);
  await mintTokens(address, tokens * TOKEN);
  assert.equal(await ethBalance(address), 0n);
  return { key, address };
}

// ---------------------------------------------------------------------------------------------
// The browser.

interface Visit {
  result: PageResult;
  /** The page's `<output>` text. */
  text: string;
  /** What the browser logged (console and its own log, such as CORS refusals). */
  log: string[];
}

async function visit(browser: Browser, origin: string, fragment: Record<string, string>): Promise<Visit> {
  const context = await browser.createBrowserContext();
  try {
    const page = await context.newPage();
    page.setDefaultTimeout(PAGE_RESULT_MS);
    const log: string[] = [];
    page.on("console", (m) => log.push(`console.${m.type()}: ${m.text()}`));
    page.on("pageerror", (e) => log.push(`pageerror: ${e instanceof Error ? e.message : String(e)}`));
    const cdp = await page.createCDPSession();
    cdp.on("Log.entryAdded", (e) => log.push(`log.${e.entry.level}: ${e.entry.text}`));
    await cdp.send("Log.enable");

    const url = `${origin}/#${new URLSearchParams(fragment).toString()}`;
    const response = await page.goto(url, { waitUntil: "load", timeout: 30_000 });
    assert.equal(response?.status(), 200, `GET ${origin}/`);
    await page.waitForFunction(() => window.__result !== undefined, { timeout: PAGE_RESULT_MS, polling: 100 });
    const result = (await page.evaluate(() => window.__result)) as PageResult;
    const text = (await page.$eval("#result", (el) => el.textContent ?? "")) as string;
    return { result, text, log };
  } finally {
    await context.close();
  }
}

async function assertDeposited(visit: Visit, wallet: { address: string }, amount: string, before: { tokens: bigint }) {
  const r = visit.result;
  assert.ok(r.ok, `the page failed: ${JSON.stringify(r)}\n${visit.log.join("\n")}`);
  assert.match(r.transactionHash, /^0x[0-9a-f]{64}$/);
  assert.equal(r.status, "mined");
  assert.equal(getAddress(r.from), getAddress(wallet.address));
  assert.equal(visit.text, `deposited ${amount}: mined ${r.transactionHash}`);
  // The relayer and the chain agree with the page.
  assert.equal(await relayerBalance(wallet.address), amount);
  const receipt = await publicClient.getTransactionReceipt({ hash: r.transactionHash as Hash });
  assert.equal(receipt.status, "success");
  assert.equal(getAddress(receipt.from), getAddress(r.sponsor), "the sponsor sent it");
  assert.equal(receipt.to && getAddress(receipt.to), (await contracts()).streamPay);
  assert.equal(await tokenBalance(wallet.address), before.tokens - BigInt(amount) * TOKEN);
  assert.equal(await ethBalance(wallet.address), 0n, "the wallet paid no gas");
}

/**
 * The page's deposit failed because the browser withheld the relayer's answer: at the
 * preflight (`stage: "preflight"`, so the request itself was never sent) or at the answer.
 */
function assertRefusedByBrowser(visit: Visit, origin: string, stage: "preflight" | "answer") {
  const r = visit.result;
  assert.ok(!r.ok, `the page's deposit should have failed: ${JSON.stringify(r)}`);
  assert.equal(r.name, "TypeError", JSON.stringify(r));
  assert.equal(r.message, "Failed to fetch");
  assert.equal(visit.text, "failed: TypeError: Failed to fetch");
  const cors = visit.log.filter((l) => l.includes("CORS policy") && l.includes(`'${origin}'`));
  assert.ok(cors.length > 0, `the browser did not log a CORS refusal for ${origin}:\n${visit.log.join("\n")}`);
  const atPreflight = cors.some((l) => l.includes("Response to preflight request"));
  assert.equal(atPreflight, stage === "preflight", `expected a refusal at the ${stage}: ${cors.join("\n")}`);
  return cors;
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const html = await readFile(join(HERE, "index.html"), "utf8");
  const script = await bundle();
  say(`bundled page.ts: ${(script.length / 1024).toFixed(0)} KiB`);
  const files = {
    "/": { type: "text/html; charset=utf-8", body: html },
    "/page.js": { type: "text/javascript; charset=utf-8", body: script },
  };
  const servers = [await serve(ALLOWED_PORT, files), await serve(OTHER_PORT, files)];
  let browser: Browser | undefined;
  try {
    const pk = await createKey({
      Name: "browser test page",
      Kind: "publishable",
      AllowedOrigins: [ALLOWED],
      AllowedContracts: [env.contract],
      AllowedOperations: ["deposit"],
      RateLimitPerMinute: 100,
      SignerRateLimitPerMinute: 10,
      DailyBudget: "1",
      SignerDailyBudget: "0.5",
    });
    assert.match(pk, /^pk_test_/);
    const backend = await createKey({ Name: "browser test backend", AllowedOrigins: [ALLOWED], Scopes: ["read", "relay"] });
    assert.match(backend, /^sk_test_/);
    say(`keys: publishable ${pk.slice(0, 16)}… and secret ${backend.slice(0, 16)}…, both for ${ALLOWED} only`);

    browser = await puppeteer.launch({
      executablePath: CHROMIUM,
      args: ["--no-sandbox", "--headless=new"],
      headless: true,
      timeout: 30_000,
      protocolTimeout: 60_000,
    });
    say(`browser: ${await browser.version()}`);
    const common = { api: env.url, contract: env.contract, amount: "2" };

    // a. The allowed origin with the publishable key.
    const alice = await freshWallet(10n);
    const a = await visit(browser, ALLOWED, { ...common, wallet: alice.key, apiKey: pk });
    await assertDeposited(a, alice, "2", { tokens: 10n * TOKEN });
    say(`a. ${ALLOWED}, publishable key: ${a.text}; relayer balance 2, chain agrees`);

    // b. Another origin, same key and wallet: the browser refuses, nothing moves.
    const b = await visit(browser, OTHER, { ...common, wallet: alice.key, apiKey: pk });
    const cors = assertRefusedByBrowser(b, OTHER, "preflight");
    // What the browser was told: the relayer refuses that origin's preflight, with no CORS header.
    const preflight = await fetch(`${env.url}/api/v1/${env.contract}/payments/deposit`, {
      method: "OPTIONS",
      headers: { Origin: OTHER, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-api-key,content-type" },
      signal: AbortSignal.timeout(15_000),
    });
    assert.equal(preflight.status, 403);
    assert.equal(preflight.headers.get("access-control-allow-origin"), null);
    assert.equal(((await preflight.json()) as { error: { code: string } }).error.code, "origin_not_allowed");
    assert.equal(await relayerBalance(alice.address), "2", "nothing deposited from the other origin");
    assert.equal(await tokenBalance(alice.address), 8n * TOKEN);
    say(`b. ${OTHER}, publishable key: ${b.text}; balance still 2. The browser: ${cors[0]}`);

    // c. The allowed origin with a client token the dapp's server minted for this wallet.
    const bob = await freshWallet(10n);
    const server = new StreamPayClient({ baseUrl: env.url, apiKey: backend, contract: env.contract });
    const minted = await server.mintClientToken({ signer: bob.address, operations: ["deposit"], expiresIn: 300 });
    const c = await visit(browser, ALLOWED, { ...common, wallet: bob.key, clientToken: minted.Token });
    await assertDeposited(c, bob, "2", { tokens: 10n * TOKEN });
    say(`c. ${ALLOWED}, client token: ${c.text}; relayer balance 2, chain agrees`);

    // d. A token minted with a key that lists no origin (the dev key): the relayer serves it, but
    //    without a CORS header for the page, so the browser keeps the answer from it.
    const carol = await freshWallet(10n);
    const devToken = await client.mintClientToken({ signer: carol.address, operations: ["deposit"], expiresIn: 300 });
    const d = await visit(browser, ALLOWED, { ...common, wallet: carol.key, clientToken: devToken.Token });
    const corsD = assertRefusedByBrowser(d, ALLOWED, "answer");
    assert.equal(await relayerBalance(carol.address), "0", "nothing deposited with the token of a key without origins");
    assert.equal(await tokenBalance(carol.address), 10n * TOKEN);
    say(`d. ${ALLOWED}, token of a key without origins: ${d.text}; balance 0. The browser: ${corsD[0]}`);
  } finally {
    await browser?.close().catch((e) => console.error(`closing the browser: ${String(e)}`));
    await Promise.all(servers.map(close));
  }
}

const watchdog = setTimeout(() => {
  console.error(`the browser test did not finish within ${TOTAL_MS / 1000} s`);
  process.exit(1);
}, TOTAL_MS);
watchdog.unref();

main().then(
  () => {
    say("passed");
    process.exit(0);
  },
  (e: unknown) => {
    console.error("the browser test failed:", e);
    process.exit(1);
  },
);
