// The page's fixed elements by id, and the two ways the other modules change them. A template's fields come and
// go with the template: look them up with byId.

export const byId = (id) => document.getElementById(id);

export const el = {};
for (const id of [
  "job-form", "template", "template-error", "template-fields", "priority", "token", "submit", "submit-note",
  "form-error",
  "job", "job-link", "job-prompt", "status", "message", "queue", "progress", "progress-bar",
  "progress-fill", "percent", "node-title", "steps-done", "eta", "reconnecting", "error", "preview-box",
  "preview", "result", "cancel", "reuse", "recent", "recent-note", "recent-refresh",
]) {
  el[id] = byId(id);
}

export function show(node, visible) {
  node.hidden = !visible;
}

export function setText(node, text) {
  const value = text == null ? "" : String(text);
  if (node.textContent !== value) node.textContent = value;
}
