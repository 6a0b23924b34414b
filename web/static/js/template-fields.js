// The template chooser and the chosen template's fields, made from GET /api/templates: one field per parameter
// (a label from its name, its description as a hint, its default, its limits as attributes), the request the
// fields make, their checks, and filling them in again from a job's request ("Use these settings").
// A field's id is its parameter's name, except an image parameter's: its file input is #image, as the upload is.
import { apiErrorText, fetchTemplates, readJson } from "./api.js";
import { byId, el, setText, show } from "./dom.js";
import { checkParam } from "./field-checks.js";

const RETRY_EVERY = 5000;
const IMAGE_TYPES = "image/png,image/jpeg,image/webp";
const WIDE = new Set(["text", "image", "checkpoint"]); // fields a whole row wide

const templates = new Map(); // name -> {name, description, params}

export async function loadTemplates() {
  try {
    const response = await fetchTemplates();
    const body = await readJson(response);
    if (!response.ok || !body || !Array.isArray(body.templates)) throw new Error(apiErrorText(body, response));
    show(el["template-error"], false);
    fillChooser(body);
  } catch (error) {
    setText(el["template-error"], `Could not load the templates (${error.message || "network error"}); retrying.`);
    show(el["template-error"], true);
    setTimeout(loadTemplates, RETRY_EVERY);
  }
}

function fillChooser(body) {
  templates.clear();
  for (const template of body.templates) templates.set(template.name, template);
  el.template.replaceChildren(...body.templates.map(templateOption));
  const first = body.templates[0];
  el.template.value = templates.has(body.default) ? body.default : first ? first.name : "";
  renderFields(new Map());
}

function templateOption(template) {
  const text = template.description ? `${template.name} — ${template.description}` : template.name;
  return make("option", { value: template.name, textContent: text });
}

export function chosenTemplate() {
  return templates.get(el.template.value) || null;
}

export function onTemplateChange() {
  renderFields(typedValues());
}

function idOf(param) {
  return param.type === "image" ? "image" : param.name;
}

// The id of the field a request field names: an image parameter's is #image.
export function controlId(name) {
  const template = chosenTemplate();
  const param = template && template.params.find((item) => item.name === name);
  return param ? idOf(param) : name;
}

function controlOf(param) {
  return byId(idOf(param));
}

function controls() {
  return el["template-fields"].querySelectorAll("input, textarea, select");
}

// What the person changed, by field id: values unlike the default, and chosen files.
function typedValues() {
  const values = new Map();
  for (const control of controls()) {
    if (control.type === "file") {
      if (control.files.length) values.set(control.id, control.files);
    } else if (control.value !== control.dataset.default) {
      values.set(control.id, control.value);
    }
  }
  return values;
}

// The chosen template's fields, with these values (by field id) where given, else the defaults.
function renderFields(values) {
  const template = chosenTemplate();
  el["job-form"].dataset.template = template ? template.name : "";
  if (!template) {
    el["template-fields"].replaceChildren(make("p", { className: "hint", textContent: "No templates are installed." }));
    return;
  }
  const params = shownOrder(template);
  el["template-fields"].replaceChildren(...params.map(field));
  for (const param of params) setValue(param, controlOf(param), values.get(idOf(param)));
}

// The required parameters first (the prompt, the input image), otherwise as the template declares them.
function shownOrder(template) {
  return [...template.params].sort((a, b) => Number(Boolean(b.required)) - Number(Boolean(a.required)));
}

function setValue(param, control, value) {
  if (param.type === "image") {
    if (value instanceof FileList) control.files = value;
    return;
  }
  const initial = param.default == null ? "" : String(param.default);
  const wanted = typeof value === "string" ? value : initial;
  control.dataset.default = initial;
  control.value = wanted;
  if (control.value !== wanted) control.value = initial; // not one of a select's options, or not a number
}

function labelText(name) {
  const words = name.replace(/_/g, " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}

function field(param) {
  const id = idOf(param);
  const wrapper = make("div", { className: WIDE.has(param.type) ? "field wide" : "field", id: `${id}-field` });
  const control = makeControl(param, id);
  wrapper.append(make("label", { htmlFor: id, textContent: labelText(param.name) }), control);
  const described = [];
  if (param.description) {
    wrapper.append(make("p", { className: "hint field-hint", id: `${id}-hint`, textContent: param.description }));
    described.push(`${id}-hint`);
  }
  wrapper.append(make("p", { className: "field-error", id: `${id}-error`, hidden: true }));
  described.push(`${id}-error`);
  control.setAttribute("aria-describedby", described.join(" "));
  return wrapper;
}

const CONTROLS = {
  text: textArea,
  integer: numberInput,
  number: numberInput,
  seed: numberInput,
  choice: choiceSelect,
  checkpoint: textInput,
  image: fileInput,
};

function makeControl(param, id) {
  const control = (CONTROLS[param.type] || textInput)(param);
  control.id = id;
  control.name = id;
  control.required = Boolean(param.required);
  return control;
}

function textArea(param) {
  const area = make("textarea", { rows: param.required ? 4 : 2 });
  if (param.max_length != null) area.maxLength = param.max_length;
  return area;
}

// Limits beyond a JavaScript number's exact range (a seed's 2^63 - 1) are left to the server.
function exact(limit) {
  return limit != null && Math.abs(limit) <= Number.MAX_SAFE_INTEGER;
}

function numberInput(param) {
  const decimal = param.type === "number";
  const input = make("input", { type: "number", inputMode: decimal ? "decimal" : "numeric" });
  if (exact(param.minimum)) input.min = String(param.minimum);
  if (exact(param.maximum)) input.max = String(param.maximum);
  input.step = decimal ? "any" : String(param.multiple_of || 1);
  if (param.type === "seed") input.placeholder = "random";
  return input;
}

function choiceSelect(param) {
  const select = make("select");
  if (param.default == null) {
    select.append(make("option", { value: "", textContent: param.required ? "Choose…" : "(default)" }));
  }
  for (const option of param.options.map(String)) select.append(make("option", { value: option, textContent: option }));
  return select;
}

function textInput() {
  return make("input", { type: "text", autocomplete: "off", spellcheck: false });
}

function fileInput() {
  return make("input", { type: "file", accept: IMAGE_TYPES });
}

function make(tag, properties = {}) {
  return Object.assign(document.createElement(tag), properties);
}

// The job request: the template and every field that is not blank (blank ones get the template's defaults).
export function requestData() {
  const template = chosenTemplate();
  const data = new FormData();
  data.append("template", template.name);
  if (el.priority.value !== "5") data.append("priority", el.priority.value);
  for (const param of template.params) {
    const control = controlOf(param);
    if (param.type === "image") {
      if (control.files.length) data.append("image", control.files[0]);
    } else if (control.value.trim() !== "") {
      data.append(param.name, param.type === "text" ? control.value : control.value.trim());
    }
  }
  return data;
}

// The browser's checks of the chosen template's fields: [{field, message}].
export function fieldProblems() {
  return shownOrder(chosenTemplate())
    .map((param) => ({ field: idOf(param), message: checkParam(param, controlOf(param)) }))
    .filter((problem) => problem.message);
}

// A job's request back in the form: its template (if still offered) and its values; a chosen file stays.
export function reuseSettings(request) {
  if (!request || !chosenTemplate()) return;
  if (templates.has(request.template)) el.template.value = request.template;
  el.priority.value = String(request.priority ?? 5);
  const values = new Map([...typedValues()].filter(([, value]) => value instanceof FileList));
  for (const [name, value] of Object.entries(request)) {
    if (value != null && typeof value !== "object") values.set(name, String(value));
  }
  renderFields(values);
  const first = controls()[0];
  if (first) first.focus();
}
