// The console in a real browser against a real host.
//
// Through the API it creates two traders, funds them and places signed
// orders; in headless Chromium it then checks that the console shows them
// live: resting orders in the book ladder at the host's price and quantity
// strings, a trade in recent trades after a crossing order, a cancelled
// order's level leaving the ladder; then the operator views: a wrong token
// refused with the host's error, the modules list, the ledger balanced.
// Every wait is a bounded poll (at most 10 s), never a fixed sleep.
//
//   EXHOST_URL=http://127.0.0.1:8080 EXHOST_ADMIN_TOKEN=... \
//   EXHOST_SCREENSHOT_DIR=/tmp/console-shots node tests/console.test.mjs
//
// EXHOST_CONSOLE_URL points at another copy of the console (a `vite
// preview` proxying to the host, say); the default is $EXHOST_URL/console/.
// CHROMIUM overrides the browser (default: `command -v chromium`).

import assert from "node:assert/strict";
import { execSync } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const WAIT_MS = 10_000;
const started = Date.now();
const host = (process.env.EXHOST_URL ?? "http://127.0.0.1:8080").replace(/\/$/, "");
const consoleUrl = (process.env.EXHOST_CONSOLE_URL ?? `${host}/console/`).replace(/#.*$/, "");
const adminToken = process.env.EXHOST_ADMIN_TOKEN;
const shots = process.env.EXHOST_SCREENSHOT_DIR ?? join(tmpdir(), "exhost-console-screenshots");
const executablePath = process.env.CHROMIUM || execSync("command -v chromium", { encoding: "utf8", shell: "/bin/sh" }).trim();
const SYMBOL = "BTC-PERP";

if (!adminToken) {
  console.error("EXHOST_ADMIN_TOKEN is not set: the test creates users and deposits as the operator");
  process.exit(2);
}
mkdirSync(shots, { recursive: true });

function step(text) {
  console.log(`[${((Date.now() - started) / 1000).toFixed(1).padStart(5)} s] ${text}`);
}

// --- The API, as a script would use it -----------------------------------

async function call(method, path, { body, headers = {} } = {}) {
  const text = body === undefined ? undefined : JSON.stringify(body);
  const response = await fetch(host + path, {
    method,
    headers: { ...(text === undefined ? {} : { "Content-Type": "application/json" }), ...headers },
    body: text,
  });
  const answer = await response.json().catch(() => null);
  return { status: response.status, answer };
}

async function operator(method, path, body) {
  const { status, answer } = await call(method, path, { body, headers: { Authorization: `Bearer ${adminToken}` } });
  assert.ok(status < 300, `${method} ${path}: ${status} ${JSON.stringify(answer)}`);
  return answer;
}

/** A trader signing as API.md says: HMAC-SHA256 over the version-2 bytes (timestamp \n METHOD \n path \n body). */
function trader({ api_key, api_secret, user_id }) {
  let lastTimestampMs = 0;
  return {
    user_id,
    async request(method, path, body) {
      // A signature counts once: never the same millisecond twice.
      lastTimestampMs = Math.max(Date.now(), lastTimestampMs + 1);
      const timestamp = String(lastTimestampMs);
      const text = body === undefined ? "" : JSON.stringify(body);
      const signature = createHmac("sha256", api_secret).update([timestamp, method, path, text].join("\n")).digest("hex");
      const { status, answer } = await call(method, path, {
        body,
        headers: { "X-API-KEY": api_key, "X-TIMESTAMP": timestamp, "X-SIGNATURE-VERSION": "2", "X-SIGNATURE": signature },
      });
      assert.ok(status < 300, `${method} ${path}: ${status} ${JSON.stringify(answer)}`);
      return answer;
    },
    limit(side, price, qty) {
      return this.request("POST", "/v1/orders", { symbol: SYMBOL, side, type: "limit", price, qty });
    },
  };
}

const book = async () => (await call("GET", `/v1/markets/${SYMBOL}/book?depth=1000`)).answer;
const levelOf = (levels, price) => levels.find(([p]) => p === price);

// --- The browser ------------------------------------------------------------

const profile = mkdtempSync(join(tmpdir(), "exhost-console-chromium-"));
const pageErrors = [];
const consoleErrors = [];
const traders = [];
let context;
let page;

async function shot(name) {
  const path = join(shots, name);
  await page.screenshot({ path, fullPage: true });
  step(`  screenshot ${path}`);
}

/** Wait for a selector to match, with a message that says what was expected. */
async function see(selector, what) {
  try {
    await page.locator(selector).first().waitFor({ state: "visible", timeout: WAIT_MS });
  } catch {
    throw new Error(`within ${WAIT_MS / 1000} s the console did not show ${what} (${selector})`);
  }
}

async function gone(selector, what) {
  try {
    await page.locator(selector).first().waitFor({ state: "detached", timeout: WAIT_MS });
  } catch {
    throw new Error(`within ${WAIT_MS / 1000} s the console still showed ${what} (${selector})`);
  }
}

const attr = (value) => JSON.stringify(String(value));

async function main() {
  step(`host ${host}, console ${consoleUrl}, browser ${executablePath}`);
  const markets = (await call("GET", "/v1/markets")).answer;
  const market = markets.find((m) => m.symbol === SYMBOL);
  assert.ok(market, `the host has market ${SYMBOL}: ${JSON.stringify(markets)}`);

  step("creating two traders and funding them");
  const alice = trader(await operator("POST", "/admin/v1/users", {}));
  const bob = trader(await operator("POST", "/admin/v1/users", {}));
  traders.push(alice, bob);
  for (const user of [alice, bob]) {
    await operator("POST", "/admin/v1/deposits", { user_id: user.user_id, asset: market.quote, amount: "100000" });
  }

  // Prices inside whatever spread the host's book has now, so this run's
  // levels are its own (the book of a fresh host is empty).
  const before = await book();
  const low = Number(before.bids[0]?.[0] ?? 20000);
  const high = Number(before.asks[0]?.[0] ?? 40000);
  assert.ok(high - low > 40, `the book's spread leaves room for this run's orders: ${JSON.stringify(before)}`);
  const centre = Math.floor((low + high) / 2);
  const bidHigh = `${centre - 5}.5`;
  const bidLow = `${centre - 12}.0`;
  const ask = `${centre + 8}.0`;

  context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    viewport: { width: 1480, height: 920 },
    deviceScaleFactor: 1,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
  page = context.pages()[0] ?? (await context.newPage());
  page.on("pageerror", (error) => pageErrors.push(error.stack ?? String(error)));
  page.on("console", (message) => {
    if (message.type() === "error") consoleErrors.push(message.text());
  });

  step(`opening the ${SYMBOL} market page and waiting for the book snapshot`);
  await page.goto(`${consoleUrl}#/market/${SYMBOL}`);
  await page.waitForFunction(() => document.querySelector('[data-testid="book-seq"]')?.getAttribute("data-seq"), null, { timeout: WAIT_MS });
  await see('[data-testid="connection"][data-state="live"]', "the connection as live");

  step(`placing resting orders: buy 0.250 @ ${bidHigh}, buy 0.100 @ ${bidLow} (alice), sell 0.150 @ ${ask} (bob)`);
  const restHigh = await alice.limit("buy", bidHigh, "0.250");
  const restLow = await alice.limit("buy", bidLow, "0.100");
  const restAsk = await bob.limit("sell", ask, "0.150");
  for (const order of [restHigh, restLow, restAsk]) assert.equal(order.status, "new", JSON.stringify(order));

  step("checking the ladder shows them, live, at the host's strings");
  let levels = await book();
  for (const [side, price, levelsOfSide] of [["bid", restHigh.price, levels.bids], ["bid", restLow.price, levels.bids], ["ask", restAsk.price, levels.asks]]) {
    const level = levelOf(levelsOfSide, price);
    assert.ok(level, `the host's book has ${side} ${price}: ${JSON.stringify(levels)}`);
    await see(`[data-testid="book-level"][data-side="${side}"][data-price=${attr(level[0])}][data-qty=${attr(level[1])}]`,
      `the ${side} level ${level[0]} × ${level[1]}`);
    const cells = await page.locator(`[data-testid="book-level"][data-price=${attr(level[0])}] td`).allTextContents();
    assert.deepEqual(cells.slice(0, 2), [level[0], level[1]], "the ladder's price and size cells are the host's strings");
  }

  step(`crossing: bob sells 0.050 @ ${bidHigh}`);
  const cross = await bob.limit("sell", bidHigh, "0.050");
  assert.equal(cross.status, "filled", JSON.stringify(cross));
  const fill = cross.fills[0];
  await see(`[data-testid="trade"][data-trade-id="${fill.trade_id}"][data-price=${attr(fill.price)}][data-qty=${attr(fill.qty)}][data-side="sell"]`,
    `trade ${fill.trade_id}: ${fill.qty} @ ${fill.price}, taker sell`);
  levels = await book();
  const rest = levelOf(levels.bids, restHigh.price);
  await see(`[data-testid="book-level"][data-price=${attr(rest[0])}][data-qty=${attr(rest[1])}]`, `the bid level ${rest[0]} reduced to ${rest[1]}`);
  await shot("02-book.png");

  step(`cancelling alice's buy @ ${restLow.price} through the API`);
  const cancelled = await alice.request("DELETE", `/v1/orders/${restLow.order_id}`);
  assert.equal(cancelled.status, "cancelled");
  await gone(`[data-testid="book-level"][data-price=${attr(restLow.price)}]`, `the cancelled level ${restLow.price}`);
  await page.waitForFunction((seq) => Number(document.querySelector('[data-testid="book-seq"]')?.getAttribute("data-seq")) >= seq,
    cancelled.seq, { timeout: WAIT_MS });
  await see('[data-testid="book-verified"]', "the followed book checked against the host's book at its seq");
  await shot("03-after-cancel.png");

  step("markets list");
  await page.goto(`${consoleUrl}#/`);
  await see(`[data-testid="market-row"][data-symbol="${SYMBOL}"]`, `the market row ${SYMBOL}`);
  await page.waitForFunction(([symbol, price]) =>
    document.querySelector(`[data-testid="market-row"][data-symbol="${symbol}"] [data-testid="market-last"]`)?.textContent === price,
  [SYMBOL, fill.price], { timeout: WAIT_MS });
  await shot("01-markets.png");

  step("operator: a wrong token is refused with the host's error");
  const refused = await call("GET", "/admin/v1/ledger", { headers: { Authorization: "Bearer not-the-token" } });
  assert.ok(refused.status === 401 || refused.status === 403, JSON.stringify(refused));
  await page.goto(`${consoleUrl}#/operator`);
  await page.locator('[data-testid="token-input"]').fill("not-the-token");
  await page.locator('[data-testid="token-submit"]').click();
  await see(`[data-testid="login-error"][data-code=${attr(refused.answer.error.code)}]`, `the ${refused.answer.error.code} error`);
  const errorText = await page.locator('[data-testid="login-error"]').textContent();
  assert.ok(errorText.includes(refused.answer.error.message), `the error shows the host's message: ${errorText}`);
  assert.ok(errorText.includes(refused.answer.error.code), `the error shows the host's code: ${errorText}`);
  assert.equal(await page.evaluate(() => sessionStorage.length), 0, "a refused token is not kept");
  await shot("08-operator-wrong-token.png");

  step("operator: signing in");
  await page.locator('[data-testid="token-input"]').fill(adminToken);
  await page.locator('[data-testid="token-submit"]').click();
  await see('[data-testid="logout"]', "the operator views");

  step("operator: modules");
  const modules = await operator("GET", "/admin/v1/modules");
  await page.goto(`${consoleUrl}#/operator/modules`);
  for (const kind of ["matching", "position"]) {
    const module = modules.modules.find((m) => m.kind === kind);
    assert.ok(module, `the host stores a ${kind} module`);
    await see(`[data-testid="module-row"][data-kind="${kind}"][data-hash="${module.hash}"]`, `the ${kind} module ${module.hash}`);
  }
  const garbage = Buffer.from("not a wasm module");
  const rejected = await (await fetch(`${host}/admin/v1/modules`, {
    method: "POST", body: garbage, headers: { Authorization: `Bearer ${adminToken}`, "Content-Type": "application/wasm" },
  })).json();
  assert.equal(rejected.error?.code, "module_rejected", JSON.stringify(rejected));
  await page.locator('[data-testid="module-file"]').setInputFiles({ name: "garbage.wasm", mimeType: "application/wasm", buffer: garbage });
  await page.locator('[data-testid="module-upload"]').click();
  await see('[data-testid="upload-error"][data-code="module_rejected"]', "the upload refused with module_rejected");
  const uploadText = await page.locator('[data-testid="upload-error"]').textContent();
  assert.ok(uploadText.includes(rejected.error.message), `the upload error shows the host's reason: ${uploadText}`);
  if (process.env.EXHOST_TEST_MODULE) {
    // A real module (say the host's own matching module): accepted, its hash shown.
    await page.locator('[data-testid="module-file"]').setInputFiles(process.env.EXHOST_TEST_MODULE);
    await page.locator('[data-testid="module-upload"]').click();
    await see('[data-testid="upload-ok"] [data-testid="upload-hash"]', "the accepted module's hash");
  }
  await shot("04-operator-modules.png");

  step("operator: ledger balanced for every asset");
  const ledger = await operator("GET", "/admin/v1/ledger");
  const assets = Object.keys(ledger).filter((key) => typeof ledger[key] === "object");
  assert.ok(assets.includes(market.quote), `the ledger lists ${market.quote}`);
  await page.goto(`${consoleUrl}#/operator/ledger`);
  for (const asset of assets) {
    await see(`[data-testid="imbalance"][data-asset="${asset}"][data-zero="true"]`, `a zero imbalance for ${asset}`);
  }
  await see('[data-testid="ledger-summary"][data-balanced="true"]', "the books as balanced");
  await shot("05-operator-ledger.png");

  step("operator: overview (status, cluster) and taking a snapshot");
  const cluster = await operator("GET", "/admin/v1/cluster");
  await page.goto(`${consoleUrl}#/operator/overview`);
  await page.waitForFunction((role) => document.querySelector('[data-testid="cluster-role"]')?.textContent === role, cluster.role, { timeout: WAIT_MS });
  await see('[data-testid="status-panel"] [data-testid="status"], [data-testid="status-panel"] [data-testid="not-available"]', "the journal status or its absence");
  await page.locator('[data-testid="take-snapshot"]').click();
  await page.waitForFunction(() => /Snapshot taken at seq \d+/.test(document.querySelector('[data-testid="snapshot-result"]')?.textContent ?? ""), null, { timeout: WAIT_MS });
  await shot("06-operator-overview.png");

  step("operator: users and accounts");
  await page.goto(`${consoleUrl}#/operator/users`);
  const listed = (await call("GET", "/admin/v1/users", { headers: { Authorization: `Bearer ${adminToken}` } })).status === 200;
  if (listed) {
    await see(`[data-testid="user-row"][data-user-id="${alice.user_id}"]`, `user ${alice.user_id} in the list`);
    await page.locator(`[data-testid="user-row"][data-user-id="${alice.user_id}"]`).click();
  } else {
    await see('[data-testid="users"] [data-testid="not-available"]', "the user list as not available");
    await page.locator('[data-testid="user-lookup"]').fill(String(alice.user_id));
    await page.locator('[data-testid="user-lookup"]').press("Enter");
  }
  const account = await operator("GET", `/admin/v1/accounts/${alice.user_id}`);
  await page.waitForFunction((equity) => document.querySelector('[data-testid="account-detail"]')?.textContent?.includes(equity), account.equity, { timeout: WAIT_MS });
  await shot("07-operator-users.png");

  step("operator: signing out");
  await page.locator('[data-testid="logout"]').click();
  await see('[data-testid="token-input"]', "the sign-in form");
  assert.equal(await page.evaluate(() => sessionStorage.length), 0, "signing out forgets the token");

  step("operator: a stored token the host no longer accepts leads back to sign-in, with the host's error");
  await page.evaluate(() => sessionStorage.setItem("exhost.operator_token", "rotated-away"));
  await page.goto(`${consoleUrl}#/operator/ledger`);
  await see(`[data-testid="login-error"][data-code=${attr(refused.answer.error.code)}]`, "the sign-in form with the refusal");
  assert.equal(await page.evaluate(() => sessionStorage.length), 0, "the refused token is forgotten");

  assert.deepEqual(pageErrors, [], "the page raised no JavaScript errors");
}

/** Leave the book as it was found: cancel whatever this run's traders still have resting. */
async function cleanUp() {
  for (const user of traders) {
    await user.request("DELETE", `/v1/orders?symbol=${SYMBOL}`).catch(() => {});
  }
}

let failed = false;
try {
  await main();
} catch (error) {
  failed = true;
  console.error(`\nFAILED: ${error?.stack ?? error}`);
  if (page) await shot("99-failure.png").catch(() => {});
} finally {
  await cleanUp();
  if (pageErrors.length) console.error(`page errors:\n  ${pageErrors.join("\n  ")}`);
  if (failed && consoleErrors.length) console.error(`browser console errors:\n  ${consoleErrors.join("\n  ")}`);
  await context?.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
if (pageErrors.length) failed = true;
step(failed ? "console test FAILED" : "console test passed");
console.log(`total run time ${((Date.now() - started) / 1000).toFixed(1)} s`);
process.exit(failed ? 1 : 0);
