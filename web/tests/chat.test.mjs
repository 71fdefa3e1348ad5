// The widget and the console against a real gateway, in Chromium.
import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { Gateway, launch, shopper, agent, until, freePort, SHOTS } from "./harness.mjs";

let browser;
const cleanup = [];
let errors = [];

before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });
afterEach(async () => {
  while (cleanup.length) await cleanup.pop()();
  const seen = errors;
  errors = [];
  assert.deepEqual(seen, [], "no errors in the pages");
});

async function gateway(opts) {
  const gw = await Gateway.start(opts);
  cleanup.push(() => gw.dispose());
  return gw;
}
async function visitor(gw, opts = {}) {
  const v = await shopper(browser, gw, { errors, ...opts });
  cleanup.push(() => v.ctx.close());
  return v;
}
async function agentOf(gw, sub, name, opts = {}) {
  const a = await agent(browser, gw, sub, name, { errors, ...opts });
  cleanup.push(() => a.ctx.close());
  return a;
}
/** Drops expected errors (the browser logs every refused connection while a gateway is down). */
function forgive(re) {
  for (let i = errors.length - 1; i >= 0; i--) if (re.test(errors[i])) errors.splice(i, 1);
}
const see = (locator, text) => locator.filter({ hasText: text }).first().waitFor();
const statusOf = async (locator) => locator.getAttribute("data-status");
const noDuplicates = (texts) => assert.equal(new Set(texts).size, texts.length, `duplicates in ${JSON.stringify(texts)}`);

test("a visitor and an agent hold a conversation", async () => {
  const gw = await gateway();
  const { page: vp, w } = await visitor(gw);
  const { page: ap, c } = await agentOf(gw, "alice", "Alice");

  await w.launch.click();
  await w.panel.waitFor();
  await w.say("Hi, does the Trailhead 2 fit two adults?");
  const first = w.mine.first();
  await until(async () => ["sent", "read"].includes(await statusOf(first)), "first message acked");

  // The console: a new conversation with one unread message, and a title notice.
  await c.conv(0).locator(".unread").filter({ hasText: "1" }).waitFor();
  await until(async () => (await ap.title()).includes("New chat"), "title notice");
  await c.open(0);
  await see(c.theirs, "fit two adults");
  assert.equal(await c.conv(0).locator(".unread").count(), 0, "read once opened");
  // The agent read it: the visitor sees "Read".
  await until(async () => (await statusOf(first)) === "read", "visitor's message read");
  // The visitor sees who is answering.
  await see(w.title, "Alice");

  // Typing, both ways.
  await c.input.pressSequentially("Yes", { delay: 20 });
  await see(w.typing, "Alice is typing");
  await c.input.fill("");
  await c.say("Yes, it fits two adults comfortably.");
  await see(w.theirs, "fits two adults comfortably");
  assert.ok(await w.typing.isHidden(), "typing indicator gone with the message");
  // The panel is open and visible: the visitor reads it, the agent sees "Read".
  await until(async () => (await statusOf(c.mine.last())) === "read", "agent's reply read");
  await w.input.pressSequentially("Gr", { delay: 20 });
  await see(c.typing, "typing");
  await w.say("Great, thanks!");
  await see(c.theirs, "Great, thanks!");

  assert.deepEqual(await w.texts(), [
    "Hi, does the Trailhead 2 fit two adults?",
    "Yes, it fits two adults comfortably.",
    "Great, thanks!",
  ]);
  assert.deepEqual(await c.texts(), await w.texts(), "both sides show the same transcript");
  await ap.screenshot({ path: join(SHOTS, "console.png") });
  await vp.screenshot({ path: join(SHOTS, "widget.png") });

  // Minimized, the widget counts what arrives and does not mark it read.
  await vp.locator("#kefu-widget .x").click();
  await c.say("Anything else?");
  await see(w.badge, "1");
  // The ack to the agent and the delivery to the visitor race: wait for the ack, then check it was not read.
  await until(async () => (await statusOf(c.mine.last())) !== "sending", "agent's message acked");
  assert.equal(await statusOf(c.mine.last()), "sent", "not read while the panel is closed");
  await w.launch.click();
  assert.ok(await w.badge.isHidden());
  await until(async () => (await statusOf(c.mine.last())) === "read", "read once the panel opens");

  // The agent closes: the visitor is told, and writing again opens a new conversation.
  await ap.locator("#close-conv").click();
  await see(w.events, "Chat ended");
  await c.conv(0).and(ap.locator("[data-state=closed]")).waitFor();
  await w.say("One more question: delivery to Canada?");
  await ap.locator("#convs .conv[data-state=assigned]").waitFor();
  assert.equal(await c.convs.count(), 2, "a second conversation");
  await see(w.title, "Alice");
});

test("an away agent gets no new conversations until it is back online", async () => {
  const gw = await gateway();
  const { page: ap, c } = await agentOf(gw, "alice", "Alice");
  await ap.locator("#status").selectOption("away");
  await ap.locator("body[data-status=away]").waitFor();
  const { w } = await visitor(gw);
  await w.launch.click();
  await w.say("Hello?");
  await see(w.banner, "number 1 in the queue");
  assert.equal(await c.convs.count(), 0);
  await ap.locator("#status").selectOption("online");
  await c.conv(0).waitFor();
  await see(w.title, "Alice");
});

test("a logged-in shopper: the shop passes its visitor token to KefuWidget.init", async () => {
  const gw = await gateway();
  const token = gw.token(["--role", "visitor", "--sub", "shopper-42", "--name", "Ann"]);
  const { page: vp, w } = await visitor(gw, { attrs: "data-manual" });
  assert.equal(await w.launch.count(), 0, "data-manual: nothing until init()");
  await vp.evaluate((t) => window.KefuWidget.init({ token: t, title: "Acme help", open: true }), token);
  await w.panel.waitFor();
  await see(w.title, "Acme help");
  await w.say("Where is order 1234?");
  const { c } = await agentOf(gw, "alice", "Alice");
  await see(c.conv(0), "Ann");
  await c.open(0);
  await see(c.theirs, "order 1234");
  // The shop's token is not stored by the widget.
  const stored = await vp.evaluate(() => localStorage.getItem("kefu.v1.demo"));
  assert.ok(!stored.includes(token), stored);
});

test("the queue position shows when no agent is free", async () => {
  const gw = await gateway();
  const a = await visitor(gw);
  const b = await visitor(gw);
  await a.w.launch.click();
  await a.w.say("Is anyone there?");
  await see(a.w.banner, "number 1 in the queue");
  await b.w.launch.click();
  await b.w.say("Hello?");
  await see(b.w.banner, "number 2 in the queue");

  // An agent who takes one chat at a time arrives: the first visitor is served,
  // the second moves up.
  const { c } = await agentOf(gw, "alice", "Alice", { extra: ["--max-chats", "1"] });
  await see(a.w.title, "Alice");
  assert.ok(await a.w.banner.isHidden(), "no queue banner once assigned");
  await see(b.w.banner, "number 1 in the queue");
  await c.conv(0).waitFor();
  assert.equal(await c.convs.count(), 1);
});

test("an agent transfers a conversation to another agent, and back to the queue", async () => {
  const gw = await gateway();
  const { w } = await visitor(gw);
  const alice = await agentOf(gw, "alice", "Alice");
  await w.launch.click();
  await w.say("I want to change my delivery address");
  await alice.c.open(0);
  await alice.c.say("Let me pass you to our delivery team.");
  await see(w.theirs, "delivery team");

  const bob = await agentOf(gw, "bob", "Bob");
  assert.equal(await bob.c.convs.count(), 0, "bob has nothing yet");
  await alice.c.transfer("bob");

  // Bob gets the conversation with its whole transcript, and a notice.
  await bob.c.conv(0).waitFor();
  await until(async () => (await bob.page.title()).includes("New chat"), "bob's title notice");
  await bob.c.open(0);
  await see(bob.c.msgs, "delivery team");
  assert.deepEqual(await bob.c.texts(), ["I want to change my delivery address", "Let me pass you to our delivery team."]);
  // Alice's copy is no longer hers; the visitor sees Bob.
  await see(alice.c.conv(0), "Transferred to Bob");
  assert.ok(await alice.page.locator("#input").isDisabled());
  await see(w.title, "Bob");
  await bob.c.say("Hi, Bob here. What is the new address?");
  await see(w.theirs, "Bob here");

  // Back to the queue: Bob is not offered it again, Alice is free and gets it.
  await bob.c.transfer(null);
  await see(bob.c.conv(0), "Back in the queue");
  await see(w.title, "Alice");
  await until(async () => (await alice.page.locator("#convs .conv[data-state=assigned]").count()) === 1, "alice has it again");
  // A transfer to someone who is not connected is refused, and said so.
  await alice.c.open(0);
  await alice.c.transfer("nobody");
  await see(alice.page.locator("#toast"), "Error");
});

test("the visitor reloads mid-conversation and sees the whole transcript once", async () => {
  const gw = await gateway();
  const { page: vp, w } = await visitor(gw);
  const { page: ap, c } = await agentOf(gw, "alice", "Alice");
  await w.launch.click();
  const said = [];
  for (let i = 1; i <= 3; i++) {
    await w.say(`visitor ${i}`);
    said.push(`visitor ${i}`);
    if (i === 1) await c.open(0);
    await see(c.theirs, `visitor ${i}`);
    await c.say(`agent ${i}`);
    said.push(`agent ${i}`);
    await see(w.theirs, `agent ${i}`);
  }
  assert.deepEqual(await w.texts(), said);

  await vp.reload();
  // The panel stays open across the reload (same tab), and the transcript comes back.
  await w.panel.waitFor();
  await until(async () => (await w.msgs.count()) >= said.length, "transcript after reload");
  await see(w.title, "Alice");
  const texts = await w.texts();
  assert.deepEqual(texts, said, "whole transcript, in order");
  noDuplicates(await w.msgs.evaluateAll((ns) => ns.map((n) => n.closest("[data-conv]")?.dataset.conv + ":" + n.dataset.seq)));
  const events = await w.events.allTextContents();
  assert.equal(events.filter((t) => t.includes("joined")).length, 1, `one "joined": ${events}`);

  // And the conversation goes on.
  await w.say("after reload");
  await see(c.theirs, "after reload");
  await c.say("still here");
  await see(w.theirs, "still here");
  assert.deepEqual(await w.texts(), [...said, "after reload", "still here"]);

  // The console reloads too (its token stays in the tab): same transcript.
  await ap.reload();
  await ap.locator("#conn[data-state=up]").waitFor();
  await c.open(0);
  await until(async () => (await c.msgs.count()) >= said.length + 2, "console transcript after reload");
  assert.deepEqual(await c.texts(), [...said, "after reload", "still here"]);
});

test("the console pages through history", async () => {
  const gw = await gateway();
  const { page: vp, w } = await visitor(gw);
  const { page: ap, c } = await agentOf(gw, "alice", "Alice");
  await w.launch.click();
  const n = 60;
  for (let i = 1; i <= n; i++) await w.say(`line ${i}`);
  await until(async () => (await w.mine.count()) === n &&
    (await vp.locator("#kefu-widget .m.mine[data-status=sending]").count()) === 0, "all acked");
  await c.open(0);
  await see(c.theirs, `line ${n}`);
  // A fresh console only loads the newest page, then pages back.
  await ap.reload();
  await ap.locator("#conn[data-state=up]").waitFor();
  await c.open(0);
  await see(c.theirs, `line ${n}`);
  await c.more.waitFor();
  const before = await c.msgs.count();
  assert.ok(before < n, `a first page only (${before})`);
  await c.more.click();
  await until(async () => (await c.msgs.count()) === n, "every line after paging");
  const texts = await c.texts();
  assert.deepEqual(texts, Array.from({ length: n }, (_, i) => `line ${i + 1}`));
  assert.ok(await c.more.isHidden(), "nothing more to load");
});

test("the widget fills a phone's screen", async () => {
  const gw = await gateway();
  const { page, w } = await visitor(gw, { viewport: { width: 390, height: 844 } });
  await w.launch.click();
  await w.say("Hello from my phone");
  await w.mine.first().waitFor();
  // (polled: the panel slides in)
  await until(async () => {
    const box = await w.panel.boundingBox();
    return box && [box.x, box.y, box.width, box.height].join() === "0,0,390,844";
  }, "the panel to fill the screen");
  await until(async () => ["sent", "read"].includes(await statusOf(w.mine.first())), "acked");
  await see(w.banner, "in the queue");
  await page.screenshot({ path: join(SHOTS, "widget-phone.png") });
  // Minimizing brings the launcher back.
  await page.locator("#kefu-widget .x").click();
  await w.launch.waitFor();
  assert.ok(await w.panel.isHidden());
});

test("the gateway restarts mid-conversation: the widget recovers and resends", async () => {
  const port = await freePort();
  const gw = await gateway({ port });
  const { page: vp, w } = await visitor(gw);
  const { page: ap, c } = await agentOf(gw, "alice", "Alice");
  await w.launch.click();
  await w.say("before the restart");
  await c.open(0);
  await see(c.theirs, "before the restart");
  await c.say("reply before");
  await see(w.theirs, "reply before");

  // A message in flight when the gateway dies: written to the socket, never answered.
  gw.pause();
  await w.say("in flight");
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(await statusOf(w.mine.last()), "sending");
  await gw.stop("SIGKILL");
  await see(w.banner, "Reconnecting");
  await w.say("while it was down");
  await c.say("agent while down");
  assert.equal(await statusOf(w.mine.last()), "sending");

  await gw.start(); // same port, same data directory
  await until(async () => (await vp.locator("#kefu-widget .m.mine[data-status=sending]").count()) === 0,
    "resent and acked", 20000);
  await see(c.theirs, "while it was down");
  await see(w.theirs, "agent while down");
  await ap.locator("#conn[data-state=up]").waitFor();
  const expected = ["before the restart", "reply before"];
  const vt = await w.texts();
  const at = await c.texts();
  for (const t of [...expected, "in flight", "while it was down", "agent while down"]) {
    assert.equal(vt.filter((x) => x === t).length, 1, `visitor sees "${t}" once: ${JSON.stringify(vt)}`);
    assert.equal(at.filter((x) => x === t).length, 1, `agent sees "${t}" once: ${JSON.stringify(at)}`);
  }
  assert.ok(await w.banner.isHidden(), "no reconnecting banner");
  // And it goes on after the restart.
  await w.say("after the restart");
  await see(c.theirs, "after the restart");
  forgive(/WebSocket connection to 'ws:\/\/127\.0\.0\.1:\d+\/v1\/ws' failed: .*ERR_CONNECTION_REFUSED/);
});

test("an ack lost on the way: the widget resends the same id and the message is stored once", async () => {
  const gw = await gateway();
  const sent = []; // every msg frame the widget sent, on any connection
  let dropped = null;
  // Between the widget and the gateway: forward everything, except that the
  // ack of "lost ack" is swallowed and the connection cut.
  const setup = (page) => page.routeWebSocket(/\/v1\/ws$/, (ws) => {
    const server = ws.connectToServer();
    ws.onMessage((m) => {
      const f = JSON.parse(m);
      if (f.type === "msg") sent.push(f);
      server.send(m);
    });
    server.onMessage((m) => {
      const f = JSON.parse(m);
      const lost = sent.find((s) => s.text === "lost ack");
      if (f.type === "ack" && !dropped && lost && f.id === lost.id) {
        dropped = f;
        ws.close({ code: 4000, reason: "cut" });
        server.close();
        return;
      }
      ws.send(m);
    });
  });
  const { w } = await visitor(gw, { setup });
  const { c } = await agentOf(gw, "alice", "Alice");
  await w.launch.click();
  await w.say("first");
  await c.open(0);
  await see(c.theirs, "first");
  await w.say("lost ack");
  await until(() => dropped, "the ack to be dropped");
  await until(async () => (await statusOf(w.mine.last())) !== "sending", "acked after the reconnection");
  const copies = sent.filter((f) => f.text === "lost ack");
  assert.ok(copies.length >= 2, `resent: ${JSON.stringify(copies)}`);
  assert.ok(copies.every((f) => f.id === copies[0].id), "with the same id");
  await see(c.theirs, "lost ack");
  await w.say("after");
  await see(c.theirs, "after");
  assert.deepEqual(await c.texts(), ["first", "lost ack", "after"], "stored once");
  assert.deepEqual(await w.texts(), ["first", "lost ack", "after"]);
  assert.equal(await w.mine.nth(1).getAttribute("data-seq"), String(dropped.seq), "the original seq");
});
