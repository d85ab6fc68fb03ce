// edgepipe console: reads /api/fleet every refreshSeconds and redraws. No build step, no
// framework: DOM calls and textContent only (names and reasons come from the cluster).
"use strict";

const charts = new Map(); // publish name -> {plot, key}
let refreshMs = 2000;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

const short = (v) => (v ? String(v).slice(0, 8) : "-");
const slug = (s) => String(s || "unknown").toLowerCase().replace(/[^a-z0-9]+/g, "-");

function ago(stamp) {
  if (!stamp) return "never";
  const secs = Math.max(0, Math.round((Date.now() - Date.parse(stamp)) / 1000));
  if (Number.isNaN(secs)) return stamp;
  for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60]]) {
    if (secs >= size) return `${Math.floor(secs / size)}${unit} ago`;
  }
  return `${secs}s ago`;
}

// The newest few versions, oldest first, and how many older ones there are.
function versionsText(versions) {
  const shown = versions.slice(-5).map((v) => short(v.version));
  const more = versions.length - shown.length;
  return (more > 0 ? `+${more} older, ` : "") + (shown.join(", ") || "-");
}

function pipelinesTable(pipelines) {
  const body = document.querySelector("#pipelines tbody");
  body.replaceChildren(
    ...pipelines.map((p) =>
      el(
        "tr",
        { class: "pipeline", "data-name": p.name },
        el("td", { class: "name" }, p.name),
        el("td", { class: "phase" }, p.phase),
        el("td", { class: "version", title: p.version || "" }, short(p.version)),
        el("td", { class: "versions" }, versionsText(p.versions)),
      ),
    ),
  );
  if (!pipelines.length) body.append(el("tr", {}, el("td", { colspan: 4 }, "No pipelines.")));
}

function rolloutBlock(r) {
  if (!r) return el("div", { class: "rollout rollout-none muted" }, "No rollout.");
  const phase = r.phase || "Progressing";
  const waves = r.waves || [];
  const line =
    phase === "Progressing" ? `wave ${r.wave || 1}/${waves.length || "?"}: ` : `${phase}: `;
  const counts = `${r.updated || 0} updated, ${r.pending || 0} pending, ${r.failed || 0} failed`;
  return el(
    "div",
    { class: `rollout rollout-${slug(phase)}` },
    el("span", { class: "badge" }, phase),
    " ",
    el("span", { class: "progress" }, line + counts),
    r.version ? el("span", { class: "muted" }, ` → version ${short(r.version)}`) : null,
    r.reason ? el("div", { class: "rollout-reason" }, r.reason) : null,
    (r.failedEdges || []).length
      ? el(
          "div",
          { class: "failed-edges" },
          "Failing edges: " +
            r.failedEdges
              .map((e) => (r.failureReasons?.[e] ? `${e} (${r.failureReasons[e]})` : e))
              .join(", "),
        )
      : null,
    el(
      "ol",
      { class: "waves" },
      ...waves.map((w, i) =>
        el(
          "li",
          { class: `wave wave-${slug(w.state || "Pending")}`, "data-wave": i + 1 },
          el("span", {}, `Wave ${i + 1}: `),
          el("span", { class: "wave-state" }, w.state || "Pending"),
          el("div", { class: "muted" }, (w.edges || []).join(", ")),
        ),
      ),
    ),
  );
}

function edgesTable(pub) {
  const head = ["Edge", "Version", "State", "Last seen", "Reason", "Wave", "Last upload"];
  return el(
    "table",
    { class: "edges" },
    el("thead", {}, el("tr", {}, ...head.map((h) => el("th", {}, h)))),
    el(
      "tbody",
      {},
      ...pub.edges.map((e) =>
        el(
          "tr",
          { class: `edge state-${slug(e.state)}`, "data-edge": e.name },
          el("td", { class: "name" }, e.name),
          el("td", { class: "version", title: e.version || "" }, short(e.version)),
          el("td", { class: "state" }, e.state),
          el("td", { class: "seen", title: e.lastSeen || "" }, ago(e.lastSeen)),
          el("td", { class: "reason" }, e.reason || ""),
          el("td", { class: "edge-wave" }, e.wave ?? "-"),
          el(
            "td",
            { class: "upload", title: e.lastUpload || "" },
            e.lastUploadRecords == null ? "-" : `${e.lastUploadRecords} records, ${ago(e.lastUpload)}`,
          ),
        ),
      ),
    ),
  );
}

// Each edge's uploads (time, records) on one time axis; an edge without a point at a time
// has a gap there, which the line spans.
function chartData(pub) {
  const times = [...new Set(pub.edges.flatMap((e) => e.uploads.map((p) => p[0])))].sort(
    (a, b) => a - b,
  );
  const index = new Map(times.map((t, i) => [t, i]));
  const data = [times];
  for (const e of pub.edges) {
    const ys = new Array(times.length).fill(null);
    for (const [t, n] of e.uploads) ys[index.get(t)] = n;
    data.push(ys);
  }
  return data;
}

const PALETTE = ["#0969da", "#1a7f37", "#9a6700", "#cf222e", "#8250df", "#bf3989", "#1b7c83"];

function chart(pub, holder) {
  if (typeof uPlot === "undefined" || !pub.edges.some((e) => e.uploads.length)) {
    holder.append(el("div", { class: "muted" }, "No log uploads yet."));
    charts.delete(pub.name);
    return;
  }
  const key = pub.edges.map((e) => e.name).join(",");
  const data = chartData(pub);
  let entry = charts.get(pub.name);
  if (!entry || entry.key !== key) {
    if (entry) entry.plot.destroy();
    const opts = {
      title: "Records in each edge's latest log upload",
      width: Math.min(900, document.body.clientWidth - 60),
      height: 200,
      series: [
        {},
        ...pub.edges.map((e, i) => ({
          label: e.name,
          stroke: PALETTE[i % PALETTE.length],
          spanGaps: true,
          points: { show: true },
        })),
      ],
      axes: [{}, { label: "records" }],
    };
    entry = { plot: new uPlot(opts, data, el("div")), key };
    charts.set(pub.name, entry);
  } else {
    entry.plot.setData(data);
  }
  holder.append(entry.plot.root.parentNode || entry.plot.root);
}

function publishCard(pub) {
  const holder = el("div", { class: "chart" });
  const card = el(
    "div",
    { class: `publish phase-${slug(pub.phase)}`, "data-name": pub.name },
    el(
      "h3",
      {},
      pub.name,
      " ",
      el("span", { class: "muted" }, `pipeline ${pub.pipeline}, version ${short(pub.version)}`),
      " ",
      el("span", { class: "badge publish-phase" }, pub.phase),
    ),
    pub.message ? el("div", { class: "rollout-reason" }, pub.message) : null,
    rolloutBlock(pub.rollout),
    pub.edges.length ? edgesTable(pub) : el("div", { class: "muted" }, "No edges."),
    holder,
  );
  if (pub.edges.length) chart(pub, holder);
  return card;
}

function render(fleet) {
  const error = document.getElementById("error");
  error.hidden = !fleet.error;
  error.textContent = fleet.error ? `Cannot read the cluster: ${fleet.error}` : "";
  if (!fleet.pipelines) return;
  document.getElementById("meta").textContent =
    `namespace ${fleet.namespace} · read ${new Date(fleet.time).toLocaleTimeString()}`;
  pipelinesTable(fleet.pipelines);
  const names = new Set(fleet.publishes.map((p) => p.name));
  for (const name of charts.keys()) if (!names.has(name)) charts.delete(name);
  const list = document.getElementById("publishes");
  list.replaceChildren(...fleet.publishes.map(publishCard));
  if (!fleet.publishes.length) list.append(el("div", { class: "muted" }, "No publishes."));
  document.body.dataset.updated = fleet.time;
}

async function refresh() {
  try {
    // A cluster read that hangs must not stop the refreshing: give up on it after 15 s.
    const answer = await fetch("/api/fleet", {
      cache: "no-store",
      signal: AbortSignal.timeout(15000),
    });
    const fleet = await answer.json();
    refreshMs = 1000 * (fleet.refreshSeconds || 2);
    render(fleet);
  } catch (exc) {
    render({ error: String(exc) });
  }
  setTimeout(refresh, refreshMs);
}

refresh();
