// Job states, durations, sizes, times and image types in the words and units the page shows.

export const STATE_WORDS = {
  QUEUED: "Queued",
  STARTED: "Starting",
  PROGRESS: "Running",
  SUCCESS: "Done",
  FAILURE: "Failed",
  CANCELLED: "Cancelled",
};

export function formatSeconds(seconds) {
  if (seconds == null || !Number.isFinite(seconds)) return "";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function formatBytes(size) {
  if (!Number.isFinite(size)) return "";
  if (size < 1024) return `${size} B`;
  if (size < 1024 * 1024) return `${(size / 1024).toFixed(1)} KB`;
  return `${(size / 1024 / 1024).toFixed(1)} MB`;
}

export function formatTime(epochSeconds) {
  if (!Number.isFinite(epochSeconds)) return "";
  const date = new Date(epochSeconds * 1000);
  const ageSeconds = (Date.now() - date.getTime()) / 1000;
  if (ageSeconds < 60) return "just now";
  if (ageSeconds < 3600) return `${Math.floor(ageSeconds / 60)} min ago`;
  if (ageSeconds < 86400) return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return date.toLocaleString([], { dateStyle: "short", timeStyle: "short" });
}

export function fileExtension(contentType) {
  const sub = (contentType || "image/png").split("/")[1] || "png";
  return sub === "jpeg" ? "jpg" : sub.replace(/[^a-z0-9]/gi, "") || "png";
}
