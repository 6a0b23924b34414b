// The followed job's panel: its state, queue position, progress, live preview, errors and finished images.
import { TERMINAL } from "./api.js";
import { el, setText, show } from "./dom.js";
import { fileExtension, formatBytes, formatSeconds, STATE_WORDS } from "./format.js";

export function resetJobView(job, options) {
  show(el.job, true);
  el.job.dataset.state = "";
  el.job.dataset.jobId = job.id;
  setText(el["job-link"], job.id);
  el["job-link"].href = `/?job=${encodeURIComponent(job.id)}`;
  setText(el["job-prompt"], "");
  setText(el.status, options.fresh ? "Queued" : "Loading…");
  setText(el.message, "");
  show(el.queue, false);
  show(el.progress, false);
  setProgress(0);
  setText(el["node-title"], "");
  setText(el["steps-done"], "");
  setText(el.eta, "");
  show(el.reconnecting, false);
  show(el.error, false);
  setText(el.error, "");
  show(el["preview-box"], false);
  el.preview.removeAttribute("src");
  el.result.replaceChildren();
  show(el.result, false);
  show(el.cancel, false);
  el.cancel.disabled = false;
  show(el.reuse, false);
  document.title = "text2img-queue";
}

function setProgress(percent) {
  const value = Math.max(0, Math.min(100, Number(percent) || 0));
  el["progress-fill"].style.width = `${value}%`;
  el["progress-bar"].setAttribute("aria-valuenow", String(value));
  setText(el.percent, `${value.toFixed(value % 1 ? 1 : 0)}%`);
}

export function render(job, status) {
  job.status = status;
  const state = status.state;
  el.job.dataset.state = state;
  setText(el.status, STATE_WORDS[state] || state);
  // The phase in words, unless the rest of the view already says it (state, node title, error box).
  const node = status.node;
  const redundant = [STATE_WORDS[state], node ? `Running ${node.title || node.class || node.id}` : null];
  setText(el.message, status.message && state !== "FAILURE" && !redundant.includes(status.message)
    ? status.message : "");
  const request = status.request || {};
  const seed = status.seed != null ? status.seed : request.seed;
  const facts = [];
  if (request.template) facts.push(request.template);
  if (request.strength != null) facts.push(`strength ${request.strength}`);
  if (request.width && request.height) facts.push(`${request.width}×${request.height}`);
  if (request.steps) facts.push(`${request.steps} steps`);
  if (seed != null) facts.push(`seed ${seed}`);
  setText(el["job-prompt"], request.prompt ? `“${request.prompt}” · ${facts.join(" · ")}` : facts.join(" · "));
  show(el.reuse, Boolean(status.request));

  // Queue position while waiting.
  if (state === "QUEUED" && status.queue) {
    const { position, workers_online: workers } = status.queue;
    const parts = [];
    if (position) parts.push(position === 1 ? "Next in line" : `Position ${position} in the queue`);
    if (workers === 0) parts.push("no GPU worker is online yet");
    else if (workers != null) parts.push(`${workers} GPU worker${workers === 1 ? "" : "s"} online`);
    setText(el.queue, parts.join(" · "));
    el.queue.dataset.position = position != null ? String(position) : "";
    show(el.queue, parts.length > 0);
  } else {
    show(el.queue, false);
  }

  // Progress while it runs (and the final value once it ends).
  const progress = status.progress;
  const running = state === "STARTED" || state === "PROGRESS";
  el.progress.classList.toggle("stopped", state === "FAILURE" || state === "CANCELLED");
  if (progress || running) {
    const percent = progress ? (progress.overall_percent != null ? progress.overall_percent : progress.percent) : 0;
    setProgress(percent);
    show(el.progress, true);
  } else if (state !== "FAILURE" && state !== "CANCELLED") {
    show(el.progress, false); // a failed or cancelled job keeps the bar where it stopped
  }
  setText(el["node-title"], running && node ? node.title || node.class || node.id : "");
  setText(el["steps-done"], running && progress && progress.max > 1 ? `step ${progress.value}/${progress.max}` : "");
  if (state === "PROGRESS") {
    const eta = status.eta_seconds;
    setText(el.eta, eta == null ? "estimating time left…" : `about ${formatSeconds(eta)} left`);
  } else {
    setText(el.eta, "");
  }
  const percentShown = progress && progress.overall_percent != null ? Math.round(progress.overall_percent) : null;
  document.title = running && percentShown != null ? `(${percentShown}%) text2img-queue`
    : `${STATE_WORDS[state] || state} · text2img-queue`;

  show(el.cancel, !TERMINAL.has(state));

  if (state === "SUCCESS") {
    show(el["preview-box"], false);
    renderResult(job, status);
  } else if (state === "FAILURE") {
    const error = status.error || {};
    const reason = error.reason || status.message || "no reason given";
    const where = [];
    if ((error.node_type || error.node_id) && !(error.node_type && reason.includes(error.node_type))) {
      where.push(`in node ${error.node_id != null ? error.node_id : "?"}${error.node_type ? ` (${error.node_type})` : ""}`);
    }
    if (error.exception_type && !reason.includes(error.exception_type)) where.push(error.exception_type);
    showJobError(`The job failed: ${reason}` + (where.length ? ` (${where.join(", ")})` : ""));
    labelPreview("Last preview before the failure");
  } else if (state === "CANCELLED") {
    labelPreview("Last preview before it was cancelled");
  }
}

function labelPreview(text) {
  const caption = el["preview-box"].querySelector("figcaption");
  if (caption) caption.textContent = text;
}

export function showPreview(url) {
  el.preview.src = url;
  labelPreview("Live preview");
  show(el["preview-box"], true);
}

export function showJobError(text) {
  setText(el.error, text);
  show(el.error, true);
}

// The id is unknown (never queued, or expired): nothing more will come.
export function showNotFound(text) {
  show(el.reconnecting, false);
  el.job.dataset.state = "UNKNOWN";
  setText(el.status, "Not found");
  showJobError(text);
  show(el.cancel, false);
}

export function showReconnecting(text) {
  setText(el.reconnecting, text);
  show(el.reconnecting, true);
  el.job.dataset.reconnecting = "true";
}

export function hideReconnecting() {
  show(el.reconnecting, false);
  delete el.job.dataset.reconnecting;
}

function renderResult(job, status) {
  if (job.resultFor === status.id) return;
  job.resultFor = status.id;
  const images = status.images || [];
  el.result.replaceChildren();
  if (!images.length) {
    showJobError("The job finished but lists no images.");
    return;
  }
  images.forEach((image, n) => {
    const figure = document.createElement("figure");
    figure.className = "output";
    const img = document.createElement("img");
    img.alt = `Generated image ${n + 1} of ${images.length}`;
    if (image.width && image.height) {
      img.width = image.width;
      img.height = image.height;
    }
    img.decoding = "async";
    loadWithRetry(img, image.url);
    const link = document.createElement("a");
    link.className = "image-link";
    link.href = image.url;
    link.target = "_blank";
    link.rel = "noopener";
    link.append(img);
    const caption = document.createElement("figcaption");
    const download = document.createElement("a");
    download.id = n === 0 ? "download" : `download-${n}`;
    download.className = "button download";
    download.href = image.url;
    download.download = `${status.id}-${image.index != null ? image.index : n}.${fileExtension(image.content_type)}`;
    download.textContent = images.length > 1 ? `Download image ${n + 1}` : "Download";
    const facts = document.createElement("span");
    facts.className = "hint";
    facts.textContent = [image.width && image.height ? `${image.width}×${image.height}` : "",
                         fileExtension(image.content_type).toUpperCase(), formatBytes(image.size)]
      .filter(Boolean).join(" · ");
    caption.append(download, " ", facts);
    figure.append(link, caption);
    el.result.append(figure);
  });
  show(el.result, true);
  if (job.previewUrl) {
    URL.revokeObjectURL(job.previewUrl);
    job.previewUrl = null;
  }
}

// An image that fails to load (a hiccup of the server) is asked for again a few times.
function loadWithRetry(img, url, attempt = 0) {
  img.onerror = () => {
    if (attempt >= 4) {
      showJobError("The image could not be loaded. Try the download link, or reload the page.");
      return;
    }
    const delay = 1000 * 2 ** attempt;
    setTimeout(() => loadWithRetry(img, url, attempt + 1), delay);
  };
  img.src = attempt ? `${url}${url.includes("?") ? "&" : "?"}retry=${attempt}` : url;
}
