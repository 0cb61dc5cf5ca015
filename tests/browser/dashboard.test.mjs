// tests/browser/dashboard.test.mjs - the funnel-metrics dashboard in real
// headless Chromium (Debian's /usr/bin/chromium), driven by playwright-core.
//
// Run by tests/integration/test_metrics.py, which starts funneld and
// funnel-metrics on a scripted history and passes:
//   METRICS_URL    the dashboard, e.g. http://127.0.0.1:41234/
//   EXPECT_COUNTS  JSON {"inquiry": 6, ...}: the stage entries the page must show
//   EXPECT_ADS_INQUIRY  inquiry entries of the leads whose source is "ads"
//   INGEST         funneld's ingest endpoint, FUNNEL_BIN the funnel CLI (to publish more)
// Checks: the page loads without console errors or page errors, shows the
// stage counts, and updates by itself after new events.  Prints
// "ok - name" / "not ok - name: reason" and "N passed, N failed"; every
// wait is bounded.
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const url = process.env.METRICS_URL;
const expectCounts = JSON.parse(process.env.EXPECT_COUNTS || "{}");
const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";
let passed = 0, failed = 0;

function ok(name) { passed++; console.log(`ok - ${name}`); }
function notOk(name, why) { failed++; console.log(`not ok - ${name}: ${why}`); }
async function check(name, fn) {
  try { await fn(); ok(name); } catch (e) { notOk(name, e && e.message ? e.message : e); }
}
function expectEq(got, want, what) {
  if (JSON.stringify(got) !== JSON.stringify(want))
    throw new Error(`${what}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
}

async function counts(page) {
  return page.$$eval("[data-stage]", gs => Object.fromEntries(
    gs.map(g => [g.getAttribute("data-stage"), Number(g.querySelector(".count").textContent.replace(/,/g, ""))])));
}

const userDir = mkdtempSync(join(tmpdir(), "funnel-chromium-"));
let context = null;
const problems = [];
try {
  // a fresh profile directory per run (playwright passes --user-data-dir)
  context = await chromium.launchPersistentContext(userDir, {
    executablePath: chromiumPath,
    headless: true,
    timeout: 30000,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const page = context.pages()[0] || await context.newPage();
  page.setDefaultTimeout(15000);
  page.on("console", m => { if (m.type() === "error") problems.push(`console: ${m.text()}`); });
  page.on("pageerror", e => problems.push(`page error: ${e.message}`));
  page.on("requestfailed", r => problems.push(`request failed: ${r.url()}`));
  const offsite = [];
  page.on("request", r => { if (!r.url().startsWith(url.replace(/\/$/, "")) && !r.url().startsWith("data:")) offsite.push(r.url()); });

  await check("the dashboard loads and draws the funnel", async () => {
    const resp = await page.goto(url, { waitUntil: "load" });
    expectEq(resp.status(), 200, "status");
    await page.waitForSelector('[data-stage="inquiry"] .count');
    await page.waitForFunction(() => document.body.dataset.checkpoint !== undefined);
  });

  await check("it shows the stage counts of the scripted history", async () => {
    const c = await counts(page);
    const want = Object.fromEntries(Object.keys(c).map(k => [k, expectCounts[k]]));
    expectEq(c, want, "stage entries on the page");
    const conv = await page.textContent('[data-conversion="mql_to_sal"]');
    if (!/%$/.test(conv.trim())) throw new Error(`conversion label ${conv}`);
  });

  await check("the trend, closed-loop, team and source tables are filled", async () => {
    const lines = await page.$$eval("#trend polyline", ps => ps.length);
    if (lines < 5) throw new Error(`${lines} trend lines`);
    const reasons = await page.textContent("#reasons");
    for (const r of ["no_budget", "bad_timing", "student", "price"])
      if (!reasons.includes(r)) throw new Error(`reason ${r} missing from ${reasons}`);
    const teams = await page.textContent("#teams");
    if (!teams.includes("east") || !teams.includes("west")) throw new Error(`teams: ${teams}`);
    const sources = await page.textContent("#sources");
    if (!sources.includes("webinar") || !sources.includes("spring")) throw new Error(`sources: ${sources}`);
  });

  await check("it updates by itself after new events", async () => {
    const before = (await counts(page)).inquiry;
    for (const lead of ["BR-1", "BR-2"]) {
      execFileSync(process.env.FUNNEL_BIN, ["--ingest", process.env.INGEST, "publish",
        "--type", "lead.captured", "--lead", lead, "--id", `browser-${lead}`,
        "--data", JSON.stringify({ source: "browser", campaign: "test" })], { timeout: 10000 });
    }
    await page.waitForFunction(
      n => Number(document.querySelector('[data-stage="inquiry"] .count').textContent.replace(/,/g, "")) === n,
      before + 2, { timeout: 20000 });
    const sources = await page.textContent("#sources");
    if (!sources.includes("browser")) throw new Error("the new source is not in the table");
  });

  await check("names from the log are shown as text, never as markup", async () => {
    const source = '<b id="xss-src">bold</b>', campaign = '<img src=x onerror="window.__xss=1">';
    execFileSync(process.env.FUNNEL_BIN, ["--ingest", process.env.INGEST, "publish",
      "--type", "lead.captured", "--lead", "BR-X", "--id", "browser-BR-X",
      "--data", JSON.stringify({ source, campaign })], { timeout: 10000 });
    await page.waitForFunction(s => document.querySelector("#sources").textContent.includes(s),
      source, { timeout: 20000 });
    const sources = await page.textContent("#sources");
    if (!sources.includes(campaign)) throw new Error("the campaign is not shown as text");
    const injected = await page.evaluate(() => [document.getElementById("xss-src") !== null,
      document.querySelectorAll("main img").length, window.__xss === 1]);
    expectEq(injected, [false, 0, false], "elements or script from the names");
  });

  await check("a bad filter shows the API's message", async () => {
    await page.fill("#f-from", "yesterday");
    await page.click("#filters button");
    await page.waitForFunction(() => document.getElementById("status").className === "bad");
    const s = await page.textContent("#status");
    if (!s.includes("from") || !s.includes("not a time")) throw new Error(`status: ${s}`);
    await page.fill("#f-from", "");
    await page.click("#filters button");
    await page.waitForFunction(() => document.getElementById("status").className === "");
  });

  await check("the source filter and the attribution model apply to the page", async () => {
    const want = Number(process.env.EXPECT_ADS_INQUIRY);
    await page.fill("#f-source", "ads");
    await page.selectOption("#f-model", "first");
    await page.click("#filters button");
    await page.waitForFunction(
      n => Number(document.querySelector('[data-stage="inquiry"] .count').textContent) === n, want);
    const head = await page.textContent("#sources");
    if (!head.includes("(first)")) throw new Error(`sources table header: ${head.slice(0, 200)}`);
    await page.fill("#f-source", "");
    await page.selectOption("#f-model", "linear");
    await page.click("#filters button");
    await page.waitForFunction(() => !document.querySelector("#sources").textContent.includes("(first)"));
  });

  await check("no console errors, no page errors, nothing loaded from elsewhere", async () => {
    // the bad filter's 400 is logged by Chromium as a failed resource: expected
    const real = problems.filter(p => !p.includes("400 (Bad Request)"));
    expectEq(real, [], "problems");
    expectEq(offsite, [], "requests to other origins");
  });
} catch (e) {
  notOk("headless Chromium runs the dashboard", e && e.message ? e.message : e);
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(userDir, { recursive: true, force: true });
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
