// Streaming OCR page: camera or video file -> JPEG frames over /v1/stream (protocol v1,
// binary frames) -> boxes and text drawn over the live picture, and the stream's text events
// (appeared / changed / gone) as a list of the texts in view and a log. No dependencies.
"use strict";

const MAX_IN_FLIGHT = 4; // frames sent and not answered; a live picture drops frames past it
const JPEG_QUALITY = 0.85;
const BACKOFF_MS = [500, 10000]; // first and largest reconnect delay, before jitter
const EVENT_LOG_SIZE = 100;
const EVENT_MARK = { appeared: "+", changed: "~", gone: "-" };

const $ = (id) => document.getElementById(id);
const video = $("video");
const overlay = $("overlay");
const grab = document.createElement("canvas");
const encoder = new TextEncoder();

const state = {
  ws: null,
  wanted: false, // the user asked to be connected
  attempt: 0,
  retryTimer: null,
  sendTimer: null,
  encoding: false,
  nextFrameId: 0,
  inFlight: new Map(), // frame_id -> {sentAt, width, height}
  sentTimes: [],
  latencies: [],
  counts: { read: 0, skipped: 0, errors: 0 },
  tracks: new Map(), // track_id -> the last appeared/changed event: the texts in view
  streamId: `web-${Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, "0")).join("")}`,
};

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function setConn(label) {
  $("conn").textContent = label;
  $("conn").dataset.state = label;
  $("connect").textContent = state.wanted ? "Disconnect" : "Connect";
}

function targetFps() {
  const fps = Number($("fps").value);
  return fps > 0 ? fps : 5;
}

// --- source -------------------------------------------------------------------

async function listCameras() {
  const select = $("camera");
  const chosen = select.value;
  const cameras = (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === "videoinput");
  select.replaceChildren(
    ...cameras.map((d, i) => new Option(d.label || `camera ${i + 1}`, d.deviceId, false, d.deviceId === chosen)),
  );
}

async function startSource() {
  if (video.srcObject) video.srcObject.getTracks().forEach((track) => track.stop());
  const kind = document.querySelector("input[name=source]:checked").value;
  if (kind === "camera") {
    if (!navigator.mediaDevices?.getUserMedia) throw new Error("This page needs https (or localhost) to use a camera.");
    const deviceId = $("camera").value;
    video.srcObject = await navigator.mediaDevices.getUserMedia({
      video: deviceId ? { deviceId: { exact: deviceId } } : true,
      audio: false,
    });
    await listCameras();
  } else {
    const file = $("file").files[0];
    if (!file) throw new Error("Choose a video file first.");
    video.srcObject = null;
    video.src = URL.createObjectURL(file);
    video.loop = true;
  }
  await video.play();
}

// --- sending ------------------------------------------------------------------

function encodeFrame(frameId, image) {
  // 4-byte big-endian header length, the JSON header, then the image bytes.
  const header = encoder.encode(JSON.stringify({ frame_id: frameId, ts: Date.now() / 1000 }));
  const message = new Uint8Array(4 + header.length + image.length);
  new DataView(message.buffer).setUint32(0, header.length, false);
  message.set(header, 4);
  message.set(image, 4 + header.length);
  return message;
}

async function sendFrame() {
  const ws = state.ws;
  if (!ws || ws.readyState !== WebSocket.OPEN || state.encoding) return;
  if (video.readyState < HTMLMediaElement.HAVE_CURRENT_DATA || state.inFlight.size >= MAX_IN_FLIGHT) return;
  state.encoding = true;
  try {
    const [width, height] = [video.videoWidth, video.videoHeight];
    grab.width = width;
    grab.height = height;
    grab.getContext("2d").drawImage(video, 0, 0, width, height);
    const blob = await new Promise((resolve) => grab.toBlob(resolve, "image/jpeg", JPEG_QUALITY));
    if (!blob || ws !== state.ws || ws.readyState !== WebSocket.OPEN) return;
    const frameId = state.nextFrameId++;
    ws.send(encodeFrame(frameId, new Uint8Array(await blob.arrayBuffer())));
    state.inFlight.set(frameId, { sentAt: performance.now(), width, height });
    state.sentTimes.push(performance.now());
  } finally {
    state.encoding = false;
  }
}

function startSending() {
  clearInterval(state.sendTimer);
  state.sendTimer = setInterval(sendFrame, 1000 / targetFps());
}

// --- answers ------------------------------------------------------------------

function drawLines(lines, frame) {
  overlay.width = frame.width; // the overlay is scaled with the video: draw in frame pixels
  overlay.height = frame.height;
  const ctx = overlay.getContext("2d");
  const size = Math.max(14, Math.round(frame.height / 28));
  ctx.lineWidth = Math.max(2, size / 8);
  ctx.font = `${size}px system-ui, sans-serif`;
  ctx.textBaseline = "bottom";
  for (const line of lines) {
    ctx.strokeStyle = "#3ddc84";
    ctx.beginPath();
    line.box.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    ctx.closePath();
    ctx.stroke();
    const [x, y] = line.box[0];
    const width = ctx.measureText(line.text).width;
    ctx.fillStyle = "rgba(0, 0, 0, 0.7)";
    ctx.fillRect(x, y - size - 4, width + 8, size + 4);
    ctx.fillStyle = "#fff";
    ctx.fillText(line.text, x + 4, y - 2);
  }
  $("text").textContent = lines.map((line) => line.text).join("\n");
}

function onAnswer(msg) {
  const frame = state.inFlight.get(msg.frame_id);
  state.inFlight.delete(msg.frame_id);
  if (msg.type === "error") {
    state.counts.errors++;
    showError(`frame ${msg.frame_id}: ${msg.code}: ${msg.message}`);
    return;
  }
  if (msg.status === "skipped") state.counts.skipped++;
  else {
    state.counts.read++;
    if (frame) state.latencies = [...state.latencies.slice(-49), performance.now() - frame.sentAt];
  }
  // A read frame, or a duplicate that carries the lines of the frame it repeats.
  if (frame && msg.lines) drawLines(msg.lines, frame);
}

function onTextEvent(msg) {
  if (msg.event === "gone") state.tracks.delete(msg.track_id);
  else state.tracks.set(msg.track_id, msg);
  $("tracks").replaceChildren(
    ...[...state.tracks.values()].map((track) => {
      const item = document.createElement("li");
      item.dataset.track = track.track_id;
      item.append(span("track", `[${track.track_id}]`), span("text", track.text));
      if (track.score !== undefined) item.append(span("score", track.score.toFixed(2)));
      return item;
    }),
  );
  // The log, newest first: "+ [7] SN-48213 (0.97) @frame 120", "~ [7] A -> B", "- [7] B".
  const change = msg.event === "changed" ? `${msg.previous} -> ${msg.text}` : msg.text;
  const score = msg.score !== undefined && msg.event !== "gone" ? ` (${msg.score.toFixed(2)})` : "";
  const entry = document.createElement("li");
  entry.dataset.event = msg.event;
  entry.append(`${EVENT_MARK[msg.event] ?? "?"} `, span("track", `[${msg.track_id}]`));
  entry.append(` ${change}${score} @frame ${msg.frame_id}`);
  $("events").prepend(entry);
  while ($("events").childElementCount > EVENT_LOG_SIZE) $("events").lastElementChild.remove();
}

function span(className, text) {
  const element = document.createElement("span");
  element.className = className;
  element.textContent = text;
  return element;
}

function onMessage(event) {
  const msg = JSON.parse(event.data);
  if (msg.type === "result" || msg.type === "error") onAnswer(msg);
  else if (msg.type === "text") onTextEvent(msg);
  else if (msg.type === "config") $("fps").value = msg.fps;
  updateStats();
}

function updateStats() {
  const now = performance.now();
  state.sentTimes = state.sentTimes.filter((t) => now - t < 1000);
  const sorted = [...state.latencies].sort((a, b) => a - b);
  const ms = (value) => (value === undefined ? "-" : `${Math.round(value)} ms`);
  $("stat-fps").textContent = state.sentTimes.length;
  $("stat-latency").textContent = ms(state.latencies.at(-1));
  $("stat-p50").textContent = ms(sorted[Math.floor(sorted.length / 2)]);
  $("stat-read").textContent = state.counts.read;
  $("stat-skipped").textContent = state.counts.skipped;
  $("stat-errors").textContent = state.counts.errors;
  $("stat-inflight").textContent = state.inFlight.size;
  $("stat-stream").textContent = state.streamId;
}

// --- connection ---------------------------------------------------------------

function connect() {
  clearTimeout(state.retryTimer);
  // events=1: the stream's text events too (also on a reconnect, which may re-announce the texts).
  const params = new URLSearchParams({ stream_id: state.streamId, fps: String(targetFps()), events: "1" });
  const token = $("token").value.trim();
  if (token) params.set("token", token); // browsers cannot set an Authorization header here
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/v1/stream?${params}`);
  state.ws = ws;
  setConn("connecting");
  ws.onopen = () => {
    state.attempt = 0;
    showError("");
    setConn("connected");
    startSending();
  };
  ws.onmessage = onMessage;
  ws.onclose = (event) => onClose(ws, event);
}

function onClose(ws, event) {
  if (ws !== state.ws) return;
  state.ws = null;
  clearInterval(state.sendTimer);
  state.inFlight.clear(); // a live picture moves on: unanswered frames are not re-sent
  if (!state.wanted) return setConn("disconnected");
  if (event.code === 1008) {
    state.wanted = false;
    showError(`The server refused the stream (1008 ${event.reason || "policy violation"}): check the token.`);
    return setConn("refused");
  }
  // Jittered exponential backoff; the same stream_id resumes the stream.
  const delay = Math.min(BACKOFF_MS[1], BACKOFF_MS[0] * 2 ** state.attempt++) * (0.5 + Math.random() / 2);
  const hint = event.code === 1006 ? " (the server is unreachable, or refused the handshake: check the token)" : "";
  showError(`Connection lost (code ${event.code}${event.reason ? `: ${event.reason}` : ""})${hint}; ` +
    `reconnecting in ${(delay / 1000).toFixed(1)} s.`);
  setConn("reconnecting");
  state.retryTimer = setTimeout(connect, delay);
}

function disconnect() {
  state.wanted = false;
  clearTimeout(state.retryTimer);
  if (state.ws) state.ws.close(1000);
  else setConn("disconnected");
}

// --- wiring -------------------------------------------------------------------

$("start").addEventListener("click", () => startSource().catch((err) => showError(`Source: ${err.message}`)));
$("connect").addEventListener("click", () => {
  if (state.wanted) return disconnect();
  state.wanted = true;
  connect();
});
$("fps").addEventListener("change", () => {
  if (state.ws?.readyState !== WebSocket.OPEN) return;
  state.ws.send(JSON.stringify({ type: "config", fps: targetFps() }));
  startSending();
});
setInterval(updateStats, 500);
updateStats();
