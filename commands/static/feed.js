// The feed page: entries replaced in place as the server sends them (server-sent
// events), each button confirmed, private data fetched on request (never in a URL).
"use strict";

const live = document.getElementById("live");
const list = document.getElementById("feed");
// the feed's page alone is live: first what changed since it was made, then each change
const source = list ? new EventSource(`/events?after=${list.dataset.after}`) : null;
if (!source) live.textContent = "";
source?.addEventListener("open", () => { live.textContent = "live"; live.className = "live on"; });
source?.addEventListener("error", () => { live.textContent = "reconnecting…"; live.className = "live"; });
source?.addEventListener("entry", (message) => {
  const { id, html } = JSON.parse(message.data);
  const template = document.createElement("template");
  template.innerHTML = html; // escaped by the server: every value of the log in it
  const fresh = template.content.firstElementChild;
  const old = document.getElementById("op-" + id);
  if (old) {
    old.replaceWith(fresh);
  } else {
    list.prepend(fresh);
  }
});

document.addEventListener("submit", (event) => {
  const button = event.submitter;
  if (!button) return;
  const question = button.dataset.confirm
    || (button.name === "answer" ? `Answer “${button.value}”?` : null);
  if (question && !window.confirm(question)) event.preventDefault();
});

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button.reveal");
  if (!button) return;
  const shown = button.closest("li").querySelector("pre.private");
  if (!shown.hidden) { shown.hidden = true; return; }
  const answer = await fetch(`/operations/${button.dataset.operation}/private`);
  shown.textContent = answer.ok
    ? JSON.stringify(await answer.json(), null, 2)
    : `Could not fetch it (${answer.status}): reload the page.`;
  shown.hidden = false;
});
