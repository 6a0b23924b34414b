// The new-image form: checks the fields, shows errors next to them, submits the job and follows it.
import { apiErrorText, readJson, submitJob } from "./api.js";
import { byId, el, setText, show } from "./dom.js";
import { follow } from "./job-follow.js";
import { refreshRecent } from "./recent-jobs.js";
import { rememberToken, withTokenHint } from "./token.js";

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
  const note = byId(`${field}-error`);
  const input = byId(field);
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
  const placed = (fields || []).some((item) => item && item.field && byId(`${item.field}-error`));
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

export async function onSubmit(event) {
  event.preventDefault();
  if (submitting) return;
  clearFieldErrors();
  const problems = checkForm();
  if (problems.length) {
    showFormError("Please fix the marked fields.", problems);
    const first = byId(problems[0].field);
    if (first) first.focus();
    return;
  }
  submitting = true;
  el.submit.disabled = true;
  setText(el["submit-note"], "Sending…");
  try {
    let response;
    try {
      response = await submitJob(formData());
    } catch (error) {
      showFormError(`Could not reach the server (${error.name === "TimeoutError" ? "timed out" : "network error"}). ` +
                    "The job may not have been queued; check the recent jobs below before trying again.");
      return;
    }
    const body = await readJson(response);
    if (!response.ok || !body || !body.id) {
      const error = body && body.error;
      showFormError(withTokenHint(apiErrorText(body, response), response), error && error.fields);
      return;
    }
    rememberToken();
    follow(body.id, { fresh: true });
    refreshRecent();
  } finally {
    submitting = false;
    el.submit.disabled = false;
    setText(el["submit-note"], "");
  }
}

// The strength field only means something for image-to-image.
export function onImageChange() {
  show(el["strength-field"], el.image.files.length > 0);
}

export function reuseSettings(request) {
  if (!request) return;
  for (const name of ["prompt", "negative_prompt", "width", "height", "steps", "seed"]) {
    if (request[name] != null) el[name].value = String(request[name]);
  }
  if (request.batch_size != null) el.batch_size.value = String(request.batch_size);
  el.prompt.focus();
}
