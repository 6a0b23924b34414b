// The JSON API: the requests the page makes, and its answers' bodies and errors.
import { authHeaders } from "./token.js";

export const TERMINAL = new Set(["SUCCESS", "FAILURE", "CANCELLED"]);
export const REQUEST_TIMEOUT = 10000;
const SUBMIT_TIMEOUT = 30000;

function jobUrl(id) {
  return "/api/jobs/" + encodeURIComponent(id);
}

export function submitJob(data) {
  return fetch("/api/jobs", {
    method: "POST",
    body: data,
    headers: authHeaders(),
    signal: AbortSignal.timeout(SUBMIT_TIMEOUT),
  });
}

// No timeout of its own: the poller aborts it, on its timeout or when it stops following the job.
export function fetchJob(id, signal) {
  return fetch(jobUrl(id), { cache: "no-store", signal });
}

// The job's status changes as they happen (Server-Sent Events). The browser reconnects by itself, sending the id
// of the last status it had (Last-Event-ID), until the source is closed or the server refuses.
export function openJobEvents(id) {
  return new EventSource(`${jobUrl(id)}/events`);
}

export function fetchPreview(id) {
  return fetch(`${jobUrl(id)}/preview`, {
    cache: "no-store",
    signal: AbortSignal.timeout(REQUEST_TIMEOUT),
  });
}

export function cancelJob(id) {
  return fetch(jobUrl(id), {
    method: "DELETE",
    headers: authHeaders(),
    signal: AbortSignal.timeout(REQUEST_TIMEOUT),
  });
}

export function fetchTemplates() {
  return fetch("/api/templates", { cache: "no-store", signal: AbortSignal.timeout(REQUEST_TIMEOUT) });
}

export function fetchRecentJobs() {
  return fetch("/api/jobs?limit=20", { cache: "no-store", signal: AbortSignal.timeout(REQUEST_TIMEOUT) });
}

export async function readJson(response) {
  try {
    return await response.json();
  } catch {
    return null;
  }
}

// An API error body {"error": {"code", "message", "fields"}} in words.
export function apiErrorText(body, response) {
  const error = body && body.error;
  if (error && error.message) return error.message;
  if (response) return `The server answered ${response.status} ${response.statusText || ""}`.trim();
  return "The server could not be reached";
}
