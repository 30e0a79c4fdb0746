// segmentlog viewer: lists the runs and follows one with EventSource.
//
// - Event text only ever reaches the page through textContent (never innerHTML), so text
//   such as <img onerror=...> is shown as the characters it is and never runs.
// - EventSource reconnects by itself and sends Last-Event-ID; the server resumes after it.
//   If the browser gives up (readyState CLOSED), the viewer asks whether the run is finished
//   and, if not, opens a new stream after the last seq it has shown (?after=).
// - Events are shown once each, in seq order: one whose seq is not above the last one shown
//   is a repeat (delivery is at-least-once) and is skipped.
// - With a token, the page is opened as /?token=...; the server then sets an HttpOnly
//   cookie that every later request carries, and the token is removed from the address bar.
"use strict";

(() => {
  const MAX_ROWS = 10000;
  const RUNS_REFRESH_MS = 5000;
  const MAX_RUNS = 1000; // runs listed (each is a summary the server reads on every refresh)
  const RECONNECT_MS = 1500;

  const query = new URLSearchParams(location.search);
  if (query.has("token")) {
    query.delete("token");
    const rest = query.toString();
    history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
  }

  const $ = (id) => document.getElementById(id);
  let eventTypes = null;
  let current = null;

  async function getJSON(path) {
    const response = await fetch(path, { cache: "no-store", credentials: "same-origin" });
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    return response.json();
  }

  function span(className, text) {
    const el = document.createElement("span");
    el.className = className;
    el.textContent = text;
    return el;
  }

  function setState(state, text) {
    const el = $("state");
    el.dataset.state = state;
    el.textContent = text || state;
  }

  function age(seconds) {
    const s = Math.max(0, Date.now() / 1000 - seconds);
    if (s >= 86400) return Math.floor(s / 86400) + "d ago";
    if (s >= 3600) return Math.floor(s / 3600) + "h ago";
    if (s >= 60) return Math.floor(s / 60) + "m ago";
    return Math.floor(s) + "s ago";
  }

  // --- the runs list ---------------------------------------------------------------------

  async function loadRuns() {
    try {
      let runs = [];
      let cursor = null;
      do {
        const suffix = cursor ? "&cursor=" + encodeURIComponent(cursor) : "";
        const body = await getJSON("runs?limit=500" + suffix);
        runs = runs.concat(body.runs);
        cursor = body.next_cursor;
      } while (cursor && runs.length < MAX_RUNS);
      runs.sort((a, b) => b.mtime - a.mtime);
      renderRuns(runs);
      const more = cursor ? ` (the first ${runs.length} by id; open others as #run=ID)` : "";
      $("runs-status").textContent = runs.length ? `${runs.length} run(s)${more}` : "no runs yet";
    } catch (err) {
      $("runs-status").textContent = "cannot list the runs: " + err.message;
    }
  }

  function renderRuns(runs) {
    const items = runs.map((run) => {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "run";
      button.dataset.runId = run.run_id;
      if (current && current.runId === run.run_id) button.classList.add("selected");
      const state = run.damage ? "damaged" : run.terminal ? "finished" : "open";
      button.append(
        span("run-id", run.run_id),
        span("run-meta", `${run.events} events · ${state} · ${age(run.mtime)}`),
      );
      button.addEventListener("click", () => { location.hash = "run=" + run.run_id; });
      const li = document.createElement("li");
      li.append(button);
      return li;
    });
    $("runs").replaceChildren(...items);
  }

  // --- following one run -----------------------------------------------------------------

  function describe(event) {
    if (event === null || typeof event !== "object") return String(event);
    if (typeof event.delta === "string") return event.delta;
    if (typeof event.error === "string") return event.error;
    const rest = Object.assign({}, event);
    delete rest.type;
    delete rest.run_id;
    delete rest.timestamp;
    return Object.keys(rest).length ? JSON.stringify(rest) : "";
  }

  function show(state, envelope, type) {
    const list = $("events");
    const nearBottom = list.parentElement.scrollHeight - list.parentElement.scrollTop
      - list.parentElement.clientHeight < 40;
    const li = document.createElement("li");
    li.className = "event";
    li.dataset.seq = String(envelope.seq);
    li.title = String(envelope.emitted_at);
    const name = type === "message" && envelope.event ? envelope.event.type : type;
    li.append(span("seq", String(envelope.seq)), span("type", String(name)),
      span("text", describe(envelope.event)));
    list.append(li);
    while (list.childElementCount > MAX_ROWS) list.firstElementChild.remove();
    if (nearBottom) list.parentElement.scrollTop = list.parentElement.scrollHeight;
  }

  function onMessage(state, message) {
    if (state !== current) return;
    let envelope;
    try {
      envelope = JSON.parse(message.data);
    } catch {
      return;
    }
    if (typeof envelope.seq !== "number" || envelope.seq <= state.lastSeq) return;
    state.lastSeq = envelope.seq;
    show(state, envelope, message.type);
  }

  function connect(state) {
    if (state !== current) return;
    const source = new EventSource(`runs/${state.runId}/stream?after=${state.lastSeq}`);
    state.source = source;
    const handler = (message) => onMessage(state, message);
    for (const type of eventTypes) source.addEventListener(type, handler);
    source.addEventListener("message", handler);
    source.onopen = () => { if (state === current) setState("live"); };
    source.onerror = () => {
      if (state !== current) return;
      if (source.readyState === EventSource.CONNECTING) {
        setState("reconnecting", "reconnecting…");
        return;
      }
      source.close(); // CLOSED: a 204 (nothing left to send), or the browser gave up
      checkFinished(state);
    };
  }

  async function checkFinished(state) {
    try {
      const run = await getJSON(`runs/${state.runId}`);
      if (state !== current) return;
      if (run.terminal && state.lastSeq >= run.last_seq) {
        setState("finished", `finished · ${run.last_seq} events`);
        return;
      }
    } catch {
      // the server is down or restarting: try again below
    }
    if (state !== current) return;
    setState("reconnecting", "reconnecting…");
    state.timer = setTimeout(() => connect(state), RECONNECT_MS);
  }

  function follow(runId) {
    if (current) {
      if (current.source) current.source.close();
      clearTimeout(current.timer);
    }
    current = { runId, source: null, lastSeq: 0, timer: null };
    $("events").replaceChildren();
    $("run-title").textContent = "Run " + runId;
    for (const button of document.querySelectorAll("button.run")) {
      button.classList.toggle("selected", button.dataset.runId === runId);
    }
    setState("connecting", "connecting…");
    connect(current);
  }

  function onHash() {
    const match = /^#run=([0-9a-fA-F-]{36})$/.exec(location.hash);
    if (match && (!current || current.runId !== match[1].toLowerCase())) {
      follow(match[1].toLowerCase());
    }
  }

  async function start() {
    while (eventTypes === null) {
      try {
        eventTypes = (await getJSON("event-types")).event_types;
      } catch (err) {
        $("runs-status").textContent = "cannot reach the server: " + err.message;
        await new Promise((resolve) => setTimeout(resolve, RECONNECT_MS));
      }
    }
    await loadRuns();
    setInterval(loadRuns, RUNS_REFRESH_MS);
    window.addEventListener("hashchange", onHash);
    onHash();
  }

  start();
})();
