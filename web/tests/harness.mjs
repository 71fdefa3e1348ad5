// Browser-test harness: real kefu gateways (the binary in $KEFU_BIN) on
// loopback with temporary data directories, and Debian's Chromium driven by
// playwright-core.
//
// The widget is tested the way a shop embeds it: a page on another origin
// (http://localhost:N, served by this process) with a
// <script src="http://127.0.0.1:PORT/widget.js" data-tenant="demo"> tag.
// The console is the gateway's own /console page.

import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, mkdirSync } from "node:fs";
import { createServer } from "node:net";
import { createServer as createHttpServer } from "node:http";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";

export const KEFU = resolve(process.env.KEFU_BIN || "../target/debug/kefu");
export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
/** Where screenshots go (docs/img when KEFU_SHOTS says so). */
export const SHOTS = process.env.KEFU_SHOTS ? resolve(process.env.KEFU_SHOTS) : resolve("test-results");
mkdirSync(SHOTS, { recursive: true });

/** A port that was free a moment ago (for the restart case, which needs the same port twice). */
export function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

/** A running gateway process. */
export class Gateway {
  constructor(dir, port) {
    this.dir = dir || mkdtempSync(join(tmpdir(), "kefu-web-"));
    this.ownDir = !dir;
    this.port = port || 0;
    this.proc = null;
    this.stderr = "";
  }

  static async start(opts = {}) {
    const gw = new Gateway(opts.dir, opts.port);
    try {
      await gw.start();
    } catch (e) {
      await gw.dispose();
      throw e;
    }
    return gw;
  }

  async start() {
    const args = [
      "serve",
      "--listen", `127.0.0.1:${this.port}`,
      "--admin-listen", "127.0.0.1:0",
      "--data-dir", this.dir,
      "--shards", "2",
      "--agent-grace", "60s",
    ];
    const env = { ...process.env, RUST_LOG: process.env.KEFU_TEST_LOG || "warn" };
    delete env.KEFU_CONFIG;
    const proc = spawn(KEFU, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    this.proc = proc;
    proc.stderr.on("data", (d) => { this.stderr += d; });
    const line = await new Promise((ok, fail) => {
      let out = "";
      const timer = setTimeout(() => fail(new Error("gateway not ready in 30 s:\n" + this.stderr)), 30000);
      proc.stdout.on("data", (d) => {
        out += d;
        const m = /^kefu ready .*$/m.exec(out);
        if (m) { clearTimeout(timer); ok(m[0]); }
      });
      proc.once("exit", (code) => { clearTimeout(timer); fail(new Error(`gateway exited (${code}):\n${this.stderr}`)); });
    });
    const addr = /listen=(\S+)/.exec(line)[1];
    this.port = Number(addr.split(":").pop());
    this.base = `http://${addr}`;
    return this;
  }

  /** Ends the process: SIGKILL by default (a crash), SIGTERM for a drain. */
  async stop(signal = "SIGKILL") {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null) return;
    const exited = new Promise((ok) => proc.once("exit", ok));
    proc.kill(signal);
    await exited;
    this.proc = null;
  }

  /** Freezes the process (SIGSTOP): connections stay open, nothing is answered. */
  pause() { this.proc.kill("SIGSTOP"); }

  async dispose() {
    await this.stop();
    if (this.ownDir) rmSync(this.dir, { recursive: true, force: true });
  }

  /** `kefu token` for this gateway's data directory. */
  token(args) {
    return execFileSync(KEFU, ["token", "--data-dir", this.dir, ...args], {
      env: { ...process.env, RUST_LOG: "error" },
    }).toString().trim();
  }

  /** The console link `kefu token --url` prints for an agent. */
  agentUrl(sub, name, extra = []) {
    return this.token(["--role", "agent", "--sub", sub, "--name", name, "--url", "--base-url", this.base, ...extra]);
  }
}

export async function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // --user-data-dir is not accepted here: Playwright gives every launch a fresh profile of its own.
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
}

/** Records page errors so a test can assert there were none. */
function watch(page, errors) {
  page.on("pageerror", (e) => errors.push(`${page.url()}: ${e.message}`));
  page.on("console", (m) => { if (m.type() === "error") errors.push(`${page.url()}: console: ${m.text()}`); });
}

/**
 * The shop: a page on its own origin (http://localhost:PORT, while the
 * gateway is http://127.0.0.1:PORT), served by a small server of the test
 * process. Both are loopback: Chromium refuses a public page's requests to
 * loopback (Private Network Access), which a real shop never makes.
 */
let shopServer = null;
async function shopOrigin() {
  if (!shopServer) {
    shopServer = createHttpServer((req, res) => {
      const url = new URL(req.url, "http://localhost");
      if (url.pathname === "/favicon.ico") { res.writeHead(204).end(); return; }
      const gw = url.searchParams.get("gw") || "";
      const attrs = url.searchParams.get("attrs") || "";
      if (!/^http:\/\/127\.0\.0\.1:\d+$/.test(gw)) { res.writeHead(404).end(); return; }
      res.writeHead(200, { "Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store" });
      res.end(`<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Acme Outdoor</title>
<script src="${gw}/widget.js" data-tenant="demo" ${attrs} async></script></head>
<body style="font-family:Georgia,serif;margin:0;padding:24px;background:#fbfaf7;color:#1f2937">
<h1 style="color:#166534">Acme Outdoor</h1><p>Trailhead 2 Tent: $189.00</p>
<p>A light, weatherproof tent for two.</p></body></html>`);
    });
    await new Promise((ok) => shopServer.listen(0, "localhost", ok));
    shopServer.unref();
  }
  return `http://localhost:${shopServer.address().port}`;
}

/** A shop page embedding the widget from `gw`, in a new browser context. */
export async function shopper(browser, gw, { viewport, attrs = "", errors = [], setup } = {}) {
  const ctx = await browser.newContext({ viewport: viewport || { width: 1100, height: 760 } });
  const page = await ctx.newPage();
  watch(page, errors);
  if (setup) await setup(page);
  const q = new URLSearchParams({ gw: gw.base, attrs });
  await page.goto(`${await shopOrigin()}/shop?${q}`);
  return { ctx, page, w: widget(page) };
}

/** An agent console logged in through the `kefu token --url` link. */
export async function agent(browser, gw, sub, name, { extra = [], errors = [], viewport } = {}) {
  const ctx = await browser.newContext({ viewport: viewport || { width: 1280, height: 760 } });
  const page = await ctx.newPage();
  watch(page, errors);
  await page.goto(gw.agentUrl(sub, name, extra));
  await page.locator("#conn[data-state=up]").waitFor();
  return { ctx, page, c: consoleOf(page) };
}

/** Locators inside the widget (Playwright's CSS pierces its open shadow root). */
export function widget(page) {
  return {
    launch: page.locator("#kefu-widget .launch"),
    panel: page.locator("#kefu-widget .panel"),
    input: page.locator("#kefu-widget textarea"),
    banner: page.locator("#kefu-widget .banner"),
    title: page.locator("#kefu-widget h2.title"),
    typing: page.locator("#kefu-widget .typing"),
    badge: page.locator("#kefu-widget .badge"),
    msgs: page.locator("#kefu-widget .m"),
    mine: page.locator("#kefu-widget .m.mine"),
    theirs: page.locator("#kefu-widget .m.theirs"),
    events: page.locator("#kefu-widget .sys"),
    async say(text) {
      await this.input.fill(text);
      await this.input.press("Enter");
    },
    /** Every message's text, in screen order. */
    texts() { return this.msgs.locator(".b").allTextContents(); },
  };
}

export function consoleOf(page) {
  return {
    convs: page.locator("#convs .conv"),
    conv: (n = 0) => page.locator("#convs .conv").nth(n),
    input: page.locator("#input"),
    msgs: page.locator("#log .m"),
    mine: page.locator("#log .m.mine"),
    theirs: page.locator("#log .m.theirs"),
    typing: page.locator("#typing"),
    more: page.locator("#more"),
    async open(n = 0) { await page.locator("#convs .conv-btn").nth(n).click(); },
    async say(text) {
      await page.locator("#input").fill(text);
      await page.locator("#input").press("Enter");
    },
    texts() { return page.locator("#log .m .b").allTextContents(); },
    async transfer(to) {
      await page.locator("#transfer summary").click();
      if (to) {
        await page.locator("#transfer-to").fill(to);
        await page.locator("#transfer-form button[type=submit]").click();
      } else {
        await page.locator("#to-queue").click();
      }
    },
  };
}

/** Polls `fn` until it returns a truthy value (for conditions not tied to one locator). */
export async function until(fn, what, timeout = 10000) {
  const end = Date.now() + timeout;
  let last;
  while (Date.now() < end) {
    last = await fn();
    if (last) return last;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what} (last: ${JSON.stringify(last)})`);
}
