// tests/browser/gateway.test.mjs - funnel-gateway's forms in real headless
// Chromium (Debian's /usr/bin/chromium), driven by playwright-core.
//
// Run by tests/integration/test_gateway.py, which starts funneld and
// funnel-gateway and passes:
//   GATEWAY_URL   the gateway, e.g. http://127.0.0.1:41234
//   PAGE_ORIGIN   the page origin the form allows, e.g. http://127.0.0.2:40001
//   OTHER_ORIGIN  an origin the form does not allow (127.0.0.3)
//   QUERY         funneld's query endpoint, FUNNEL_BIN the funnel CLI (to read the log)
// The pages are served here, from PAGE_ORIGIN and OTHER_ORIGIN: a
// different origin from the gateway's, as a marketing site is.
// Checks: a plain HTML post (JavaScript off) lands on the thank-you page
// and stores one lead.captured with the mapped fields, UTM values and the
// form id; a double click stores one event; the embed script posts with
// fetch, shows the inline message, and a double click stores one event;
// a page from an origin not allowed is refused and stores nothing.
// Prints "ok - name" / "not ok - name: reason" and "N passed, N failed";
// every wait is bounded.
import { execFileSync } from "node:child_process";
import { createServer } from "node:http";
import { chromium } from "playwright-core";

const gateway = process.env.GATEWAY_URL;
const pageOrigin = new URL(process.env.PAGE_ORIGIN);
const otherOrigin = new URL(process.env.OTHER_ORIGIN);
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

// The log's lead.captured records, through the funnel CLI.
function captured() {
  const out = execFileSync(process.env.FUNNEL_BIN,
    ["replay", "--type", "lead.captured", "--json", "--query", process.env.QUERY],
    { encoding: "utf8", timeout: 15000, maxBuffer: 1 << 28 });
  return out.split("\n").filter(l => l.trim()).map(l => JSON.parse(l));
}

// A marketing page with the demo form; `script` adds the embed script.
function formPage(script, utmFields) {
  const hidden = utmFields ? `
    <input type="hidden" name="utm_source" value="newsletter">
    <input type="hidden" name="utm_campaign" value="fall-launch">` : "";
  return `<!doctype html><html><head><meta charset="utf-8"><title>Demo</title></head><body>
  <h1>Ask for a demo</h1>
  <form method="post" action="${gateway}/forms/demo-request">
    <input name="email" id="email"> <input name="full_name" id="name">
    <input name="company" id="company"> <input name="job_title" id="title">
    <label><input type="checkbox" name="consent_marketing" id="consent" value="yes"> news</label>
    <input name="website" style="display:none" tabindex="-1" autocomplete="off">${hidden}
    <button type="submit" id="send">Send</button>
  </form>
  ${script ? `<script src="${gateway}/forms/demo-request.js"></script>` : ""}
  </body></html>`;
}

function serve(host, port) {
  const srv = createServer((req, res) => {
    const u = new URL(req.url, "http://x");
    let body;
    if (u.pathname === "/plain.html") body = formPage(false, true);
    else if (u.pathname === "/embed.html") body = formPage(true, false);
    else if (u.pathname === "/thanks") body = "<!doctype html><title>Thanks</title><p>Thank you";
    else { res.writeHead(404); res.end(); return; }
    res.writeHead(200, { "Content-Type": "text/html; charset=utf-8" });
    res.end(body);
  });
  return new Promise((resolve, reject) => {
    srv.once("error", reject);
    srv.listen(Number(port), host, () => resolve(srv));
  });
}

async function fill(page, email) {
  await page.fill("#email", email);
  await page.fill("#name", "Rosa Diaz");
  await page.fill("#company", "Nine-Nine Ltd");
  await page.fill("#title", "Head of Ops");
  await page.check("#consent");
}

async function waitCount(email, n) {
  for (let i = 0; i < 100; i++) {
    const got = captured().filter(r => r.data.email === email);
    if (got.length >= n) return got;
    await new Promise(r => setTimeout(r, 100));
  }
  return captured().filter(r => r.data.email === email);
}

const servers = [];
let browser = null;
try {
  servers.push(await serve(pageOrigin.hostname, pageOrigin.port));
  servers.push(await serve(otherOrigin.hostname, otherOrigin.port));
  browser = await chromium.launch({
    executablePath: chromiumPath, headless: true, timeout: 30000,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const noJs = await browser.newContext({ javaScriptEnabled: false });
  const withJs = await browser.newContext();

  await check("no JavaScript: fill and submit lands on the thank-you page, one lead.captured "
              + "with the mapped fields, UTM and form id", async () => {
    const page = await noJs.newPage();
    page.setDefaultTimeout(15000);
    await page.goto(`${pageOrigin.origin}/plain.html`);
    await fill(page, "rosa@nine.example");
    await Promise.all([page.waitForURL(`${pageOrigin.origin}/thanks`), page.click("#send")]);
    const recs = await waitCount("rosa@nine.example", 1);
    expectEq(recs.length, 1, "events");
    const d = recs[0].data;
    expectEq([d.form, d.name, d.company, d.title], ["demo-request", "Rosa Diaz", "Nine-Nine Ltd",
             "Head of Ops"], "mapped fields");
    expectEq([d.utm.source, d.utm.campaign, d.source, d.campaign],
             ["newsletter", "fall-launch", "newsletter", "fall-launch"], "UTM values");
    expectEq(d.consent, { consent_marketing: true }, "consent");
    await page.close();
  });

  await check("no JavaScript: a double click on submit stores one event", async () => {
    const page = await noJs.newPage();
    page.setDefaultTimeout(15000);
    await page.goto(`${pageOrigin.origin}/plain.html`);
    await fill(page, "double@nine.example");
    // the second post aborts the first's navigation, and a wait on that
    // navigation may end with ERR_ABORTED: wait for where the page lands
    const thanks = `${pageOrigin.origin}/thanks`;
    await page.dblclick("#send");
    const until = Date.now() + 15000;
    while (page.url() !== thanks) {
      if (Date.now() > until)
        throw new Error(`after the double click the page is at ${page.url()}, not ${thanks}`);
      await page.waitForURL(thanks, { timeout: 1000 }).catch(() => {});
    }
    await new Promise(r => setTimeout(r, 500));
    expectEq((await waitCount("double@nine.example", 1)).length, 1, "events");
    await page.close();
  });

  await check("embed script: submit with fetch shows the inline message, stores one event "
              + "with the page's UTM", async () => {
    const page = await withJs.newPage();
    page.setDefaultTimeout(15000);
    const errors = [];
    page.on("pageerror", e => errors.push(e.message));
    const url = `${pageOrigin.origin}/embed.html?utm_source=linkedin&utm_medium=social&utm_campaign=q4`;
    await page.goto(url);
    await page.waitForSelector('input[name="submission_id"]', { state: "attached" });
    await fill(page, "embed@nine.example");
    await page.click("#send");
    await page.waitForSelector(".funnel-message");
    const msg = await page.textContent(".funnel-message");
    expectEq(msg, "Thanks, talk soon.", "inline message");
    expectEq(page.url(), url, "the page stays");
    const recs = await waitCount("embed@nine.example", 1);
    expectEq(recs.length, 1, "events");
    const d = recs[0].data;
    expectEq([d.utm.source, d.utm.medium, d.utm.campaign, d.page_url],
             ["linkedin", "social", "q4", url], "UTM from the page URL");
    if (!/^form:demo-request:[0-9a-f]{32}$/.test(recs[0].id))
      throw new Error(`event id ${recs[0].id} is not the script's submission id`);
    expectEq(errors, [], "page errors");
    await page.close();
  });

  await check("embed script: a double click on submit stores one event", async () => {
    const page = await withJs.newPage();
    page.setDefaultTimeout(15000);
    await page.goto(`${pageOrigin.origin}/embed.html`);
    await page.waitForSelector('input[name="submission_id"]', { state: "attached" });
    await fill(page, "dbl-js@nine.example");
    await page.dblclick("#send");
    await page.waitForSelector(".funnel-message");
    await new Promise(r => setTimeout(r, 500));
    expectEq((await waitCount("dbl-js@nine.example", 1)).length, 1, "events");
    await page.close();
  });

  await check("a page from an origin not allowed is refused and stores nothing", async () => {
    const page = await noJs.newPage();
    page.setDefaultTimeout(15000);
    await page.goto(`${otherOrigin.origin}/plain.html`);
    await fill(page, "evil@nine.example");
    const [resp] = await Promise.all([
      page.waitForResponse(r => r.url().startsWith(`${gateway}/forms/`)),
      page.click("#send"),
    ]);
    expectEq(resp.status(), 403, "status");
    await new Promise(r => setTimeout(r, 300));
    expectEq(captured().filter(r => r.data.email === "evil@nine.example").length, 0, "events");
    await page.close();
  });
} catch (e) {
  notOk("the browser test runs", e && e.message ? e.message : e);
} finally {
  if (browser) await browser.close().catch(() => {});
  for (const s of servers) s.close();
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
