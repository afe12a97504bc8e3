// The rnnlab page: microphone streaming over a WebSocket, file transcription, slots, G2P and the look-inside plots.
//
// window.rnnlab holds what the page has seen (finals, partials, keywords, samples sent, errors) so that a test
// can compare it with what the server sent.
"use strict";

const $ = (id) => document.getElementById(id);
const state = (window.rnnlab = {
  ready: false,
  models: {},
  modes: {},
  finals: [],
  lastFinal: null,
  partials: 0,
  keywords: [],
  samplesSent: 0,
  errors: [],
  inspected: 0,
  lastInspect: null,
  lastRecording: null,
});
const MODE_NAMES = { asr: "Transcribe", keywords: "Keywords", digits: "Digits" };
const HIDDEN_LABELS = new Set(["unknown", "silence", "_unknown_", "_silence_"]);

// -- helpers ------------------------------------------------------------------------------------------------------
async function api(path, options) {
  const res = await fetch(path, options);
  let body;
  try {
    body = await res.json();
  } catch (err) {
    body = { error: `HTTP ${res.status}` };
  }
  if (!res.ok) throw new Error(body.error || `HTTP ${res.status}`);
  return body;
}

function postJson(path, payload) {
  return api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(payload) });
}

function setStatus(el, text, isError = false) {
  el.textContent = text;
  el.classList.toggle("error", isError);
  if (isError) state.errors.push(text);
}

function showText(el, text, emptyText) {
  el.textContent = text || emptyText;
  el.classList.toggle("empty", !text);
}

function symbolName(s) {
  if (s === "<blank>") return "∅";
  if (s === " ") return "␣";
  return s;
}

function slotColour(name) {
  let h = 0;
  for (const c of name) h = (h * 31 + c.charCodeAt(0)) % 360;
  return { bg: `hsl(${h} 75% 88%)`, fg: `hsl(${h} 65% 24%)` };
}

function wavBlob(chunks, rate) {
  const n = chunks.reduce((a, c) => a + c.length, 0);
  const buf = new ArrayBuffer(44 + 2 * n);
  const v = new DataView(buf);
  const text = (o, s) => [...s].forEach((c, i) => v.setUint8(o + i, c.charCodeAt(0)));
  text(0, "RIFF");
  v.setUint32(4, 36 + 2 * n, true);
  text(8, "WAVEfmt ");
  v.setUint32(16, 16, true);
  v.setUint16(20, 1, true);
  v.setUint16(22, 1, true);
  v.setUint32(24, rate, true);
  v.setUint32(28, 2 * rate, true);
  v.setUint16(32, 2, true);
  v.setUint16(34, 16, true);
  text(36, "data");
  v.setUint32(40, 2 * n, true);
  let o = 44;
  for (const c of chunks) for (let i = 0; i < c.length; i++, o += 2) v.setInt16(o, c[i], true);
  return new Blob([buf], { type: "audio/wav" });
}

// -- start-up: what is loaded decides what is shown ------------------------------------------------------------
function ctcLoaded() {
  return ["asr", "stream"].some((r) => state.models[r] && state.models[r].ctc);
}

async function init() {
  let info;
  try {
    info = await api("/api/models");
  } catch (err) {
    setStatus($("mic-status"), `Cannot reach the server: ${err.message}`, true);
    return;
  }
  state.models = info.models;
  state.modes = info.modes;
  const list = $("models");
  for (const [role, m] of Object.entries(info.models)) {
    const li = document.createElement("li");
    const b = document.createElement("b");
    b.textContent = role;
    li.append(b, ` ${m.name}`);
    li.title = m.task || "";
    list.append(li);
  }
  const has = {
    mic: Object.keys(info.modes).length > 0,
    transcribe: Boolean(info.models.asr || info.models.stream),
    slots: Boolean(info.models.slots),
    g2p: Boolean(info.models.g2p),
    inspect: ctcLoaded(),
  };
  document.querySelectorAll("[data-needs]").forEach((el) => el.classList.toggle("hidden", !has[el.dataset.needs]));
  const select = $("mode");
  for (const mode of Object.keys(info.modes)) {
    const opt = document.createElement("option");
    opt.value = mode;
    opt.textContent = MODE_NAMES[mode] || mode;
    select.append(opt);
  }
  select.addEventListener("change", showMode);
  showMode();
  const l = info.limits;
  $("limits").textContent = `Limits: ${(l.max_upload_bytes / 1048576).toFixed(0)} MB files, ${l.max_audio_seconds} s of ` +
    `audio, ${l.max_text_chars} characters, ${l.max_streams} streams`;
  state.ready = true;
}

function showMode() {
  const mode = $("mode").value;
  const spec = state.modes[mode] || {};
  const keywords = spec.kind === "keywords";
  $("transcript-box").classList.toggle("hidden", keywords);
  $("keyword-box").classList.toggle("hidden", !keywords);
  const grid = $("keyword-grid");
  grid.textContent = "";
  for (const label of spec.labels || []) {
    if (HIDDEN_LABELS.has(label)) continue;
    const cell = document.createElement("div");
    cell.id = `kw-${label}`;
    cell.textContent = label;
    grid.append(cell);
  }
}

// -- microphone ------------------------------------------------------------------------------------------------
let rec = null;

function wsUrl(mode) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${location.host}/ws/stream?mode=${encodeURIComponent(mode)}`;
}

async function startRecording() {
  if (rec) return;
  const mode = $("mode").value;
  const spec = state.modes[mode] || {};
  const status = $("mic-status");
  $("record").disabled = true;
  showText($("transcript"), "", "Listening…");
  $("transcript").classList.remove("partial");
  $("keyword").textContent = "none yet";
  const r = (rec = { mode, spec, chunks: [], final: false, failed: false });
  try {
    if (!navigator.mediaDevices || !window.AudioWorkletNode) {
      throw new Error("this browser gives no microphone here (use localhost or https)");
    }
    r.media = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    r.ctx = new AudioContext();
    await r.ctx.audioWorklet.addModule("/static/pcm-worklet.js");
    r.rate = Math.min(16000, r.ctx.sampleRate);
    r.ws = new WebSocket(wsUrl(mode));
    r.ws.binaryType = "arraybuffer";
    await new Promise((resolve, reject) => {
      r.ws.onopen = resolve;
      r.ws.onerror = () => reject(new Error("cannot open the stream to the server"));
    });
    r.ws.onmessage = (event) => onStreamMessage(r, JSON.parse(event.data));
    r.ws.onclose = () => onStreamClose(r);
    r.ws.send(JSON.stringify({ type: "start", sample_rate: r.rate, format: "pcm16" }));
    r.node = new AudioWorkletNode(r.ctx, "pcm-worklet", { processorOptions: { targetRate: r.rate, frameMs: 200 } });
    r.node.port.onmessage = (event) => {
      if (r.ws.readyState !== WebSocket.OPEN) return;
      if (event.data === "flushed") {
        r.ws.send(JSON.stringify({ type: "stop" }));
        return;
      }
      const frame = new Int16Array(event.data);
      r.chunks.push(frame);
      state.samplesSent += frame.length;
      r.ws.send(frame.buffer);
    };
    r.ctx.createMediaStreamSource(r.media).connect(r.node);
    r.node.connect(r.ctx.destination); // the worklet outputs silence; connected so that it is pulled
    $("stop").disabled = false;
    $("record").classList.add("recording");
    setStatus(status, `Listening (${MODE_NAMES[mode] || mode}, ${r.rate / 1000} kHz)…`);
  } catch (err) {
    setStatus(status, err.message || String(err), true);
    cleanup(r);
  }
}

function stopRecording() {
  const r = rec;
  if (!r || !r.node) return;
  $("stop").disabled = true;
  setStatus($("mic-status"), "Finishing…");
  r.node.port.postMessage("flush"); // the worklet sends its last frame, then "flushed" -> {"type": "stop"}
  if (r.media) r.media.getTracks().forEach((t) => t.stop());
}

function cleanup(r) {
  if (r.media) r.media.getTracks().forEach((t) => t.stop());
  if (r.ctx && r.ctx.state !== "closed") r.ctx.close();
  if (r.ws && r.ws.readyState <= WebSocket.OPEN) r.ws.close();
  if (rec === r) rec = null;
  $("record").disabled = false;
  $("record").classList.remove("recording");
  $("stop").disabled = true;
}

function onStreamMessage(r, msg) {
  const transcript = $("transcript");
  if (msg.type === "partial") {
    state.partials += 1;
    transcript.textContent = msg.text;
    transcript.classList.remove("empty");
    transcript.classList.add("partial");
  } else if (msg.type === "keyword") {
    state.keywords.push(msg);
    $("keyword").textContent = `${msg.label} (${msg.score.toFixed(2)} at ${msg.time.toFixed(2)} s)`;
    const cell = $(`kw-${msg.label}`);
    if (cell) {
      cell.classList.add("lit");
      clearTimeout(cell.timer);
      cell.timer = setTimeout(() => cell.classList.remove("lit"), 1500);
    }
  } else if (msg.type === "final") {
    r.final = true;
    state.finals.push(msg.text);
    state.lastFinal = msg.text;
    state.lastRecording = { rate: r.rate, samples: r.chunks.flatMap((c) => Array.from(c)) };
    transcript.classList.remove("partial");
    transcript.dataset.final = msg.text;
    showText(transcript, msg.text, "(nothing recognised)");
    setStatus($("mic-status"), r.spec.kind === "keywords" ? `Done: ${(msg.detections || []).length} detection(s).` : "Done.");
    const model = state.models[r.spec.role];
    if (r.spec.kind !== "keywords" && model && model.ctc && r.chunks.length) {
      inspect(wavBlob(r.chunks, r.rate), "recording", r.spec.role); // the model that gave this transcript
    }
  } else if (msg.type === "error") {
    r.failed = true;
    setStatus($("mic-status"), `Error: ${msg.error}`, true);
  } else if (msg.type === "ready") {
    setStatus($("mic-status"), `Listening (${MODE_NAMES[r.mode] || r.mode}, ${msg.sample_rate / 1000} kHz)…`);
  }
}

function onStreamClose(r) {
  if (!r.final && !r.failed) setStatus($("mic-status"), "The stream closed before its final result.", true);
  cleanup(r);
}

// -- file -------------------------------------------------------------------------------------------------------
async function handleFile(file) {
  if (!file) return;
  const status = $("file-status");
  const out = $("file-out");
  setStatus(status, `Transcribing ${file.name}…`);
  const form = new FormData();
  form.append("file", file);
  try {
    const r = await api(`/api/transcribe?beam=${$("beam").value}`, { method: "POST", body: form });
    out.textContent = r.text || "(nothing recognised)";
    out.classList.toggle("empty", !r.text);
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = `${file.name} · ${r.duration.toFixed(2)} s of audio · RTF ${r.rtf.toFixed(3)} · beam ${r.beam}` +
      ` · ${r.model} model`;
    out.append(meta);
    setStatus(status, "");
    if (ctcLoaded()) inspect(file, file.name);
  } catch (err) {
    showText(out, "", "No transcript.");
    setStatus(status, err.message, true);
  }
}

// -- slots and G2P ------------------------------------------------------------------------------------------------
async function tagSlots(event) {
  event.preventDefault();
  const out = $("slots-out");
  try {
    const r = await postJson("/api/slots", { text: $("slots-input").value });
    out.textContent = "";
    out.classList.remove("empty");
    let i = 0;
    const starts = new Map(r.spans.map((s) => [s.start, s]));
    while (i < r.words.length) {
      const span = starts.get(i);
      if (span) {
        const el = document.createElement("span");
        const c = slotColour(span.slot);
        el.className = "span";
        el.dataset.slot = span.slot;
        el.style.background = c.bg;
        el.style.color = c.fg;
        el.textContent = span.text;
        const small = document.createElement("small");
        small.textContent = span.slot;
        el.append(small);
        out.append(el);
        i = span.end;
      } else {
        const w = document.createElement("span");
        w.className = "word";
        w.textContent = r.words[i];
        out.append(w);
        i += 1;
      }
    }
    const intent = document.createElement("div");
    intent.className = "intent";
    intent.id = "slots-intent";
    intent.innerHTML = "intent: <b></b>";
    intent.querySelector("b").textContent = r.intent;
    out.append(intent);
  } catch (err) {
    out.textContent = `Error: ${err.message}`;
    out.classList.add("empty");
    state.errors.push(err.message);
  }
}

async function pronounce(event) {
  event.preventDefault();
  const out = $("g2p-out");
  try {
    const r = await postJson("/api/g2p", { word: $("g2p-input").value });
    showText(out, r.phonemes, "(no phonemes)");
  } catch (err) {
    showText(out, "", `Error: ${err.message}`);
    state.errors.push(err.message);
  }
}

// -- look inside ----------------------------------------------------------------------------------------------------
let inspected = null;

async function inspect(blob, name, role) {
  const status = $("inspect-status");
  setStatus(status, `Looking inside (${name})…`);
  const form = new FormData();
  form.append("file", blob, blob.name || `${name}.wav`);
  try {
    const r = await api(role ? `/api/inspect?model=${role}` : "/api/inspect", { method: "POST", body: form });
    inspected = r;
    state.inspected += 1;
    state.lastInspect = { frames: r.frames, text: r.text, gates: r.gates.available };
    setStatus(status, `${name}: ${r.frames} frames at ${r.frame_rate.toFixed(1)} per second (${r.model} model), ` +
      `greedy text “${r.text}”. Move the pointer over the posteriors to read a frame.`);
    drawPosteriors(r);
    drawGates(r);
  } catch (err) {
    setStatus(status, `Look inside: ${err.message}`, true);
  }
}

function prepare(canvas) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth;
  const h = Number(canvas.getAttribute("height"));
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(h * dpr);
  canvas.style.height = `${h}px`;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  ctx.font = "11px system-ui, sans-serif";
  return { ctx, w, h };
}

function heatImage(rows, cols, value, colour) {
  const off = document.createElement("canvas");
  off.width = cols;
  off.height = rows;
  const octx = off.getContext("2d");
  const img = octx.createImageData(cols, rows);
  for (let y = 0; y < rows; y++) {
    for (let x = 0; x < cols; x++) {
      const [r, g, b] = colour(value(y, x));
      const o = 4 * (y * cols + x);
      img.data[o] = r;
      img.data[o + 1] = g;
      img.data[o + 2] = b;
      img.data[o + 3] = 255;
    }
  }
  octx.putImageData(img, 0, 0);
  return off;
}

const blues = (p) => [255 - 226 * p, 255 - 200 * p, 255 - 115 * p];
function viridis(t) {
  const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  const x = Math.max(0, Math.min(1, t)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const f = x - i;
  return stops[i].map((a, k) => a + (stops[i + 1][k] - a) * f);
}

function timeAxis(ctx, left, width, y, frames, rate) {
  const seconds = frames / rate;
  const step = seconds > 20 ? 5 : seconds > 8 ? 2 : seconds > 3 ? 1 : 0.5;
  ctx.fillStyle = "#667085";
  ctx.textAlign = "center";
  for (let s = 0; s <= seconds + 1e-9; s += step) {
    const x = left + (s / seconds) * width;
    ctx.fillRect(x, y, 1, 4);
    ctx.fillText(`${s.toFixed(step < 1 ? 1 : 0)} s`, x, y + 15);
  }
}

function drawPosteriors(r) {
  const { ctx, w, h } = prepare($("posteriors"));
  const left = 40;
  const top = 22;
  const bottom = 22;
  const pw = w - left - 8;
  const ph = h - top - bottom;
  const V = r.symbols.length;
  const T = r.frames;
  if (!T) return;
  // Square-root scale: the blank's and the letters' smaller probabilities stay visible beside the peaks.
  const img = heatImage(V, T, (y, x) => Math.sqrt(r.posteriors[x][y]), blues);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(img, left, top, pw, ph);
  ctx.strokeStyle = "#e3e6eb";
  ctx.strokeRect(left, top, pw, ph);
  ctx.fillStyle = "#1d232b";
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  const rowH = ph / V;
  ctx.font = `${Math.min(11, Math.max(7, rowH - 1))}px ui-monospace, monospace`;
  for (let v = 0; v < V; v++) ctx.fillText(symbolName(r.symbols[v]), left - 5, top + (v + 0.5) * rowH);
  // The most probable symbol of each run of frames (blank runs left out): CTC's spikes, read as text.
  ctx.textAlign = "center";
  ctx.font = "bold 12px ui-monospace, monospace";
  const colW = pw / T;
  let start = 0;
  for (let t = 1; t <= T; t++) {
    if (t === T || r.argmax[t] !== r.argmax[start]) {
      if (r.argmax[start] !== r.blank) {
        ctx.fillStyle = `rgba(29, 53, 140, ${0.5 + 0.5 * r.argmax_prob[start]})`;
        ctx.fillText(symbolName(r.symbols[r.argmax[start]]), left + ((start + t) / 2) * colW, top / 2);
      }
      start = t;
    }
  }
  ctx.font = "11px system-ui, sans-serif";
  ctx.textBaseline = "alphabetic";
  timeAxis(ctx, left, pw, top + ph, T, r.frame_rate);
  $("posteriors").onmousemove = (event) => {
    const x = event.offsetX - left;
    if (x < 0 || x >= pw) return;
    const t = Math.min(T - 1, Math.floor((x / pw) * T));
    const tops = r.top[t].map(([i, p]) => `${symbolName(r.symbols[i])} ${p.toFixed(2)}`).join(" · ");
    $("inspect-hover").textContent = `frame ${t} (${(t / r.frame_rate).toFixed(2)} s): ${tops}`;
  };
}

function drawGates(r) {
  const { ctx, w, h } = prepare($("gates"));
  const g = r.gates;
  if (!g.available) {
    ctx.fillStyle = "#667085";
    ctx.fillText(`No gates to show: ${g.reason}.`, 12, 24);
    return;
  }
  const left = 40;
  const pw = w - left - 8;
  const lineTop = 8;
  const lineH = 110;
  const mapTop = lineTop + lineH + 44;
  const mapH = h - mapTop - 22;
  const T = g.mean.forget_gate.length;
  ctx.strokeStyle = "#e3e6eb";
  ctx.strokeRect(left, lineTop, pw, lineH);
  ctx.fillStyle = "#667085";
  ctx.textAlign = "right";
  ctx.fillText("1", left - 5, lineTop + 8);
  ctx.fillText("0", left - 5, lineTop + lineH);
  const series = [["input_gate", "#2f5fd0", "input"], ["forget_gate", "#e07b28", "forget"], ["output_gate", "#1f8f5a", "output"]];
  series.forEach(([key, colour, name], k) => {
    const ys = g.mean[key];
    ctx.beginPath();
    ys.forEach((v, t) => {
      const x = left + ((t + 0.5) / T) * pw;
      const y = lineTop + (1 - v) * lineH;
      if (t === 0) ctx.moveTo(x, y);
      else ctx.lineTo(x, y);
    });
    ctx.strokeStyle = colour;
    ctx.lineWidth = 1.6;
    ctx.stroke();
    ctx.fillStyle = colour;
    ctx.textAlign = "left";
    ctx.fillText(`— ${name} gate (mean)`, left + 8 + k * 140, lineTop + lineH + 16);
  });
  const units = g.units;
  const img = heatImage(units, T, (y, x) => g.forget_units[x][y], viridis);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(img, left, mapTop, pw, mapH);
  ctx.fillStyle = "#667085";
  ctx.textAlign = "right";
  ctx.fillText("unit 0", left - 4, mapTop + 9);
  ctx.fillText(`${units - 1}`, left - 4, mapTop + mapH);
  ctx.textAlign = "left";
  ctx.fillText(`forget gate, units 0–${units - 1} of ${g.hidden_size} (dark = closed, yellow = open)`, left + 4,
    mapTop - 6);
  timeAxis(ctx, left, pw, mapTop + mapH, T, r.frame_rate);
}

// -- wiring -------------------------------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  $("record").addEventListener("click", startRecording);
  $("stop").addEventListener("click", stopRecording);
  $("file-input").addEventListener("change", (e) => handleFile(e.target.files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    handleFile(e.dataTransfer.files[0]);
  });
  $("slots-form").addEventListener("submit", tagSlots);
  $("g2p-form").addEventListener("submit", pronounce);
  window.addEventListener("resize", () => {
    if (inspected) {
      drawPosteriors(inspected);
      drawGates(inspected);
    }
  });
  init();
});
