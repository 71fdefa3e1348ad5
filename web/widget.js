/*! kefu chat widget: protocol v1 (/v1/ws). Apache-2.0.
 * <script src="https://chat.example.com/widget.js" data-tenant="acme" async></script>
 * Options (data-* attributes, or window.KefuWidget.init({...}) with data-manual):
 * tenant, token, server, title, greeting, color, position ("right"|"left"), open. */
(() => {
  "use strict";
  if (window.KefuWidget && window.KefuWidget.version) return;

  const script = document.currentScript;
  const doc = document;
  const KEY = "kefu.v1.";
  const TYPING_IDLE = 3000; // stop "typing" after this long without a keystroke
  const TYPING_EVERY = 2500; // resend typing:on at most this often
  const PEER_TYPING = 6000; // forget the agent's typing signal after this
  let W = null; // the one widget

  // Local storage that never throws (disabled storage, private modes).
  const store = {
    get(k) {
      try { return JSON.parse(localStorage.getItem(k)) || {}; } catch (e) { return {}; }
    },
    set(k, v) {
      try { localStorage.setItem(k, JSON.stringify(v)); } catch (e) { /* kept in memory only */ }
    },
  };
  const sess = {
    get(k) { try { return sessionStorage.getItem(k); } catch (e) { return null; } },
    set(k, v) { try { sessionStorage.setItem(k, v); } catch (e) { /* ignore */ } },
  };

  // A JWT's claims, unverified (only to learn the tenant and the visitor id).
  function claims(token) {
    try {
      const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      return JSON.parse(atob(part));
    } catch (e) { return {}; }
  }

  function newId() {
    const r = new Uint32Array(2);
    crypto.getRandomValues(r);
    return "w" + Date.now().toString(36) + r[0].toString(36) + r[1].toString(36);
  }

  function el(tag, cls, text) {
    const e = doc.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }

  const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "2-digit" });
  const ICON_CHAT = '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2z"/></svg>';
  const ICON_CLOSE = '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M6 6l12 12M18 6L6 18" stroke="currentColor" stroke-width="2.2" stroke-linecap="round" fill="none"/></svg>';
  const ICON_SEND = '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M3 20l18-8L3 4v6l12 2-12 2z"/></svg>';
  const STATUS = { sending: "Sending…", sent: "Sent", read: "Read", failed: "Not sent: tap to retry" };

  const CSS = `
:host{all:initial}
*{box-sizing:border-box}
.root{--a:#2563eb;--ink:#111827;--mute:#6b7280;--line:#e5e7eb;--bg:#fff;--soft:#f3f4f6;
 position:fixed;bottom:20px;right:20px;z-index:2147483000;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:var(--ink)}
.root.left{right:auto;left:20px}
button{font:inherit;cursor:pointer}
.launch{width:60px;height:60px;border-radius:50%;border:0;background:var(--a);color:#fff;box-shadow:0 6px 20px rgba(0,0,0,.22);display:grid;place-items:center;position:relative;margin-left:auto}
.left .launch{margin-left:0}
.launch svg{width:28px;height:28px;fill:currentColor;display:block}
.li{display:grid;place-items:center}
.launch:focus-visible,.x:focus-visible,.send:focus-visible{outline:3px solid #f59e0b;outline-offset:2px}
.badge{position:absolute;top:-4px;right:-4px;min-width:22px;height:22px;padding:0 6px;border-radius:11px;background:#dc2626;color:#fff;font-size:12px;font-weight:700;display:grid;place-items:center;border:2px solid #fff}
.panel{position:absolute;bottom:76px;right:0;width:370px;height:560px;max-height:calc(100vh - 110px);background:var(--bg);border-radius:16px;box-shadow:0 12px 40px rgba(0,0,0,.22);display:flex;flex-direction:column;overflow:hidden;border:1px solid var(--line)}
.left .panel{right:auto;left:0}
[hidden]{display:none!important}
header{background:var(--a);color:#fff;padding:14px 14px 14px 16px;display:flex;gap:12px;align-items:center}
.av{width:38px;height:38px;border-radius:50%;background:rgba(255,255,255,.22);display:grid;place-items:center;font-weight:700;flex:none}
.av svg{width:20px;height:20px;fill:#fff}
.who{flex:1;min-width:0}
h2{margin:0;font-size:16px;font-weight:650;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.sub{margin:0;font-size:13px;opacity:.92}
.x{background:transparent;border:0;color:#fff;width:36px;height:36px;border-radius:8px;display:grid;place-items:center}
.x:hover{background:rgba(255,255,255,.15)}
.x svg{width:20px;height:20px}
.banner{background:#eff6ff;color:#1e3a8a;border-bottom:1px solid #dbeafe;padding:9px 16px;font-size:14px}
.banner.warn{background:#fffbeb;color:#78350f;border-color:#fde68a}
.log{flex:1;overflow-y:auto;margin:0;padding:16px 14px 8px;list-style:none;display:flex;flex-direction:column;gap:6px;background:#fafafa}
.hello{align-self:center;text-align:center;color:var(--mute);font-size:14px;margin:24px 12px}
.m{max-width:80%;display:flex;flex-direction:column}
.m .b{padding:9px 13px;border-radius:16px;white-space:pre-wrap;overflow-wrap:anywhere;background:var(--bg);border:1px solid var(--line)}
.m.mine{align-self:flex-end;align-items:flex-end}
.m.mine .b{background:var(--a);color:#fff;border-color:transparent;border-bottom-right-radius:5px}
.m.theirs{align-self:flex-start}
.m.theirs .b{border-bottom-left-radius:5px}
.meta{font-size:11.5px;color:var(--mute);margin:2px 4px 4px}
.m[data-status=failed] .meta{color:#b91c1c;cursor:pointer}
.m[data-status=sending] .b{opacity:.75}
.sys{align-self:center;color:var(--mute);font-size:12.5px;margin:6px 0;text-align:center}
.typing{padding:2px 16px 6px;font-size:13px;color:var(--mute);background:#fafafa;font-style:italic}
form{display:flex;gap:8px;padding:10px;border-top:1px solid var(--line);background:var(--bg);align-items:flex-end}
textarea{flex:1;resize:none;border:1px solid #d1d5db;border-radius:12px;padding:10px 12px;font:inherit;color:inherit;max-height:120px;min-height:44px;outline:none;background:#fff}
textarea:focus{border-color:var(--a);box-shadow:0 0 0 3px rgba(37,99,235,.18)}
.send{width:44px;height:44px;border-radius:12px;border:0;background:var(--a);color:#fff;display:grid;place-items:center;flex:none}
.send:disabled{opacity:.45;cursor:default}
.send svg{width:20px;height:20px;fill:currentColor}
.foot{font-size:11px;color:var(--mute);text-align:center;padding:0 0 6px;background:var(--bg)}
@media (max-width:480px){
 .root{bottom:14px;right:14px}.root.left{left:14px}
 .root.open{inset:0}
 .root.open .launch{display:none}
 .root.open .panel{position:fixed;inset:0;width:auto;height:100%;max-height:none;border-radius:0;border:0}
 textarea{font-size:16px}
}
@media (prefers-reduced-motion:no-preference){.panel{animation:up .18s ease-out}@keyframes up{from{opacity:0;transform:translateY(8px)}}}
`;

  class Widget {
    constructor(opts) {
      this.o = opts;
      const c = opts.token ? claims(opts.token) : {};
      this.tenant = opts.tenant || c.tenant;
      this.key = KEY + this.tenant;
      const saved = store.get(this.key);
      this.token = opts.token || saved.token || null;
      this.shopToken = !!opts.token;
      this.me = c.sub || saved.me || null;
      // Messages typed but not acknowledged, kept across reloads: resent with the same ids.
      this.outbox = saved.me && saved.me === this.me && Array.isArray(saved.outbox) ? saved.outbox : [];
      this.savedConv = saved.conv || null;
      this.ws = null;
      this.up = false; // welcomed
      this.attempt = 0;
      this.retry = null;
      this.conv = null;
      this.state = null;
      this.agent = null;
      this.pos = null;
      this.convs = new Map(); // conv -> {seqs:Set, held, recvSent, readSent, node, agentRead, stateSeq}
      this.nodes = new Map(); // message id -> li (own messages)
      this.unread = 0;
      this.typingOn = false;
      this.typingAt = 0;
      this.build();
      this.outbox.forEach((m) => this.showPending(m));
      const base = (opts.server || "").replace(/\/+$/, "");
      this.url = base.replace(/^http/, "ws") + "/v1/ws";
      if (opts.open || sess.get(this.key + ".open") === "1") this.open();
      else if (this.token || this.outbox.length) this.connect();
      this.onVis = () => { if (!doc.hidden) this.markRead(); };
      doc.addEventListener("visibilitychange", this.onVis);
      this.onOnline = () => { if (!this.ws) this.connect(); };
      window.addEventListener("online", this.onOnline);
    }

    // ---- DOM ----
    build() {
      const host = (this.host = el("div"));
      host.id = "kefu-widget";
      const root = host.attachShadow({ mode: "open" });
      if (root.adoptedStyleSheets && window.CSSStyleSheet && CSSStyleSheet.prototype.replaceSync) {
        const sheet = new CSSStyleSheet();
        sheet.replaceSync(CSS);
        root.adoptedStyleSheets = [sheet];
      } else {
        root.appendChild(el("style", null, CSS));
      }
      const o = this.o;
      const wrap = (this.root = el("div", "root" + (o.position === "left" ? " left" : "")));
      if (o.color) wrap.style.setProperty("--a", o.color);
      const panel = (this.panel = el("section", "panel"));
      panel.id = "kefu-panel";
      panel.hidden = true;
      panel.setAttribute("role", "dialog");
      panel.setAttribute("aria-label", o.title || "Chat");
      const head = el("header");
      this.av = el("div", "av");
      this.av.innerHTML = ICON_CHAT;
      const who = el("div", "who");
      this.titleEl = el("h2", "title", o.title || "Chat with us");
      this.subEl = el("p", "sub", "We usually reply in a few minutes");
      who.append(this.titleEl, this.subEl);
      const x = el("button", "x");
      x.type = "button";
      x.setAttribute("aria-label", "Minimize chat");
      x.innerHTML = ICON_CLOSE;
      x.onclick = () => this.close();
      head.append(this.av, who, x);
      this.banner = el("div", "banner");
      this.banner.setAttribute("role", "status");
      this.banner.hidden = true;
      this.log = el("ol", "log");
      this.log.setAttribute("aria-live", "polite");
      this.log.setAttribute("aria-label", "Messages");
      this.hello = el("li", "hello", o.greeting || "Hi! Ask us anything: we're here to help.");
      this.log.append(this.hello);
      this.typing = el("div", "typing");
      this.typing.hidden = true;
      this.typing.setAttribute("aria-live", "polite");
      const form = el("form");
      const ta = (this.input = el("textarea"));
      ta.rows = 1;
      ta.placeholder = "Type your message…";
      ta.setAttribute("aria-label", "Message");
      ta.maxLength = 4000;
      const send = (this.sendBtn = el("button", "send"));
      send.type = "submit";
      send.setAttribute("aria-label", "Send");
      send.innerHTML = ICON_SEND;
      send.disabled = true;
      form.append(ta, send);
      form.onsubmit = (e) => { e.preventDefault(); this.submit(); };
      ta.addEventListener("keydown", (e) => {
        if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); this.submit(); }
      });
      ta.addEventListener("input", () => { this.grow(); this.typed(); });
      panel.addEventListener("keydown", (e) => { if (e.key === "Escape") this.close(); });
      const foot = el("div", "foot", "Powered by kefu");
      panel.append(head, this.banner, this.log, this.typing, form, foot);
      const launch = (this.launch = el("button", "launch"));
      launch.type = "button";
      this.launchIcon = el("span", "li");
      this.launchIcon.innerHTML = ICON_CHAT;
      launch.append(this.launchIcon);
      launch.setAttribute("aria-controls", "kefu-panel");
      launch.setAttribute("aria-expanded", "false");
      launch.setAttribute("aria-label", "Open chat");
      this.badge = el("span", "badge");
      this.badge.hidden = true;
      launch.append(this.badge);
      launch.onclick = () => (this.panel.hidden ? this.open() : this.close());
      wrap.append(panel, launch);
      root.append(wrap);
      (doc.body || doc.documentElement).appendChild(host);
    }

    grow() {
      const ta = this.input;
      ta.style.height = "auto";
      ta.style.height = Math.min(ta.scrollHeight + 2, 120) + "px";
      this.sendBtn.disabled = !ta.value.trim();
    }

    open() {
      this.panel.hidden = false;
      this.root.classList.add("open");
      this.launch.setAttribute("aria-expanded", "true");
      this.launchIcon.innerHTML = ICON_CLOSE;
      this.renderBadge();
      sess.set(this.key + ".open", "1");
      if (!this.ws) this.connect();
      this.unread = 0;
      this.renderBadge();
      this.scroll(true);
      this.markRead();
      setTimeout(() => this.input.focus(), 0);
    }

    close() {
      this.panel.hidden = true;
      this.root.classList.remove("open");
      this.launch.setAttribute("aria-expanded", "false");
      this.launchIcon.innerHTML = ICON_CHAT;
      this.renderBadge();
      sess.set(this.key + ".open", "0");
      this.launch.focus();
    }

    isOpen() { return !this.panel.hidden; }

    scroll(force) {
      const l = this.log;
      if (force || l.scrollHeight - l.scrollTop - l.clientHeight < 120) l.scrollTop = l.scrollHeight;
    }

    renderBadge() {
      this.badge.hidden = !this.unread;
      this.badge.textContent = this.unread > 9 ? "9+" : String(this.unread);
      this.launch.setAttribute("aria-label", (this.isOpen() ? "Close chat" : "Open chat") + (this.unread ? ` (${this.unread} new)` : ""));
    }

    renderHead() {
      const a = this.agent;
      if (a && this.state === "assigned") {
        const name = a.name || a.id;
        this.titleEl.textContent = name;
        this.subEl.textContent = "is here to help";
        this.av.textContent = name.trim().charAt(0).toUpperCase();
        this.root.dataset.agent = name;
      } else {
        this.titleEl.textContent = this.o.title || "Chat with us";
        this.subEl.textContent = "We usually reply in a few minutes";
        this.av.innerHTML = ICON_CHAT;
        delete this.root.dataset.agent;
      }
      let text = "";
      let warn = false;
      if (!this.up && (this.ws || this.retry) && (this.conv || this.outbox.length)) {
        text = this.attempt > 1 ? "Connection lost. Reconnecting…" : "Connecting…";
        warn = this.attempt > 1;
      } else if (this.fatal) {
        text = this.fatal;
        warn = true;
      } else if (this.state === "queued") {
        text = this.pos ? `You are number ${this.pos} in the queue. An agent will be with you soon.` : "Waiting for an agent…";
      }
      this.banner.textContent = text;
      this.banner.hidden = !text;
      this.banner.classList.toggle("warn", warn);
      this.banner.dataset.position = this.state === "queued" && this.pos ? String(this.pos) : "";
    }

    // A conversation's list of entries in the log.
    section(conv) {
      let c = this.convs.get(conv);
      if (!c) {
        c = { seqs: new Set(), held: 0, recvSent: 0, readSent: 0, agentRead: 0, stateSeq: 0 };
        c.node = el("li", "conv");
        c.node.dataset.conv = conv;
        c.list = el("ol", "log-c");
        c.list.style.cssText = "list-style:none;margin:0;padding:0;display:flex;flex-direction:column;gap:6px";
        c.node.append(c.list);
        // Before any pending (unacknowledged) message, after earlier conversations.
        const firstPending = this.log.querySelector(":scope > .m");
        this.log.insertBefore(c.node, firstPending);
        this.convs.set(conv, c);
      }
      return c;
    }

    bubble(mine, text, ts) {
      const li = el("li", "m " + (mine ? "mine" : "theirs"));
      li.append(el("div", "b", text));
      const meta = el("div", "meta");
      li.append(meta);
      li._ts = ts;
      return li;
    }

    setStatus(li, status) {
      li.dataset.status = status;
      const t = li._ts ? timeFmt.format(new Date(li._ts)) + " · " : "";
      li.lastChild.textContent = t + STATUS[status];
    }

    insert(c, seq, li) {
      li.dataset.seq = seq;
      let after = null;
      for (let n = c.list.lastElementChild; n; n = n.previousElementSibling) {
        if (+n.dataset.seq < seq) { after = n; break; }
      }
      c.list.insertBefore(li, after ? after.nextSibling : c.list.firstChild);
    }

    showPending(m) {
      this.hello.hidden = true;
      const li = this.bubble(true, m.text, m.ts);
      li.dataset.id = m.id;
      li.onclick = () => { if (li.dataset.status === "failed") this.retrySend(m.id); };
      this.setStatus(li, m.failed ? "failed" : "sending");
      this.nodes.set(m.id, li);
      this.log.append(li);
      this.scroll(true);
    }

    // ---- connection ----
    connect() {
      clearTimeout(this.retry);
      this.retry = null;
      if (this.ws || this.fatal) return;
      let ws;
      try { ws = new WebSocket(this.url); } catch (e) { this.fatal = "Chat is unavailable."; this.renderHead(); return; }
      this.ws = ws;
      this.renderHead();
      const hello = this.token ? { type: "hello", token: this.token } : { type: "hello", tenant: this.tenant };
      ws.onopen = () => ws.send(JSON.stringify(hello));
      ws.onmessage = (e) => { let f; try { f = JSON.parse(e.data); } catch (x) { return; } this.frame(f); };
      ws.onclose = (e) => this.closed(ws, e.code);
      this.helloTimer = setTimeout(() => { if (this.ws === ws && !this.up) ws.close(); }, 15000);
    }

    closed(ws, code) {
      if (this.ws !== ws) return;
      clearTimeout(this.helloTimer);
      this.ws = null;
      this.up = false;
      this.setTyping(false);
      if (code === 4401 && !this.shopToken && this.token) {
        // Our stored anonymous token was refused (expired, new secret): start afresh.
        this.token = null;
        this.me = null;
        this.save();
        this.attempt = 0;
      } else if (code === 4401 || code === 4403 || code === 4400) {
        this.fatal = "Chat is unavailable right now.";
        this.renderHead();
        return;
      }
      this.attempt++;
      // 100 ms, then 1, 2, 4, 8, 15 s (with jitter); four times that after "too many" (4429).
      const base = Math.min(15000, 500 * 2 ** Math.min(this.attempt - 1, 5)) * (code === 4429 ? 4 : 1);
      const delay = this.attempt === 1 && code !== 4429 ? 100 : base * (0.5 + Math.random() / 2);
      this.retry = setTimeout(() => this.connect(), delay);
      this.renderHead();
    }

    send(f) {
      if (this.ws && this.up) { this.ws.send(JSON.stringify(f)); return true; }
      return false;
    }

    save() {
      store.set(this.key, {
        token: this.shopToken ? undefined : this.token,
        me: this.me,
        conv: this.state && this.state !== "closed" ? this.conv : null,
        outbox: this.outbox.map((m) => ({ id: m.id, text: m.text, ts: m.ts, failed: m.failed || undefined })),
      });
    }

    frame(f) {
      switch (f.type) {
        case "welcome": return this.welcome(f);
        case "msg": return this.entry(f, false);
        case "ack": return this.ack(f);
        case "queue":
          if (!this.conv || !this.convs.has(f.conv)) this.setConv(f.conv);
          if (f.conv === this.conv) { this.pos = f.position; this.renderHead(); }
          return;
        case "typing":
          if (f.by && f.by.role === "agent" && f.conv === this.conv) this.setTyping(!!f.on);
          return;
        case "read":
          if (f.by && f.by.role === "agent") {
            const c = this.convs.get(f.conv);
            if (c && f.seq > c.agentRead) { c.agentRead = f.seq; this.refreshStatus(c); }
          }
          return;
        case "history":
        case "synced":
          (f.messages || []).forEach((m) => this.entry(m, true));
          return;
        case "error": return this.error(f);
      }
    }

    welcome(f) {
      clearTimeout(this.helloTimer);
      if (f.token && !this.shopToken) this.token = f.token;
      if (this.me && this.me !== f.id) {
        // Another visitor than the one whose outbox this is.
        this.outbox = [];
        this.nodes.forEach((n) => n.remove());
        this.nodes.clear();
      }
      this.me = f.id;
      this.up = true;
      this.attempt = 0;
      this.fatal = null;
      const open = (f.conversations || [])[0];
      if (open) {
        this.setConv(open.conv);
        this.state = open.state;
        if (open.agent) this.agent = open.agent;
        const c = this.section(open.conv);
        // Fetch whatever this page does not hold yet (everything after a reload).
        this.send({ type: "sync", conv: open.conv, after: c.held });
      } else if (this.conv && this.convs.has(this.conv) && this.state !== "closed") {
        // It closed while we were away: fetch its last entries (the "closed" one among them).
        this.send({ type: "sync", conv: this.conv, after: this.convs.get(this.conv).held });
      }
      this.save();
      this.renderHead();
      // Resend what was never acknowledged, with the same ids, in order.
      this.outbox.forEach((m) => { if (!m.failed) this.send({ type: "msg", id: m.id, text: m.text }); });
      this.markRead();
    }

    setConv(conv) {
      if (this.conv !== conv) {
        this.conv = conv;
        this.pos = null;
        this.agent = null;
      }
    }

    entry(m, old) {
      const conv = m.conv;
      if (!conv || typeof m.seq !== "number") return;
      if (conv !== this.conv && !this.convs.has(conv)) {
        // A conversation this page has not seen: the current one (the previous one closed).
        this.setConv(conv);
        this.state = null;
      }
      const c = this.section(conv);
      if (c.seqs.has(m.seq)) return; // already held: drop (dedupe by seq)
      c.seqs.add(m.seq);
      while (c.seqs.has(c.held + 1)) c.held++;
      this.hello.hidden = true;
      const from = m.from || {};
      if (from.role === "system") {
        const text = this.event(c, m, conv);
        const li = el("li", "sys", text);
        li.dataset.event = m.event;
        this.insert(c, m.seq, li);
      } else {
        const mine = from.role === "visitor" && from.id === this.me;
        let li = mine && m.id ? this.nodes.get(m.id) : null;
        if (li) {
          // Our own message, acknowledged on another connection (or resent before this arrived).
          this.dropOutbox(m.id);
          li._ts = m.ts;
        } else {
          li = this.bubble(mine, m.text || "", m.ts);
          if (mine && m.id) { li.dataset.id = m.id; this.nodes.set(m.id, li); }
          if (!mine && !old && !this.isOpen()) { this.unread++; this.renderBadge(); }
          if (!mine) {
            const name = from.name || (from.role === "bot" ? "Assistant" : (this.agent && this.agent.id === from.id && this.agent.name) || "Agent");
            li.lastChild.textContent = name + (m.ts ? " · " + timeFmt.format(new Date(m.ts)) : "");
            li.setAttribute("aria-label", name + ": " + (m.text || ""));
          }
        }
        this.insert(c, m.seq, li);
        if (mine) this.setStatus(li, m.seq <= c.agentRead ? "read" : "sent");
        if (!mine && from.role === "agent") this.setTyping(false);
      }
      this.scroll(!old);
      this.recvSoon(conv);
      this.markRead();
    }

    event(c, m, conv) {
      const newer = m.seq > c.stateSeq;
      if (newer) c.stateSeq = m.seq;
      const apply = newer && conv === this.conv;
      if (m.event === "queued") {
        if (apply) { this.state = "queued"; this.agent = null; }
        if (apply) this.renderHead();
        return "Waiting for the next available agent";
      }
      if (m.event === "assigned") {
        const a = m.agent || {};
        if (apply) { this.state = "assigned"; this.agent = a; this.pos = null; this.renderHead(); }
        return `${a.name || a.id || "An agent"} joined the chat`;
      }
      if (m.event === "closed") {
        if (apply) { this.state = "closed"; this.pos = null; this.agent = null; this.save(); this.renderHead(); }
        return "Chat ended. Write again anytime to start a new one.";
      }
      return m.event || "";
    }

    refreshStatus(c) {
      c.list.querySelectorAll(".m.mine").forEach((li) => {
        if (li.dataset.seq) this.setStatus(li, +li.dataset.seq <= c.agentRead ? "read" : "sent");
      });
    }

    ack(f) {
      const li = this.nodes.get(f.id);
      this.dropOutbox(f.id);
      if (!li || !f.conv) return;
      if (f.conv !== this.conv && !this.convs.has(f.conv)) this.setConv(f.conv);
      const c = this.section(f.conv);
      if (!c.seqs.has(f.seq)) {
        c.seqs.add(f.seq);
        while (c.seqs.has(c.held + 1)) c.held++;
      }
      this.insert(c, f.seq, li);
      this.setStatus(li, f.seq <= c.agentRead ? "read" : "sent");
      this.save();
      this.recvSoon(f.conv);
    }

    error(f) {
      const m = f.ref && this.outbox.find((x) => x.id === f.ref);
      if (!m) return;
      if (f.code === "unavailable" || f.code === "rate_limited" || f.code === "internal") {
        // Not stored: try again later with the same id.
        setTimeout(() => { if (this.outbox.includes(m)) this.send({ type: "msg", id: m.id, text: m.text }); }, 2000);
        return;
      }
      m.failed = true;
      const li = this.nodes.get(m.id);
      if (li) { this.setStatus(li, "failed"); li.title = f.message || f.code; }
      this.save();
    }

    dropOutbox(id) {
      const n = this.outbox.length;
      this.outbox = this.outbox.filter((m) => m.id !== id);
      if (n !== this.outbox.length) this.save();
    }

    retrySend(id) {
      const m = this.outbox.find((x) => x.id === id);
      if (!m) return;
      m.failed = false;
      this.setStatus(this.nodes.get(id), "sending");
      this.save();
      this.send({ type: "msg", id: m.id, text: m.text });
    }

    submit() {
      const text = this.input.value.trim();
      if (!text) return;
      this.input.value = "";
      this.grow();
      this.stopTyping();
      const m = { id: newId(), text, ts: Date.now() };
      this.outbox.push(m);
      if (this.state === "closed") this.state = null;
      this.save();
      this.showPending(m);
      if (!this.ws) this.connect();
      this.send({ type: "msg", id: m.id, text });
      this.renderHead();
    }

    // ---- receipts and typing ----
    recvSoon(conv) {
      clearTimeout(this.recvTimer);
      this.recvTimer = setTimeout(() => {
        this.convs.forEach((c, id) => {
          if (c.held > c.recvSent && this.send({ type: "recv", conv: id, seq: c.held })) c.recvSent = c.held;
        });
      }, 50);
      void conv;
    }

    markRead() {
      if (!this.isOpen() || doc.hidden || !this.up || !this.conv) return;
      const c = this.convs.get(this.conv);
      if (c && c.held > c.readSent && this.send({ type: "read", conv: this.conv, seq: c.held })) c.readSent = c.held;
    }

    typed() {
      if (!this.conv || this.state === "closed" || !this.input.value) return this.stopTyping();
      const now = Date.now();
      if (!this.typingOn || now - this.typingAt > TYPING_EVERY) {
        if (this.send({ type: "typing", conv: this.conv, on: true })) { this.typingOn = true; this.typingAt = now; }
      }
      clearTimeout(this.typingIdle);
      this.typingIdle = setTimeout(() => this.stopTyping(), TYPING_IDLE);
    }

    stopTyping() {
      clearTimeout(this.typingIdle);
      if (this.typingOn) { this.typingOn = false; this.send({ type: "typing", conv: this.conv, on: false }); }
    }

    setTyping(on) {
      clearTimeout(this.peerTyping);
      const name = (this.agent && (this.agent.name || this.agent.id)) || "Agent";
      this.typing.textContent = on ? `${name} is typing…` : "";
      this.typing.hidden = !on;
      if (on) this.peerTyping = setTimeout(() => this.setTyping(false), PEER_TYPING);
    }

    destroy() {
      clearTimeout(this.retry);
      this.fatal = "closed";
      if (this.ws) { const ws = this.ws; this.ws = null; ws.close(1000); }
      doc.removeEventListener("visibilitychange", this.onVis);
      window.removeEventListener("online", this.onOnline);
      this.host.remove();
    }
  }

  function options(extra) {
    const d = (script && script.dataset) || {};
    const src = script && script.src ? new URL(script.src, location.href) : location;
    const o = {
      tenant: d.tenant,
      token: d.token,
      server: d.server || src.origin,
      title: d.title,
      greeting: d.greeting,
      color: d.color,
      position: d.position,
      open: d.open === "true" || d.open === "",
    };
    for (const k in extra || {}) if (extra[k] !== undefined) o[k] = extra[k];
    return o;
  }

  function init(extra) {
    if (W) W.destroy();
    const o = options(extra);
    if (!o.tenant && !o.token) throw new Error("kefu widget: set data-tenant (or a token)");
    const start = () => { W = new Widget(o); };
    if (doc.body) start(); else doc.addEventListener("DOMContentLoaded", start, { once: true });
  }

  window.KefuWidget = {
    version: 1,
    init,
    open: () => W && W.open(),
    close: () => W && W.close(),
    destroy: () => { if (W) { W.destroy(); W = null; } },
  };
  if (script && script.dataset && !("manual" in script.dataset) && (script.dataset.tenant || script.dataset.token)) init();
})();
