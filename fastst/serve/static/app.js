// The page of `fastst serve`: gallery (style picker and mix for multi-style models), photo, options, result,
// live camera. Plain JavaScript, no build step.
// document.body.dataset.state is loading | idle | running | done | error | cancelled (the browser tests wait on it);
// dataset.camera is off | starting | on | error, dataset.frames counts the camera frames shown.
"use strict";

const $ = (id) => document.getElementById(id);
const SIZES = [256, 384, 512, 768, 1024, 1536, 2048];
const MAX_RETRIES = 10;
const page = {
  info: null, model: null, file: null, painting: null, photoUrl: null, resultUrl: null, photoSize: null,
  running: false, again: false, controller: null, secondsPerMegapixel: null, timer: null,
};

function setState(state) { document.body.dataset.state = state; }

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

function megabytes(bytes) { return (bytes / 2 ** 20).toFixed(bytes < 2 ** 20 ? 2 : 1) + " MB"; }

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function modelInfo(name) { return page.info.models.find((m) => m.name === name); }

function renderGallery(models) {
  const gallery = $("gallery");
  gallery.replaceChildren();
  for (const m of models) {
    const card = el("button", "card");
    card.type = "button";
    card.setAttribute("role", "radio");
    card.setAttribute("aria-checked", "false");
    card.dataset.model = m.name;
    card.append(el("span", "title", m.title));
    const by = [m.artist, m.year].filter((v) => v !== null && v !== undefined && v !== "").join(", ");
    if (by) card.append(el("span", "artist", by));
    if (m.multi_style) card.append(el("span", "styles", `${m.styles.length} styles: ${m.styles.map((s) => s.name).join(", ")}`));
    if (m.style_image) card.append(el("span", "styles", "any painting: choose yours below"));
    const facts = [];
    if (m.style) facts.push(`style ${m.style}`);
    if (m.steps !== null && m.steps !== undefined) facts.push(`${Number(m.steps).toLocaleString("en")} training steps`);
    if (m.net && m.net.channels) {
      const k = m.net.outer_kernel ? `, ${m.net.outer_kernel}x${m.net.outer_kernel} outer convs` : "";
      facts.push(`${m.family} net, ${m.net.channels} ch, ${m.net.num_res_blocks} blocks${k}`);
    }
    card.append(el("span", "facts", facts.join(" · ")));
    card.append(el("span", "backend", m.backend + (m.fastest && models.length > 1 ? " · fastest here" : "")));
    card.append(el("span", "file", m.file));
    if (m.chosen) card.append(el("span", "chosen", `picked for speed: ${m.chosen}`));
    card.addEventListener("click", () => selectModel(m.name));
    gallery.append(card);
  }
}

// -- multi-style models: one style, or a mix with one slider per style ----------------------------------------
function renderStyles(m) {
  const panel = $("style-panel");
  const select = $("style");
  const sliders = $("mix-sliders");
  select.replaceChildren();
  sliders.replaceChildren();
  panel.hidden = !(m && m.multi_style);
  if (m && m.style_image) $("painting-box").open = true; // an arbitrary-style model needs a painting
  if (panel.hidden) return;
  for (const s of m.styles) {
    const option = el("option", null, s.artist ? `${s.title} (${s.artist})` : s.title);
    option.value = s.name;
    select.append(option);
  }
  const mix = el("option", null, "a mix of the styles");
  mix.value = "__mix__";
  select.append(mix);
  m.styles.forEach((s, i) => {
    const id = `mix-${s.name}`;
    const label = el("label", null, s.title);
    label.htmlFor = id;
    const range = el("input");
    range.type = "range"; range.id = id; range.min = "0"; range.max = "100"; range.step = "5";
    range.value = i === 0 ? "100" : "0";
    range.dataset.style = s.name;
    const out = el("output", null, `${range.value}%`);
    range.addEventListener("input", () => { out.textContent = `${range.value}%`; });
    range.addEventListener("change", schedule);
    sliders.append(label, range, out);
  });
  select.value = m.styles[0].name;
  sliders.hidden = true;
}

// -- models trained with stroke_scales: one slider, log-spaced from the smallest to the largest scale ----------
function renderStroke(m) {
  const scales = (m && m.stroke_scales) || [];
  const panel = $("stroke-panel");
  panel.hidden = scales.length < 2;
  if (panel.hidden) return;
  const range = $("stroke");
  const lo = Math.log(scales[0]), hi = Math.log(scales[scales.length - 1]);
  const one = Math.min(Math.max(0, lo), hi); // stroke 1 (the painting as it is) when trained, else the nearest
  range.value = String(Math.round((100 * (one - lo)) / (hi - lo)));
  const show = () => { $("stroke-value").textContent = strokeValue(m).toFixed(2); };
  range.oninput = show;
  range.onchange = schedule;
  show();
}

function strokeValue(m) {
  const scales = m.stroke_scales;
  const lo = Math.log(scales[0]), hi = Math.log(scales[scales.length - 1]);
  return Math.exp(lo + ((hi - lo) * Number($("stroke").value)) / 100);
}

function strokeParams(m) {
  if (!m || !m.stroke_scales || m.stroke_scales.length < 2) return {};
  return { stroke: strokeValue(m).toPrecision(4) };
}

function styleParams(m) {
  // the API's spellings, as the CLI's --style / --mix: style=NAME or mix=a=0.7,b=0.3
  if (!m || !m.multi_style) return {};
  const choice = $("style").value;
  if (choice !== "__mix__") return { style: choice };
  const parts = [];
  for (const range of $("mix-sliders").querySelectorAll("input[type=range]")) {
    if (Number(range.value) > 0) parts.push(`${range.dataset.style}=${Number(range.value) / 100}`);
  }
  return { mix: parts.join(",") || "" };
}

function styleLabel(m, params) {
  if (params.style) return `${m.name} (${params.style})`;
  if (params.mix !== undefined) return `${m.name} (${params.mix.replaceAll(",", ", ")})`;
  return m.name;
}

function selectModel(name) {
  page.model = name;
  for (const card of document.querySelectorAll("#gallery .card")) {
    card.setAttribute("aria-checked", String(card.dataset.model === name));
  }
  renderStyles(modelInfo(name));
  renderStroke(modelInfo(name));
  schedule();
}

// -- sizes: at most 2x the photo's long side and within the server's pixel budget --------------------------------
function allowedSizes() {
  const limits = page.info.limits;
  const sizes = SIZES.filter((s) => s <= limits.max_size);
  if (!page.photoSize) return { sizes, own: true };
  const [w, h] = page.photoSize;
  const long = Math.max(w, h);
  const pixels = (s) => Math.round((w * s) / long) * Math.round((h * s) / long);
  const fits = (s) => s <= limits.max_upscale * long && pixels(s) <= limits.max_output_pixels;
  return { sizes: sizes.filter(fits), own: pixels(Math.min(long, limits.max_size)) <= limits.max_output_pixels };
}

function fillSizes() {
  const limits = page.info.limits;
  const select = $("size");
  const previous = select.value;
  const { sizes, own } = allowedSizes();
  select.replaceChildren();
  for (const px of sizes) {
    const option = el("option", null, `${px} px`);
    option.value = String(px);
    select.append(option);
  }
  if (own) {
    const original = el("option", null, `the photo's own (at most ${limits.max_size} px)`);
    original.value = "0";
    select.append(original);
  }
  const values = [...select.options].map((o) => o.value);
  const fallback = sizes.filter((s) => s <= limits.default_size).pop() || sizes[0] || 0;
  select.value = values.includes(previous) ? previous : String(values.includes(String(limits.default_size)) ? limits.default_size : fallback);
  const note = [];
  if (page.photoSize) note.push(`up to ${limits.max_upscale}x the photo and ${limits.max_output_megapixels} megapixels`);
  $("size-note").textContent = note.join("");
}

function setFile(file) {
  showError("");
  if (!file) return;
  const limit = page.info.limits.max_upload_bytes;
  if (file.size > limit) {
    showError(`${file.name} is ${megabytes(file.size)}; this server accepts photos up to ${megabytes(limit)}.`);
    clearResult();
    setState("error");
    return;
  }
  page.file = file;
  page.photoSize = null;
  document.body.dataset.photo = "loading";
  if (page.photoUrl) URL.revokeObjectURL(page.photoUrl);
  page.photoUrl = URL.createObjectURL(file);
  const img = $("source-img");
  img.src = page.photoUrl;
  img.hidden = false;
  $("source-caption").textContent = `${file.name} (${megabytes(file.size)})`;
  // the offered sizes depend on the photo's size: known once the browser has read it (or not, if it cannot)
  const url = page.photoUrl;
  img.decode().then(() => {
    if (page.photoUrl !== url) return;
    page.photoSize = [img.naturalWidth, img.naturalHeight];
    fillSizes();
  }).catch(() => { /* the server will say what is wrong with it */ }).finally(() => {
    if (page.photoUrl !== url) return;
    document.body.dataset.photo = page.photoSize ? "ready" : "unreadable";
    schedule();
  });
}

function setPainting(file) {
  page.painting = file || null;
  $("painting-clear").hidden = !page.painting;
  if (!page.painting) $("painting-input").value = "";
  schedule();
}

function updateButton() {
  $("run").disabled = !(page.file && page.model) || page.running;
}

function schedule() {
  updateButton();
  if (!page.file || !page.model) {
    $("status").textContent = !page.model ? "Pick a model." : "Drop or choose a photo.";
    return;
  }
  if (page.running) {
    page.again = true; // one more run with the latest settings when this one ends
    return;
  }
  run();
}

function stem(name) { return name.replace(/\.[^.]*$/, "").replace(/[^A-Za-z0-9._-]+/g, "_") || "photo"; }

function clearResult() {
  if (page.resultUrl) URL.revokeObjectURL(page.resultUrl);
  page.resultUrl = null;
  const img = $("result-img");
  img.removeAttribute("src");
  img.hidden = true;
  $("result-caption").textContent = "The result";
  $("elapsed").textContent = "";
  $("download").hidden = true;
  $("download").removeAttribute("href");
}

function startProgress(expectedSeconds) {
  const started = performance.now();
  $("progress-row").hidden = false;
  $("cancel").hidden = false;
  const bar = $("progress");
  const tick = () => {
    const elapsed = (performance.now() - started) / 1000;
    if (expectedSeconds) {
      bar.value = Math.min(0.95, elapsed / expectedSeconds);
      $("progress-text").textContent = `${elapsed.toFixed(1)} s of about ${expectedSeconds.toFixed(1)} s`;
    } else {
      bar.removeAttribute("value"); // indeterminate: no estimate before the first result
      $("progress-text").textContent = `${elapsed.toFixed(1)} s`;
    }
  };
  tick();
  page.timer = setInterval(tick, 100);
}

function stopProgress() {
  clearInterval(page.timer);
  page.timer = null;
  $("progress-row").hidden = true;
  $("cancel").hidden = true;
}

function wait(seconds, signal) {
  return new Promise((resolve, reject) => {
    const id = setTimeout(resolve, seconds * 1000);
    signal.addEventListener("abort", () => { clearTimeout(id); reject(new DOMException("cancelled", "AbortError")); });
  });
}

function expectedSeconds() {
  if (!page.secondsPerMegapixel || !page.photoSize) return null;
  const [w, h] = page.photoSize;
  const size = Number($("size").value) || Math.min(Math.max(w, h), page.info.limits.max_size);
  const scale = size / Math.max(w, h);
  return page.secondsPerMegapixel * (w * scale * h * scale) / 1e6;
}

async function post(url, signal) {
  let body = page.file;
  const headers = {};
  if (page.painting) { // the painting path: multipart with a photo and a style_image part
    body = new FormData();
    body.append("photo", page.file, page.file.name);
    body.append("style_image", page.painting, page.painting.name);
  } else {
    headers["Content-Type"] = page.file.type || "application/octet-stream";
  }
  return fetch(url, { method: "POST", body, headers, signal });
}

async function run() {
  page.running = true;
  updateButton();
  setState("running");
  showError("");
  clearResult(); // a result on screen is always the result of the settings shown
  const m = modelInfo(page.model);
  const style = styleParams(m);
  const label = styleLabel(m, style);
  const params = new URLSearchParams({
    model: m.name,
    ...style,
    ...strokeParams(m),
    strength: String(Number($("strength").value) / 100),
    preserve_color: $("preserve-color").checked ? "1" : "0",
    size: $("size").value,
  });
  $("status").textContent = `Stylizing with ${label}…`;
  const controller = new AbortController();
  page.controller = controller;
  startProgress(expectedSeconds());
  const started = performance.now();
  try {
    let response;
    for (let attempt = 0; ; attempt++) {
      try {
        response = await post("/api/stylize?" + params.toString(), controller.signal);
      } catch (e) {
        if (e.name === "AbortError") throw e;
        throw new Error("the server cannot be reached (is fastst serve still running?)");
      }
      const retry = Number(response.headers.get("Retry-After"));
      if (response.status !== 503 || !retry || attempt >= MAX_RETRIES) break;
      $("status").textContent = `The server is busy; trying again in ${retry} s…`;
      await wait(retry, controller.signal); // as the server asks, instead of failing
      $("status").textContent = `Stylizing with ${label}…`;
    }
    if (!response.ok) {
      let message = `${response.status} ${response.statusText}`;
      try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
      throw new Error(message);
    }
    const blob = await response.blob();
    const roundTrip = (performance.now() - started) / 1000;
    const h = response.headers;
    page.resultUrl = URL.createObjectURL(blob);
    const img = $("result-img");
    img.src = page.resultUrl;
    img.hidden = false;
    await img.decode();
    const stylize = Number(h.get("X-Fastst-Stylize-Seconds"));
    const total = Number(h.get("X-Fastst-Total-Seconds"));
    const megapixels = (Number(h.get("X-Fastst-Width")) * Number(h.get("X-Fastst-Height"))) / 1e6;
    if (megapixels > 0) page.secondsPerMegapixel = total / megapixels;
    $("result-caption").textContent = `${label}, ${h.get("X-Fastst-Width")} × ${h.get("X-Fastst-Height")} px`;
    $("elapsed").textContent =
      `stylized in ${stylize.toFixed(2)} s on ${h.get("X-Fastst-Device")}, ${h.get("X-Fastst-Backend")} ` +
      `(server ${total.toFixed(2)} s, round trip ${roundTrip.toFixed(2)} s)`;
    const link = $("download");
    link.href = page.resultUrl;
    link.download = `${stem(page.file.name)}_${m.name}${style.style ? "_" + style.style : style.mix !== undefined ? "_mix" : ""}.png`;
    link.hidden = false;
    $("status").textContent = "Done. Change the model or an option to try again.";
    setState("done");
  } catch (e) {
    clearResult();
    if (e.name === "AbortError") {
      $("status").textContent = "Cancelled.";
      setState("cancelled");
    } else {
      showError(e.message);
      $("status").textContent = "";
      setState("error");
    }
  } finally {
    stopProgress();
    page.controller = null;
    page.running = false;
    updateButton();
    if (page.again) {
      page.again = false;
      schedule();
    }
  }
}

// -- the camera: frames to the server, the stylized frames back, as fast as they come ---------------------------
const camera = { stream: null, on: false, inFlight: 0, times: [], frames: 0, canvas: null, errors: 0 };
const CAMERA_WIDTH = 640, CAMERA_HEIGHT = 360, CAMERA_IN_FLIGHT = 2;

function cameraState(s) { document.body.dataset.camera = s; }

async function startCamera() {
  cameraState("starting");
  showError("");
  try {
    camera.stream = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: CAMERA_WIDTH }, height: { ideal: CAMERA_HEIGHT } }, audio: false,
    });
  } catch (e) {
    showError(`the camera cannot be opened (${e.name}: ${e.message})`);
    cameraState("error");
    return;
  }
  const video = $("camera-video");
  video.srcObject = camera.stream;
  video.hidden = false;
  await video.play();
  camera.canvas = document.createElement("canvas");
  camera.canvas.width = CAMERA_WIDTH;
  camera.canvas.height = CAMERA_HEIGHT;
  camera.on = true;
  camera.frames = 0;
  camera.times = [];
  camera.errors = 0;
  document.body.dataset.frames = "0";
  $("camera-out").hidden = false;
  $("camera-start").hidden = true;
  $("camera-stop").hidden = false;
  $("snapshot").hidden = false;
  cameraState("on");
  for (let i = 0; i < CAMERA_IN_FLIGHT; i++) sendFrame();
}

function stopCamera() {
  camera.on = false;
  if (camera.stream) for (const track of camera.stream.getTracks()) track.stop();
  camera.stream = null;
  $("camera-video").hidden = true;
  $("camera-start").hidden = false;
  $("camera-stop").hidden = true;
  cameraState("off");
}

function cameraParams() {
  const name = $("camera-model").value;
  const m = modelInfo(name);
  let style = {};
  if (m.multi_style) style = name === page.model ? styleParams(m) : { style: m.styles[0].name };
  return new URLSearchParams({ model: name, ...style, size: String(CAMERA_WIDTH), format: "jpeg" });
}

async function sendFrame() {
  if (!camera.on) return;
  camera.inFlight++;
  try {
    const video = $("camera-video");
    const g = camera.canvas.getContext("2d");
    g.drawImage(video, 0, 0, CAMERA_WIDTH, CAMERA_HEIGHT); // the camera's frame, scaled to 640 x 360
    const blob = await new Promise((resolve) => camera.canvas.toBlob(resolve, "image/jpeg", 0.85));
    const response = await fetch("/api/stylize?" + cameraParams().toString(), {
      method: "POST", body: blob, headers: { "Content-Type": "image/jpeg" },
    });
    if (response.status === 503) {
      await new Promise((r) => setTimeout(r, 1000 * (Number(response.headers.get("Retry-After")) || 1)));
    } else if (!response.ok) {
      let message = `${response.status}`;
      try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
      throw new Error(message);
    } else {
      const bitmap = await createImageBitmap(await response.blob());
      const out = $("camera-out");
      out.width = bitmap.width;
      out.height = bitmap.height;
      out.getContext("2d").drawImage(bitmap, 0, 0);
      bitmap.close();
      const now = performance.now();
      camera.times.push(now);
      while (camera.times.length && now - camera.times[0] > 2000) camera.times.shift();
      camera.frames++;
      document.body.dataset.frames = String(camera.frames);
      if (camera.times.length > 1) {
        const fps = ((camera.times.length - 1) * 1000) / (now - camera.times[0]);
        document.body.dataset.fps = fps.toFixed(1);
        $("fps").textContent = `${fps.toFixed(1)} frames/s, ${out.width} × ${out.height}, ${response.headers.get("X-Fastst-Backend")}`;
      }
    }
  } catch (e) {
    showError(`camera: ${e.message}`);
    if (++camera.errors > 3) stopCamera();
  } finally {
    camera.inFlight--;
    if (camera.on) setTimeout(sendFrame, 0);
  }
}

function snapshot() {
  $("camera-out").toBlob((blob) => {
    const link = $("snapshot-link");
    if (link.href.startsWith("blob:")) URL.revokeObjectURL(link.href);
    link.href = URL.createObjectURL(blob);
    link.download = `camera_${$("camera-model").value}.png`;
    link.hidden = false;
    link.click();
  }, "image/png");
}

function fillCameraModels(models, fastest) {
  const select = $("camera-model");
  select.replaceChildren();
  for (const m of models) {
    const option = el("option", null, `${m.name} (${m.backend}${m.name === fastest ? ", fastest" : ""})`);
    option.value = m.name;
    select.append(option);
  }
  select.value = fastest;
}

function wireControls() {
  const input = $("photo-input");
  input.addEventListener("change", () => setFile(input.files[0]));
  const zone = $("drop-zone");
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (e) => { e.preventDefault(); zone.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) {
    zone.addEventListener(type, () => zone.classList.remove("over"));
  }
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    if (e.dataTransfer && e.dataTransfer.files.length) setFile(e.dataTransfer.files[0]);
  });
  const strength = $("strength");
  strength.addEventListener("input", () => { $("strength-value").textContent = `${strength.value}%`; });
  strength.addEventListener("change", schedule);
  $("preserve-color").addEventListener("change", schedule);
  $("size").addEventListener("change", schedule);
  $("style").addEventListener("change", () => {
    $("mix-sliders").hidden = $("style").value !== "__mix__";
    schedule();
  });
  $("run").addEventListener("click", schedule);
  $("cancel").addEventListener("click", () => {
    page.again = false;
    if (page.controller) page.controller.abort();
  });
  const painting = $("painting-input");
  painting.addEventListener("change", () => setPainting(painting.files[0]));
  $("painting-clear").addEventListener("click", () => setPainting(null));
  $("camera-start").addEventListener("click", startCamera);
  $("camera-stop").addEventListener("click", stopCamera);
  $("snapshot").addEventListener("click", snapshot);
}

async function init() {
  wireControls();
  cameraState("off");
  try {
    const response = await fetch("/api/models");
    if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
    page.info = await response.json();
  } catch (e) {
    $("server-info").textContent = "";
    showError(`cannot load the model list (${e.message})`);
    setState("error");
    return;
  }
  const { models, limits, device, dtype, version, fastest } = page.info;
  $("server-info").textContent =
    `${models.length} model${models.length === 1 ? "" : "s"} on ${device} (${dtype}) · fastst ${version}`;
  $("limit-note").textContent =
    `JPEG, PNG, WebP or BMP, up to ${megabytes(limits.max_upload_bytes)} and ${limits.max_megapixels} megapixels`;
  renderGallery(models);
  fillSizes();
  fillCameraModels(models, fastest);
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    $("camera-start").disabled = true;
    $("fps").textContent = "this browser gives no camera here (it needs http://127.0.0.1 or https)";
  }
  if (models.length === 1) selectModel(models[0].name);
  else schedule();
  setState("idle");
}

init();
