"""The page `GET /` serves: drop photos, see each score and a histogram of the scores so far.

Self-contained (inline CSS and plain JavaScript, a canvas for the histogram): nothing is fetched from
outside the server, which may run where there is no internet.
"""

PAGE_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>grmp-iqa: image quality</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #222; padding: 0 1rem; }
  h1 { font-size: 1.4rem; margin-bottom: .2rem; }
  #model { color: #666; font-size: .9rem; margin-bottom: 1rem; }
  #drop { display: block; border: 2px dashed #888; border-radius: 8px; padding: 2rem; text-align: center; cursor: pointer;
          background: #fafafa; }
  #drop.over { background: #e8f0fe; border-color: #3367d6; }
  #layout { display: flex; gap: 1.5rem; margin-top: 1.5rem; flex-wrap: wrap; }
  #list { flex: 1 1 26rem; }
  #side { flex: 0 0 22rem; }
  table { border-collapse: collapse; width: 100%; }
  td, th { padding: .3rem .4rem; border-bottom: 1px solid #eee; text-align: left; font-size: .9rem; }
  td img { width: 56px; height: 56px; object-fit: cover; border-radius: 4px; display: block; }
  .score { font-weight: 600; font-variant-numeric: tabular-nums; }
  .bar { height: 6px; background: #3367d6; border-radius: 3px; }
  .error { color: #b3261e; }
  #stats { font-size: .9rem; color: #444; margin-top: .5rem; }
</style>
</head>
<body>
<h1>Image quality (grmp-iqa)</h1>
<div id="model">loading model information&hellip;</div>
<label id="drop" for="file-input">
  <div><strong>Drop photos here</strong> or click to choose files.</div>
  <div style="color:#666;font-size:.85rem">Scores are in [0, 1]; higher means better quality.</div>
  <input id="file-input" type="file" accept="image/*" multiple style="display:none">
</label>
<div id="layout">
  <div id="list">
    <table id="results">
      <thead><tr><th></th><th>file</th><th>score</th><th style="width:30%"></th></tr></thead>
      <tbody></tbody>
    </table>
  </div>
  <div id="side">
    <canvas id="histogram" width="352" height="220" aria-label="histogram of the scores"></canvas>
    <div id="stats">no scores yet</div>
  </div>
</div>
<script>
"use strict";
const scores = [];
const BINS = 20;
const tbody = document.querySelector("#results tbody");
const drop = document.getElementById("drop");
const input = document.getElementById("file-input");
const MAX_PARALLEL = 4;
let running = 0;
const waiting = [];

fetch("v1/model").then(r => r.ok ? r.json() : Promise.reject(r.status)).then(m => {
  document.getElementById("model").textContent =
    `model ${m.id || "(in memory)"} \\u00b7 ${m.method} \\u00b7 ${m.dtype} on ${m.device}` +
    ` \\u00b7 batches of up to ${m.max_batch_size}` + (m.crops > 1 ? ` \\u00b7 ${m.crops} crops` : "");
}).catch(() => { document.getElementById("model").textContent = "model information unavailable"; });

function cell(row, content) { const td = row.insertCell(); if (content !== undefined) td.append(content); return td; }

function addRow(file) {
  const row = tbody.insertRow();
  row.dataset.state = "pending";
  const img = document.createElement("img");
  img.alt = "";
  img.src = URL.createObjectURL(file);
  cell(row, img);
  cell(row, file.name);
  const score = cell(row, "\\u2026");
  score.className = "score";
  const bar = document.createElement("div");
  bar.className = "bar";
  bar.style.width = "0";
  cell(row, bar);
  return {row, score, bar};
}

function finish(view, result) {
  if (result.score !== undefined) {
    view.row.dataset.state = "done";
    view.score.dataset.score = String(result.score);
    view.score.textContent = result.score.toFixed(4);
    view.bar.style.width = (100 * Math.min(1, Math.max(0, result.score))) + "%";
    scores.push(result.score);
    drawHistogram();
  } else {
    view.row.dataset.state = "error";
    view.score.className = "error";
    view.score.textContent = result.error;
  }
}

async function send(file, view) {
  const form = new FormData();
  form.append("files", file, file.name);
  for (let attempt = 0; ; attempt++) {
    let response;
    try {
      response = await fetch("v1/score", {method: "POST", body: form});
    } catch (err) {
      return finish(view, {error: "network error: " + err});
    }
    if (response.status === 503 && attempt < 5) {  // queue full or still loading: wait as told, then retry
      const wait = Number(response.headers.get("Retry-After") || 1);
      await new Promise(done => setTimeout(done, 1000 * wait));
      continue;
    }
    let body = {};
    try { body = await response.json(); } catch (err) { /* keep the status below */ }
    if (!response.ok) return finish(view, {error: body.error || ("HTTP " + response.status)});
    return finish(view, body.results[0]);
  }
}

function pump() {
  while (running < MAX_PARALLEL && waiting.length) {
    const [file, view] = waiting.shift();
    running++;
    send(file, view).finally(() => { running--; pump(); });
  }
}

function addFiles(files) {
  for (const file of files) waiting.push([file, addRow(file)]);
  pump();
}

function drawHistogram() {
  const canvas = document.getElementById("histogram");
  const ctx = canvas.getContext("2d");
  const counts = new Array(BINS).fill(0);
  for (const s of scores) counts[Math.min(BINS - 1, Math.max(0, Math.floor(s * BINS)))]++;
  const top = Math.max(1, ...counts);
  const left = 30, bottom = canvas.height - 24, width = canvas.width - left - 8, height = bottom - 10;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = "#3367d6";
  const step = width / BINS;
  counts.forEach((count, i) => {
    const h = height * count / top;
    ctx.fillRect(left + i * step + 1, bottom - h, step - 2, h);
  });
  ctx.fillStyle = "#444";
  ctx.font = "11px system-ui, sans-serif";
  ctx.textAlign = "center";
  for (let i = 0; i <= BINS; i += 4) ctx.fillText((i / BINS).toFixed(1), left + i * step, bottom + 14);
  ctx.textAlign = "right";
  ctx.fillText(String(top), left - 4, bottom - height + 4);
  ctx.fillText("0", left - 4, bottom);
  ctx.strokeStyle = "#999";
  ctx.beginPath(); ctx.moveTo(left, bottom + .5); ctx.lineTo(left + width, bottom + .5); ctx.stroke();
  const mean = scores.reduce((a, b) => a + b, 0) / scores.length;
  document.getElementById("stats").textContent =
    `${scores.length} score${scores.length === 1 ? "" : "s"}, mean ${mean.toFixed(4)}, ` +
    `min ${Math.min(...scores).toFixed(4)}, max ${Math.max(...scores).toFixed(4)}`;
}

input.addEventListener("change", () => { addFiles(input.files); input.value = ""; });
["dragenter", "dragover"].forEach(type => drop.addEventListener(type, event => {
  event.preventDefault(); drop.classList.add("over");
}));
["dragleave", "drop"].forEach(type => drop.addEventListener(type, event => {
  event.preventDefault(); drop.classList.remove("over");
}));
drop.addEventListener("drop", event => addFiles(event.dataTransfer.files));
</script>
</body>
</html>
"""
