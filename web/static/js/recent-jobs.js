// The recent jobs list: refreshed every 15 s while the page is visible, the followed job's line marked.
import { apiErrorText, fetchRecentJobs, readJson } from "./api.js";
import { el, setText, show } from "./dom.js";
import { formatTime, STATE_WORDS } from "./format.js";

const RECENT_EVERY = 15000;

let recentTimer = null;
let recentBusy = false;
let currentId = null; // the followed job's, set by markRecentCurrent

export async function refreshRecent() {
  clearTimeout(recentTimer);
  recentTimer = setTimeout(refreshRecent, RECENT_EVERY);
  if (recentBusy || document.hidden) return;
  recentBusy = true;
  try {
    const response = await fetchRecentJobs();
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
  markRecentCurrent(currentId);
}

// The followed job's line in the recent list follows its state between refreshes of the list.
export function updateRecentEntry(status) {
  const li = [...el.recent.querySelectorAll("li.recent-job")].find((item) => item.dataset.jobId === status.id);
  if (!li || li.dataset.state === status.state) return;
  li.dataset.state = status.state;
  const badge = li.querySelector(".badge");
  if (badge) {
    badge.className = `badge state-${status.state.toLowerCase()}`;
    badge.textContent = STATE_WORDS[status.state] || status.state;
  }
}

export function markRecentCurrent(id) {
  currentId = id;
  for (const li of el.recent.querySelectorAll("li.recent-job")) {
    li.classList.toggle("current", li.dataset.jobId === id);
  }
}

// The id of the recent job a plain left click opens, or null; such a click opens it in this page instead.
export function recentJobClicked(event) {
  const link = event.target.closest("a[data-job]");
  if (!link || event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey || event.altKey) return null;
  event.preventDefault();
  return link.dataset.job;
}
