// The project page's webhooks card (its owner's and administrators' only): add and remove through the
// API with the page's CSRF token; the server renders the list, so a change reloads the page.
"use strict";

(() => {
  const card = document.getElementById("webhooks-card");
  if (!card) return;
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;
  const errorBox = document.getElementById("webhook-error");

  // An API refusal's words: {field: [{message}]}, {detail}, or text.
  function messages(body) {
    if (body == null) return [];
    if (typeof body === "string") return [body];
    if (typeof body.message === "string") return [body.message];
    if (body.detail != null) return messages(body.detail);
    if (Array.isArray(body)) return body.flatMap((e) => typeof e === "string" ? [e] : messages(e.message ?? e.msg ?? e));
    return Object.values(body).flatMap((v) => Array.isArray(v) ? v.flatMap(messages) : messages(v));
  }

  async function send(method, path, body) {
    const answer = await fetch("/api/v0" + path, { method, body: body === undefined ? undefined : JSON.stringify(body),
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRF-Token": csrf() } });
    if (answer.ok) return true;
    let parsed;
    try { parsed = await answer.json(); } catch (_) { parsed = `${answer.status} ${answer.statusText}`; }
    errorBox.textContent = messages(parsed).join(" ");
    errorBox.hidden = false;
    return false;
  }

  document.getElementById("webhook-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    errorBox.hidden = true;
    const events = [...card.querySelectorAll('input[name="webhook-event"]:checked')].map((box) => box.value);
    const secret = document.getElementById("webhook-secret").value;
    const made = await send("POST", `/projects/${encodeURIComponent(card.dataset.project)}/webhooks/`, {
      url: document.getElementById("webhook-url").value.trim(), events,
      format: document.getElementById("webhook-format").value, secret: secret || null });
    if (made) location.reload();
  });

  for (const button of card.querySelectorAll("button.webhook-remove")) {
    button.addEventListener("click", async () => {
      errorBox.hidden = true;
      if (await send("DELETE", `/webhooks/${encodeURIComponent(button.dataset.webhook)}/`)) location.reload();
    });
  }
})();
