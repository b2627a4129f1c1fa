// The technician's console: renders the state object of GET /api/state (inlined in the page
// for the first paint), then follows the server's Server-Sent Events (`state` every 0.5 s,
// `log` per event). Controls go to the same ControlHub as MIDI and OSC (POST /api/params...),
// so a knob moved elsewhere moves here (the echo). Plain ES2020, no build step, no network
// beyond this server. The HTTP contract is in the repository's console design notes.
"use strict";

(() => {
  const SEND_EVERY_MS = 100;        // controls send at most ~10 values a second
  const HOLD_ECHO_MS = 1500;        // after a user's move, the server's echo waits this long
  const CHECK_DELAY_MS = 300;       // config validation runs once typing pauses this long
  const CONFIG_POLL_MS = 2000;      // an open Config tab asks whether the file changed on disk
  const SPECTRO_COLUMNS = 120;      // one column per state message (0.5 s): one minute
  const MAX_EVENTS = 300;
  const METER_FLOOR_DB = -60;
  const STALE_PERIODS = 3;          // no fresh state for this many stream periods: out of date
  const STALE_AT_LEAST_S = 4;       // ...and at least this long: a phone on a museum's Wi-Fi
                                    // misses a second now and then, a banner each time is noise
  const STALE_CHECK_MS = 250;       // how often the page asks itself whether it is out of date
  const ANSWER_TIMEOUT_MS = 15000;  // an API call unanswered this long is given up, and said so

  const $ = (sel, root = document) => root.querySelector(sel);
  /** A new element: "text" sets its text, "class" its classes, the rest are attributes. */
  const el = (tag, attrs = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) node.append(c);
    return node;
  };
  const fmt = (v, digits = 1, unit = "") =>
    (v === null || v === undefined || Number.isNaN(v)) ? "–" : `${Number(v).toFixed(digits)}${unit}`;
  const clockTime = (t) => new Date(t * 1000).toLocaleTimeString([], { hour12: false });
  /** Text from outside (a title, an artist, an id): its own direction (a right-to-left title
   *  reads right to left) and, for a line cut with an ellipsis, the whole of it as a tooltip. */
  const setExternal = (node, text) => {
    node.textContent = text;
    node.dir = "auto";
    if (text) node.title = text; else node.removeAttribute("title");
  };

  // ---- talking to the server -------------------------------------------------------------

  async function api(method, path, body) {
    // A hung supervisor never answers: without a deadline the button would wait for ever.
    const deadline = new AbortController();
    const timer = setTimeout(() => deadline.abort(), ANSWER_TIMEOUT_MS);
    const options = { method, headers: {}, credentials: "same-origin", signal: deadline.signal };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, options);
    } catch (_) {  // the browser's own words ("Failed to fetch") say nothing to a technician
      clearTimeout(timer);
      throw new Error(deadline.signal.aborted
        ? `the installation did not answer within ${ANSWER_TIMEOUT_MS / 1000} s`
        : "the installation did not answer (is it running? is the network up?)");
    }
    let data = null;
    try { data = await response.json(); } catch (_) { data = null; } finally { clearTimeout(timer); }
    if (response.status === 401) {  // auth is on and the cookie is gone: ask for the token
      window.location.assign("/login");
      throw new Error("login needed");
    }
    if (!response.ok) {
      const message = (data && data.error) || `${method} ${path}: HTTP ${response.status}`;
      const error = new Error(message);
      error.status = response.status;
      error.data = data;
      throw error;
    }
    return data;
  }

  /** Marks `node` busy (aria-busy, a spinner) while `work()` waits for the server's answer. */
  async function pending(node, work) {
    node.setAttribute("aria-busy", "true");
    node.classList.add("pending");
    try { return await work(); } finally {
      node.removeAttribute("aria-busy");
      node.classList.remove("pending");
    }
  }

  /** Calls `send(value)` at most once per SEND_EVERY_MS, always ending with the last value. */
  function throttled(send) {
    let last = 0, timer = null, pending;
    return (value) => {
      pending = value;
      const wait = SEND_EVERY_MS - (performance.now() - last);
      if (wait <= 0 && timer === null) {
        last = performance.now();
        send(pending);
      } else if (timer === null) {
        timer = setTimeout(() => { timer = null; last = performance.now(); send(pending); },
          Math.max(wait, 0));
      }
    };
  }

  // ---- state -------------------------------------------------------------------------------

  let state = readInitialState();
  const rooms = new Map();           // room id -> {node, parts, controls, history, lastFrame}
  const events = [];                 // newest last
  const seenRoles = new Set(), seenRooms = new Set();

  function readInitialState() {
    const text = ($("#initial-state") || {}).textContent || "";
    try { return JSON.parse(text); } catch (_) { return null; }  // served without the server
  }

  // ---- header --------------------------------------------------------------------------------

  const master = { input: $("#master-volume"), out: $("#master-volume-value"),
    mute: $("#master-mute"), error: $("#master-error"), touched: 0 };

  function renderHeader() {
    master.input.max = volumeHigh();
    $("#installation-name").textContent = state.installation || "Art2Mus";
    document.title = `${state.installation || "Art2Mus"} · Art2Mus console`;
    const chip = $("#supervisor-state");
    const roles = state.roles || [];
    const down = roles.filter((r) => !["running", "done"].includes(r.state));
    let word = state.state || (down.length ? "degraded" : "running");
    if (state.state === "running" && down.length) word = "degraded";
    chip.textContent = roles.length ? `${word} · ${roles.length - down.length}/${roles.length} roles up` : word;
    chip.dataset.tone = word === "running" ? "ok" : (word === "degraded" ? "warn" : "bad");
    chip.title = down.length ? `not running: ${down.map((r) => `${r.name} (${r.state})`).join(", ")}` : "all roles running";

    const volume = ((state.params || {})["*"] || {}).volume;
    const muted = !!(state.muted || {})["*"];
    if (volume !== undefined && !isBusy(master.input, master.touched)) {
      master.input.value = volume;
      master.out.textContent = fmt(volume, 2);
    }
    master.mute.textContent = muted ? "Unmute" : "Mute";
    master.mute.setAttribute("aria-pressed", String(muted));
    master.mute.classList.toggle("active", muted);
  }

  const sendMaster = throttled(async (value) => {
    try {
      const answer = await api("POST", "/api/params", { room: "*", name: "volume", value });
      master.out.textContent = fmt(answer.value, 2);
      master.error.textContent = "";
    } catch (e) { master.error.textContent = e.message; }
  });
  master.input.addEventListener("input", () => {
    master.touched = performance.now();
    master.out.textContent = fmt(Number(master.input.value), 2);
    sendMaster(Number(master.input.value));
  });
  master.mute.addEventListener("click", () => pending(master.mute, async () => {
    const muted = master.mute.getAttribute("aria-pressed") !== "true";
    try {
      const answer = await api("POST", "/api/mute", { room: "*", muted });
      master.mute.setAttribute("aria-pressed", String(answer.muted));
      master.mute.textContent = answer.muted ? "Unmute" : "Mute";
      master.mute.classList.toggle("active", answer.muted);
      master.error.textContent = "";
    } catch (e) { master.error.textContent = e.message; }
  }));

  function volumeHigh() {
    const row = (state && state.params_table || []).find((p) => p.name === "volume");
    return row ? row.high : 4;
  }

  /** True while the user is dragging or has just moved a control: the echo must not fight. */
  function isBusy(input, touched) {
    return input.dataset.dragging === "1" || performance.now() - touched < HOLD_ECHO_MS;
  }
  for (const input of [master.input]) trackDrag(input);
  function trackDrag(input) {
    input.addEventListener("pointerdown", () => { input.dataset.dragging = "1"; });
    const up = () => { input.dataset.dragging = ""; };
    input.addEventListener("pointerup", up);
    input.addEventListener("pointercancel", up);
    input.addEventListener("blur", up);
  }

  // ---- rooms ---------------------------------------------------------------------------------

  function ensureRoom(id) {
    if (rooms.has(id)) return rooms.get(id);
    const node = $("#room-template").content.firstElementChild.cloneNode(true);
    node.dataset.room = id;
    node.id = `room-${id}`;
    const parts = {};
    for (const part of node.querySelectorAll("[data-field]")) parts[part.dataset.field] = part;
    setExternal(parts.id, id);
    parts.id.id = `room-${id}-name`;  // the card's accessible name: its sliders tell rooms apart
    node.setAttribute("aria-labelledby", parts.id.id);
    parts.frame.alt = `camera of room ${id}`;
    parts.frame.addEventListener("load", () => { parts.frame.hidden = false; parts["no-frame"].hidden = true; });
    parts.frame.addEventListener("error", () => { parts.frame.hidden = true; parts["no-frame"].hidden = false; });
    const back = node.querySelector("[data-action=back-to-camera]");
    back.addEventListener("click", () => pending(back, () => backToCamera(id)));
    const room = { id, node, parts, controls: new Map(), history: [], lastFrame: null };
    $("#rooms").append(node);
    rooms.set(id, room);
    return room;
  }

  function buildControls(room) {
    const box = room.parts.controls;
    box.replaceChildren(el("h3", { text: "Live parameters" }));
    for (const p of state.params_table || []) {
      const id = `ctl-${room.id}-${p.name}`;
      const error = el("span", { class: "control-error", "data-testid": `error-${room.id}-${p.name}`, role: "alert" });
      const row = el("div", { class: `control ${p.kind}`, title: p.doc || "" });
      const control = { param: p, error, touched: 0 };
      if (p.kind === "continuous") {
        const step = (p.high - p.low) / 200;
        const input = el("input", { type: "range", id, min: p.low, max: p.high, step,
          value: p.default, "data-testid": `param-${room.id}-${p.name}`, "data-param": p.name });
        const out = el("output", { for: id, "data-testid": `value-${room.id}-${p.name}`, text: fmt(p.default, 2) });
        row.append(el("label", { for: id, text: label(p.name) }), input, out, error);
        trackDrag(input);
        const send = throttled(async (value) => {
          try {
            const answer = await api("POST", "/api/params", { room: room.id, name: p.name, value });
            out.textContent = fmt(answer.value, 2);
            error.textContent = "";
          } catch (e) { error.textContent = e.message; }
        });
        input.addEventListener("input", () => {
          control.touched = performance.now();
          out.textContent = fmt(Number(input.value), 2);
          send(Number(input.value));
        });
        Object.assign(control, { input, out });
      } else if (p.kind === "choice") {
        const input = el("select", { id, "data-testid": `param-${room.id}-${p.name}`, "data-param": p.name });
        for (const [value, name] of p.choices || []) {
          input.append(el("option", { value: String(value), text: name }));
        }
        input.value = String(p.default);
        row.append(el("label", { for: id, text: label(p.name) }), input, error);
        input.addEventListener("change", () => pending(input, async () => {
          control.touched = performance.now();
          try {
            const answer = await api("POST", "/api/params", { room: room.id, name: p.name, value: Number(input.value) });
            input.value = String(answer.value);
            error.textContent = "";
          } catch (e) { error.textContent = e.message; }
        }));
        Object.assign(control, { input });
      } else if (p.kind === "toggle") {
        const input = el("input", { type: "checkbox", id, role: "switch",
          "data-testid": `param-${room.id}-${p.name}`, "data-param": p.name });
        const sw = el("label", { class: "switch", for: id }, input, el("span", { class: "slider", "aria-hidden": "true" }));
        row.append(el("label", { for: id, text: label(p.name) }), sw, error);
        input.addEventListener("change", () => pending(input, async () => {
          control.touched = performance.now();
          try {
            const answer = await api("POST", "/api/params", { room: room.id, name: p.name, value: input.checked ? 1 : 0 });
            input.checked = answer.value >= 0.5;
            error.textContent = "";
          } catch (e) { error.textContent = e.message; }
        }));
        Object.assign(control, { input });
      } else {
        const button = el("button", { type: "button", id, "data-testid": `param-${room.id}-${p.name}`,
          "data-param": p.name, text: label(p.name) });
        const out = el("output", { for: id, "data-testid": `value-${room.id}-${p.name}` });
        row.append(button, out, error);
        button.addEventListener("click", () => pending(button, async () => {
          try {
            const answer = await api("POST", "/api/trigger", { room: room.id, name: p.name });
            out.textContent = `#${answer.value}`;
            error.textContent = "";
          } catch (e) { error.textContent = e.message; }
        }));
        Object.assign(control, { button, out });
      }
      box.append(row);
      room.controls.set(p.name, control);
    }
  }

  const label = (name) => name.replace(/_s$/, " (s)").replace(/_/g, " ").replace(/^./, (c) => c.toUpperCase());

  function renderRoom(id, data) {
    const room = ensureRoom(id);
    const { parts } = room;
    // built once the table is known (a state taken before the server's first tick has none)
    if (!room.controls.size && (state.params_table || []).length) buildControls(room);
    if (data.frame && data.frame !== room.lastFrame) {  // a new JPEG: the query string changes
      room.lastFrame = data.frame;
      parts.frame.src = data.frame;
    } else if (!data.frame) {
      parts.frame.hidden = true;
      parts["no-frame"].hidden = false;
    }
    const known = data.artwork_id !== null && data.artwork_id !== undefined && data.artwork_id !== "";
    setExternal(parts.title, data.title || (known ? data.artwork_id : "empty wall"));
    setExternal(parts.artist, data.artist || "");
    setExternal(parts.artwork_id, known ? data.artwork_id : "");
    parts.confidence.textContent = data.confidence == null ? "" : `${Math.round(data.confidence * 100)}% sure`;
    parts.key.textContent = data.key ? `${data.key} ${data.mode || ""}`.trim() : "–";
    parts.tempo.textContent = fmt(data.tempo, 0, " bpm");
    parts.instruments.textContent = (data.instruments || []).join(", ") || "–";
    parts.catalogue.textContent = data.catalogue || "–";
    parts.catalogue.dataset.tone = /failed/.test(data.catalogue || "") ? "bad" : "";
    parts.lens.textContent = data.lens || "as it comes";
    parts.lens.dataset.tone = /^not used/.test(data.lens || "") ? "bad" : "";
    parts.playhead.textContent = fmt(data.playhead_s, 1, " s");
    parts.lead.textContent = fmt(data.lead_s, 2, " s");
    parts.underflows.textContent = data.underflows == null ? "–" : String(data.underflows);
    parts.underflows.dataset.tone = data.underflows ? "warn" : "";
    parts.playback.textContent = data.playback || "idle";
    parts.playback.dataset.tone = data.playback === "playing" ? "ok" : "warn";
    const recording = data.recording || "off";
    parts["recording-chip"].textContent = `rec ${recording}`;
    parts["recording-chip"].dataset.tone = recording === "ok" ? "ok" : (recording === "off" ? "" : "bad");
    parts.recording.textContent = recording;
    parts.recording.dataset.tone = parts["recording-chip"].dataset.tone;
    const showing = data.showing;
    parts.showing.hidden = !showing;
    if (!showing) parts["showing-error"].textContent = "";  // back on the camera: nothing failed
    if (showing) {
      const left = Math.max(0, Math.round(showing.until - (state.time || Date.now() / 1000)));
      setExternal(parts["showing-text"], `showing ${showing.artwork_id} (${left} s left)`);
    }
    renderTrouble(room, data);
    drawMeter(room, data);
    renderHealth(room, data.roles || {});
    if (Array.isArray(data.spectrum)) pushSpectrum(room, data.spectrum);
    drawSpectrogram(room);
    renderEcho(room);
  }

  /** What is wrong with the room, on its card: a coloured border, one chip per cause, and
   *  the camera picture dimmed and captioned while capture or its camera is down. */
  function renderTrouble(room, data) {
    const { node, parts } = room;
    const trouble = data.trouble || { tone: "", lines: [], frame_stale: false };
    if (trouble.tone) node.dataset.tone = trouble.tone; else delete node.dataset.tone;
    parts.trouble.replaceChildren(...trouble.lines.map((line) => {
      const item = el("li", { class: "chip", text: line.text, title: line.text });
      item.dataset.tone = line.tone;
      return item;
    }));
    parts.trouble.hidden = !trouble.lines.length;
    const stale = !!trouble.frame_stale && !!data.frame;
    parts.camera.classList.toggle("stale", stale);
    parts["frame-caption"].hidden = !stale;
    if (stale) {
      const cause = (trouble.lines.find((line) => /showing its last frame/.test(line.text)) || {}).text
        || "showing its last frame";
      const at = data.frame_time ? ` (from ${clockTime(data.frame_time)})` : "";
      parts["frame-caption"].textContent = `${cause}${at}: not live`;
    }
  }

  function drawMeter(room, data) {
    const canvas = room.parts.meter;
    const ctx = canvas.getContext("2d");
    const w = canvas.width, h = canvas.height;
    const x = (db) => Math.max(0, Math.min(1, (db - METER_FLOOR_DB) / -METER_FLOOR_DB)) * w;
    const styles = getComputedStyle(document.body);
    ctx.clearRect(0, 0, w, h);
    ctx.fillStyle = styles.getPropertyValue("--meter-bg") || "#222";
    ctx.fillRect(0, 0, w, h);
    const level = data.level_dbfs, peak = data.peak_dbfs;
    if (level != null) {
      const gradient = ctx.createLinearGradient(0, 0, w, 0);
      gradient.addColorStop(0, "#2f9e6b");
      gradient.addColorStop(0.7, "#2f9e6b");
      gradient.addColorStop(0.85, "#e0b030");
      gradient.addColorStop(1, "#d9483b");
      ctx.fillStyle = gradient;
      ctx.fillRect(0, 3, x(level), h - 6);
    }
    if (peak != null) {
      ctx.fillStyle = peak > -1 ? "#d9483b" : "#f4f5f7";  // the meter is dark in both themes
      ctx.fillRect(Math.min(x(peak), w - 2), 0, 2, h);
    }
    ctx.fillStyle = "rgba(127,127,127,0.55)";  // a tick every 10 dB
    for (let db = -50; db < 0; db += 10) ctx.fillRect(x(db), h - 4, 1, 4);
    room.parts["meter-text"].textContent =
      `level ${fmt(level, 1, " dBFS")} · peak ${fmt(peak, 1, " dBFS")} · ${fmt(data.loudness_lufs, 1, " LUFS")}`;
    room.parts.meter.dataset.level = level == null ? "" : String(level);
  }

  function renderHealth(room, roles) {
    const box = room.parts.health;
    box.replaceChildren();
    for (const kind of ["capture", "audio_out"]) {
      const row = roles[kind];
      const item = el("div", { class: "role-health", "data-testid": `health-${room.id}-${kind}` });
      if (!row) {
        item.append(el("span", { class: "chip", text: `${kind}: –` }));
      } else {
        const chip = el("span", { class: "chip", text: `${kind}: ${row.state}` });
        chip.dataset.tone = tone(row.state);
        item.append(chip, el("span", { class: "muted counts", text: `restarts ${row.restarts} · hangs ${row.hangs}` }));
        if (row.reason) item.append(lastError("span", row));
      }
      box.append(item);
    }
  }

  const isUp = (roleState) => roleState === "running" || roleState === "done";

  /** A role's last error: red while the role is down, grey (with when it was) once it runs
   *  again, so a mended role does not look broken. */
  function lastError(tag, row) {
    const up = isUp(row.state);
    const restartedAt = up && row.uptime_s != null && state.time
      ? ` (before the restart at ${clockTime(state.time - row.uptime_s)})` : "";
    const text = `${up ? "last error: " : ""}${row.reason}${restartedAt}`;
    return el(tag, { class: up ? "reason past" : "reason", text, title: text, dir: "auto" });
  }

  const tone = (roleState) => ({ running: "ok", done: "", starting: "warn", restarting: "warn",
    silent: "bad", failed: "bad", stopped: "" })[roleState] ?? "warn";

  function renderEcho(room) {
    const effective = (state.effective || {})[room.id] || {};
    for (const [name, control] of room.controls) {
      const value = effective[name];
      if (value === undefined) continue;
      if (control.input && control.input.type === "range") {
        if (isBusy(control.input, control.touched)) continue;
        control.input.value = value;
        control.out.textContent = fmt(value, 2);
      } else if (control.input && control.input.tagName === "SELECT") {
        if (performance.now() - control.touched < HOLD_ECHO_MS) continue;
        control.input.value = String(value);
      } else if (control.input) {
        if (performance.now() - control.touched < HOLD_ECHO_MS) continue;
        control.input.checked = value >= 0.5;
      } else if (control.out) {
        control.out.textContent = `#${value}`;
      }
    }
  }

  // ---- pictures: spectrogram and timeline ----------------------------------------------------

  function pushSpectrum(room, column) {
    room.history.push(column);
    if (room.history.length > SPECTRO_COLUMNS) room.history.splice(0, room.history.length - SPECTRO_COLUMNS);
  }

  function drawSpectrogram(room) {
    const canvas = room.parts.spectrogram;
    const ctx = canvas.getContext("2d");
    const w = canvas.width, h = canvas.height;
    ctx.fillStyle = "#0b1020";
    ctx.fillRect(0, 0, w, h);
    const columns = room.history;
    if (!columns.length) return;
    const colW = w / SPECTRO_COLUMNS;
    const x0 = w - columns.length * colW;  // newest on the right
    columns.forEach((column, i) => {
      const bands = column.length, bandH = h / bands;
      for (let b = 0; b < bands; b++) {
        ctx.fillStyle = heat(column[b]);
        ctx.fillRect(x0 + i * colW, h - (b + 1) * bandH, Math.ceil(colW), Math.ceil(bandH));
      }
    });
  }

  /** A dark-blue -> magenta -> yellow colour for -90..-10 dB. */
  function heat(db) {
    const t = Math.max(0, Math.min(1, ((db ?? -100) + 90) / 80));
    const r = Math.round(255 * Math.min(1, t * 1.6));
    const g = Math.round(255 * Math.max(0, t * 1.8 - 0.8));
    const b = Math.round(255 * (t < 0.5 ? 0.25 + t : Math.max(0, 1.5 - 2 * t) * 0.75));
    return `rgb(${r},${g},${b})`;
  }

  const artworkColours = new Map();
  function colourFor(id) {
    if (!artworkColours.has(id)) {
      let hash = 0;
      for (const ch of String(id)) hash = (hash * 31 + ch.charCodeAt(0)) >>> 0;
      artworkColours.set(id, `hsl(${Math.round((hash * 137.508) % 360)} 55% 55%)`);  // golden angle: neighbours differ
    }
    return artworkColours.get(id);
  }

  function renderTimeline(room, changes) {
    const box = room.parts.timeline;
    const now = state.time || Date.now() / 1000;
    const start = now - 3600;
    box.replaceChildren();
    const items = (changes || []).filter((c, i, all) => i === all.length - 1 || all[i + 1].t >= start);
    items.forEach((change, i) => {
      const from = Math.max(change.t, start);
      const to = i + 1 < items.length ? items[i + 1].t : now;
      if (to <= from) return;
      const known = change.artwork_id !== null && change.artwork_id !== undefined && change.artwork_id !== "";
      const title = change.title || (known ? change.artwork_id : "empty wall");
      const seg = el("div", { class: known ? "seg" : "seg empty",
        title: `${clockTime(change.t)} ${title}` });
      seg.style.left = `${((from - start) / 3600) * 100}%`;
      seg.style.width = `${((to - from) / 3600) * 100}%`;
      if (known) seg.style.background = colourFor(change.artwork_id);
      box.append(seg);
    });
    box.append(el("span", { class: "tl-left", text: "−60 min" }), el("span", { class: "tl-right", text: "now" }));
  }

  // ---- engine panel and roles table ----------------------------------------------------------

  function renderEngine() {
    const e = state.engine || {};
    const facts = [
      ["Health", e.state ? `${e.state}${e.restarts ? ` · ${e.restarts} restarts` : ""}` : "–", tone(e.state)],
      ["Generator", e.generator || "–"],
      ["Chunk time", fmt(e.chunk_ms, 1, " ms")],
      ["Real-time factor", e.rtf == null ? "–" : `${fmt(e.rtf, 1)}×`],
      ["Rooms served", e.rooms_served ?? "–"],
      ["Batch sizes", (e.batch || []).join(" ") || "–"],
      ["GPU memory", e.gpu_memory_mb == null ? "no GPU" : fmt(e.gpu_memory_mb, 0, " MB")],
    ];
    if (e.backend) {
      facts.push(["Backend", `${e.backend.kind} · ${e.backend.state} · ${e.backend.text}`,
                  e.backend.healthy ? "ok" : "bad"]);
    }
    if (e.reason) facts.push(["Last error", e.reason, isUp(e.state) ? "past" : "bad"]);
    $("#engine-facts").replaceChildren(...facts.flatMap(([k, v, t]) => {
      const dd = el("dd", { text: String(v), "data-testid": `engine-${k.toLowerCase().replace(/ /g, "-")}` });
      if (t) dd.dataset.tone = t;
      return [el("dt", { text: k }), dd];
    }));
  }

  function renderRoles() {
    $("#roles-body").replaceChildren(...(state.roles || []).map((r) => {
      seenRoles.add(r.name);
      const stateCell = el("td", {}, el("span", { class: "chip", text: r.state }));
      stateCell.firstChild.dataset.tone = tone(r.state);
      return el("tr", { "data-testid": `role-${r.name}` },
        el("th", { scope: "row", text: r.name }), stateCell,
        el("td", { class: "num", text: String(r.restarts ?? "–") }),
        el("td", { class: "num", text: String(r.hangs ?? "–") }),
        el("td", { class: "num", text: fmt(r.heartbeat_age_s, 1, " s") }),
        el("td", { class: "num", text: uptime(r.uptime_s) }),
        r.reason ? lastError("td", r) : el("td", { class: "reason" }));
    }));
    refreshFilterOptions();
  }

  const uptime = (s) => s == null ? "–" : (s < 120 ? `${Math.round(s)} s` : (s < 7200 ? `${Math.round(s / 60)} min` : `${(s / 3600).toFixed(1)} h`));

  // ---- render everything from one state message ------------------------------------------------

  function renderProblems() {
    const problems = state.problems || [];
    $("#problems").hidden = problems.length === 0;
    $("#problems-list").replaceChildren(...problems.map((text) => el("li", { text })));
  }

  function render() {
    renderHeader();
    renderProblems();
    for (const [id, data] of Object.entries(state.rooms || {})) {
      seenRooms.add(id);
      renderRoom(id, data);
      renderTimeline(rooms.get(id), (state.timeline || {})[id]);
    }
    renderEngine();
    renderRoles();
  }

  function applyState(next) {
    // The spectrogram history and the timeline arrive with the initial state only.
    const timeline = next.timeline || state.timeline;
    state = { ...next, timeline };
    render();
  }

  function seedSpectrograms() {
    for (const [id, columns] of Object.entries(state.spectrogram || {})) {
      const room = ensureRoom(id);
      room.history = (columns || []).slice(-SPECTRO_COLUMNS);
    }
  }

  // ---- live updates over SSE -----------------------------------------------------------------

  // The page must not look healthy when nothing comes: a stopped installation, a hung
  // supervisor (the stream stays open and says nothing) or a dropped Wi-Fi. A state is fresh
  // when its `time` moved on (a stream repeating one frozen state is no news either); after
  // STALE_PERIODS stream periods (`tick_s`, STALE_AT_LEAST_S at least) without one, or with
  // the connection down, the banner says for how long and the room cards are dimmed, until
  // the next fresh state.
  const connection = $("#connection");
  const fresh = { at: performance.now(), time: state ? state.time : null, link: "connecting" };

  function setConnection(word, tone_) {
    connection.textContent = word;
    connection.dataset.tone = tone_;
  }

  function noteFresh(next) {
    if (typeof next.time === "number" && !(fresh.time >= next.time)) {
      fresh.time = next.time;
      fresh.at = performance.now();
    }
  }

  function checkFresh() {
    const ageS = (performance.now() - fresh.at) / 1000;
    const down = fresh.link === "offline" || fresh.link === "reconnecting";
    const stale = down ||
      ageS > Math.max(STALE_PERIODS * ((state && state.tick_s) || 0.5), STALE_AT_LEAST_S);
    const banner = $("#stale");
    if (stale) {
      const seconds = Math.max(1, Math.round(ageS));
      $("#stale-text").textContent = `no news from the installation for ${seconds} s: ` +
        `what you see may be out of date${down ? " (connection lost, reconnecting…)" : ""}`;
    }
    banner.hidden = !stale;
    $("#rooms").classList.toggle("stale", stale);
    if (fresh.link === "offline") setConnection("offline", "bad");
    else if (fresh.link === "reconnecting") setConnection("reconnecting…", "warn");
    else if (stale) setConnection("no news", "bad");
    else if (fresh.link === "open") setConnection("live", "ok");
    else setConnection("connecting…", "");
  }
  setInterval(checkFresh, STALE_CHECK_MS);

  function connect() {
    const source = new EventSource("/api/stream");
    source.addEventListener("open", () => { fresh.link = "open"; checkFresh(); });
    source.addEventListener("state", (message) => {
      fresh.link = "open";
      try {
        const next = JSON.parse(message.data);
        noteFresh(next);
        applyState(next);
      } catch (e) { console.error("state message", e); }
      checkFresh();
    });
    source.addEventListener("log", (message) => {
      try { addEvent(JSON.parse(message.data)); } catch (e) { console.error("log message", e); }
    });
    source.addEventListener("error", () => {
      // EventSource retries by itself; a 401 (token expired) closes it for good.
      if (source.readyState === EventSource.CLOSED) {
        fresh.link = "offline";
        api("GET", "/api/state").then(() => setTimeout(connect, 2000)).catch(() => setTimeout(connect, 5000));
      } else {
        fresh.link = "reconnecting";
      }
      checkFresh();
    });
  }

  // ---- tabs ----------------------------------------------------------------------------------

  const loaders = {};
  const tabs = [...document.querySelectorAll("[role=tab]")];
  function showTab(name) {
    for (const tab of tabs) {
      const selected = tab.dataset.tab === name;
      tab.setAttribute("aria-selected", String(selected));
      tab.tabIndex = selected ? 0 : -1;  // one tab stop for the list; arrows move inside it
      $(`#view-${tab.dataset.tab}`).hidden = !selected;
    }
    if (loaders[name]) loaders[name]();
    if (history.replaceState) history.replaceState(null, "", `#${name}`);
  }
  for (const tab of tabs) {
    tab.tabIndex = tab.getAttribute("aria-selected") === "true" ? 0 : -1;
    tab.addEventListener("click", () => showTab(tab.dataset.tab));
    // The WAI-ARIA tabs pattern (automatic activation): Left/Right go to the previous or
    // next tab, wrapping round, Home/End to the first or last.
    tab.addEventListener("keydown", (event) => {
      const at = tabs.indexOf(tab);
      const to = { ArrowLeft: at - 1, ArrowRight: at + 1, Home: 0, End: tabs.length - 1 }[event.key];
      if (to === undefined) return;
      event.preventDefault();
      const next = tabs[(to + tabs.length) % tabs.length];
      next.focus();
      showTab(next.dataset.tab);
    });
  }

  // ---- config tab ----------------------------------------------------------------------------

  // `version` is the file's sha256 as loaded: the base every check, apply and rollback sends,
  // so the server refuses (409) to write over a file that changed since. `loadedText` is the
  // text as the textarea holds it after loading: the edit is "dirty" once it differs.
  const config = { loaded: false, editable: false, lastGood: false, ok: false, timer: null,
    seq: 0, version: null, loadedText: "", stale: false, busy: false,
    text: $("#config-text"), apply: $("#config-apply"), rollback: $("#config-rollback"),
    verdict: $("#config-verdict"), note: $("#config-note"), staleBox: $("#config-stale") };
  const configDirty = () => config.text.value !== config.loadedText;

  // shown again: an unedited tab reloads, so it never shows a file older than the one on disk
  loaders.config = () => { if (!config.loaded || (!configDirty() && !config.busy)) loadConfig(); };

  async function loadConfig(message) {
    try {
      showConfig(await api("GET", "/api/config"), message);
    } catch (e) { config.note.textContent = e.message; }
  }

  function showConfig(answer, message) {
    config.loaded = true;
    config.editable = !!answer.editable && (state.console || {}).allow_edit !== false;
    config.lastGood = !!answer.last_good;
    config.version = answer.version;
    config.text.value = answer.text;
    config.loadedText = config.text.value;  // as the textarea keeps it (line ends normalised)
    config.text.readOnly = !config.editable;
    $("#config-path").textContent = answer.path;
    config.note.textContent = message || (config.editable
      ? "Edits are checked as you type with the same validator as check-config."
      : "Read-only: editing is switched off ([console] allow_edit = false).");
    clearTimeout(config.timer);
    config.seq++;  // a check of the text replaced here is no longer wanted
    config.stale = false;
    config.staleBox.hidden = true;
    showCheck({ ok: true, errors: [], diff: "", live: [], restart: [] });
    config.ok = false;  // nothing to apply until the text changes
    updateConfigButtons();
  }

  /** The file on disk is no longer the one this edit started from: say so, offer a reload. */
  function showStale(message) {
    config.stale = true;
    $("#config-stale-text").textContent = message ||
      "The file changed since you loaded it; reload to see it (Apply would be refused).";
    config.staleBox.hidden = false;
    config.verdict.textContent = "file changed on disk";
    config.verdict.dataset.tone = "bad";
    updateConfigButtons();
  }

  /** While the tab is open: pick up a file changed on disk (a hand edit, another browser). */
  async function followConfigFile() {
    if (!config.loaded || config.busy || config.version === null || document.hidden
        || $("#view-config").hidden) return;
    let answer;
    try { answer = await api("GET", "/api/config"); } catch (_) { return; }
    if (config.busy || answer.version === config.version) return;
    if (!configDirty()) showConfig(answer, "Reloaded: the file changed on disk.");
    else if (!config.stale) showStale();
  }
  setInterval(followConfigFile, CONFIG_POLL_MS);

  function updateConfigButtons() {
    config.apply.disabled = !(config.editable && config.ok && !config.stale);
    config.rollback.disabled = !(config.editable && config.lastGood && !config.stale);
    config.apply.title = !config.editable ? "editing is switched off"
      : (config.stale ? "the file changed on disk: reload it first"
        : (config.ok ? "" : "fix the problems first"));
  }

  config.text.addEventListener("input", () => {
    config.ok = false;
    updateConfigButtons();
    config.verdict.textContent = "checking…";
    config.verdict.dataset.tone = "";
    clearTimeout(config.timer);
    config.timer = setTimeout(checkConfig, CHECK_DELAY_MS);
  });

  async function checkConfig() {
    const seq = ++config.seq;
    try {
      const answer = await api("POST", "/api/config/check",
        { text: config.text.value, base: config.version });
      if (seq !== config.seq) return;  // an older answer arriving late
      showCheck(answer);
      config.ok = !!answer.ok && !!answer.diff;
      if (answer.stale) showStale();
    } catch (e) {
      if (seq !== config.seq) return;
      showCheck({ ok: false, errors: [{ field: "", message: e.message }], diff: "", live: [], restart: [] });
      config.ok = false;
    }
    updateConfigButtons();
  }

  function listInto(list, items, render_) {
    list.replaceChildren(...(items.length ? items.map(render_) : [el("li", { class: "muted", text: "none" })]));
  }

  function showCheck(answer) {
    const errors = answer.errors || [];
    listInto($("#config-errors"), errors, (e) => el("li", { class: "error" },
      e.field ? el("code", { text: e.field }) : "", e.field ? ": " : "", e.message));
    listInto($("#config-live"), answer.live || [], (f) => el("li", {}, el("code", { text: f })));
    listInto($("#config-restart"), answer.restart || [], (f) => el("li", {}, el("code", { text: f })));
    const diff = $("#config-diff");
    diff.replaceChildren(...(answer.diff ? answer.diff.split("\n").map((line) => el("span", {
      class: line.startsWith("+") && !line.startsWith("+++") ? "add"
        : (line.startsWith("-") && !line.startsWith("---") ? "del" : (line.startsWith("@@") ? "hunk" : "")),
      text: `${line}\n` })) : [document.createTextNode("no changes")]));
    if (errors.length) {
      config.verdict.textContent = `${errors.length} problem${errors.length > 1 ? "s" : ""}`;
      config.verdict.dataset.tone = "bad";
    } else {
      config.verdict.textContent = answer.diff ? "valid" : "";
      config.verdict.dataset.tone = "ok";
    }
  }

  async function applyOrRollback(path, body) {
    config.apply.disabled = config.rollback.disabled = true;
    config.busy = true;  // the file is about to change under the poll: it waits
    try {
      const answer = await api("POST", path, { ...body, base: config.version });
      const live = answer.live || [], restart = answer.restart || [];
      await loadConfig(`Applied. Live: ${live.join(", ") || "nothing"}. ` +
        (restart.length ? `Needs a restart: ${restart.join(", ")}.` : "Nothing needs a restart."));
      // what was applied stays listed beside the reloaded file (its check is empty: no edit)
      const field = (f) => el("li", {}, el("code", { text: f }));
      listInto($("#config-live"), live, field);
      listInto($("#config-restart"), restart, field);
      config.verdict.textContent = "applied";
      config.verdict.dataset.tone = "ok";
    } catch (e) {
      const errors = (e.data && e.data.errors) || [{ field: "", message: e.message }];
      showCheck({ ok: false, errors, diff: "", live: [], restart: [] });
      if (e.status === 409) showStale(e.message);  // the edit is kept; the file was not written
      updateConfigButtons();
    } finally {
      config.busy = false;
    }
  }
  config.apply.addEventListener("click", () => pending(config.apply,
    () => applyOrRollback("/api/config/apply", { text: config.text.value })));
  config.rollback.addEventListener("click", () => {
    if (window.confirm("Replace the file with the last good one?")) {
      pending(config.rollback, () => applyOrRollback("/api/config/rollback", {}));
    }
  });
  $("#config-reload").addEventListener("click", () => loadConfig("Reloaded the file as it is on disk."));

  // ---- catalogue tab -------------------------------------------------------------------------

  const catalogue = { room: $("#catalogue-room"), grid: $("#catalogue-grid"), note: $("#catalogue-note"), loadedFor: null };
  loaders.catalogue = () => {
    if (!catalogue.room.options.length) {
      for (const id of Object.keys(state.rooms || {})) catalogue.room.append(el("option", { value: id, text: id }));
    }
    if (catalogue.loadedFor !== catalogue.room.value) loadCatalogue();
  };
  catalogue.room.addEventListener("change", loadCatalogue);

  async function loadCatalogue() {
    const room = catalogue.room.value;
    catalogue.loadedFor = room;
    catalogue.grid.replaceChildren();
    catalogue.note.textContent = "loading…";
    try {
      const answer = await api("GET", `/api/catalogue?room=${encodeURIComponent(room)}`);
      catalogue.note.textContent = `${answer.works.length} works`;
      catalogue.grid.replaceChildren(...answer.works.map((work) => workCard(room, work)));
    } catch (e) { catalogue.note.textContent = e.message; }
  }

  function workCard(room, work) {
    const status = el("div", { class: "work-status", role: "status" });  // the preview
    const playing = el("div", { class: "work-status", role: "status", "data-testid": `played-${work.id}` });
    const preview = el("button", { type: "button", text: "Preview", "data-testid": `preview-${work.id}` });
    const play = el("button", { type: "button", text: "Play in room", "data-testid": `play-${work.id}` });
    const card = el("div", { class: "work card", "data-testid": "work-card", "data-work": work.id },
      el("img", { src: work.thumb, alt: `thumbnail of ${work.title || work.id}`, loading: "lazy" }),
      el("div", { class: "title", text: work.title || work.id, title: work.title || work.id, dir: "auto" }),
      el("div", { class: "artist", text: [work.artist, work.year].filter(Boolean).join(", "), dir: "auto" }),
      el("div", { class: "buttons" }, preview, play), status, playing);
    preview.addEventListener("click", () => pending(preview, () => previewWork(room, work, status, preview)));
    play.addEventListener("click", () => pending(play, async () => {
      try {
        const answer = await api("POST", `/api/rooms/${encodeURIComponent(room)}/play`, { artwork_id: work.id, seconds: 60 });
        playing.textContent = `showing in ${answer.room} until ${clockTime(answer.until)}`;
      } catch (e) { playing.textContent = e.message; }
    }));
    return card;
  }

  async function previewWork(room, work, status, button) {
    button.disabled = true;
    const path = `/api/catalogue/${encodeURIComponent(room)}/${encodeURIComponent(work.id)}/preview`;
    try {
      let answer = await api("POST", path, {});
      while (answer.state === "rendering") {
        status.textContent = "rendering…";
        await new Promise((resolve) => setTimeout(resolve, 1000));
        answer = await api("POST", path, {});
      }
      if (answer.state !== "ready") throw new Error(answer.error || "the preview failed");
      const audio = el("audio", { controls: true, src: answer.url, "data-testid": `audio-${work.id}` });
      status.replaceChildren(audio);
      audio.play().catch(() => {});  // autoplay may be refused: the controls remain
    } catch (e) { status.textContent = e.message; }
    button.disabled = false;
  }

  async function backToCamera(room) {
    const showing = ((state.rooms || {})[room] || {}).showing;
    const error = rooms.get(room).parts["showing-error"];  // beside the button: the room stays on the work
    error.textContent = "";
    try {
      await api("POST", `/api/rooms/${encodeURIComponent(room)}/play`,
        { artwork_id: showing ? showing.artwork_id : "", seconds: 0 });
    } catch (e) { error.textContent = `not back to the camera: ${e.message}`; }
  }

  // ---- events tab ----------------------------------------------------------------------------

  const filters = { room: $("#events-room"), role: $("#events-role"), routine: $("#events-routine") };
  // Records a running installation writes many times a second: they bury what went wrong.
  const ROUTINE_KINDS = new Set(["chunk", "chunk_received", "chunk_started", "stats", "capture_fps",
    "heartbeat"]);
  for (const select of Object.values(filters)) select.addEventListener("change", renderEvents);

  function refreshFilterOptions() {
    for (const [select, names] of [[filters.room, seenRooms], [filters.role, seenRoles]]) {
      const have = new Set([...select.options].map((o) => o.value));
      for (const name of [...names].sort()) if (!have.has(name)) select.append(el("option", { value: name, text: name }));
    }
  }

  function addEvent(record, rerender = true) {
    events.push(record);
    if (events.length > MAX_EVENTS) events.splice(0, events.length - MAX_EVENTS);
    if (record.role) seenRoles.add(record.role);
    if (record.room) seenRooms.add(record.room);
    if (rerender) { refreshFilterOptions(); renderEvents(); }
  }

  const BAD_KINDS = /(^|_)(fail|refus|hang|hung|error|disk_full|crash|unavailable|underflow|silent|killed)/;
  function renderEvents() {
    const room = filters.room.value, role = filters.role.value, hide = filters.routine.checked;
    const shown = events.filter((e) => (!room || e.room === room) && (!role || e.role === role)
      && !(hide && ROUTINE_KINDS.has(e.kind))).reverse();
    $("#events-count").textContent = `${shown.length} of ${events.length}`;
    $("#events-body").replaceChildren(...shown.map((e) => {
      const { time, kind, role: r, room: rm, ...rest } = e;
      const details = Object.entries(rest).map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join("  ");
      const row = el("tr", { "data-testid": "event-row" },
        el("td", { class: "num", text: time ? clockTime(time) : "" }), el("td", { text: kind || "" }),
        el("td", { text: r || "" }), el("td", { text: rm || "" }), el("td", { class: "details", text: details, title: details }));
      if (BAD_KINDS.test(kind || "")) row.dataset.tone = "bad";
      return row;
    }));
  }

  async function loadEvents() {
    try {
      const answer = await api("GET", `/api/events?limit=${MAX_EVENTS}`);
      const live = events.splice(0);  // SSE records that arrived first stay after the history
      const last = answer.events.length ? answer.events[answer.events.length - 1].time : 0;
      for (const e of answer.events) addEvent(e, false);
      for (const e of live) if (!(e.time <= last)) addEvent(e, false);
      refreshFilterOptions();
      renderEvents();
    } catch (e) { $("#events-count").textContent = e.message; }
  }

  // ---- start -----------------------------------------------------------------------------------

  async function start() {
    if (!state) {  // the page was opened without the inlined state (e.g. as a file)
      try { state = await api("GET", "/api/state"); } catch (e) {
        fresh.link = "offline";
        setConnection(e.message, "bad");
        return;
      }
      noteFresh(state);
    }
    seedSpectrograms();
    render();
    connect();
    loadEvents();
    const wanted = (location.hash || "").slice(1);
    if (["config", "catalogue", "events"].includes(wanted)) showTab(wanted);
  }
  start();
})();
