// text2img-queue web form: submit a job, follow it by polling /api/jobs/<id> with backoff, show the live
// preview and the result, list recent jobs. Native ES modules, no build step, no dependencies.
// This entry module connects the page's events to the other modules and starts them.
import { el } from "./dom.js";
import { cancelFollowedJob, follow, followedRequest, pollFollowedJob } from "./job-follow.js";
import { onImageChange, onSubmit, reuseSettings } from "./job-form.js";
import { recentJobClicked, refreshRecent } from "./recent-jobs.js";
import { restoreToken } from "./token.js";

function onRecentClick(event) {
  const id = recentJobClicked(event);
  if (id === null) return;
  follow(id);
  el.job.scrollIntoView({ behavior: "smooth", block: "start" });
}

restoreToken();
el["job-form"].addEventListener("submit", onSubmit);
el.image.addEventListener("change", onImageChange);
el.cancel.addEventListener("click", cancelFollowedJob);
el.reuse.addEventListener("click", () => reuseSettings(followedRequest()));
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
