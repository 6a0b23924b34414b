// The API token from "More options": sent as a Bearer header, kept for the tab's session, asked for on a 401.
import { el } from "./dom.js";

const TOKEN_KEY = "text2img-queue.token";

export function authHeaders() {
  const token = el.token.value.trim();
  return token ? { Authorization: "Bearer " + token } : {};
}

export function restoreToken() {
  try {
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) el.token.value = token;
  } catch {
    /* storage may be unavailable */
  }
}

export function rememberToken() {
  try {
    const token = el.token.value.trim();
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    /* storage may be unavailable */
  }
}

// An error message for the person, which on a 401 also opens the options where the token goes.
export function withTokenHint(message, response) {
  if (response.status !== 401) return message;
  document.querySelector("details.more").open = true;
  return message + ". Enter the API token under “More options”.";
}
