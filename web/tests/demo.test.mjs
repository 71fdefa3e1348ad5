// The demo page: `kefu` with no arguments, then http://127.0.0.1:8080/.
import { test } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { Gateway, launch, widget, consoleOf, until, SHOTS } from "./harness.mjs";

test("the demo page shows a shop with the widget next to a logged-in console", async (t) => {
  const gw = await Gateway.start();
  const browser = await launch();
  t.after(async () => { await browser.close(); await gw.dispose(); });
  const page = await browser.newPage({ viewport: { width: 1400, height: 820 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  await page.goto(`${gw.base}/`);

  const shopFrame = page.frame({ url: /\/demo\/shop$/ }) || (await until(() => page.frame({ url: /\/demo\/shop$/ }), "shop frame"));
  const consoleFrame = await until(() => page.frames().find((f) => f.url().includes("/console")), "console frame");
  const w = widget(shopFrame);
  const c = consoleOf(consoleFrame);
  await consoleFrame.locator("#conn[data-state=up]").waitFor();
  await consoleFrame.locator("#me-name", { hasText: "Demo Agent" }).waitFor();
  // The token left the address bar as soon as the console read it.
  assert.ok(!consoleFrame.url().includes("token="), consoleFrame.url());

  await w.launch.click();
  await w.say("Hi! Does the Trailhead 2 fit two adults?");
  await c.conv(0).waitFor();
  await c.open(0);
  await c.say("Hello! Yes: it is 220 × 130 cm inside, room for two adults and their packs.");
  await w.theirs.filter({ hasText: "220 × 130" }).waitFor();
  await w.say("Perfect, thank you!");
  await c.theirs.filter({ hasText: "Perfect" }).waitFor();
  await until(async () => (await w.mine.last().getAttribute("data-status")) === "read", "read receipt");
  await page.screenshot({ path: join(SHOTS, "demo.png") });
  assert.deepEqual(errors, []);
});
