// text2img-queue web form: submit a job, follow it by polling /api/jobs/<id> with backoff, show the live
// preview and the result, list recent jobs. Plain modern JS, no build step, no dependencies.
"use strict";

(() => {
  const TERMINAL = new Set(["SUCCESS", "FAILURE", "CANCELLED"]);
  const STATE_WORDS = {
    QUEUED: "Queued",
    STARTED: "Starting",
    PROGRESS: "Running",
    SUCCESS: "Done",
    FAILURE: "Failed",
    CANCELLED: "Cancelled",
  };
  // Polling delays (ms): fast while a job runs, slower while it waits, backoff after a failed poll.
  const POLL = {
    running: 500,
    runningIdleMax: 1000,
    queuedFirst: 500,
    queuedMax: 2000,
    hidden: 5000,
    errorFirst: 500,
    errorMax: 10000,
    timeout: 10000,
  };
  const PREVIEW_EVERY = 800;
  const RECENT_EVERY = 15000;
  const TOKEN_KEY = "text2img-queue.token";

  const $ = (id) => document.getElementById(id);
  const el = {};
  for (const id of [
    "job-form", "prompt", "negative_prompt", "width", "height", "steps", "seed", "image", "strength",
    "strength-field", "batch_size", "token", "submit", "submit-note", "form-error",
    "job", "job-link", "job-prompt", "status", "message", "queue", "progress", "progress-bar",
    "progress-fill", "percent", "node-title", "steps-done", "eta", "reconnecting", "error", "preview-box",
    "preview", "result", "cancel", "reuse", "recent", "recent-note", "recent-refresh",
  ]) {
    el[id] = $(id);
  }

  // ---------------------------------------------------------------- helpers

  function show(node, visible) {
    node.hidden = !visible;
  }

  function setText(node, text) {
    const value = text == null ? "" : String(text);
    if (node.textContent !== value) node.textContent = value;
  }

  function jobUrl(id) {
    return "/api/jobs/" + encodeURIComponent(id);
  }

  function authHeaders() {
    const token = el.token.value.trim();
    return token ? { Authorization: "Bearer " + token } : {};
  }

  async function readJson(response) {
    try {
      return await response.json();
    } catch {
      return null;
    }
  }

  // An API error body {"error": {"code", "message", "fields"}} in words.
  function apiErrorText(body, response) {
    const error = body && body.error;
    if (error && error.message) return error.message;
    if (response) return `The server answered ${response.status} ${response.statusText || ""}`.trim();
    return "The server could not be reached";
  }

  function formatSeconds(seconds) {
    if (seconds == null || !Number.isFinite(seconds)) return "";
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return `${s} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} min ${s % 60} s`;
    return `${Math.floor(m / 60)} h ${m % 60} min`;
  }

  function formatBytes(size) {
    if (!Number.isFinite(size)) return "";
    if (size < 1024) return `${size} B`;
    if (size < 1024 * 1024) return `${(size / 1024).toFixed(1)} KB`;
    return `${(size / 1024 / 1024).toFixed(1)} MB`;
  }

  function formatTime(epochSeconds) {
    if (!Number.isFinite(epochSeconds)) return "";
    const date = new Date(epochSeconds * 1000);
    const ageSeconds = (Date.now() - date.getTime()) / 1000;
    if (ageSeconds < 60) return "just now";
    if (ageSeconds < 3600) return `${Math.floor(ageSeconds / 60)} min ago`;
    if (ageSeconds < 86400) return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    return date.toLocaleString([], { dateStyle: "short", timeStyle: "short" });
  }

  function jitter(ms) {
    return Math.round(ms * (0.85 + Math.random() * 0.3));
  }

  function extension(contentType) {
    const sub = (contentType || "image/png").split("/")[1] || "png";
    return sub === "jpeg" ? "jpg" : sub.replace(/[^a-z0-9]/gi, "") || "png";
  }

  // ---------------------------------------------------------------- the form

  function clearFieldErrors() {
    for (const node of document.querySelectorAll(".field-error")) {
      node.hidden = true;
      node.textContent = "";
    }
    for (const node of document.querySelectorAll("[aria-invalid]")) node.removeAttribute("aria-invalid");
    show(el["form-error"], false);
    setText(el["form-error"], "");
  }

  function showFieldError(field, message) {
    const note = $(`${field}-error`);
    const input = $(field);
    if (input) input.setAttribute("aria-invalid", "true");
    if (note) {
      note.textContent = note.textContent ? `${note.textContent}; ${message}` : message;
      note.hidden = false;
      return true;
    }
    return false;
  }

  function showFormError(message, fields) {
    const box = el["form-error"];
    box.replaceChildren();
    const head = document.createElement("p");
    const placed = (fields || []).some((item) => item && item.field && $(`${item.field}-error`));
    const text = message.charAt(0).toUpperCase() + message.slice(1);
    head.textContent = placed && !/marked fields/.test(text) ? `${text.replace(/\.$/, "")}: see the marked fields.` : text;
    box.append(head);
    const unplaced = [];
    for (const item of fields || []) {
      if (!item || !item.field) continue;
      if (!showFieldError(item.field, item.message)) unplaced.push(item);
    }
    if (unplaced.length) {
      const list = document.createElement("ul");
      for (const item of unplaced) {
        const li = document.createElement("li");
        li.textContent = `${item.field}: ${item.message}`;
        list.append(li);
      }
      box.append(list);
    }
    show(box, true);
  }

  // The browser's own checks, in words next to each field, before anything is sent.
  function checkForm() {
    const problems = [];
    if (!el.prompt.value.trim()) problems.push({ field: "prompt", message: "Write a prompt." });
    for (const name of ["width", "height"]) {
      const raw = el[name].value.trim();
      const value = Number(raw);
      if (!raw || !Number.isInteger(value) || value < 64 || value > 2048) {
        problems.push({ field: name, message: "A whole number from 64 to 2048." });
      } else if (value % 8) {
        problems.push({ field: name, message: `Must be a multiple of 8 (try ${Math.round(value / 8) * 8}).` });
      }
    }
    const steps = Number(el.steps.value);
    if (!el.steps.value.trim() || !Number.isInteger(steps) || steps < 1 || steps > 150) {
      problems.push({ field: "steps", message: "A whole number from 1 to 150." });
    }
    const seed = el.seed.value.trim();
    if (seed && !/^\d+$/.test(seed)) problems.push({ field: "seed", message: "A whole number of 0 or more, or blank." });
    if (el.image.files.length) {
      const strength = Number(el.strength.value);
      if (!(strength >= 0 && strength <= 1)) problems.push({ field: "strength", message: "A number from 0 to 1." });
    }
    return problems;
  }

  function formData() {
    const data = new FormData();
    for (const name of ["prompt", "negative_prompt", "width", "height", "steps", "seed"]) {
      const value = el[name].value.trim();
      if (value !== "") data.append(name, name === "prompt" || name === "negative_prompt" ? el[name].value : value);
    }
    if (el.batch_size.value !== "1") data.append("batch_size", el.batch_size.value);
    if (el.image.files.length) {
      data.append("image", el.image.files[0]);
      if (el.strength.value.trim() !== "") data.append("strength", el.strength.value.trim());
    }
    return data;
  }

  let submitting = false;

  async function onSubmit(event) {
    event.preventDefault();
    if (submitting) return;
    clearFieldErrors();
    const problems = checkForm();
    if (problems.length) {
      showFormError("Please fix the marked fields.", problems);
      const first = $(problems[0].field);
      if (first) first.focus();
      return;
    }
    submitting = true;
    el.submit.disabled = true;
    setText(el["submit-note"], "Sending…");
    try {
      let response;
      try {
        response = await fetch("/api/jobs", {
          method: "POST",
          body: formData(),
          headers: authHeaders(),
          signal: AbortSignal.timeout(30000),
        });
      } catch (error) {
        showFormError(`Could not reach the server (${error.name === "TimeoutError" ? "timed out" : "network error"}). ` +
                      "The job may not have been queued; check the recent jobs below before trying again.");
        return;
      }
      const body = await readJson(response);
      if (!response.ok || !body || !body.id) {
        const error = body && body.error;
        let message = apiErrorText(body, response);
        if (response.status === 401) {
          message += ". Enter the API token under “More options”.";
          document.querySelector("details.more").open = true;
        }
        showFormError(message, error && error.fields);
        return;
      }
      rememberToken();
      follow(body.id, { fresh: true, seed: body.seed });
      refreshRecent();
    } finally {
      submitting = false;
      el.submit.disabled = false;
      setText(el["submit-note"], "");
    }
  }

  function rememberToken() {
    try {
      const token = el.token.value.trim();
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch {
      /* storage may be unavailable */
    }
  }

  function reuseSettings(request) {
    if (!request) return;
    for (const name of ["prompt", "negative_prompt", "width", "height", "steps", "seed"]) {
      if (request[name] != null) el[name].value = String(request[name]);
    }
    if (request.batch_size != null) el.batch_size.value = String(request.batch_size);
    el.prompt.focus();
  }

  // ---------------------------------------------------------------- following one job

  let current = null; // the followed job: {id, timer, ...}

  function follow(id, options = {}) {
    stopFollowing();
    const job = {
      id,
      timer: null,
      polls: 0,
      failures: 0,
      queuedPolls: 0,
      idlePolls: 0,
      lastProgressKey: "",
      lastPreviewAt: 0,
      previewBusy: false,
      previewUrl: null,
      status: null,
      resultFor: null,
      stopped: false,
      inFlight: null,
    };
    current = job;
    const url = new URL(window.location.href);
    url.search = "";
    url.searchParams.set("job", id);
    history.replaceState({ job: id }, "", url.pathname + url.search);
    resetJobView(job, options);
    poll(job);
    markRecentCurrent();
  }

  function stopFollowing() {
    if (!current) return;
    current.stopped = true;
    clearTimeout(current.timer);
    if (current.inFlight) current.inFlight.abort();
    if (current.previewUrl) URL.revokeObjectURL(current.previewUrl);
    current = null;
  }

  function resetJobView(job, options) {
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

  function schedule(job, delay) {
    if (job.stopped) return;
    clearTimeout(job.timer);
    if (document.hidden) delay = Math.max(delay, POLL.hidden);
    job.timer = setTimeout(() => poll(job), delay);
  }

  async function poll(job) {
    if (job.stopped || job.inFlight) return;
    clearTimeout(job.timer);
    job.polls += 1;
    const controller = new AbortController();
    const timeout = setTimeout(() => controller.abort(), POLL.timeout);
    job.inFlight = controller;
    let response = null;
    let body = null;
    try {
      response = await fetch(jobUrl(job.id), { cache: "no-store", signal: controller.signal });
      body = await readJson(response);
    } catch {
      response = null;
    } finally {
      clearTimeout(timeout);
      job.inFlight = null;
    }
    if (job.stopped) return;

    if (response && response.status === 404) {
      // The id is unknown (never queued, or expired): nothing more will come.
      job.stopped = true;
      show(el.reconnecting, false);
      el.job.dataset.state = "UNKNOWN";
      setText(el.status, "Not found");
      showJobError(apiErrorText(body, response));
      show(el.cancel, false);
      return;
    }
    if (!response || !response.ok || !body || !body.state) {
      // A failed poll (network, 5xx, proxy page): keep the job, back off, say so.
      job.failures += 1;
      const delay = Math.min(POLL.errorMax, POLL.errorFirst * 2 ** (job.failures - 1));
      const why = response ? `the server answered ${response.status}` : "no answer from the server";
      setText(el.reconnecting, `Reconnecting… (${why}; retrying in ${formatSeconds(delay / 1000) || "1 s"})`);
      show(el.reconnecting, true);
      el.job.dataset.reconnecting = "true";
      schedule(job, jitter(delay));
      return;
    }
    if (job.failures) {
      job.failures = 0;
      show(el.reconnecting, false);
      delete el.job.dataset.reconnecting;
    }
    render(job, body);
    if (TERMINAL.has(body.state)) {
      job.stopped = true;
      refreshRecent();
      return;
    }
    schedule(job, jitter(nextDelay(job, body)));
  }

  function nextDelay(job, status) {
    if (status.state === "QUEUED") {
      job.queuedPolls += 1;
      return Math.min(POLL.queuedMax, POLL.queuedFirst * 1.5 ** (job.queuedPolls - 1));
    }
    // Running: every 0.5 s while something changes, easing to 1 s while nothing does.
    const progress = status.progress || {};
    const key = [status.phase, progress.value, progress.overall_percent, status.node && status.node.id].join("|");
    if (key !== job.lastProgressKey) {
      job.lastProgressKey = key;
      job.idlePolls = 0;
    } else {
      job.idlePolls += 1;
    }
    return Math.min(POLL.runningIdleMax, POLL.running * 1.25 ** job.idlePolls);
  }

  function setProgress(percent) {
    const value = Math.max(0, Math.min(100, Number(percent) || 0));
    el["progress-fill"].style.width = `${value}%`;
    el["progress-bar"].setAttribute("aria-valuenow", String(value));
    setText(el.percent, `${value.toFixed(value % 1 ? 1 : 0)}%`);
  }

  function render(job, status) {
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
    if (request.template === "img2img") facts.push(`from an input image (strength ${request.strength})`);
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

    if (state === "PROGRESS" || state === "STARTED") maybeFetchPreview(job);
    updateRecentEntry(status);

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

  function showJobError(text) {
    setText(el.error, text);
    show(el.error, true);
  }

  // The latest JPEG preview (204 = none yet). Fetched as a blob so a missing one never shows a broken image.
  async function maybeFetchPreview(job) {
    const now = Date.now();
    if (job.previewBusy || now - job.lastPreviewAt < PREVIEW_EVERY) return;
    job.previewBusy = true;
    job.lastPreviewAt = now;
    try {
      const response = await fetch(`${jobUrl(job.id)}/preview`, {
        cache: "no-store",
        signal: AbortSignal.timeout(POLL.timeout),
      });
      if (job !== current || response.status !== 200) return;
      const blob = await response.blob();
      if (!blob.size || job !== current || (job.status && job.status.state === "SUCCESS")) return;
      const url = URL.createObjectURL(blob);
      const old = job.previewUrl;
      job.previewUrl = url;
      el.preview.src = url;
      labelPreview("Live preview");
      show(el["preview-box"], true);
      if (old) setTimeout(() => URL.revokeObjectURL(old), 1000);
    } catch {
      /* a missed preview is fine: the next poll tries again */
    } finally {
      job.previewBusy = false;
    }
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
      download.download = `${status.id}-${image.index != null ? image.index : n}.${extension(image.content_type)}`;
      download.textContent = images.length > 1 ? `Download image ${n + 1}` : "Download";
      const facts = document.createElement("span");
      facts.className = "hint";
      facts.textContent = [image.width && image.height ? `${image.width}×${image.height}` : "",
                           extension(image.content_type).toUpperCase(), formatBytes(image.size)]
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

  async function onCancel() {
    const job = current;
    if (!job || job.stopped) return;
    el.cancel.disabled = true;
    setText(el.cancel, "Cancelling…");
    try {
      const response = await fetch(jobUrl(job.id), {
        method: "DELETE",
        headers: authHeaders(),
        signal: AbortSignal.timeout(POLL.timeout),
      });
      const body = await readJson(response);
      if (job !== current) return;
      if (!response.ok) {
        let message = `Could not cancel: ${apiErrorText(body, response)}`;
        if (response.status === 401) {
          message += ". Enter the API token under “More options”.";
          document.querySelector("details.more").open = true;
        }
        showJobError(message);
        el.cancel.disabled = false;
        return;
      }
      if (body && body.state) {
        render(job, body);
        if (TERMINAL.has(body.state)) {
          job.stopped = true;
          clearTimeout(job.timer);
          refreshRecent();
          return;
        }
      }
      poll(job);
    } catch {
      if (job === current) {
        showJobError("Could not reach the server to cancel; try again.");
        el.cancel.disabled = false;
      }
    } finally {
      setText(el.cancel, "Cancel");
    }
  }

  // ---------------------------------------------------------------- recent jobs

  let recentTimer = null;
  let recentBusy = false;

  async function refreshRecent() {
    clearTimeout(recentTimer);
    recentTimer = setTimeout(refreshRecent, RECENT_EVERY);
    if (recentBusy || document.hidden) return;
    recentBusy = true;
    try {
      const response = await fetch("/api/jobs?limit=20", { cache: "no-store", signal: AbortSignal.timeout(POLL.timeout) });
      const body = await readJson(response);
      if (!response.ok || !body || !Array.isArray(body.jobs)) throw new Error(apiErrorText(body, response));
      renderRecent(body.jobs);
      show(el["recent-note"], false);
    } catch (error) {
      setText(el["recent-note"], `Could not load recent jobs (${error.message || "network error"}); retrying.`);
      show(el["recent-note"], true);
    } finally {
      recentBusy = false;
    }
  }

  function renderRecent(jobs) {
    const items = jobs.map((status) => {
      const li = document.createElement("li");
      li.className = "recent-job";
      li.dataset.jobId = status.id;
      li.dataset.state = status.state;
      const link = document.createElement("a");
      link.href = `/?job=${encodeURIComponent(status.id)}`;
      link.dataset.job = status.id;
      const thumb = document.createElement("span");
      thumb.className = "thumb";
      const first = status.state === "SUCCESS" && status.images && status.images[0];
      if (first) {
        const img = document.createElement("img");
        img.src = first.url;
        img.alt = "";
        img.loading = "lazy";
        img.width = 48;
        img.height = 48;
        thumb.append(img);
      }
      const text = document.createElement("span");
      text.className = "recent-text";
      const prompt = document.createElement("span");
      prompt.className = "recent-prompt";
      prompt.textContent = (status.request && status.request.prompt) || status.id;
      const meta = document.createElement("span");
      meta.className = "hint";
      const percent = status.progress && status.progress.overall_percent;
      const bits = [formatTime(status.created_at)];
      if (status.state === "PROGRESS" && percent != null) bits.push(`${Math.round(percent)}%`);
      if (status.state === "QUEUED" && status.queue && status.queue.position) bits.push(`position ${status.queue.position}`);
      meta.textContent = bits.filter(Boolean).join(" · ");
      text.append(prompt, meta);
      const badge = document.createElement("span");
      badge.className = `badge state-${status.state.toLowerCase()}`;
      badge.textContent = STATE_WORDS[status.state] || status.state;
      link.append(thumb, text, badge);
      li.append(link);
      return li;
    });
    el.recent.replaceChildren(...items);
    if (!items.length) {
      const li = document.createElement("li");
      li.className = "hint empty";
      li.textContent = "No jobs yet.";
      el.recent.append(li);
    }
    markRecentCurrent();
  }

  // The followed job's line in the recent list follows its state between refreshes of the list.
  function updateRecentEntry(status) {
    const li = [...el.recent.querySelectorAll("li.recent-job")].find((item) => item.dataset.jobId === status.id);
    if (!li || li.dataset.state === status.state) return;
    li.dataset.state = status.state;
    const badge = li.querySelector(".badge");
    if (badge) {
      badge.className = `badge state-${status.state.toLowerCase()}`;
      badge.textContent = STATE_WORDS[status.state] || status.state;
    }
  }

  function markRecentCurrent() {
    for (const li of el.recent.querySelectorAll("li.recent-job")) {
      li.classList.toggle("current", Boolean(current) && li.dataset.jobId === current.id);
    }
  }

  function onRecentClick(event) {
    const link = event.target.closest("a[data-job]");
    if (!link || event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey || event.altKey) return;
    event.preventDefault();
    follow(link.dataset.job);
    el.job.scrollIntoView({ behavior: "smooth", block: "start" });
  }

  // ---------------------------------------------------------------- start

  function init() {
    try {
      const token = sessionStorage.getItem(TOKEN_KEY);
      if (token) el.token.value = token;
    } catch {
      /* storage may be unavailable */
    }
    el["job-form"].addEventListener("submit", onSubmit);
    el.image.addEventListener("change", () => show(el["strength-field"], el.image.files.length > 0));
    el.cancel.addEventListener("click", onCancel);
    el.reuse.addEventListener("click", () => current && current.status && reuseSettings(current.status.request));
    el.recent.addEventListener("click", onRecentClick);
    el["recent-refresh"].addEventListener("click", refreshRecent);
    document.addEventListener("visibilitychange", () => {
      if (document.hidden) return;
      if (current && !current.stopped) poll(current);
      refreshRecent();
    });
    const id = new URLSearchParams(window.location.search).get("job");
    if (id) follow(id);
    refreshRecent();
  }

  init();
})();
