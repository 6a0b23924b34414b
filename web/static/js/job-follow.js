// Following one job: by its event stream, or by polling its status with backoff when there is none; fetching its
// live preview, cancelling it.
import {
  apiErrorText, cancelJob, fetchJob, fetchPreview, openJobEvents, readJson, REQUEST_TIMEOUT, TERMINAL,
} from "./api.js";
import { el, setText } from "./dom.js";
import { formatSeconds } from "./format.js";
import {
  hideReconnecting, render, resetJobView, showJobError, showNotFound, showPreview, showReconnecting,
} from "./job-view.js";
import { markRecentCurrent, refreshRecent, updateRecentEntry } from "./recent-jobs.js";
import { withTokenHint } from "./token.js";

// Polling delays (ms): fast while a job runs, slower while it waits, backoff after a failed poll.
const POLL = {
  running: 500,
  runningIdleMax: 1000,
  queuedFirst: 500,
  queuedMax: 2000,
  hidden: 5000,
  errorFirst: 500,
  errorMax: 10000,
};
const PREVIEW_EVERY = 800;
// How long an event stream may go without its first status, or without reconnecting, before the page polls (ms).
const EVENTS_SILENCE = 5000;

let current = null; // the followed job: {id, timer, ...}

export function follow(id, options = {}) {
  stopFollowing();
  const job = {
    id,
    timer: null,
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
    events: null, // the EventSource while the job is followed by its events
    eventsTimer: null,
  };
  current = job;
  const url = new URL(window.location.href);
  url.search = "";
  url.searchParams.set("job", id);
  history.replaceState({ job: id }, "", url.pathname + url.search);
  resetJobView(job, options);
  listen(job);
  markRecentCurrent(id);
}

function stopFollowing() {
  if (!current) return;
  current.stopped = true;
  clearTimeout(current.timer);
  closeEvents(current);
  if (current.inFlight) current.inFlight.abort();
  if (current.previewUrl) URL.revokeObjectURL(current.previewUrl);
  current = null;
}

// The followed job's request, for "Use these settings".
export function followedRequest() {
  return current && current.status ? current.status.request : null;
}

// At once rather than on the next timer, which runs late while the page is hidden (events are never late).
export function pollFollowedJob() {
  if (current && !current.stopped && !current.events) poll(current);
}

// Follows the job by its event stream, each status shown as a poll's is; polls instead when the browser has no
// EventSource, the server refuses the stream (503 when it serves too many), or it stays silent.
function listen(job) {
  if (typeof EventSource !== "function") {
    poll(job);
    return;
  }
  const source = openJobEvents(job.id);
  let heard = false;
  job.events = source;
  const pollInstead = () => {
    if (job.events !== source) return;
    closeEvents(job);
    poll(job);
  };
  const expectSoon = () => {
    clearTimeout(job.eventsTimer);
    job.eventsTimer = setTimeout(pollInstead, EVENTS_SILENCE);
  };
  expectSoon(); // the stream starts with the job's status
  source.addEventListener("status", (event) => {
    if (job.events !== source) return;
    let status = null;
    try {
      status = JSON.parse(event.data);
    } catch {
      /* not a status: handled below */
    }
    if (!status || !status.state) {
      pollInstead();
      return;
    }
    heard = true;
    clearTimeout(job.eventsTimer);
    showStatus(job, status);
    if (TERMINAL.has(status.state)) finish(job);
  });
  // A reconnection with Last-Event-ID sends nothing when the job has not changed meanwhile.
  source.addEventListener("open", () => {
    if (job.events === source && heard) clearTimeout(job.eventsTimer);
  });
  source.addEventListener("error", () => {
    if (job.events !== source) return;
    if (source.readyState === EventSource.CLOSED) pollInstead(); // refused: the browser will not retry
    else expectSoon(); // the browser reconnects by itself
  });
}

function closeEvents(job) {
  clearTimeout(job.eventsTimer);
  if (job.events) job.events.close();
  job.events = null;
}

// The job has ended: nothing more to follow.
function finish(job) {
  job.stopped = true;
  clearTimeout(job.timer);
  closeEvents(job);
  refreshRecent();
}

function jitter(ms) {
  return Math.round(ms * (0.85 + Math.random() * 0.3));
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
  const controller = new AbortController();
  const timeout = setTimeout(() => controller.abort(), REQUEST_TIMEOUT);
  job.inFlight = controller;
  let response = null;
  let body = null;
  try {
    response = await fetchJob(job.id, controller.signal);
    body = await readJson(response);
  } catch {
    response = null;
  } finally {
    clearTimeout(timeout);
    job.inFlight = null;
  }
  if (job.stopped) return;

  if (response && response.status === 404) {
    job.stopped = true;
    showNotFound(apiErrorText(body, response));
    return;
  }
  if (!response || !response.ok || !body || !body.state) {
    // A failed poll (network, 5xx, proxy page): keep the job, back off, say so.
    job.failures += 1;
    const delay = Math.min(POLL.errorMax, POLL.errorFirst * 2 ** (job.failures - 1));
    const why = response ? `the server answered ${response.status}` : "no answer from the server";
    showReconnecting(`Reconnecting… (${why}; retrying in ${formatSeconds(delay / 1000) || "1 s"})`);
    schedule(job, jitter(delay));
    return;
  }
  if (job.failures) {
    job.failures = 0;
    hideReconnecting();
  }
  showStatus(job, body);
  if (TERMINAL.has(body.state)) {
    finish(job);
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

function showStatus(job, status) {
  render(job, status);
  if (status.state === "PROGRESS" || status.state === "STARTED") maybeFetchPreview(job);
  updateRecentEntry(status);
}

// The latest JPEG preview (204 = none yet). Fetched as a blob so a missing one never shows a broken image.
async function maybeFetchPreview(job) {
  const now = Date.now();
  if (job.previewBusy || now - job.lastPreviewAt < PREVIEW_EVERY) return;
  job.previewBusy = true;
  job.lastPreviewAt = now;
  try {
    const response = await fetchPreview(job.id);
    if (job !== current || response.status !== 200) return;
    const blob = await response.blob();
    if (!blob.size || job !== current || (job.status && job.status.state === "SUCCESS")) return;
    const url = URL.createObjectURL(blob);
    const old = job.previewUrl;
    job.previewUrl = url;
    showPreview(url);
    if (old) setTimeout(() => URL.revokeObjectURL(old), 1000);
  } catch {
    /* a missed preview is fine: the next status tries again */
  } finally {
    job.previewBusy = false;
  }
}

export async function cancelFollowedJob() {
  const job = current;
  if (!job || job.stopped) return;
  el.cancel.disabled = true;
  setText(el.cancel, "Cancelling…");
  try {
    const response = await cancelJob(job.id);
    const body = await readJson(response);
    if (job !== current) return;
    if (!response.ok) {
      showJobError(withTokenHint(`Could not cancel: ${apiErrorText(body, response)}`, response));
      el.cancel.disabled = false;
      return;
    }
    if (body && body.state) {
      showStatus(job, body);
      if (TERMINAL.has(body.state)) {
        finish(job);
        return;
      }
    }
    if (!job.events) poll(job);
  } catch {
    if (job === current) {
      showJobError("Could not reach the server to cancel; try again.");
      el.cancel.disabled = false;
    }
  } finally {
    setText(el.cancel, "Cancel");
  }
}
