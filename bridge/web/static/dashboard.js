// The dashboard's little script: confirm destructive forms, refresh the event list.
"use strict";

document.addEventListener("submit", (event) => {
  const form = event.target;
  const question = form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});

function utc(seconds) {
  return new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

function ago(seconds) {
  const s = Math.max(0, Math.floor(Date.now() / 1000 - seconds));
  if (s >= 86400) return Math.floor(s / 86400) + " d ago";
  if (s >= 3600) return Math.floor(s / 3600) + " h ago";
  if (s >= 60) return Math.floor(s / 60) + " min ago";
  return s + " s ago";
}

function cell(row, text) {
  const td = document.createElement("td");
  if (text instanceof Node) td.appendChild(text); else td.textContent = text;
  row.appendChild(td);
  return td;
}

function eventRow(e) {
  const row = document.createElement("tr");
  const link = document.createElement("a");
  link.href = "/events/" + encodeURIComponent(e.id).replace(/%2F/g, "/");
  link.textContent = e.id;
  cell(row, link);
  cell(row, e.type);
  cell(row, e.source);
  const badge = document.createElement("span");
  badge.className = "outcome outcome-" + e.outcome;
  badge.textContent = e.outcome.replace(/_/g, " ");
  cell(row, badge);
  cell(row, e.matched.join(", "));
  cell(row, ago(e.received_at)).title = utc(e.received_at);
  return row;
}

async function refresh(table, src) {
  const live = document.getElementById("live");
  if (live && !live.checked) return;
  try {
    const response = await fetch(src, { credentials: "same-origin", headers: { accept: "application/json" } });
    if (!response.ok) return;
    const body = await response.json();
    const tbody = document.createElement("tbody");
    for (const e of body.events) tbody.appendChild(eventRow(e));
    if (!body.events.length) {
      const row = document.createElement("tr");
      row.className = "empty";
      cell(row, "No events.").colSpan = 6;
      tbody.appendChild(row);
    }
    table.replaceChild(tbody, table.tBodies[0]);
    const updated = document.getElementById("updated");
    if (updated) updated.textContent = "updated " + new Date().toLocaleTimeString();
    table.dataset.refreshed = String((Number(table.dataset.refreshed) || 0) + 1);
  } catch (error) {
    // A failed refresh keeps the rows shown; the next one tries again.
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const table = document.querySelector("table[data-live]");
  if (!table) return;
  const src = table.getAttribute("data-live");
  setInterval(() => refresh(table, src), 3000);
});
