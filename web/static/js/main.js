// text2img-queue web form: choose a workflow template and fill in its fields, submit a job, follow it by its event
// stream /api/jobs/<id>/events (or by polling /api/jobs/<id> with backoff when there is none), show the live preview
// and the result, list recent jobs. Native ES modules, no build step, no dependencies.
// This entry module connects the page's events to the other modules and starts them.
import { el } from "./dom.js";
import { cancelFollowedJob, follow, followedRequest, pollFollowedJob } from "./job-follow.js";
import { clearFieldErrors, onSubmit } from "./job-form.js";
import { recentJobClicked, refreshRecent } from "./recent-jobs.js";
import { loadTemplates, onTemplateChange, reuseSettings } from "./template-fields.js";
import { restoreToken } from "./token.js";

function onRecentClick(event) {
  const id = recentJobClicked(event);
  if (id === null) return;
  follow(id);
  el.job.scrollIntoView({ behavior: "smooth", block: "start" });
}

// The fields are made again in both: errors shown for the ones left behind would only mislead.
function onTemplateChosen() {
  clearFieldErrors();
  onTemplateChange();
}

function onReuse() {
  clearFieldErrors();
  reuseSettings(followedRequest());
}

restoreToken();
loadTemplates();
el.template.addEventListener("change", onTemplateChosen);
el["job-form"].addEventListener("submit", onSubmit);
el.cancel.addEventListener("click", cancelFollowedJob);
el.reuse.addEventListener("click", onReuse);
el.recent.addEventListener("click", onRecentClick);
el["recent-refresh"].addEventListener("click", refreshRecent);
document.addEventListener("visibilitychange", () => {
  if (document.hidden) return;
  pollFollowedJob();
  refreshRecent();
});
const id = new URLSearchParams(window.location.search).get("job");
if (id) follow(id);
refreshRecent();
