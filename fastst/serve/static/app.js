// The page of `fastst serve`: gallery, photo, options, result. Plain JavaScript, no build step.
// document.body.dataset.state is loading | idle | running | done | error (the browser tests wait on it).
"use strict";

const $ = (id) => document.getElementById(id);
const SIZES = [256, 384, 512, 768, 1024, 1536, 2048];
const page = {
  info: null, model: null, file: null, photoUrl: null, resultUrl: null,
  running: false, again: false,
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
    const facts = [];
    if (m.style) facts.push(`style ${m.style}`);
    if (m.steps !== null && m.steps !== undefined) facts.push(`${Number(m.steps).toLocaleString("en")} training steps`);
    if (m.net && m.net.channels) facts.push(`${m.family} net, ${m.net.channels} ch, ${m.net.num_res_blocks} blocks`);
    card.append(el("span", "facts", facts.join(" · ")));
    card.append(el("span", "file", m.file));
    card.addEventListener("click", () => selectModel(m.name));
    gallery.append(card);
  }
}

function selectModel(name) {
  page.model = name;
  for (const card of document.querySelectorAll("#gallery .card")) {
    card.setAttribute("aria-checked", String(card.dataset.model === name));
  }
  schedule();
}

function fillSizes(limits) {
  const select = $("size");
  select.replaceChildren();
  for (const px of SIZES.filter((s) => s <= limits.max_size)) {
    const option = el("option", null, `${px} px`);
    option.value = String(px);
    select.append(option);
  }
  const original = el("option", null, `the photo's own (at most ${limits.max_size} px)`);
  original.value = "0";
  select.append(original);
  select.value = SIZES.includes(limits.default_size) ? String(limits.default_size) : "512";
  if (!select.value) select.value = select.options[0].value;
}

function setFile(file) {
  showError("");
  if (!file) return;
  const limit = page.info.limits.max_upload_bytes;
  if (file.size > limit) {
    showError(`${file.name} is ${megabytes(file.size)}; this server accepts photos up to ${megabytes(limit)}.`);
    setState("error");
    return;
  }
  page.file = file;
  if (page.photoUrl) URL.revokeObjectURL(page.photoUrl);
  page.photoUrl = URL.createObjectURL(file);
  const img = $("source-img");
  img.src = page.photoUrl;
  img.hidden = false;
  $("source-caption").textContent = `${file.name} (${megabytes(file.size)})`;
  schedule();
}

function updateButton() {
  $("run").disabled = !(page.file && page.model);
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

async function run() {
  page.running = true;
  setState("running");
  showError("");
  const model = page.model;
  const params = new URLSearchParams({
    model,
    strength: String(Number($("strength").value) / 100),
    preserve_color: $("preserve-color").checked ? "1" : "0",
    size: $("size").value,
  });
  $("status").textContent = `Stylizing with ${model}…`;
  const started = performance.now();
  try {
    let response;
    try {
      response = await fetch("/api/stylize?" + params.toString(), {
        method: "POST",
        body: page.file,
        headers: { "Content-Type": page.file.type || "application/octet-stream" },
      });
    } catch (e) {
      throw new Error("the server cannot be reached (is fastst serve still running?)");
    }
    if (!response.ok) {
      let message = `${response.status} ${response.statusText}`;
      try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
      throw new Error(message);
    }
    const blob = await response.blob();
    const roundTrip = (performance.now() - started) / 1000;
    const h = response.headers;
    if (page.resultUrl) URL.revokeObjectURL(page.resultUrl);
    page.resultUrl = URL.createObjectURL(blob);
    const img = $("result-img");
    img.src = page.resultUrl;
    img.hidden = false;
    await img.decode();
    const stylize = Number(h.get("X-Fastst-Stylize-Seconds"));
    const total = Number(h.get("X-Fastst-Total-Seconds"));
    $("result-caption").textContent = `${model}, ${h.get("X-Fastst-Width")} × ${h.get("X-Fastst-Height")} px`;
    $("elapsed").textContent =
      `stylized in ${stylize.toFixed(2)} s on ${h.get("X-Fastst-Device")} ` +
      `(server ${total.toFixed(2)} s, round trip ${roundTrip.toFixed(2)} s)`;
    const link = $("download");
    link.href = page.resultUrl;
    link.download = `${stem(page.file.name)}_${model}.png`;
    link.hidden = false;
    $("status").textContent = "Done. Change the model or an option to try again.";
    setState("done");
  } catch (e) {
    showError(e.message);
    $("status").textContent = "";
    setState("error");
  } finally {
    page.running = false;
    if (page.again) {
      page.again = false;
      schedule();
    }
  }
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
  $("run").addEventListener("click", schedule);
}

async function init() {
  wireControls();
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
  const { models, limits, device, dtype, version } = page.info;
  $("server-info").textContent =
    `${models.length} model${models.length === 1 ? "" : "s"} on ${device} (${dtype}) · fastst ${version}`;
  $("limit-note").textContent =
    `up to ${megabytes(limits.max_upload_bytes)} and ${limits.max_megapixels} megapixels`;
  renderGallery(models);
  fillSizes(limits);
  if (models.length === 1) selectModel(models[0].name);
  else schedule();
  setState("idle");
}

init();
