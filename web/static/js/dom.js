// The page's elements by id, and the two ways the other modules change them.

export const byId = (id) => document.getElementById(id);

export const el = {};
for (const id of [
  "job-form", "prompt", "negative_prompt", "width", "height", "steps", "seed", "image", "strength",
  "strength-field", "batch_size", "token", "submit", "submit-note", "form-error",
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
