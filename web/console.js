// kefu agent console: protocol v1 over /v1/ws on the page's own origin.
// Login: a token pasted in the form, or a link `kefu token --url` prints
// (`/console#token=...`: the fragment never reaches the server). The token
// is kept in sessionStorage for this tab only.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = "kefu.console.token";
  const PAGE = 50; // history page size
  const TYPING_IDLE = 3000;
  const TYPING_EVERY = 2500;
  const STATUS_TEXT = { sending: "Sending…", sent: "Sent", read: "Read", failed: "Not sent: click to retry" };
  const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "2-digit" });
  const baseTitle = document.title;

  const S = {
    token: null,
    me: null, // {id, name, tenant}
    ws: null,
    up: false,
    attempt: 0,
    retry: null,
    status: "online", // what the agent chose
    convs: new Map(), // conv -> Conv
    order: [], // conv ids, newest activity first
    selected: null,
    pending: new Map(), // msg id -> {conv, text, ts, failed}
    refs: 0,
    fresh: new Set(), // conversations not looked at yet (title notice)
  };

  const ls = {
    get(k) { try { return JSON.parse(localStorage.getItem(k)); } catch (e) { return null; } },
    set(k, v) { try { localStorage.setItem(k, JSON.stringify(v)); } catch (e) { /* memory only */ } },
  };
  const readKey = (conv) => `kefu.console.read.${S.me && S.me.tenant}.${S.me && S.me.id}.${conv}`;

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }
  function newId() {
    const r = new Uint32Array(2);
    crypto.getRandomValues(r);
    return "a" + Date.now().toString(36) + r[0].toString(36) + r[1].toString(36);
  }
  function claims(token) {
    try { return JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"))); } catch (e) { return null; }
  }
  function toast(text) {
    const t = $("toast");
    t.textContent = text;
    t.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { t.hidden = true; }, 5000);
  }

  // ---- login ----
  function start() {
    const m = /[#&]token=([^&]+)/.exec(location.hash);
    if (m) {
      sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
      history.replaceState(null, "", location.pathname + location.search);
    }
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) login(token);
    else showLogin();
  }

  function showLogin(error) {
    $("app").hidden = true;
    $("login").hidden = false;
    const e = $("login-error");
    e.textContent = error || "";
    e.hidden = !error;
    $("token").focus();
  }

  function login(token) {
    const c = claims(token);
    if (!c || c.role !== "agent") return showLogin("That is not an agent token.");
    if (c.exp && c.exp * 1000 < Date.now()) return showLogin("That token has expired. Ask for a new one.");
    S.token = token;
    S.me = { id: c.sub, name: c.name || c.sub, tenant: c.tenant };
    sessionStorage.setItem(TOKEN_KEY, token);
    $("login").hidden = true;
    $("app").hidden = false;
    $("me-name").textContent = `${S.me.name} · ${S.me.tenant}`;
    connect();
  }

  function logout(error) {
    sessionStorage.removeItem(TOKEN_KEY);
    clearTimeout(S.retry);
    const ws = S.ws;
    S.ws = null;
    S.token = null;
    if (ws) ws.close(1000);
    S.convs.clear();
    S.order = [];
    S.selected = null;
    S.pending.clear();
    S.welcomed = false;
    renderList();
    renderChat();
    showLogin(error);
  }

  // ---- connection ----
  function connect() {
    clearTimeout(S.retry);
    S.retry = null;
    if (S.ws || !S.token) return;
    const url = location.origin.replace(/^http/, "ws") + "/v1/ws";
    const ws = new WebSocket(url);
    S.ws = ws;
    conn("connecting", S.attempt ? "Reconnecting…" : "Connecting…");
    ws.onopen = () => ws.send(JSON.stringify({ type: "hello", token: S.token }));
    ws.onmessage = (e) => { let f; try { f = JSON.parse(e.data); } catch (x) { return; } frame(f); };
    ws.onclose = (e) => closed(ws, e.code);
  }

  function closed(ws, code) {
    if (S.ws !== ws) return;
    S.ws = null;
    S.up = false;
    if (code === 4401) return logout("The gateway refused this token (expired or not valid). Log in again.");
    if (code === 4403 || code === 4400) return logout("The gateway refused this console (code " + code + ").");
    S.attempt++;
    const delay = S.attempt === 1 ? 200 : Math.min(15000, 500 * 2 ** Math.min(S.attempt, 5)) * (0.5 + Math.random() / 2);
    S.retry = setTimeout(connect, delay);
    conn("down", "Offline: reconnecting…");
  }

  function conn(state, text) {
    const c = $("conn");
    c.dataset.state = state;
    c.textContent = text;
  }

  function send(f) {
    if (S.ws && S.up) { S.ws.send(JSON.stringify(f)); return true; }
    return false;
  }

  function frame(f) {
    switch (f.type) {
      case "welcome": return welcome(f);
      case "msg": return entry(f, false);
      case "ack": return ack(f);
      case "history": return onHistory(f);
      case "synced": return;
      case "typing": return peerTyping(f);
      case "read": return peerRead(f);
      case "status":
        $("status").value = f.status;
        document.body.dataset.status = f.status;
        return;
      case "error": return error(f);
    }
  }

  function welcome(f) {
    S.up = true;
    S.attempt = 0;
    S.me.id = f.id;
    conn("up", "Connected");
    for (const info of f.conversations || []) {
      // Assigned while we were disconnected: as new as one assigned live.
      const c = conv(info.conv, !S.welcomed);
      c.state = info.state === "closed" ? "closed" : "assigned";
      c.note = "";
      if (info.last_seq > c.lastSeq) c.lastSeq = info.last_seq;
      // Fill in the newest page (the gateway replays only what is past our receipt cursor).
      if (!c.loaded) loadHistory(c);
    }
    S.welcomed = true;
    if (S.status === "away") send({ type: "status", status: "away" });
    // Resend replies that were never acknowledged, same ids.
    for (const [id, p] of S.pending) if (!p.failed) send({ type: "msg", id, conv: p.conv, text: p.text });
    renderList();
    renderChat();
    flushReceipts();
  }

  // ---- conversations ----
  function conv(id, known) {
    let c = S.convs.get(id);
    if (!c) {
      c = {
        id, state: "assigned", note: "", entries: new Map(), minSeq: Infinity, held: 0, lastSeq: 0,
        recvSent: 0, readSent: 0, visitorRead: 0, stateSeq: 0, unread: 0,
        lastRead: ls.get(readKey(id)) || 0, visitor: null, more: false, loaded: false, loading: null,
        typing: false, typingTimer: null, last: null, activity: 0,
      };
      S.convs.set(id, c);
      S.order.unshift(id);
      if (!known) notifyNew(c);
    }
    return c;
  }

  function touch(c, ts) {
    c.activity = Math.max(c.activity, ts || 0);
    S.order.sort((a, b) => (S.convs.get(b).activity || 0) - (S.convs.get(a).activity || 0));
  }

  function entry(m, old) {
    if (!m.conv || typeof m.seq !== "number") return;
    const known = S.convs.has(m.conv);
    const c = conv(m.conv, old || known);
    if (c.entries.has(m.seq)) return; // dedupe by seq
    c.entries.set(m.seq, m);
    if (m.seq < c.minSeq) c.minSeq = m.seq;
    if (m.seq > c.lastSeq) c.lastSeq = m.seq;
    if (c.held < c.minSeq - 1) c.held = c.minSeq - 1;
    while (c.entries.has(c.held + 1)) c.held++;
    const from = m.from || {};
    if (from.role === "visitor" && !c.visitor) c.visitor = { id: from.id, name: from.name };
    if (from.role === "visitor" && from.name && c.visitor) c.visitor.name = from.name;
    if (from.role === "system") event(c, m);
    if (from.role === "agent" && m.id && S.pending.has(m.id)) S.pending.delete(m.id); // acked via another device
    if (from.role === "visitor" && !old && m.seq > c.lastRead) {
      c.unread++;
      if (c.typing) setPeerTyping(c, false);
    }
    if (from.role !== "system" && (!c.last || m.seq > c.last.seq)) c.last = m;
    if (!old || m.seq === c.lastSeq) touch(c, m.ts);
    if (S.selected === c.id) placeEntry(c, m);
    receiptsSoon();
    renderListSoon();
  }

  function event(c, m) {
    if (m.seq <= c.stateSeq) return;
    c.stateSeq = m.seq;
    if (m.event === "assigned") {
      const a = m.agent || {};
      if (a.id === S.me.id) {
        if (c.state !== "assigned") { c.state = "assigned"; c.note = ""; }
      } else {
        c.state = "gone";
        c.note = `Transferred to ${a.name || a.id}`;
      }
    } else if (m.event === "queued") {
      // Handed back to the queue (or our grace ran out); an "assigned" to us after it takes it back.
      c.state = "gone";
      c.note = "Back in the queue";
    } else if (m.event === "closed") {
      c.state = "closed";
      c.note = m.by && m.by.role === "visitor" ? "Closed by the visitor" : "Closed";
    }
    if (c.state !== "assigned") setPeerTyping(c, false);
    if (S.selected === c.id) renderChatHead();
  }

  function loadHistory(c, before) {
    const ref = "h" + ++S.refs;
    const f = { type: "history", conv: c.id, limit: PAGE, ref };
    if (before) f.before = before;
    if (send(f)) c.loading = ref;
  }

  function onHistory(f) {
    const c = S.convs.get(f.conv);
    if (!c) return;
    const msgs = f.messages || [];
    const wasOlder = c.loaded;
    const scroller = $("scroller");
    const fromBottom = scroller.scrollHeight - scroller.scrollTop;
    for (const m of msgs) entry(Object.assign({ conv: f.conv }, m), true);
    c.loaded = true;
    c.loading = null;
    c.more = !!f.more || (msgs.length > 0 && msgs[0].seq > 1);
    if (S.selected === c.id) {
      renderMore(c);
      // Keep the view where it was when older entries came in above it.
      if (wasOlder) scroller.scrollTop = scroller.scrollHeight - fromBottom;
      else scroller.scrollTop = scroller.scrollHeight;
    }
  }

  function ack(f) {
    const p = S.pending.get(f.id);
    if (!p) return;
    S.pending.delete(f.id);
    const c = S.convs.get(f.conv);
    if (!c) return;
    const m = { type: "msg", conv: f.conv, seq: f.seq, id: f.id, from: { role: "agent", id: S.me.id, name: S.me.name }, text: p.text, ts: p.ts };
    const node = document.querySelector(`#log [data-id="${CSS.escape(f.id)}"]`);
    if (node) node.remove();
    entry(m, false);
  }

  function error(f) {
    const p = f.ref && S.pending.get(f.ref);
    if (p) {
      if (f.code === "unavailable" || f.code === "rate_limited" || f.code === "internal") {
        setTimeout(() => { if (S.pending.has(f.ref)) send({ type: "msg", id: f.ref, conv: p.conv, text: p.text }); }, 2000);
        return;
      }
      p.failed = f.message || f.code;
      const node = document.querySelector(`#log [data-id="${CSS.escape(f.ref)}"]`);
      if (node) setStatus(node, "failed", p.ts);
    }
    const what = f.code === "not_found" && /^t/.test(f.ref || "") ? "No such agent is connected." : f.message || f.code;
    toast(`Error: ${what}`);
    for (const c of S.convs.values()) if (c.loading && c.loading === f.ref) c.loading = null;
  }

  function peerTyping(f) {
    if (!f.by || f.by.role !== "visitor") return;
    const c = S.convs.get(f.conv);
    if (c) setPeerTyping(c, !!f.on);
  }

  function setPeerTyping(c, on) {
    clearTimeout(c.typingTimer);
    c.typing = on;
    if (on) c.typingTimer = setTimeout(() => setPeerTyping(c, false), 6000);
    if (S.selected === c.id) renderTyping(c);
    renderListSoon();
  }

  function peerRead(f) {
    if (!f.by || f.by.role !== "visitor") return;
    const c = S.convs.get(f.conv);
    if (!c || f.seq <= c.visitorRead) return;
    c.visitorRead = f.seq;
    if (S.selected === c.id) {
      document.querySelectorAll("#log .m.mine[data-seq]").forEach((n) => setStatus(n, +n.dataset.seq <= c.visitorRead ? "read" : "sent", n._ts));
    }
  }

  // ---- receipts ----
  let receiptTimer = null;
  function receiptsSoon() {
    clearTimeout(receiptTimer);
    receiptTimer = setTimeout(flushReceipts, 60);
  }

  function flushReceipts() {
    for (const c of S.convs.values()) {
      if (c.held > c.recvSent && send({ type: "recv", conv: c.id, seq: c.held })) c.recvSent = c.held;
    }
    markRead();
  }

  function markRead() {
    const c = S.selected && S.convs.get(S.selected);
    if (!c || document.hidden) return;
    const seq = c.lastSeq;
    if (c.unread || seq > c.lastRead) {
      c.unread = 0;
      c.lastRead = Math.max(c.lastRead, seq);
      ls.set(readKey(c.id), c.lastRead);
      renderListSoon();
    }
    if (c.held > c.readSent && c.state === "assigned" && send({ type: "read", conv: c.id, seq: c.held })) c.readSent = c.held;
    S.fresh.delete(c.id);
    renderTitle();
  }

  // ---- notice of a new conversation ----
  function notifyNew(c) {
    S.fresh.add(c.id);
    renderTitle();
    beep();
  }

  function beep() {
    try {
      const Ctx = window.AudioContext || window.webkitAudioContext;
      if (!Ctx) return;
      const ctx = beep.ctx || (beep.ctx = new Ctx());
      if (ctx.state === "suspended") ctx.resume();
      const o = ctx.createOscillator();
      const g = ctx.createGain();
      o.type = "sine";
      o.frequency.value = 880;
      g.gain.setValueAtTime(0.0001, ctx.currentTime);
      g.gain.exponentialRampToValueAtTime(0.2, ctx.currentTime + 0.02);
      g.gain.exponentialRampToValueAtTime(0.0001, ctx.currentTime + 0.35);
      o.connect(g).connect(ctx.destination);
      o.start();
      o.stop(ctx.currentTime + 0.4);
    } catch (e) { /* no sound: the title still says it */ }
  }

  function renderTitle() {
    let unread = 0;
    for (const c of S.convs.values()) unread += c.unread;
    const fresh = S.fresh.size;
    document.title = (unread ? `(${unread}) ` : "") + (fresh ? `New chat · ` : "") + baseTitle;
    document.body.dataset.fresh = String(fresh);
  }

  // ---- rendering: the list ----
  let listTimer = null;
  function renderListSoon() {
    if (listTimer) return;
    listTimer = requestAnimationFrame(() => { listTimer = null; renderList(); });
  }

  function visitorName(c) {
    const v = c.visitor;
    if (!v) return "Visitor";
    return v.name || "Visitor " + v.id.replace(/^v-/, "").slice(0, 6);
  }

  function renderList() {
    const ul = $("convs");
    ul.textContent = "";
    let open = 0;
    for (const id of S.order) {
      const c = S.convs.get(id);
      if (c.state === "assigned") open++;
      const li = el("li", "conv");
      li.dataset.conv = id;
      li.dataset.state = c.state;
      if (id === S.selected) li.classList.add("sel");
      const b = el("button", "conv-btn");
      b.type = "button";
      b.setAttribute("aria-current", id === S.selected ? "true" : "false");
      const top = el("div", "conv-top");
      top.append(el("span", "conv-name", visitorName(c)));
      if (c.last && c.last.ts) top.append(el("time", "conv-time", timeFmt.format(new Date(c.last.ts))));
      const bottom = el("div", "conv-bottom");
      const preview = c.typing ? "typing…" : c.state !== "assigned" && c.note ? c.note : c.last ? (c.last.from && c.last.from.role === "agent" ? "You: " : "") + (c.last.text || "") : "";
      bottom.append(el("span", "conv-prev" + (c.typing ? " is-typing" : ""), preview));
      if (c.unread) {
        const u = el("span", "unread", String(c.unread));
        u.setAttribute("aria-label", `${c.unread} unread`);
        bottom.append(u);
      }
      b.append(top, bottom);
      b.onclick = () => select(id);
      li.append(b);
      if (c.state === "gone" || c.state === "closed") {
        const x = el("button", "dismiss", "×");
        x.type = "button";
        x.title = "Remove from the list";
        x.setAttribute("aria-label", "Remove " + visitorName(c) + " from the list");
        x.onclick = () => dismiss(id);
        li.append(x);
      }
      ul.append(li);
    }
    $("no-convs").hidden = S.order.length > 0;
    $("count").textContent = open ? String(open) : "";
    renderTitle();
  }

  function dismiss(id) {
    S.convs.delete(id);
    S.order = S.order.filter((x) => x !== id);
    S.fresh.delete(id);
    if (S.selected === id) S.selected = null;
    renderList();
    renderChat();
  }

  function select(id) {
    if (S.selected !== id) stopTyping();
    S.selected = id;
    const c = S.convs.get(id);
    if (c && !c.loaded && !c.loading) loadHistory(c);
    renderList();
    renderChat();
    markRead();
    $("input").focus();
  }

  // ---- rendering: the transcript ----
  function renderChat() {
    const c = S.selected && S.convs.get(S.selected);
    $("pick").hidden = !!c;
    $("chat-head").hidden = !c;
    $("scroller").hidden = !c;
    $("composer").hidden = !c;
    $("log").textContent = "";
    if (!c) { $("typing").hidden = true; return; }
    const seqs = [...c.entries.keys()].sort((a, b) => a - b);
    for (const s of seqs) placeEntry(c, c.entries.get(s), true);
    for (const [id, p] of S.pending) if (p.conv === c.id) placePending(id, p);
    renderChatHead();
    renderMore(c);
    renderTyping(c);
    const sc = $("scroller");
    sc.scrollTop = sc.scrollHeight;
  }

  function renderChatHead() {
    const c = S.convs.get(S.selected);
    if (!c) return;
    $("chat-title").textContent = visitorName(c);
    const v = c.visitor;
    $("chat-sub").textContent = (v ? v.id + " · " : "") + c.id + (c.note && c.state !== "assigned" ? " · " + c.note : "");
    const active = c.state === "assigned";
    $("close-conv").disabled = !active;
    $("transfer").hidden = !active;
    $("input").disabled = !active;
    $("send").disabled = !active;
    $("input").placeholder = active ? "Write a reply…" : c.note || "This conversation is no longer yours.";
    $("chat").dataset.state = c.state;
  }

  function renderMore(c) {
    $("more").hidden = !(c.more && c.minSeq > 1);
  }

  function renderTyping(c) {
    const t = $("typing");
    t.hidden = !c.typing;
    t.textContent = c.typing ? `${visitorName(c)} is typing…` : "";
  }

  function setStatus(node, status, ts) {
    node.dataset.status = status;
    node.querySelector(".meta").textContent = (ts ? timeFmt.format(new Date(ts)) + " · " : "") + STATUS_TEXT[status];
  }

  function bubble(m, mine) {
    const li = el("li", "m " + (mine ? "mine" : "theirs"));
    const from = m.from || {};
    li.append(el("div", "b", m.text || ""));
    const meta = el("div", "meta");
    li.append(meta);
    li._ts = m.ts;
    if (!mine) meta.textContent = (from.name || (from.role === "visitor" ? "Visitor" : from.role === "bot" ? "Bot" : from.id || "")) + (m.ts ? " · " + timeFmt.format(new Date(m.ts)) : "");
    return li;
  }

  function systemText(m) {
    const a = m.agent || {};
    if (m.event === "queued") return "Waiting in the queue";
    if (m.event === "assigned") return a.id === S.me.id ? "Assigned to you" : `Assigned to ${a.name || a.id}`;
    if (m.event === "closed") {
      const by = m.by || {};
      return by.role === "visitor" ? "The visitor closed the chat" : by.role === "agent" ? `Closed by ${by.id === S.me.id ? "you" : by.id}` : "Closed";
    }
    return m.event || "";
  }

  function placeEntry(c, m, bulk) {
    const from = m.from || {};
    let node;
    if (from.role === "system") {
      node = el("li", "sys", systemText(m));
      node.dataset.event = m.event;
    } else {
      const mine = from.role === "agent" && from.id === S.me.id;
      node = bubble(m, mine);
      if (m.id) node.dataset.id = m.id;
      if (mine) setStatus(node, m.seq <= c.visitorRead ? "read" : "sent", m.ts);
    }
    node.dataset.seq = m.seq;
    const log = $("log");
    if (bulk) { log.append(node); return; }
    // Insert in seq order; pending replies stay last.
    let after = null;
    for (let n = log.lastElementChild; n; n = n.previousElementSibling) {
      if (n.dataset.seq && +n.dataset.seq < m.seq) { after = n; break; }
    }
    if (after) after.after(node);
    else log.prepend(node);
    if (!after || after.nextElementSibling === node) stickBottom();
  }

  function placePending(id, p) {
    const node = bubble({ text: p.text, ts: p.ts }, true);
    node.dataset.id = id;
    setStatus(node, p.failed ? "failed" : "sending", p.ts);
    node.onclick = () => {
      if (node.dataset.status !== "failed") return;
      p.failed = null;
      setStatus(node, "sending", p.ts);
      send({ type: "msg", id, conv: p.conv, text: p.text });
    };
    $("log").append(node);
    stickBottom(true);
  }

  function stickBottom(force) {
    const sc = $("scroller");
    if (force || sc.scrollHeight - sc.scrollTop - sc.clientHeight < 160) sc.scrollTop = sc.scrollHeight;
  }

  // ---- agent actions ----
  function reply() {
    const c = S.selected && S.convs.get(S.selected);
    const input = $("input");
    const text = input.value.trim();
    if (!c || !text || c.state !== "assigned") return;
    input.value = "";
    stopTyping();
    const id = newId();
    const p = { conv: c.id, text, ts: Date.now(), failed: null };
    S.pending.set(id, p);
    placePending(id, p);
    send({ type: "msg", id, conv: c.id, text });
  }

  let typingOn = false;
  let typingAt = 0;
  let typingConv = null;
  let typingIdle = null;
  function typed() {
    const c = S.selected && S.convs.get(S.selected);
    if (!c || c.state !== "assigned" || !$("input").value) return stopTyping();
    const now = Date.now();
    if (!typingOn || now - typingAt > TYPING_EVERY) {
      if (send({ type: "typing", conv: c.id, on: true })) { typingOn = true; typingAt = now; typingConv = c.id; }
    }
    clearTimeout(typingIdle);
    typingIdle = setTimeout(stopTyping, TYPING_IDLE);
  }
  function stopTyping() {
    clearTimeout(typingIdle);
    if (typingOn) { typingOn = false; send({ type: "typing", conv: typingConv, on: false }); }
  }

  function transfer(to) {
    const c = S.selected && S.convs.get(S.selected);
    if (!c) return;
    const f = { type: "transfer", conv: c.id, ref: "t" + ++S.refs };
    if (to) f.to = to;
    if (!send(f)) return toast("Not connected: try again in a moment.");
    $("transfer").open = false;
    $("transfer-to").value = "";
  }

  // ---- wiring ----
  $("login-form").onsubmit = (e) => {
    e.preventDefault();
    const t = $("token").value.trim().replace(/^.*#token=/, "");
    if (t) login(t);
  };
  $("logout").onclick = () => logout();
  $("status").onchange = (e) => {
    S.status = e.target.value;
    document.body.dataset.status = S.status;
    send({ type: "status", status: S.status });
  };
  $("composer").onsubmit = (e) => { e.preventDefault(); reply(); };
  $("input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); reply(); }
  });
  $("input").addEventListener("input", typed);
  $("more").onclick = () => {
    const c = S.convs.get(S.selected);
    if (c && !c.loading) loadHistory(c, c.minSeq);
  };
  $("transfer-form").onsubmit = (e) => {
    e.preventDefault();
    const to = $("transfer-to").value.trim();
    if (to) transfer(to);
  };
  $("to-queue").onclick = () => transfer(null);
  $("close-conv").onclick = () => {
    const c = S.selected && S.convs.get(S.selected);
    if (c && send({ type: "close", conv: c.id, ref: "x" + ++S.refs })) stopTyping();
  };
  document.addEventListener("visibilitychange", () => { if (!document.hidden) markRead(); });
  window.addEventListener("focus", markRead);
  window.addEventListener("online", () => { if (!S.ws && S.token) connect(); });
  window.addEventListener("hashchange", () => { if (/token=/.test(location.hash)) start(); });

  start();
})();
