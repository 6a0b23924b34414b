// The browser's checks of one template parameter, from the type and limits GET /api/templates declares for it.

const WHOLE = /^-?\d+$/;

function range(param) {
  const { minimum: min, maximum: max } = param;
  if (min != null && max != null) return `from ${min} to ${max}`;
  if (min != null) return `of ${min} or more`;
  if (max != null) return `of ${max} or less`;
  return "";
}

function withinLimits(param, value) {
  return (param.minimum == null || value >= param.minimum) && (param.maximum == null || value <= param.maximum);
}

function sentence(...parts) {
  return `${parts.filter(Boolean).join(" ")}.`;
}

function checkInteger(param, raw) {
  const value = Number(raw);
  if (!WHOLE.test(raw) || !withinLimits(param, value)) return sentence("A whole number", range(param));
  const step = param.multiple_of || 1;
  if (value % step) return `Must be a multiple of ${step} (try ${Math.round(value / step) * step}).`;
  return null;
}

function checkNumber(param, raw) {
  const value = Number(raw);
  if (!Number.isFinite(value) || !withinLimits(param, value)) return sentence("A number", range(param));
  return null;
}

function checkText(param, raw) {
  if (param.max_length != null && raw.length > param.max_length) {
    return `At most ${param.max_length} characters (this is ${raw.length}).`;
  }
  return null;
}

// The seed's maximum (2^63 - 1) is beyond a JavaScript number: the server checks it.
function checkSeed(raw) {
  return /^\d+$/.test(raw) ? null : "A whole number of 0 or more, or blank for a random one.";
}

function isBlank(param, control) {
  return param.type === "image" ? control.files.length === 0 : control.value.trim() === "";
}

function blankMessage(param) {
  if (param.type === "image") return "Choose an image file.";
  if (param.type === "choice") return "Choose one.";
  return "This field is required.";
}

// A problem in words, or null. `control` is the parameter's input, textarea or select.
export function checkParam(param, control) {
  if (control.validity && control.validity.badInput) return "Not a number.";
  if (isBlank(param, control)) return param.required ? blankMessage(param) : null;
  const raw = param.type === "text" ? control.value : control.value.trim();
  if (param.type === "integer") return checkInteger(param, raw);
  if (param.type === "number") return checkNumber(param, raw);
  if (param.type === "seed") return checkSeed(raw);
  if (param.type === "text") return checkText(param, raw);
  return null;
}
