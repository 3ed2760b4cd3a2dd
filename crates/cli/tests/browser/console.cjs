// Drives the console in Debian's Chromium, headless, as the firm's staff
// would: signs in as each role, backs up, takes a safety snapshot with a
// reason, reads the snapshots, restores one client after its dry run, and
// checks that a viewer can change nothing. Run by
// crates/cli/tests/console.rs, which starts the console after one backup
// from the command line and then deletes client 2 of the firm database.
//
// node console.cjs BASE_URL SCREENSHOT_DIR
// env: LV_PLAYWRIGHT (the playwright-core package folder), LV_CHROMIUM,
//      LV_OPERATOR_PW, LV_VIEWER_PW, LV_ADMIN_PW
"use strict";
const { chromium } = require(process.env.LV_PLAYWRIGHT);
const path = require("path");

const [base, shots] = process.argv.slice(2);
const shot = (page, name) => page.screenshot({ path: path.join(shots, name + ".png"), fullPage: true });

function check(ok, what) {
  if (!ok) throw new Error("failed: " + what);
}

async function signIn(browser, user, password, viewport) {
  const context = await browser.newContext({ viewport: viewport || { width: 1280, height: 800 } });
  const page = await context.newPage();
  await page.goto(base + "/");
  check(page.url() === base + "/login", "an anonymous visit lands on the sign-in page, not " + page.url());
  await page.getByLabel("User name").fill(user);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  try {
    await page.waitForURL(base + "/");
  } catch (e) {
    throw new Error("signing in as " + user + " ended on " + page.url() + ": " + (await page.content()));
  }
  return page;
}

async function waitForResult(page) {
  // The page updates itself from the server's events and reloads at the end.
  await page.locator(".note.ok, .note.error").first().waitFor({ timeout: 120000 });
  const ok = await page.locator(".note.ok").count();
  check(ok === 1, "the task succeeded: " + (await page.locator("main").innerText()));
  return page.locator(".note.ok").innerText();
}

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.LV_CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    const login = await (await browser.newContext()).newPage();
    await login.goto(base + "/login");
    await shot(login, "login");

    // The operator backs up now and follows the progress to the result.
    const op = await signIn(browser, "olga", process.env.LV_OPERATOR_PW);
    await op.getByRole("button", { name: "Back up now" }).click();
    await op.waitForURL(/\/tasks\/\d+$/);
    const first = await waitForResult(op);
    check(/Snapshot [0-9a-f]{8}/.test(first), "the result names the snapshot: " + first);
    await shot(op, "task");

    await op.getByRole("link", { name: "Snapshots" }).first().click();
    check((await op.locator("table.snapshots tbody tr").count()) === 2, "two snapshots listed");

    // A safety snapshot before year-end close.
    await op.goto(base + "/");
    await op.getByLabel("Reason").selectOption("year-end close");
    await op.getByLabel("Details").fill("FY2026");
    await op.getByRole("button", { name: "Take safety snapshot" }).click();
    await op.waitForURL(/\/tasks\/\d+$/);
    await waitForResult(op);
    await op.goto(base + "/snapshots");
    check((await op.locator("table.snapshots tbody tr").count()) === 3, "three snapshots listed");
    check((await op.getByText("year-end close: FY2026").count()) === 1, "the reason is shown");
    await shot(op, "snapshots");
    await op.goto(base + "/");
    check((await op.getByText("3 backups", { exact: false }).count()) >= 1, "the dashboard counts three backups");
    await shot(op, "dashboard");
    await op.goto(base + "/snapshots");
    // Browse the safety snapshot and open the documents folder.
    await op.locator("table.snapshots tbody tr").first().locator("a").first().click();
    await op.waitForURL(/\/snapshots\/[0-9a-f]{64}$/);
    const docsLink = op.locator("table.entries tr", { hasText: "folder" }).locator("a").first();
    check((await docsLink.count()) === 1, "the snapshot lists the documents folder: " + (await op.content()));
    await docsLink.click();
    check((await op.getByRole("link", { name: "2026" }).count()) === 1, "the folder lists its entries");
    check((await op.getByRole("link", { name: "Download (zip)" }).count()) >= 1, "a folder offers a zip");
    await shot(op, "browse");
    // The operator may restore the database to a new file, never over the live one.
    await op.goBack();
    await op.getByRole("link", { name: "Restore…" }).first().click();
    check((await op.getByRole("button", { name: "Restore to a new file" }).count()) === 1, "an operator may restore to a new file");
    check((await op.getByRole("button", { name: "Replace the live database" }).count()) === 0, "an operator cannot overwrite live data");
    await op.getByRole("button", { name: "Restore to a new file" }).click();
    await op.waitForURL(/\/tasks\/\d+$/);
    const restored = await waitForResult(op);
    check(restored.includes("Restored database"), "the database was restored: " + restored);
    await op.goto(base + "/snapshots");
    await op.getByLabel("Tag or reason contains").fill("year-end");
    await op.getByRole("button", { name: "Filter" }).click();
    check((await op.locator("table.snapshots tbody tr").count()) === 1, "the filter keeps the safety snapshot");

    // A restore drill, and its report.
    await op.getByRole("link", { name: "Drills" }).click();
    await op.getByRole("button", { name: "Run a drill now" }).click();
    await op.waitForURL(/\/tasks\/\d+$/);
    const drilled = await waitForResult(op);
    check(drilled.includes("PASSED"), "the drill passed: " + drilled);
    await op.getByRole("link", { name: "Drills" }).click();
    await op.getByText("Report").first().click();
    await shot(op, "drills");

    // The viewer sees the same, has no buttons, and a forged form is refused.
    const viewer = await signIn(browser, "vic", process.env.LV_VIEWER_PW);
    check((await viewer.getByRole("button", { name: "Back up now" }).count()) === 0, "a viewer has no backup button");
    await viewer.goto(base + "/snapshots");
    check((await viewer.locator("table.snapshots tbody tr").count()) === 3, "a viewer sees the snapshots");
    await viewer.goto(base + "/");
    await viewer.evaluate(() => {
      const f = document.createElement("form");
      f.method = "post";
      f.action = "/backup";
      f.appendChild(document.querySelector("input[name=csrf]").cloneNode());
      document.body.appendChild(f);
      f.submit();
    });
    await viewer.waitForURL(base + "/backup");
    check((await viewer.getByText("Your role (viewer) may not do this").count()) === 1, "the viewer's backup is refused");
    await op.goto(base + "/snapshots");
    check((await op.locator("table.snapshots tbody tr").count()) === 3, "the viewer's request made no snapshot");
    await viewer.goto(base + "/clients");
    check((await viewer.getByRole("button", { name: "See the plan" }).count()) === 0, "a viewer cannot plan a client restore");

    // Client 2 was deleted by mistake after the first backup: the operator
    // brings it back from that backup, after reading the plan.
    await op.getByRole("link", { name: "Clients" }).click();
    check((await op.getByRole("radio", { name: /Replace the client/ }).count()) === 0, "an operator cannot replace a client");
    await op.getByLabel("Client (its key, code or name)").fill("2");
    const oldest = await op.locator("#snapshot option").last().getAttribute("value");
    await op.getByLabel("From").selectOption(oldest);
    const firm = await op.locator("#into option", { hasText: /firm\.db$/ }).getAttribute("value");
    await op.getByLabel("Into").selectOption(firm);
    await op.getByRole("button", { name: "See the plan" }).click();
    await op.waitForURL(/\/tasks\/\d+$/);
    const planned = await waitForResult(op);
    check(planned.includes("Nothing was changed"), "a plan changes nothing: " + planned);
    check((await op.locator("ol.log li").count()) > 3, "the plan lists the tables");
    await shot(op, "client-plan");
    await op.getByRole("button", { name: "Restore the client" }).click();
    await op.waitForURL(/\/tasks\/\d+$/);
    const brought = await waitForResult(op);
    check(brought.includes("Restored client 2"), "the client was restored: " + brought);
    await op.getByRole("link", { name: "Clients" }).click();
    check((await op.locator("td code", { hasText: /^2$/ }).count()) === 1, "client 2 is listed again");

    // The admin reads who did what, and may replace the live database.
    const admin = await signIn(browser, "ann", process.env.LV_ADMIN_PW);
    await admin.goto(base + "/snapshots");
    await admin.locator("table.snapshots tbody tr").first().locator("a").first().click();
    await admin.getByRole("link", { name: "Restore…" }).first().click();
    check((await admin.getByRole("button", { name: "Replace the live database" }).count()) === 1, "an admin may replace the live database");
    await shot(admin, "restore");
    await admin.goto(base + "/activity");
    check((await admin.getByRole("heading", { name: "Audit log" }).count()) === 1, "the admin sees the audit log");
    await shot(admin, "activity");
    await admin.getByRole("link", { name: "Settings" }).click();
    check((await admin.getByRole("button", { name: "Save the settings" }).count()) === 1, "an admin may change the settings");
    await admin.getByLabel("Daily snapshots kept").fill("14");
    await admin.getByRole("button", { name: "Save the settings" }).click();
    await admin.waitForURL(base + "/settings?saved=1");
    check((await admin.getByLabel("Daily snapshots kept").inputValue()) === "14", "the setting was saved");
    await shot(admin, "settings");
    await viewer.goto(base + "/settings");
    check((await viewer.getByRole("button", { name: "Save the settings" }).count()) === 0, "a viewer cannot change the settings");

    // On a phone.
    const phone = await signIn(browser, "olga", process.env.LV_OPERATOR_PW, { width: 390, height: 844 });
    await shot(phone, "dashboard-phone");
    // The table's header row is hidden there; each value says what it is.
    const label = (page, cell) => page.locator(cell).first()
      .evaluate((el) => getComputedStyle(el, "::before").content);
    check(await phone.locator("thead").first().isHidden(), "a phone hides the header rows");
    check((await label(phone, "td[data-label='Next run']")) === '"Next run: "', "a phone names each value of the schedule");
    await op.goto(base + "/");
    check((await label(op, "td[data-label='Next run']")) === "none", "a laptop shows the header row instead");

    // Signing out ends the session.
    await op.getByRole("button", { name: "Sign out" }).click();
    await op.waitForURL(base + "/login");
    await op.goto(base + "/snapshots");
    check(op.url() === base + "/login", "signed out, the snapshots page is closed");
    console.log("browser: every step passed");
  } finally {
    await browser.close();
  }
})().catch((e) => {
  console.error(String(e && e.stack || e));
  process.exit(1);
});
