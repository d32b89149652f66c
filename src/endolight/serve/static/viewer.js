// endolight viewer: before/after split over an uploaded image or the server's live source.
// Plain browser JavaScript, no dependencies, nothing loaded from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  original: null, // the dropped file (Blob), re-sent when the strength changes
  clip: false, // the upload is a video clip
  name: "image",
  busy: false, // one enhancement request at a time ...
  pending: false, // ... and one more with the latest strength if the knob moved meanwhile
  beforeUrl: null,
  afterUrl: null,
  live: null, // {img, frame, timer} while the live source plays
};

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

function setStats(fps, latency, size) {
  $("fps").textContent = fps;
  $("latency").textContent = latency;
  $("size").textContent = size;
}

function strength() {
  return Number($("strength").value);
}

function setSplit(percent) {
  const p = Math.min(100, Math.max(0, percent));
  $("split").value = String(Math.round(p));
  $("split-value").textContent = `${Math.round(p)}%`;
  for (const el of document.querySelectorAll(".after-layer")) el.style.clipPath = `inset(0 0 0 ${p}%)`;
  $("handle").style.left = `${p}%`;
}

async function errorText(response) {
  try {
    const body = await response.json();
    return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

// ---- uploads: an image, or a short clip -----------------------------------------------------

const CLIP_NAME = /\.(mp4|m4v|mov|mkv|webm|avi)$/i;

function isClip(file) {
  // Only for the page's layout; the server decides what the bytes are.
  return file.type.startsWith("video/") || CLIP_NAME.test(file.name);
}

async function enhanceUpload() {
  if (!state.original) return;
  if (state.busy) {
    state.pending = true;
    return;
  }
  state.busy = true;
  const k = strength();
  const t0 = performance.now();
  try {
    const response = await fetch(`/api/enhance?strength=${k}`, { method: "POST", body: state.original });
    if (!response.ok) throw new Error(await errorText(response));
    const blob = await response.blob();
    const roundTrip = performance.now() - t0;
    const modelMs = Number(response.headers.get("X-Enhance-Ms"));
    const frames = Number(response.headers.get("X-Frames") || 1);
    const clip = blob.type === "video/mp4";
    await showResult(blob, k, clip);
    setStats(`${((1000 * frames) / modelMs).toFixed(1)}`,
      `${roundTrip.toFixed(0)} ms (model ${modelMs.toFixed(0)} ms${clip ? ` for ${frames} frames` : ""})`,
      response.headers.get("X-Image-Size") || (clip ? `${frames} frames` : "–"));
    setStatus(`Enhanced at strength ${k.toFixed(2)}. Drag the ${clip ? "clip" : "image"} to compare.`);
  } catch (err) {
    setStatus(err.message, true);
  } finally {
    state.busy = false;
    if (state.pending) {
      state.pending = false;
      enhanceUpload();
    }
  }
}

function showResult(blob, k, clip) {
  if (state.afterUrl) URL.revokeObjectURL(state.afterUrl);
  state.afterUrl = URL.createObjectURL(blob);
  const after = clip ? $("after-video") : $("after");
  return new Promise((resolve) => {
    const shown = () => {
      after.hidden = false;
      after.dataset.strength = k.toFixed(2); // which strength is on screen (tests wait on it)
      const link = $("download");
      link.href = state.afterUrl;
      link.download = `${state.name}-endolight-k${k.toFixed(2)}.${clip ? "mp4" : "png"}`;
      link.hidden = false;
      resolve();
    };
    after.onerror = shown; // a clip the browser cannot play can still be downloaded
    if (clip) {
      after.onloadeddata = shown;
      after.src = state.afterUrl;
      after.play().catch(() => {});
    } else {
      after.onload = shown;
      after.src = state.afterUrl;
    }
  });
}

async function showBefore(file, clip) {
  if (state.beforeUrl) URL.revokeObjectURL(state.beforeUrl);
  state.beforeUrl = URL.createObjectURL(file);
  const before = clip ? $("before-video") : $("before");
  const shown = await new Promise((resolve) => {
    before.onerror = () => resolve(false);
    if (clip) before.onloadeddata = () => resolve(true);
    else before.onload = () => resolve(true);
    before.src = state.beforeUrl;
    if (clip) before.play().catch(() => {});
  });
  if (!shown && !clip) {
    // A format the browser cannot draw (e.g. TIFF): strength 0 returns the frame itself as PNG.
    const response = await fetch("/api/enhance?strength=0", { method: "POST", body: file });
    if (!response.ok) throw new Error(await errorText(response));
    URL.revokeObjectURL(state.beforeUrl);
    state.beforeUrl = URL.createObjectURL(await response.blob());
    before.src = state.beforeUrl;
  }
  before.hidden = false;
}

function syncClips() {
  // Keep the original under the enhanced clip in step while both play.
  const after = $("after-video");
  const before = $("before-video");
  if (!after.hidden && !before.hidden && Math.abs(before.currentTime - after.currentTime) > 0.08) {
    before.currentTime = after.currentTime;
  }
  if (state.clip) requestAnimationFrame(syncClips);
}

async function openFile(file) {
  if (!file) return;
  stopLive();
  const clip = isClip(file);
  state.original = file;
  state.clip = clip;
  state.name = file.name.replace(/\.[^.]*$/, "") || "upload";
  for (const id of ["before", "after", "before-video", "after-video", "download"]) $(id).hidden = true;
  delete $("after").dataset.strength;
  delete $("after-video").dataset.strength;
  setStatus(`Enhancing ${file.name} …`);
  try {
    await showBefore(file, clip);
  } catch (err) {
    setStatus(err.message, true);
    return;
  }
  $("handle").hidden = false;
  if (clip) requestAnimationFrame(syncClips);
  await enhanceUpload();
}

// ---- live source ----------------------------------------------------------------------------

function drawLive() {
  const live = state.live;
  if (!live) return;
  const img = live.img;
  if (img.complete && img.naturalWidth > 1) {
    // Each streamed frame is "before | after" side by side; split it onto the two layers.
    const w = img.naturalWidth / 2;
    const h = img.naturalHeight;
    for (const [canvas, x] of [[$("live-before"), 0], [$("live-after"), w]]) {
      if (canvas.width !== w || canvas.height !== h) {
        canvas.width = w;
        canvas.height = h;
      }
      canvas.getContext("2d").drawImage(img, x, 0, w, h, 0, 0, w, h);
    }
  }
  live.frame = requestAnimationFrame(drawLive);
}

async function pollLive() {
  try {
    const response = await fetch("/api/live/stats");
    const s = await response.json();
    setStats(s.fps.toFixed(1), `${s.latency_ms.toFixed(0)} ms per frame`, s.width ? `${s.width}x${s.height}` : "–");
    if (s.error) setStatus(`Live source stopped: ${s.error}`, true);
  } catch (err) {
    setStatus(err.message, true);
  }
}

function startLive() {
  state.original = null;
  state.clip = false;
  for (const id of ["before", "after", "before-video", "after-video", "download"]) $(id).hidden = true;
  const img = $("live-frames");
  img.src = `/api/live.mjpg?t=${Date.now()}`;
  state.live = { img, frame: requestAnimationFrame(drawLive), timer: setInterval(pollLive, 500) };
  $("live-before").hidden = false;
  $("live-after").hidden = false;
  $("handle").hidden = false;
  $("live").textContent = "Stop live source";
  setStatus("Playing the live source. Drag to compare.");
  fetch("/api/live/strength", {
    method: "PUT", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ strength: strength() }),
  });
}

function stopLive() {
  const live = state.live;
  if (!live) return;
  cancelAnimationFrame(live.frame);
  clearInterval(live.timer);
  live.img.removeAttribute("src"); // closes the stream
  state.live = null;
  $("live-before").hidden = true;
  $("live-after").hidden = true;
  $("live").textContent = "Play live source";
}

// ---- wiring ---------------------------------------------------------------------------------

function wire() {
  $("file").addEventListener("change", (e) => openFile(e.target.files[0]));
  const drop = $("drop");
  for (const target of [drop, $("stage")]) {
    target.addEventListener("dragover", (e) => {
      e.preventDefault();
      drop.classList.add("over");
    });
    target.addEventListener("dragleave", () => drop.classList.remove("over"));
    target.addEventListener("drop", (e) => {
      e.preventDefault();
      drop.classList.remove("over");
      openFile(e.dataTransfer.files[0]);
    });
  }

  $("strength").addEventListener("input", () => {
    $("strength-value").textContent = strength().toFixed(2);
    if (state.live) {
      fetch("/api/live/strength", {
        method: "PUT", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ strength: strength() }),
      });
    } else if (!state.clip) {
      enhanceUpload();
    }
  });
  // A clip is enhanced again only when the knob is let go: each run takes a while.
  $("strength").addEventListener("change", () => state.clip && enhanceUpload());
  $("split").addEventListener("input", () => setSplit(Number($("split").value)));

  const stage = $("stage");
  let dragging = false;
  const follow = (e) => {
    const rect = stage.getBoundingClientRect();
    setSplit(((e.clientX - rect.left) / rect.width) * 100);
  };
  stage.addEventListener("pointerdown", (e) => {
    dragging = true;
    stage.setPointerCapture(e.pointerId);
    follow(e);
  });
  stage.addEventListener("pointermove", (e) => dragging && follow(e));
  for (const end of ["pointerup", "pointercancel"]) {
    stage.addEventListener(end, () => {
      dragging = false;
    });
  }

  $("live").addEventListener("click", () => (state.live ? stopLive() : startLive()));
}

async function init() {
  wire();
  setSplit(50);
  try {
    const info = await (await fetch("/api/info")).json();
    $("device").textContent = `device ${info.device} · uploads up to ${Math.round(info.max_upload_bytes / 1e6)} MB`;
    $("strength").value = String(info.strength);
    $("strength-value").textContent = Number(info.strength).toFixed(2);
    $("live").hidden = !info.live;
    document.body.dataset.ready = "true";
  } catch (err) {
    setStatus(`Cannot reach the server: ${err.message}`, true);
  }
}

init();
