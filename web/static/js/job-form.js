// The new-image form: checks the fields, shows errors next to them, submits the job and follows it.
import { apiErrorText, readJson, submitJob } from "./api.js";
import { byId, el, setText, show } from "./dom.js";
import { follow } from "./job-follow.js";
import { refreshRecent } from "./recent-jobs.js";
import { chosenTemplate, controlId, fieldProblems, requestData } from "./template-fields.js";
import { rememberToken, withTokenHint } from "./token.js";

export function clearFieldErrors() {
  for (const node of document.querySelectorAll(".field-error")) {
    node.hidden = true;
    node.textContent = "";
  }
  for (const node of document.querySelectorAll("[aria-invalid]")) node.removeAttribute("aria-invalid");
  show(el["form-error"], false);
  setText(el["form-error"], "");
}

// Next to the field a request field names (an image parameter's is #image); false when there is none.
function showFieldError(field, message) {
  const id = controlId(field);
  const note = byId(`${id}-error`);
  const input = byId(id);
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
  const placed = (fields || []).some((item) => item && item.field && byId(`${controlId(item.field)}-error`));
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

let submitting = false;

export async function onSubmit(event) {
  event.preventDefault();
  if (submitting) return;
  clearFieldErrors();
  if (!chosenTemplate()) {
    showFormError("The form has no template to send yet: wait for the templates to load.");
    return;
  }
  const problems = fieldProblems();
  if (problems.length) {
    showFormError("Please fix the marked fields.", problems);
    const first = byId(controlId(problems[0].field));
    if (first) first.focus();
    return;
  }
  submitting = true;
  el.submit.disabled = true;
  setText(el["submit-note"], "Sending…");
  try {
    let response;
    try {
      response = await submitJob(requestData());
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
