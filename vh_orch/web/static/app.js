// vh-orch's pages: plain modules over the HTTP API (the session cookie authenticates; state-changing
// requests carry the page's CSRF token). No build step, nothing fetched from elsewhere.
"use strict";

const VhOrch = (() => {
  const API = "/api/v0";
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;
  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      // A style through the CSSOM: a style attribute is inline style, which the CSP refuses.
      if (k === "text") node.textContent = v; else if (k === "style") node.style.cssText = v; else node.setAttribute(k, v);
    }
    for (const child of children) node.append(child);
    return node;
  };

  // A cost in US dollars: cents once it is a dollar or more, else to a hundredth of a cent.
  const money = (v) => v == null ? "" : `$${v >= 1 ? v.toFixed(2) : v.toFixed(4)}`;
  // The first moment of this month in UTC, as the cost report's `since`.
  const monthStart = () => { const d = new Date(); return `${d.getUTCFullYear()}-${String(d.getUTCMonth() + 1).padStart(2, "0")}-01`; };

  async function api(path, options = {}) {
    const headers = { Accept: "application/json", ...(options.headers || {}) };
    if (options.method && options.method !== "GET") headers["X-CSRF-Token"] = csrf();
    const answer = await fetch(path.startsWith("http") ? path : API + path, { ...options, headers });
    if (answer.status === 401) { location.href = "/login?next=" + encodeURIComponent(location.pathname); }
    if (!answer.ok) {
      const text = await answer.text();
      const err = new Error(`${answer.status}: ${text}`);
      try { err.body = JSON.parse(text); } catch (_) { err.body = null; }  // a refusal's words, to show
      throw err;
    }
    return answer.json();
  }

  const seconds = (s) => s == null ? "" : s < 60 ? `${s.toFixed(1)} s` : s < 3600 ? `${(s / 60).toFixed(1)} min`
    : `${(s / 3600).toFixed(1)} h`;
  const when = (iso) => iso ? new Date(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" }) : "";
  // 1536 -> "1.5 KiB", as the CLI writes sizes.
  function humanBytes(size) {
    let value = size;
    for (const unit of ["B", "KiB", "MiB", "GiB"]) {
      if (value < 1024 || unit === "GiB") return unit === "B" ? `${value.toFixed(0)} B` : `${value.toFixed(1)} ${unit}`;
      value /= 1024;
    }
  }
  // A machine's input cache as `vh-orch machine list` shows it: "200.0 MiB, 50% of 2" (empty when unused).
  function inputCache(c) {
    const used = c.hits + c.misses;
    return used ? `${humanBytes(c.bytes || 0)}, ${Math.round(c.hit_rate * 100)}% of ${used}` : "";
  }
  // A machine's GPUs as `vh-orch env show` shows them: "2 × NVIDIA A10G", "1 (expected)" before it is set up.
  function gpuText(m) {
    if (!m.gpus) return "";
    return `${m.gpus}${m.gpu_model ? ` × ${m.gpu_model}` : ""}${m.gpus_expected ? " (expected)" : ""}`;
  }
  const countsText = (counts) => Object.entries(counts || {}).sort().map(([s, n]) => `${n} ${s}`).join(", ");
  const shown = (v) => typeof v === "number" ? (Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(4)))) :
    v == null ? "" : typeof v === "object" ? JSON.stringify(v) : String(v);

  // -- a project's executions ------------------------------------------------------------------
  // A column of the executions table: its id (`title`, `param:NAME`, `meta:KEY`), heading, sort key and cell.
  const relativeTime = (iso) => {
    if (!iso) return "";
    const s = (Date.now() - Date.parse(iso)) / 1000;
    return s < 60 ? "just now" : s < 3600 ? `${Math.floor(s / 60)} min ago` : s < 86400 ? `${Math.floor(s / 3600)} h ago`
      : `${Math.floor(s / 86400)} d ago`;
  };
  // Decimals enough that every distinct number of a column reads differently (0.996338 vs 0.996312),
  // starting from 4 significant digits of its largest value; one count for the column keeps it aligned.
  function columnFormat(values) {
    const numbers = [...new Set(values.filter((v) => typeof v === "number" && Number.isFinite(v)))];
    if (numbers.every(Number.isInteger)) return (v) => String(v);
    const largest = Math.max(...numbers.map(Math.abs));
    if (largest >= 1e9 || largest < 1e-4) return (v) => String(v);  // far from 1: as JavaScript writes it
    let decimals = Math.max(0, Math.min(12, 3 - Math.floor(Math.log10(largest))));
    while (decimals < 12 && new Set(numbers.map((v) => v.toFixed(decimals))).size < numbers.length) decimals += 1;
    return (v) => v.toFixed(decimals);
  }
  const BASE_COLUMNS = [
    { id: "title", label: "title", sort: "title" },
    { id: "step", label: "step", sort: "step" },
    { id: "started", label: "started", sort: "started_at" },
    { id: "duration", label: "duration" },
    { id: "environment", label: "environment" },
    { id: "creator", label: "creator" },
  ];
  const paramColumn = (name) => ({ id: `param:${name}`, label: name, sort: `parameters.${name}`, key: `parameters.${name}`,
    value: (r) => (r.parameters || {})[name] });
  const metaColumn = (name) => ({ id: `meta:${name}`, label: name, sort: name, key: name, metric: true,
    value: (r) => (r.metadata || {})[name] });
  const columnOf = (id) => id.startsWith("param:") ? paramColumn(id.slice(6)) : id.startsWith("meta:") ? metaColumn(id.slice(5))
    : BASE_COLUMNS.find((c) => c.id === id);

  function projectPage() {
    const table = $("executions");
    const project = table.dataset.project;
    async function monthCost() {  // what the project's executions cost since the 1st (UTC)
      const name = $("month-cost").dataset.project;
      const report = await api(`/cost/?by=project&since=${monthStart()}`);
      const row = report.rows.find((r) => !r.idle && r.key === name);
      $("month-cost").textContent = `This month: ${money(row ? row.cost_usd : 0)}` +
        (row ? ` (${row.executions} execution${row.executions === 1 ? "" : "s"}, ${row.machine_hours.toFixed(2)} machine-hours)` : "");
    }
    monthCost().catch(() => {});
    setInterval(() => { if (!document.hidden) monthCost().catch(() => {}); }, 30000);
    const stored = `vh-orch.columns.${project}`;  // this project's chosen columns, in this browser
    // The table's whole state lives in the address (a reload or a shared link shows the same table).
    const url = new URLSearchParams(location.search);
    const state = { ordering: url.get("ordering") || "-counter", offset: Math.max(0, Number(url.get("offset")) || 0),
      limit: 50, count: 0, asked: 0 };
    let chosen = url.has("columns") ? url.get("columns").split(",").filter(Boolean)
      : JSON.parse(localStorage.getItem(stored) || "null");
    $("f-status").value = url.get("status") || "";
    $("f-step").value = url.get("step") || "";
    const picked = new Set();
    const showPicked = () => {
      $("compare").disabled = picked.size < 2;
      $("compare").textContent = picked.size ? `Compare ${picked.size} selected` : "Compare";
    };
    $("compare").addEventListener("click", () => {
      location.href = "/compare/?" + [...picked].map((id) => `e=${id}`).join("&");
    });
    showPicked();
    function keepInAddress() {
      const address = new URL(location.href);
      const set = (name, value, omitted = "") => {
        if (value && value !== omitted) address.searchParams.set(name, value); else address.searchParams.delete(name);
      };
      set("ordering", state.ordering, "-counter");
      set("status", $("f-status").value);
      set("step", $("f-step").value.trim());
      set("task", wantedTask);
      set("offset", String(state.offset), "0");
      set("columns", chosen ? chosen.join(",") : "");
      history.replaceState(null, "", address);
    }

    // The project's tasks: a list of links, and the choices of the task filter (`?task=ID` picks one).
    const tasks = new Map();
    let wantedTask = url.get("task") || "";
    let taskChoices = "";
    async function loadTasks() {
      const page = await api(`/tasks/?${new URLSearchParams({ project, limit: 50 })}`);
      for (const t of page.results) tasks.set(t.id, t);
      $("tasks-card").hidden = page.results.length === 0;
      $("f-task").closest("label").hidden = page.results.length === 0 && !wantedTask;
      $("tasks").tBodies[0].replaceChildren(...page.results.map((t) => el("tr", { "data-task": t.id },
        el("td", {}, el("a", { href: `/tasks/${t.id}/`, text: `!${t.counter}` })),
        el("td", {}, el("a", { href: `/tasks/${t.id}/`, text: t.title })),
        el("td", { text: t.type }),
        el("td", {}, el("span", { class: "status", "data-status": t.status, title: t.status_reason || "", text: t.status })),
        el("td", { text: countsText(t.counts) }),
        el("td", { text: when(t.ctime) }))));
      const choices = page.results.map((t) => [String(t.id), `!${t.counter} ${t.title}`]);
      const picked = wantedTask;
      if (picked && !choices.some(([v]) => v === picked)) choices.push([picked, `task ${picked}`]);
      if (JSON.stringify(choices) === taskChoices) return;  // rebuilt only when it changes: it may be open
      taskChoices = JSON.stringify(choices);
      $("f-task").replaceChildren(el("option", { value: "", text: "any" }),
        ...choices.map(([value, text]) => el("option", { value, text })));
      $("f-task").value = picked;
    }

    // The columns on offer: the base ones, then the step's metadata keys and parameters (the filtered
    // step's, else the newest execution's), then every other key and parameter on this page.
    function offered(rows) {
      const step = $("f-step").value.trim() || (rows[0] || {}).step;
      const mine = rows.filter((r) => r.step === step);
      const names = (list, field) => [...new Set(list.flatMap((r) => Object.keys(r[field] || {})))].sort();
      const stepMeta = names(mine, "metadata"), stepParams = names(mine, "parameters");
      const others = (all, first) => all.filter((n) => !first.includes(n));
      const meta = [...stepMeta, ...others(names(rows, "metadata"), stepMeta)].map((n) => `meta:${n}`);
      const params = [...stepParams, ...others(names(rows, "parameters"), stepParams)].map((n) => `param:${n}`);
      const defaults = ["title", ...stepParams.map((n) => `param:${n}`), "started", "duration",
        ...stepMeta.slice(0, 8).map((n) => `meta:${n}`)];
      return { all: [...BASE_COLUMNS.map((c) => c.id), ...meta, ...params], defaults };
    }
    let offer = { all: [], defaults: [] };
    function renderPicker() {
      const shownNow = new Set(chosen || offer.defaults);
      const choices = [...new Set([...offer.all, ...shownNow])];
      const signature = JSON.stringify([choices, [...shownNow]]);
      if ($("columns-list").dataset.signature === signature) return;  // kept while it may be open
      $("columns-list").dataset.signature = signature;
      $("columns-list").replaceChildren(...choices.map((id) => {
        const box = el("input", { type: "checkbox", "data-column": id });
        box.checked = shownNow.has(id);
        box.addEventListener("change", () => {
          const now = new Set(chosen || offer.defaults);
          if (box.checked) now.add(id); else now.delete(id);
          chosen = choices.filter((c) => now.has(c));
          localStorage.setItem(stored, JSON.stringify(chosen));
          keepInAddress();
          load();
        });
        const kind = id.startsWith("meta:") ? "metadata" : id.startsWith("param:") ? "parameter" : "";
        return el("label", {}, box, columnOf(id).label, ...(kind ? [" ", el("small", { class: "hint", text: kind })] : []));
      }));
    }

    function sortButton(column) {
      const key = state.ordering.replace(/^-/, "");
      const arrow = key === column.sort ? (state.ordering.startsWith("-") ? " ↓" : " ↑") : "";
      const button = el("button", { type: "button", class: "sort", "data-key": column.key || column.sort,
        text: column.label + arrow });
      button.addEventListener("click", () => {
        state.ordering = state.ordering === `-${column.sort}` ? column.sort : `-${column.sort}`;
        state.offset = 0;
        keepInAddress();
        load();
      });
      return button;
    }
    function header(columns) {
      const key = state.ordering.replace(/^-/, "");
      const direction = state.ordering.startsWith("-") ? "descending" : "ascending";
      const th = (column, cls = "") => {
        const cell = el("th", { scope: "col", class: cls, "aria-sort": key === column.sort ? direction : "none" });
        if (column.sort) cell.append(sortButton(column)); else cell.textContent = column.label;
        return cell;
      };
      table.tHead.rows[0].replaceChildren(el("th", { scope: "col", class: "pin pin-pick", "aria-label": "Select" }),
        th({ label: "#", sort: "counter" }, "pin pin-counter"), th({ label: "status", sort: "status" }, "pin pin-status"),
        ...columns.map((c) => th(c, c.value ? "num" : "")));
    }
    // The cell of a base column; a parameter's or a metadata key's is a number cell (`numberCell`).
    function baseCell(id, r) {
      if (id === "title") return el("td", { class: "title" }, el("a", { href: `/executions/${r.id}/`, text: r.title || "" }));
      if (id === "step") {
        return el("td", {}, r.step, ...(r.task ? [" ", el("a", { class: "task-ref", href: `/tasks/${r.task.id}/`,
          title: "Its task", text: tasks.has(r.task.id) ? `!${tasks.get(r.task.id).counter}` : "task" })] : []));
      }
      if (id === "started") {
        return el("td", {}, r.started_at ? el("time", { datetime: r.started_at, title: when(r.started_at),
          text: relativeTime(r.started_at) }) : "");
      }
      if (id === "duration") return el("td", { text: seconds(r.duration) });
      if (id === "environment") return el("td", { text: r.environment.name });
      return el("td", { text: r.creator.username || "" });
    }
    function numberCell(column, r, format, best) {
      const v = column.value(r);
      const text = typeof v === "number" ? format(v) : shown(v);
      const cell = el("td", { class: typeof v === "number" ? "num" : "", "data-key": column.key, text,
        title: v == null ? "" : typeof v === "object" ? JSON.stringify(v) : String(v) });
      if (best !== undefined && v === best) { cell.classList.add("best-value"); cell.title += " (best)"; }
      return cell;
    }

    async function load() {
      const query = new URLSearchParams({ project, ordering: state.ordering, limit: state.limit, offset: state.offset });
      if ($("f-status").value) query.append("status", $("f-status").value);
      if ($("f-step").value.trim()) query.append("step", $("f-step").value.trim());
      if (wantedTask) query.append("task", wantedTask);
      const asked = ++state.asked;
      const page = await api(`/executions/?${query}`);
      if (asked !== state.asked) return;  // a newer question (another filter) is on its way
      state.count = page.count;
      offer = offered(page.results);
      const ids = [...(chosen || offer.defaults)];
      const key = state.ordering.replace(/^-/, "");
      const sortedBy = [...BASE_COLUMNS, ...ids.map(columnOf)].find((c) => c && c.sort === key);
      if (!sortedBy && !["counter", "status"].includes(key)) {  // sorted by a column not shown: show it
        ids.push(key.startsWith("parameters.") ? `param:${key.slice(11)}` : `meta:${key.replace(/^metadata\./, "")}`);
      }
      const columns = [...new Set(ids)].map(columnOf).filter(Boolean);
      renderPicker();
      header(columns);
      const formats = new Map(columns.filter((c) => c.value).map((c) => [c.id, columnFormat(page.results.map(c.value))]));
      // The best value of the metric the table is sorted by: the first page's first, marked.
      const metric = columns.find((c) => c.metric && c.sort === key);
      const top = metric && state.offset === 0 && page.results.length ? metric.value(page.results[0]) : undefined;
      const best = typeof top === "number" ? top : undefined;
      const selectBox = (r) => {
        const box = el("input", { type: "checkbox", class: "pick", "aria-label": `Select #${r.counter}`, "data-id": r.id });
        box.checked = picked.has(r.id);
        box.addEventListener("change", () => { if (box.checked) picked.add(r.id); else picked.delete(r.id); showPicked(); });
        return box;
      };
      table.tBodies[0].replaceChildren(...page.results.map((r) => el("tr", { "data-counter": r.counter },
        el("td", { class: "pin pin-pick" }, selectBox(r)),
        el("td", { class: "pin pin-counter" }, el("a", { href: `/executions/${r.id}/`, text: `#${r.counter}` })),
        el("td", { class: "pin pin-status" }, el("span", { class: "status", "data-status": r.status, text: r.status })),
        ...columns.map((c) => c.value ? numberCell(c, r, formats.get(c.id), c === metric ? best : undefined)
          : baseCell(c.id, r)))));
      $("no-executions").hidden = page.count > 0;
      $("page-info").textContent = page.count ? `${state.offset + 1}-${state.offset + page.results.length} of ${page.count}` : "";
      $("prev").disabled = state.offset === 0;
      $("next").disabled = state.offset + state.limit >= page.count;
    }

    const reload = () => { keepInAddress(); load(); };
    $("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - state.limit); reload(); });
    $("next").addEventListener("click", () => { state.offset += state.limit; reload(); });
    $("f-status").addEventListener("change", () => { state.offset = 0; reload(); });
    $("f-step").addEventListener("change", () => { state.offset = 0; reload(); });
    $("f-task").addEventListener("change", () => { state.offset = 0; wantedTask = $("f-task").value; reload(); });
    $("f-key").addEventListener("change", () => {
      const k = $("f-key").value.trim();
      if (k) { state.ordering = `-${k}`; state.offset = 0; reload(); }
    });
    $("columns-reset").addEventListener("click", () => {
      chosen = null;
      localStorage.removeItem(stored);
      reload();
    });
    // The project's pipelines, newest first.
    async function loadPipelines() {
      const page = await api(`/pipelines/?${new URLSearchParams({ project, limit: 50, ordering: "-counter" })}`);
      $("pipelines-card").hidden = page.results.length === 0;
      $("pipelines").tBodies[0].replaceChildren(...page.results.map((p) => el("tr", { "data-pipeline": p.id },
        el("td", {}, el("a", { href: `/pipelines/${p.id}/`, text: `=${p.counter}` })),
        el("td", {}, el("a", { href: `/pipelines/${p.id}/`, text: p.title || p.name || "" })),
        el("td", {}, el("span", { class: "status", "data-status": p.status, title: p.status_reason || "", text: p.status })),
        el("td", { text: when(p.ctime || p.created_at) }))));
    }

    newWork(project);
    loadPipelines().catch(() => {});
    loadTasks().catch(() => {}).then(load);
    setInterval(() => {  // statuses stay current
      if (document.hidden) return;
      loadPipelines().catch(() => {});
      loadTasks().catch(() => {}).then(load).catch(() => {});
    }, 3000);
  }

  // -- one execution ---------------------------------------------------------------------------
  const MAX_LINES = 5000;  // lines kept in the page; earlier ones are a click away

  function executionPage() {
    const id = $("facts").dataset.execution;
    const log = $("log");
    const points = [];
    let firstSeq = null;
    let xPicked = false;  // until the user picks an x, a step-like key wins over _time

    const finder = logFinder(log);

    function line(ev, atTop = false) {
      const row = logLine(ev);
      if (atTop) log.prepend(row); else log.append(row);
      finder.apply(row);  // a line streamed in after the filter was set is filtered too
    }

    function trim() {
      while (log.childElementCount > MAX_LINES) log.firstElementChild.remove();
      firstSeq = log.firstElementChild ? Number(log.firstElementChild.dataset.seq) : firstSeq;
    }

    function follow() { if ($("follow").checked) log.scrollTop = log.scrollHeight; }

    function showStatus(e) {
      $("status").textContent = e.status;
      $("status").dataset.status = e.status;
      $("status").title = e.status_reason || "";
      $("stop").hidden = ["stopped", "error", "complete"].includes(e.status);
      // Why it ended (or why it waits) where the eye goes first: beside the status, not a last fact.
      const reason = e.status_reason || "";
      const code = e.exit_code != null && e.exit_code !== 0 && !reason.includes(`code ${e.exit_code}`);
      const said = [reason, code ? `exit code ${e.exit_code}` : ""];
      const banner = said.filter(Boolean).join(" · ");
      $("status-banner").textContent = banner;
      $("status-banner").dataset.status = e.status;
      $("status-banner").hidden = !banner;
    }

    let ticking = null;
    function tickDuration(e) {
      clearInterval(ticking);
      if (e.status !== "started" || !e.started_at) return;
      const since = Date.parse(e.started_at);
      const tick = () => { const d = $("duration"); if (d) d.textContent = seconds(Math.max(0, (Date.now() - since) / 1000)); };
      tick();
      ticking = setInterval(tick, 1000);
    }

    async function facts() {
      const e = await api(`/executions/${id}/`);
      showStatus(e);
      $("title").textContent = e.title || e.step;
      $("facts").replaceChildren(factGrid(e));
      tickDuration(e);
      showCommand(e);
      showRerunLinks(e);
      const params = Object.entries(e.parameters);
      $("parameters").replaceChildren(...(params.length ? params.map(([k, v]) =>
        el("tr", {}, el("th", { text: k }), el("td", { text: shown(v) }))) : [el("tr", {}, el("td", { class: "empty", text: "none" }))]));
      const inputs = e.inputs.flatMap((i) => i.urls.map((u, n) => ({ name: i.name, url: u, from: (i.outputs_of || [])[n] })));
      $("inputs").replaceChildren(...(inputs.length ? inputs.map((i) => el("li", { "data-input": i.name },
        `${i.name}: `, el("code", { text: i.url }),
        ...(i.from ? [" (output of ", el("a", { href: `/executions/${i.from.id}/`, text: `#${i.from.counter}` }), ")"] : [])))
        : [el("li", { class: "empty", text: "none" })]));
      const outs = (await api(`/data/?output_execution=${id}`)).results;
      $("outputs").replaceChildren(...(outs.length ? outs.map((o) => el("li", {},
        el("a", { href: o.urls.download, text: o.name }), ` ${o.size} bytes`)) : [el("li", { class: "empty", text: "none yet" })]));
      return e;
    }

    // One panel per selected key (its own y scale); "No metadata yet" and no controls until a point comes.
    function draw() {
      const empty = !points.length;
      $("chart-controls").hidden = empty;
      $("chart-empty").hidden = !empty;
      $("chart").dataset.points = String(points.length);
      if (empty) return;
      const xKey = $("chart-x").value;
      const yKeys = [...$("chart-y").selectedOptions].map((o) => o.value);
      const rows = points.filter((p) => typeof p[xKey] === "number" || xKey === "_time");
      const xs = rows.map((p) => xKey === "_time" ? Date.parse(p._time) / 1000 : p[xKey]);
      const panels = yKeys.map((k, i) => ({ key: k, lines: [{ label: k, color: seriesColor(i), faint: seriesColor(i, 0.25),
        values: rows.map((p) => typeof p[k] === "number" ? p[k] : null) }] }));
      $("chart").dataset.points = String(xs.length);
      drawPanels($("chart"), xs, panels, xKey, { time: xKey === "_time", log: $("chart-log").checked,
        smooth: Number($("chart-smooth").value), height: yKeys.length > 2 ? 170 : 210 });
    }

    function keysChanged() {
      const keys = [...new Set(points.flatMap((p) => Object.keys(p)))].filter((k) => k !== "_seq");
      const numeric = keys.filter((k) => points.some((p) => typeof p[k] === "number"));
      const xSel = $("chart-x"), ySel = $("chart-y");
      const xWas = xSel.value, yWas = new Set([...ySel.selectedOptions].map((o) => o.value));
      const xChoices = [...numeric.filter((k) => ["step", "epoch", "iteration"].includes(k)), "_time",
        ...numeric.filter((k) => !["step", "epoch", "iteration"].includes(k))];
      if (xSel.options.length !== xChoices.length) {
        xSel.replaceChildren(...xChoices.map((k) => el("option", { text: k })));
        xSel.value = xPicked && xChoices.includes(xWas) ? xWas : xChoices[0];
      }
      const yChoices = numeric.filter((k) => k !== xSel.value);
      if (ySel.options.length !== yChoices.length) {
        ySel.replaceChildren(...yChoices.map((k) => el("option", { text: k })));
        for (const o of ySel.options) o.selected = yWas.size ? yWas.has(o.value) : true;
      }
    }

    function addPoint(p) {
      points.push(p);
      const latest = {};
      for (const q of points) Object.assign(latest, q);
      $("latest").replaceChildren(...Object.entries(latest).filter(([k]) => !k.startsWith("_")).map(([k, v]) =>
        el("tr", { "data-key": k }, el("th", { text: k }), el("td", { text: shown(v) }))));
    }

    // The Hardware chart: what the daemon sampled while it ran (CPU % of one core and GPU % on the
    // left axis, memory on the right), polled every sampling interval until it has ended.
    const ENDED = ["stopped", "error", "complete"];
    const hw = { samples: [], chart: null, gpus: null, after: null };
    const hwBytes = (u, v) => v == null ? "" : humanBytes(v);

    function drawHardware() {
      const s = hw.samples;
      const gpus = [...new Set(s.flatMap((p) => p.gpus.map((g) => g.index)))].sort((a, b) => a - b);
      const data = [s.map((p) => Date.parse(p.time) / 1000), s.map((p) => p.cpu_percent), s.map((p) => p.memory_bytes)];
      const series = [{ label: "time" },
        { label: "CPU %", scale: "%", stroke: "hsl(210 70% 50%)", spanGaps: true },
        { label: "memory", scale: "bytes", stroke: "hsl(30 85% 50%)", spanGaps: true, value: hwBytes }];
      for (const i of gpus) {
        const use = (p) => p.gpus.find((g) => g.index === i) || {};
        const color = `hsl(${(130 + i * 67) % 360} 60% 42%)`;
        data.push(s.map((p) => use(p).utilization_percent ?? null), s.map((p) => use(p).memory_used_bytes ?? null));
        series.push({ label: `GPU ${i} %`, scale: "%", stroke: color, spanGaps: true },
          { label: `GPU ${i} memory`, scale: "bytes", stroke: color, dash: [6, 4], spanGaps: true, value: hwBytes });
      }
      $("hardware").dataset.points = String(s.length);
      $("hardware").dataset.series = String(series.length - 1);
      if (!s.length) return;
      if (hw.chart && hw.gpus === gpus.join()) { hw.chart.setData(data); padLoneX(hw.chart, true); return; }
      if (hw.chart) hw.chart.destroy();
      hw.chart = new uPlot({ width: Math.max(300, $("hardware").clientWidth || 500), height: 200,
        scales: { x: { time: true, range: xRange(true) }, "%": { range: (u, lo, hi) => [0, Math.max(100, hi || 0)] },
          bytes: { range: (u, lo, hi) => [0, Math.max(1, hi || 0) * 1.1] } },
        axes: [{ label: "time", ...ink() }, { scale: "%", label: "use %", ...ink(), values: (u, ticks) => ticks.map((t) => `${t}%`) },
          { scale: "bytes", label: "memory", side: 1, size: 100, ...ink(), grid: { show: false },
            values: (u, ticks) => ticks.map((t) => humanBytes(t)) }],
        series }, data, $("hardware"));
      hw.gpus = gpus.join();
      padLoneX(hw.chart, true);
      $("hardware").uplot = hw.chart;
      if (!hw.resizer) {
        hw.resizer = new ResizeObserver(() => hw.chart && hw.chart.setSize({ width: Math.max(300, $("hardware").clientWidth), height: 200 }));
        hw.resizer.observe($("hardware"));
      }
    }

    async function hardware() {
      const answer = await api(`/executions/${id}/utilization/` + (hw.after ? `?after=${encodeURIComponent(hw.after)}` : ""));
      if (answer.samples.length) {
        hw.samples.push(...answer.samples);
        hw.after = answer.samples[answer.samples.length - 1].time;
        hw.samples.splice(0, Math.max(0, hw.samples.length - 4000));  // a page left open for days stays small
      }
      $("hardware-note").textContent = [
        answer.peak_memory_bytes != null ? `peak memory ${humanBytes(answer.peak_memory_bytes)}` : "",
        hw.samples.length ? "" : answer.interval_s ? "no samples yet" : "the daemon does not sample hardware use",
      ].filter(Boolean).join(" · ");
      drawHardware();
      return answer.interval_s;
    }

    function pollHardware() {
      const ended = ENDED.includes($("status").dataset.status);  // read before: one more poll after the end
      const again = (interval) => { if (!ended) setTimeout(pollHardware, 1000 * Math.max(1, interval || 2)); };
      if (document.hidden && hw.after) { again(2); return; }
      hardware().then(again, () => again(5));
    }

    async function start() {
      pollHardware();
      const tail = await api(`/executions/${id}/events/?limit=1000`);
      for (const ev of tail.events) line(ev);
      firstSeq = tail.events.length ? tail.events[0].seq : null;
      $("earlier").hidden = !tail.truncated;
      follow();
      const series = await api(`/executions/${id}/metadata/`);
      series.points.forEach(addPoint);
      keysChanged();
      draw();
      const last = tail.events.length ? tail.events[tail.events.length - 1].seq : 0;
      const metaAfter = series.points.length ? series.points[series.points.length - 1]._seq : last;
      const stream = new EventSource(`${API}/executions/${id}/stream/?after=${last}`);
      let pending = false;
      const redraw = () => { if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; keysChanged(); draw(); }); } };
      stream.addEventListener("log", (m) => { line(JSON.parse(m.data)); trim(); follow(); });
      stream.addEventListener("status", (m) => { const ev = JSON.parse(m.data); line(ev); follow(); facts(); });
      stream.addEventListener("metadata", (m) => { const p = JSON.parse(m.data); if (p._seq > metaAfter) { addPoint(p); redraw(); } });
      stream.addEventListener("end", () => { stream.close(); facts(); });
    }

    $("earlier").addEventListener("click", async () => {
      if (firstSeq == null) return;
      const page = await api(`/executions/${id}/events/?limit=1000&before=${firstSeq}`);
      for (const ev of page.events.slice().reverse()) line(ev, true);
      firstSeq = page.events.length ? page.events[0].seq : firstSeq;
      $("earlier").hidden = !page.events.length || page.events[0].seq <= 1;
    });
    $("log-search").addEventListener("input", () => finder.set({ text: $("log-search").value }));
    $("log-stderr").addEventListener("change", () => finder.set({ stderrOnly: $("log-stderr").checked }));
    $("log-times").addEventListener("change", () => {
      for (const pre of [log, $("log-results-lines")]) pre.classList.toggle("with-times", $("log-times").checked);
    });
    $("log-next").addEventListener("click", () => finder.step(1));
    $("log-prev").addEventListener("click", () => finder.step(-1));
    $("log-find").addEventListener("submit", (event) => { event.preventDefault(); searchWholeLog(id); });
    for (const button of document.querySelectorAll("button.copy")) {
      button.addEventListener("click", () => copyText(button, $(button.dataset.copy).textContent));
    }
    $("chart-x").addEventListener("change", () => { xPicked = true; keysChanged(); draw(); });
    $("chart-y").addEventListener("change", draw);
    $("chart-log").addEventListener("change", draw);
    onThemeChange(() => { draw(); if (hw.chart) { hw.chart.destroy(); hw.chart = null; drawHardware(); } });
    $("chart-smooth").addEventListener("input", () => { $("smooth-value").textContent = $("chart-smooth").value; draw(); });
    $("stop").addEventListener("click", async () => {
      if (!confirm("Stop this execution? Its outputs so far are kept.")) return;
      await api(`/executions/${id}/stop/`, { method: "POST" });
      facts();
    });
    rerunForm(id);
    facts().then(start);
  }

  // The facts of an execution as label/value pairs, each pair one grid cell (label above value), so
  // that no width can put a label at the end of one row and its value at the start of the next.
  function factGrid(e) {
    const sha = e.commit ? e.commit.identifier : "";
    const short = sha.startsWith("~") ? sha.slice(0, 13) : sha.slice(0, 12);
    const commit = sha ? [el("code", { id: "commit-sha", title: sha, text: short }),
      el("button", { type: "button", class: "copy", id: "copy-sha", "aria-label": "Copy the full commit sha", text: "copy" })] : [];
    const facts = [
      ["created", when(e.ctime)], ["started", when(e.started_at)], ["ended", when(e.ended_at)],
      ["duration", seconds(e.duration), "duration"], ["commit", commit], ["step", e.step], ["image", e.image || ""],
      ["environment", e.environment.name], ["machine", e.machine == null ? "" : String(e.machine)],
      ["by", e.creator.username || ""], ["exit code", e.exit_code == null ? "" : String(e.exit_code)],
      ["cost", money(e.cost_usd), "cost"],
    ];
    const grid = el("dl", { class: "fact-grid" }, ...facts.map(([k, v, ddId]) => el("div", { class: "fact", "data-fact": k },
      el("dt", { text: k }), Array.isArray(v) ? el("dd", {}, ...v) : el("dd", { text: v || "", ...(ddId ? { id: ddId } : {}) }))));
    const copy = grid.querySelector("#copy-sha");
    if (copy) copy.addEventListener("click", () => copyText(copy, sha));
    return grid;
  }

  // A word safe to paste into a POSIX shell: as it is when plain, else in single quotes (a value is
  // data there: no $, `, \ or ; inside quotes means anything; a ' is closed, escaped and reopened).
  const shellWord = (s) => /^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
  const cliValue = (v) => typeof v === "string" ? v : JSON.stringify(v);
  const asList = (v) => Array.isArray(v) ? v : [v];

  // The execution as the two command lines that would run it again: vh-orch's own and Valohai's `vh`.
  function cliCommands(e) {
    const params = Object.entries(e.parameters || {});
    const inputs = (e.inputs || []).flatMap((i) => i.urls.map((u) => [i.name, u]));
    const sha = e.commit ? e.commit.identifier : "";
    const orch = ["vh-orch", "exec", "run", e.step, "--project", e.project.name, ...(sha ? ["--commit", sha] : []),
      "--env", e.environment.name, ...(e.title ? ["--title", e.title] : []),
      ...params.flatMap(([k, v]) => asList(v).flatMap((one) => ["-p", `${k}=${cliValue(one)}`])),
      ...inputs.flatMap(([k, u]) => ["-i", `${k}=${u}`])];
    const option = (k) => `--${k.replace(/_/g, "-")}`;
    // An uploaded package has no commit `vh` could name: --adhoc uploads the folder it runs in.
    const vh = ["vh", "exec", "run", e.step, ...(sha.startsWith("~") ? ["--adhoc"] : sha ? [`--commit=${sha}`] : []),
      ...(e.title ? [`--title=${e.title}`] : []),
      ...params.flatMap(([k, v]) => asList(v).map((one) => typeof one === "boolean"
        ? (one ? option(k) : `--no-${k.replace(/_/g, "-")}`) : `${option(k)}=${cliValue(one)}`)),
      ...inputs.map(([k, u]) => `${option(k)}=${u}`)];
    return { orch: orch.map(shellWord).join(" "), vh: vh.map(shellWord).join(" ") };
  }

  function showCommand(e) {
    $("command").textContent = e.command || "";
    const cli = cliCommands(e);
    $("cli-vh-orch").textContent = cli.orch;
    $("cli-vh").textContent = cli.vh;
  }

  // Copy to the clipboard, and say so on the button for a moment.
  async function copyText(button, text) {
    const was = button.dataset.label || button.textContent;
    button.dataset.label = was;
    try { await navigator.clipboard.writeText(text); button.textContent = "copied"; } catch (_) { button.textContent = "copy refused"; }
    setTimeout(() => { button.textContent = was; }, 1500);
  }

  // One log line: its time (shown with the Timestamps toggle) and its words, kept apart so that the
  // filter and its highlights work on the words only.
  function logLine(ev) {
    const row = el("span", { class: `line ${ev.stream}`, "data-seq": ev.seq },
      el("span", { class: "ts", text: ev.time ? new Date(ev.time).toLocaleTimeString(undefined, { hour12: false }) + "." +
        String(new Date(ev.time).getMilliseconds()).padStart(3, "0") : "" }),
      el("span", { class: "msg", text: ev.message }), "\n");
    row.dataset.message = ev.message;
    return row;
  }

  // The log's filter: lines holding the text (any case), stderr only if asked; each match marked,
  // counted, and stepped through. New lines pass through apply() as they arrive.
  function logFinder(log) {
    const state = { text: "", stderrOnly: false, current: -1 };
    const count = () => log.querySelectorAll("mark").length;

    function mark(row) {
      const msg = row.querySelector(".msg");
      const words = row.dataset.message;
      if (!state.text) { if (msg.childElementCount) msg.textContent = words; return; }
      const lower = words.toLowerCase(), needle = state.text.toLowerCase();
      const parts = [];
      let at = 0;
      for (let i = lower.indexOf(needle); i >= 0; i = lower.indexOf(needle, i + needle.length)) {
        parts.push(words.slice(at, i), el("mark", { text: words.slice(i, i + needle.length) }));
        at = i + needle.length;
      }
      parts.push(words.slice(at));
      msg.replaceChildren(...parts);
    }

    function unmark(row) {
      const msg = row.querySelector(".msg");
      if (msg && msg.childElementCount) msg.textContent = row.dataset.message;
    }

    // A hidden line keeps no marks: the count is of the matches the reader can see.
    function apply(row, recount = true) {
      const words = (row.dataset.message || "").toLowerCase();
      const hides = (state.text && !words.includes(state.text.toLowerCase())) ||
        (state.stderrOnly && !row.classList.contains("stderr"));
      row.hidden = Boolean(hides);
      if (hides) unmark(row); else mark(row);
      if (recount) showCount();
    }

    function showCount() {
      const n = state.text ? count() : 0;
      $("log-count").textContent = state.text ? `${n} match${n === 1 ? "" : "es"}` : "";
    }

    function set(change) {
      Object.assign(state, change, { current: -1 });
      for (const row of log.children) apply(row, false);
      showCount();
    }

    function step(by) {
      const marks = [...log.querySelectorAll("mark")];
      if (!marks.length) return;
      if (state.current >= 0 && marks[state.current]) marks[state.current].classList.remove("current");
      state.current = (state.current + by + marks.length) % marks.length;
      marks[state.current].classList.add("current");
      $("follow").checked = false;  // the reader went looking: stop jumping to the end
      marks[state.current].scrollIntoView({ block: "center" });
      $("log-count").textContent = `${state.current + 1} of ${marks.length}`;
    }

    return { apply, set, step };
  }

  // The server's search over the whole stored log, not only the lines in the page.
  async function searchWholeLog(id) {
    const text = $("log-search").value;
    if (!text) return;
    const box = $("log-results");
    try {
      const found = await api(`/executions/${id}/events/?search=${encodeURIComponent(text)}`);
      $("log-results-lines").replaceChildren(...found.events.map(logLine));
      $("log-results-note").textContent = `${found.events.length}${found.truncated ? "+" : ""} line${found.events.length === 1 ? " of the whole log holds" : "s of the whole log hold"} "${text}"`;
    } catch (err) {
      $("log-results-lines").replaceChildren();
      $("log-results-note").textContent = apiMessages(err.body).join(" ") || String(err);
    }
    box.hidden = false;
  }

  // Form fields made from parameters (a step's, or a pipeline's typed as the step parameter each one
  // sets): typed inputs with min/max/choices. The server checks the values; its messages are shown.
  function parameterFields(params, prefix, current = (p) => p.default) {
    return params.map((p) => {
      let input;
      const value = current(p);
      if (p.choices && p.choices.length) {
        input = el("select", {}, ...p.choices.map((c) => el("option", { value: String(c), text: String(c) })));
        input.value = value == null ? "" : String(value);
      } else if (p.type === "flag") {
        input = el("input", { type: "checkbox" });
        input.checked = Boolean(value);
      } else if ((p.type === "integer" || p.type === "float") && !p.multiple) {
        input = el("input", { type: "number", step: p.type === "integer" ? "1" : "any" });
        if (p.min != null) input.min = p.min;
        if (p.max != null) input.max = p.max;
        input.value = value == null ? "" : String(value);
      } else {
        input = el("input", { type: "text" });
        input.value = value == null ? "" : Array.isArray(value) ? value.map(shown).join(", ") : String(value);
      }
      input.name = p.name;
      input.id = `${prefix}-${p.name}`;
      const hint = [p.type, p.multiple ? "several, comma-separated" : "", p.min != null ? `min ${p.min}` : "",
        p.max != null ? `max ${p.max}` : "", p.description || ""].filter(Boolean).join(" · ");
      return { p, input, row: el("label", { for: input.id }, el("span", { text: p.name }), input, el("small", { text: hint })) };
    });
  }

  // A field's text as typed values: numbers for a number parameter (the server says what is wrong with the rest).
  const typedList = (p, raw) => (p.multiple ? raw.split(",").map((v) => v.trim()).filter(Boolean) : [raw])
    .map((v) => (p.type === "integer" || p.type === "float") && !isNaN(Number(v)) ? Number(v) : v);

  // The fields' values by name; an empty field is null (the step's default).
  function parameterValues(fields) {
    const parameters = {};
    for (const { p, input } of fields) {
      if (p.type === "flag") { parameters[p.name] = input.checked; continue; }
      const raw = input.value.trim();
      if (raw === "") { parameters[p.name] = null; continue; }
      const typed = typedList(p, raw);
      parameters[p.name] = p.multiple ? typed : typed[0];
    }
    return parameters;
  }

  // An API refusal's words: {field: [{message}]}, {message}, or {detail}.
  function apiMessages(body) {
    if (body == null) return [];
    if (typeof body === "string") return [body];
    if (typeof body.message === "string") return [body.message];
    if (body.detail != null) return apiMessages(body.detail);
    if (Array.isArray(body)) return body.flatMap((e) => typeof e === "string" ? [e] : apiMessages(e.message ?? e.msg ?? JSON.stringify(e)));
    return Object.values(body).flatMap((errors) => Array.isArray(errors)
      ? errors.map((e) => typeof e === "string" ? e : e.message) : [typeof errors === "string" ? errors : JSON.stringify(errors)]);
  }

  // A JSON POST with the page's CSRF token: {ok, body}, the refusal's body kept to show its words.
  async function post(path, body) {
    const answer = await fetch(API + path, { method: "POST", body: JSON.stringify(body),
      headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRF-Token": csrf() } });
    let parsed = null;
    try { parsed = await answer.json(); } catch (err) { parsed = { message: `${answer.status} ${answer.statusText}` }; }
    return { ok: answer.ok, body: parsed };
  }

  function showError(box, body) {
    box.textContent = apiMessages(body).join(" ");
    box.hidden = false;
  }

  async function rerunForm(id) {
    const [step, e] = await Promise.all([api(`/executions/${id}/step/`), api(`/executions/${id}/`)]);
    const fields = parameterFields(step.parameters, "param", (p) => p.value ?? p.default);
    $("rerun-fields").replaceChildren(...(fields.length ? fields.map((f) => f.row) : [el("p", { class: "empty", text: "This step has no parameters." })]));
    const inputs = step.inputs.map((i) => {
      const input = el("input", { type: "text", id: `input-${i.name}`, name: i.name, list: "earlier-outputs" });
      input.value = i.urls.join(" ");
      return { name: i.name, input, row: el("label", { for: input.id }, el("span", { text: `input ${i.name}` }), input,
        el("small", { text: "a URL, or an earlier output (datum://…); several separated by spaces" })) };
    });
    $("rerun-inputs").replaceChildren(...inputs.map((i) => i.row));
    $("rerun-title").value = e.title || "";
    $("rerun-commit").value = e.commit ? e.commit.identifier : "";
    rerunChoices(e, inputs.length > 0).catch(() => {});
    $("rerun-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const body = { parameters: parameterValues(fields), title: $("rerun-title").value.trim() || null };
      if (inputs.length) body.inputs = Object.fromEntries(inputs.map((i) => [i.name, i.input.value.split(/\s+/).filter(Boolean)]));
      if ($("rerun-commit").value.trim()) body.commit = $("rerun-commit").value.trim();
      if ($("rerun-environment").value) body.environment = $("rerun-environment").value;
      const answer = await post(`/executions/${id}/run-again/`, body);
      if (answer.ok) { location.href = `/executions/${answer.body.id}/`; return; }
      showError($("rerun-error"), answer.body);
    });
  }

  // Links both ways between an execution made by "Run again" and the one it was made from (the API
  // lists only those the caller may see).
  function showRerunLinks(e) {
    const source = e.rerun_of;
    $("rerun-of").hidden = !source;
    if (source) {
      $("rerun-of").replaceChildren("Re-run of ", el("a", { href: `/executions/${source.id}/`, text: `#${source.counter}` }),
        source.title ? ` ${source.title}` : "");
    }
    const reruns = e.reruns || [];
    $("reruns-box").hidden = !reruns.length;
    $("reruns").replaceChildren(...reruns.map((r) => el("li", {},
      el("a", { href: `/executions/${r.id}/`, text: `#${r.counter}` }), r.title ? ` ${r.title} ` : " ",
      el("span", { class: "status", "data-status": r.status, text: r.status }))));
  }

  // What "run again" may pick from: the environments, and the earlier outputs of the project (the
  // API lists only what the caller may see).
  async function rerunChoices(e, withInputs) {
    const envs = await api("/environments/");
    const names = (envs.results || envs).map((v) => v.name || v.slug).filter(Boolean);
    $("rerun-environment").replaceChildren(...[...new Set([e.environment.name, ...names])].map((n) => el("option", { value: n, text: n })));
    $("rerun-environment").value = e.environment.name;
    if (!withInputs) return;
    const outs = await api(`/data/?project=${encodeURIComponent(e.project.id)}&limit=500`);
    $("earlier-outputs").replaceChildren(...outs.results.map((o) =>
      el("option", { value: o.datum_url, label: `${o.name} (output of execution ${o.output_execution})` })));
  }

  // -- starting work from a project's page: an execution, a task or a pipeline ------------------
  const KINDS = { execution: ["New execution", "Step"], task: ["New task", "Task"], pipeline: ["New pipeline", "Pipeline"] };

  function newWork(project) {
    const state = { kind: "execution", defs: null, fields: [], inputs: [], commit: "" };
    const hideError = () => { $("new-error").hidden = true; $("new-error").textContent = ""; };

    async function open(kind) {
      state.kind = kind;
      $("new-card").hidden = false;
      $("new-heading").textContent = KINDS[kind][0];
      $("new-what-label").textContent = KINDS[kind][1];
      $("new-submit").textContent = `Start ${kind}`;
      $("new-inputs-box").hidden = kind === "pipeline";
      hideError();
      try {
        if (!$("new-commit").options.length) await loadCommits();
        await pickCommit();
      } catch (err) { showError($("new-error"), err.body || err.message); }
    }

    async function loadCommits() {
      const page = await api(`/commits/?${new URLSearchParams({ project, limit: 100 })}`);
      $("new-commit").replaceChildren(...page.results.map((c, i) => el("option", { value: c.identifier,
        title: c.identifier, text: `${i === 0 ? "latest: " : ""}${c.adhoc ? "package " : ""}`
          + `${c.identifier.replace(/^~/, "").slice(0, 10)}${c.ref ? ` (${c.ref})` : ""}, ${when(c.commit_time)}` })));
      if (!page.results.length) throw new Error("No commits yet: push to the project's repository, or run `vh exec run STEP --adhoc` in a linked folder.");
    }

    async function pickCommit() {
      const commit = $("new-commit").value;
      if (commit !== state.commit || !state.defs) {
        state.defs = null;
        state.defs = await api(`/commits/${encodeURIComponent(commit)}/definitions/?${new URLSearchParams({ project })}`);
        state.commit = commit;
      }
      const d = state.defs;
      const choices = state.kind === "execution" ? d.steps.map((s) => [`step:${s.name}`, s.name])
        : state.kind === "task" ? [...d.tasks.map((t) => [`task:${t.name}`, `${t.name} (step ${t.step})`]),
          ...d.steps.filter((s) => s.parameters.length).map((s) => [`step:${s.name}`, `a grid over step ${s.name}`])]
        : d.pipelines.map((p) => [`pipeline:${p.name}`, p.name]);
      const was = $("new-what").value;
      $("new-what").replaceChildren(...choices.map(([value, text]) => el("option", { value, text })));
      if (choices.some(([v]) => v === was)) $("new-what").value = was;
      $("new-what").disabled = !choices.length;
      $("new-submit").disabled = !choices.length;
      $("new-what-hint").textContent = choices.length ? "" : `this commit's valohai.yaml has no ${state.kind === "execution" ? "step" : state.kind}s`;
      renderWhat();
    }

    // A task's parameter: its values to try, comma-separated (a style other than single or multiple as its JSON).
    function taskCurrent(variants) {
      return (p) => {
        const v = variants[p.name];
        if (!v) return p.default;
        if (v.style === "single") return v.rules.value;
        if (v.style === "multiple") return v.rules.items;
        return JSON.stringify(v);
      };
    }

    function renderWhat() {
      const [type, name] = (($("new-what").value || ":").match(/^([a-z]+):(.*)$/) || [null, "", ""]).slice(1);
      const d = state.defs;
      let params = [], inputs = [], current, hint = "";
      state.task = null;
      if (type === "pipeline") {
        const p = d.pipelines.find((x) => x.name === name);
        params = p.parameters;
        hint = `nodes: ${p.nodes.join(", ")}`;
      } else if (type) {
        state.task = type === "task" ? d.tasks.find((t) => t.name === name) : null;
        const step = d.steps.find((s) => s.name === (state.task ? state.task.step : name));
        params = step ? step.parameters : [];
        inputs = step ? step.inputs : [];
        hint = step && step.problems.length ? step.problems.join(" ") : "";
        if (state.kind === "task") {
          params = params.filter((p) => !p.multiple).map((p) => ({ ...p, multiple: true, choices: null,
            description: [p.choices ? `one of ${p.choices.join(", ")}` : "", "the values to try"].filter(Boolean).join(" · ") }));
          current = taskCurrent(state.task ? state.task.body.parameters : {});
        }
      }
      $("new-what-hint").textContent = hint || $("new-what-hint").textContent;
      state.fields = parameterFields(params, "new-param", current);
      $("new-fields").replaceChildren(...(state.fields.length ? state.fields.map((f) => f.row)
        : [el("p", { class: "empty", text: "No parameters." })]));
      $("new-params-heading").hidden = false;
      state.inputs = inputs.map((i) => {
        const box = el("textarea", { id: `new-input-${i.name}`, name: i.name, rows: "2" });
        box.value = i.default.join("\n");
        return { i, box, row: el("label", { for: box.id }, el("span", { text: i.name }), box,
          el("small", { text: ["URLs, one per line", i.optional ? "optional" : "", i.description || ""].filter(Boolean).join(" · ") })) };
      });
      $("new-inputs").replaceChildren(...(state.inputs.length ? state.inputs.map((x) => x.row)
        : [el("p", { class: "empty", text: "No inputs." })]));
    }

    function taskVariants() {
      const variants = {};
      for (const { p, input } of state.fields) {
        const raw = input.value.trim();
        if (raw === "") continue;
        if (raw.startsWith("{")) {
          try { variants[p.name] = JSON.parse(raw); } catch (err) { variants[p.name] = { style: "single", rules: { value: raw } }; }
          continue;
        }
        const values = typedList(p, raw);
        variants[p.name] = values.length === 1 ? { style: "single", rules: { value: values[0] } } : { style: "multiple", rules: { items: values } };
      }
      return variants;
    }

    async function submit() {
      const [type, name] = $("new-what").value.match(/^([a-z]+):(.*)$/).slice(1);
      const commit = $("new-commit").value;
      const common = { project, commit };
      const environment = $("new-environment").value;
      const title = $("new-title").value.trim();
      const inputs = Object.fromEntries(state.inputs.map(({ i, box }) =>
        [i.name, box.value.split("\n").map((u) => u.trim()).filter(Boolean)]));
      let answer;
      if (state.kind === "execution") {
        answer = await post("/executions/", { ...common, step: name, parameters: parameterValues(state.fields), inputs,
          ...(environment ? { environment } : {}), ...(title ? { title } : {}) });
        if (answer.ok) location.href = `/executions/${answer.body.id}/`;
      } else if (state.kind === "task") {
        const body = state.task ? state.task.body : { type: "grid_search" };
        answer = await post("/tasks/", { ...body, ...common, step: state.task ? state.task.step : name,
          parameters: taskVariants(), inputs, ...(environment ? { environment } : {}), ...(title ? { title } : {}) });
        if (answer.ok) location.href = `/tasks/${answer.body.id}/`;
      } else {
        const parameters = Object.fromEntries(Object.entries(parameterValues(state.fields)).filter(([, v]) => v != null));
        answer = await post(`/commits/${encodeURIComponent(commit)}/pipeline-payload/`, { project, pipeline: name, parameters });
        if (answer.ok) {
          const payload = answer.body;
          if (environment) {  // as `vh pipeline run -e` does: every execution and task node
            for (const node of payload.nodes) if (node.template) node.template.environment = environment;
          }
          if (title) payload.title = title;
          answer = await post("/pipelines/", payload);
          if (answer.ok) location.href = `/pipelines/${answer.body.id}/`;
        }
      }
      if (!answer.ok) showError($("new-error"), answer.body);
    }

    for (const b of document.querySelectorAll(".start button")) b.addEventListener("click", () => open(b.dataset.kind));
    $("new-cancel").addEventListener("click", () => { $("new-card").hidden = true; });
    $("new-commit").addEventListener("change", () => {
      hideError();
      pickCommit().catch((err) => showError($("new-error"), err.body || err.message));
    });
    $("new-what").addEventListener("change", () => { hideError(); renderWhat(); });
    $("new-form").addEventListener("submit", (event) => {
      event.preventDefault();
      hideError();
      $("new-submit").disabled = true;
      submit().catch((err) => showError($("new-error"), err.message)).finally(() => { $("new-submit").disabled = false; });
    });
  }

  // -- a task: its children, and their parameters against a metric ------------------------------
  const FINAL = ["stopped", "error", "complete"];
  const STATUS_COLOR = { complete: "--ok", error: "--bad", stopped: "--stderr", started: "--run", stopping: "--run" };
  const cssVar = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  const statusColor = (status) => cssVar(STATUS_COLOR[status] || "--muted");
  const numeric = (v) => typeof v === "number" && Number.isFinite(v) ? v : null;
  const ramp = (f) => `hsl(${Math.round(170 - 140 * f)} 70% 45%)`;  // a metric's low (teal) to high (orange)
  const svgEl = (tag, attrs = {}, ...children) => {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "text") node.textContent = v; else node.setAttribute(k, v);
    }
    for (const child of children) node.append(child);
    return node;
  };

  // Where values sit on an axis: numbers on a linear scale (a log scale for a logspace or
  // loguniform parameter), anything else as evenly spaced categories in sorted order.
  function axisOf(name, values, variant) {
    const present = values.filter((v) => v != null);
    if (present.length && present.every((v) => numeric(v) != null)) {
      const rules = (variant && variant.rules) || {};
      const log = Boolean(variant) && (variant.style === "logspace" || rules.distribution === "loguniform") &&
        present.every((v) => v > 0);
      const f = log ? Math.log : (v) => v;
      const lo = Math.min(...present), hi = Math.max(...present);
      const at = (v) => numeric(v) == null ? null : hi === lo ? 0.5 : (f(v) - f(lo)) / (f(hi) - f(lo));
      const mid = log ? Math.sqrt(lo * hi) : (lo + hi) / 2;
      // Padded: uPlot leaves out a last point whose x repeats the range's end.
      const span = hi - lo || Math.abs(lo) || 1;
      const range = log ? [lo / (hi === lo ? 2 : Math.pow(hi / lo, 0.05)), hi * (hi === lo ? 2 : Math.pow(hi / lo, 0.05))]
        : [lo - span * 0.05, hi + span * 0.05];
      return { name, kind: "number", log, x: numeric, at, range,
        ticks: hi === lo ? [[lo, 0.5]] : [[lo, 0], [mid, 0.5], [hi, 1]] };
    }
    const cats = [...new Set(present.map(shown))].sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
    const x = (v) => v == null ? null : cats.indexOf(shown(v));
    const every = Math.ceil(cats.length / 12);  // at most a dozen labels
    return { name, kind: "category", cats, x, at: (v) => v == null ? null : cats.length === 1 ? 0.5 : x(v) / (cats.length - 1),
      ticks: cats.filter((_, i) => i % every === 0).map((c) => [c, cats.length === 1 ? 0.5 : cats.indexOf(c) / (cats.length - 1)]) };
  }

  function taskPage() {
    const id = $("facts").dataset.task;
    const sort = { key: "counter", descending: false };
    let task = null, snapshot = "", drawn = "", scatter = null, near = null;
    const picked = { metric: null, param: null };

    // The parameters the search varies (a fixed one, `-p NAME=VALUE`, is the same in every child).
    const varied = (t) => {
      const names = Object.keys(t.parameters);
      const some = names.filter((n) => t.parameters[n].style !== "single");
      return some.length ? some : names;
    };
    const metricKeys = (t) => {
      const target = t.configuration.optimization_target_metric;
      const keys = [...new Set(t.executions.flatMap((c) =>
        Object.keys(c.metadata || {}).filter((k) => numeric(c.metadata[k]) != null)))].sort();
      return target ? [target, ...keys.filter((k) => k !== target)] : keys;
    };
    const assigned = (parameters) => Object.entries(parameters).map(([k, v]) => `${k}=${shown(v)}`).join(" ");
    const describe = (c, metric) => [`#${c.counter} ${c.status}:`, assigned(c.parameters),
      metric && (c.metadata || {})[metric] != null ? `· ${metric} = ${shown(c.metadata[metric])}` : ""].join(" ").trim();

    // A select's choices are rebuilt only when they change (it may be open); a pick is kept.
    function choose(select, names, key) {
      if (JSON.stringify([...select.options].map((o) => o.value)) !== JSON.stringify(names)) {
        select.replaceChildren(...names.map((n) => el("option", { value: n, text: n })));
      }
      select.value = names.includes(picked[key]) ? picked[key] : names[0] || "";
      select.disabled = names.length < 2;
      select.closest("label").hidden = names.length === 0;
    }

    function header(t) {
      $("status").textContent = t.status;
      $("status").dataset.status = t.status;
      $("reason").textContent = t.status_reason || "";
      $("stop").hidden = FINAL.includes(t.status);
      const c = t.configuration;
      const target = c.optimization_target_metric ? c.optimization_target_metric + (c.optimization_target_value != null
        ? ` (closest to ${shown(c.optimization_target_value)})` : " (highest)") : "";
      const early = t.median_stopping;
      $("facts").replaceChildren(el("dl", {}, ...[
        ["type", t.type], ["step", t.step], ["target", target], ["created", when(t.ctime)],
        ["started", when(t.started_at)], ["ended", when(t.ended_at)], ["by", t.creator.username || ""],
        ["batch size", shown(c.execution_batch_size)], ["on child error", c.on_child_error || ""],
        ["stop condition", c.stop_condition || ""],
        ["stopped early", early ? `${early.stopped} (${shown(early.machine_hours_saved)} machine-hours saved)` : ""],
        ["cost", money(t.cost_usd)],
      ].filter(([, v]) => v).map(([k, v]) => el("div", {}, el("dt", { text: k }), el("dd", { text: v })))));
      progress(t);
      $("counts").replaceChildren(...Object.entries(t.counts).sort().map(([s, n]) =>
        el("span", { class: "status", "data-status": s, "data-count": n, text: `${n} ${s}` })));
      const best = t.best && t.executions.find((e) => e.id === t.best.execution);
      $("best").hidden = !best;
      if (best) {
        $("best").replaceChildren(FINAL.includes(t.status) ? "Best: " : "Best so far: ",
          el("a", { id: "best-link", href: `/executions/${best.id}/`, text: `#${best.counter}` }),
          ` with ${c.optimization_target_metric} = ${shown(t.best.value)} `,
          el("span", { class: "params", text: assigned(best.parameters) }));
      }
    }

    // "N of M finished" with a bar, and the time since the task started (ticking while it runs).
    function progress(t) {
      const planned = Math.max(t.planned || 0, t.executions.length);
      const finished = t.executions.filter((c) => FINAL.includes(c.status)).length;
      $("progress-text").textContent = `${finished} of ${planned} finished`;
      $("progress").max = Math.max(1, planned);
      $("progress").value = finished;
      elapsed();
    }

    function elapsed() {
      if (!task || !task.started_at) { $("elapsed").textContent = ""; return; }
      const end = task.ended_at ? Date.parse(task.ended_at) : Date.now();
      $("elapsed").textContent = `${seconds(Math.max(0, (end - Date.parse(task.started_at)) / 1000))} elapsed`;
    }

    function table(t, metric) {
      const params = varied(t);
      const keys = [...new Set([metric, ...metricKeys(t)].filter(Boolean))].slice(0, 6);
      const columns = [
        { key: "counter", label: "#", value: (c) => c.counter },
        { key: "status", label: "status", value: (c) => c.status },
        ...params.map((p) => ({ key: `param:${p}`, label: p, value: (c) => c.parameters[p] })),
        ...keys.map((k) => ({ key: `metric:${k}`, label: k, value: (c) => numeric((c.metadata || {})[k]) })),
        { key: "duration", label: "duration", value: (c) => c.duration },
      ];
      const column = columns.find((c) => c.key === sort.key) || columns[0];
      const order = (a, b) => {  // missing values last, either way
        const x = column.value(a), y = column.value(b);
        if (x == null || y == null) return (x == null) - (y == null);
        const d = typeof x === "number" && typeof y === "number" ? x - y
          : String(x).localeCompare(String(y), undefined, { numeric: true });
        return sort.descending ? -d : d;
      };
      $("children").tHead.rows[0].replaceChildren(...columns.map((c) => {
        const on = c.key === column.key;
        const button = el("button", { type: "button", class: "sort", "data-key": c.key,
          text: c.label + (on ? (sort.descending ? " ↓" : " ↑") : "") });
        button.addEventListener("click", () => {
          sort.descending = on ? !sort.descending : true;
          sort.key = c.key;
          table(task, $("metric").value);
        });
        return el("th", { scope: "col", "aria-sort": on ? (sort.descending ? "descending" : "ascending") : "none" }, button);
      }));
      const bestId = t.best ? t.best.execution : null;
      $("children").tBodies[0].replaceChildren(...t.executions.slice().sort((a, b) => order(a, b) || a.counter - b.counter)
        .map((c) => el("tr", { "data-counter": c.counter, "data-id": c.id, ...(c.id === bestId ? { class: "best" } : {}) },
          el("td", {}, el("a", { href: `/executions/${c.id}/`, text: `#${c.counter}` }),
            ...(c.id === bestId ? [" ", el("span", { class: "badge", text: "best" })] : [])),
          el("td", {}, el("span", { class: "status", "data-status": c.status, title: c.status_reason || "", text: c.status })),
          ...params.map((p) => el("td", { class: "num", "data-key": `param:${p}`, text: shown(c.parameters[p]) })),
          ...keys.map((k) => el("td", { class: "num", "data-key": `metric:${k}`, text: shown((c.metadata || {})[k]) })),
          el("td", { text: seconds(c.duration) }))));
      $("no-children").hidden = t.executions.length > 0;
    }

    function legend(box, items) {
      box.replaceChildren(...items.map(([swatch, text]) => el("span", {}, swatch, text)));
    }

    const HINT = "Point at a dot to see its execution; click to open it.";

    // uPlot in points-only mode: x is the parameter (a category's index for a non-number), one
    // series per status so each gets its colour, and a ring series over the best point.
    function drawScatter(t, name, metric) {
      const box = $("scatter");
      if (scatter) { scatter.destroy(); scatter = null; }
      near = null;
      const axis = axisOf(name, t.executions.map((c) => c.parameters[name]), t.parameters[name]);
      const points = t.executions
        .map((c) => ({ c, x: axis.x(c.parameters[name]), y: numeric((c.metadata || {})[metric]) }))
        .filter((p) => p.x != null && p.y != null).sort((a, b) => a.x - b.x);
      const bestId = t.best ? t.best.execution : null;
      const best = points.find((p) => p.c.id === bestId);
      box.dataset.param = name;
      box.dataset.points = String(points.length);
      box.dataset.best = best ? String(best.c.counter) : "";
      if (!name || !points.length) {
        box.replaceChildren(el("p", { class: "empty",
          text: metric ? `No execution has reported ${metric} yet.` : "No metric reported yet." }));
        $("sc-legend").replaceChildren();
        $("sc-hover").textContent = "";
        return;
      }
      box.replaceChildren();
      const statuses = [...new Set(points.map((p) => p.c.status))].sort();
      const accent = cssVar("--accent");
      const dots = (color) => ({ stroke: color, paths: () => null,
        points: { show: true, space: 0, size: 9, width: 1, stroke: color, fill: color } });
      const cat = axis.kind === "category";
      const ink = { stroke: cssVar("--fg"), grid: { stroke: cssVar("--line") }, ticks: { stroke: cssVar("--line") } };
      scatter = new uPlot({
        width: Math.max(300, box.clientWidth || 560), height: 280, legend: { show: false },
        cursor: { points: { show: false }, drag: { x: false, y: false } },
        scales: { x: cat ? { time: false, range: [-0.5, axis.cats.length - 0.5] }
          : { time: false, distr: axis.log ? 3 : 1, range: axis.range },
        y: { distr: $("sc-log").checked && points.every((p) => p.y > 0) ? 3 : 1 } },
        axes: [{ label: name, ...ink, ...(cat ? { splits: () => axis.cats.map((_, i) => i),
          values: (u, splits) => splits.map((i) => axis.cats[i] ?? "") } : {}) }, { label: metric, ...ink }],
        series: [{}, ...statuses.map((s) => dots(statusColor(s))),
          { stroke: accent, paths: () => null,
            points: { show: true, space: 0, size: 19, width: 2.5, stroke: accent, fill: "transparent" } }],
        hooks: { setCursor: [(u) => {
          near = null;
          let closest = 12 * 12;  // px²: a point within 12 px of the pointer
          if (u.cursor.left >= 0) {
            for (const p of points) {
              const dx = u.valToPos(p.x, "x") - u.cursor.left, dy = u.valToPos(p.y, "y") - u.cursor.top;
              if (dx * dx + dy * dy < closest) { closest = dx * dx + dy * dy; near = p; }
            }
          }
          $("sc-hover").textContent = near ? describe(near.c, metric) : HINT;
          u.over.style.cursor = near ? "pointer" : "";
        }] },
      }, [points.map((p) => p.x), ...statuses.map((s) => points.map((p) => p.c.status === s ? p.y : null)),
        points.map((p) => p === best ? p.y : null)], box);
      scatter.over.addEventListener("click", () => { if (near) location.href = `/executions/${near.c.id}/`; });
      $("sc-hover").textContent = HINT;
      legend($("sc-legend"), [...statuses.map((s) => [el("i", { class: "dot", style: `background:${statusColor(s)}` }), s]),
        ...(best ? [[el("i", { class: "ring", style: `border-color:${accent}` }), `best (#${best.c.counter})`]] : [])]);
    }

    // Plain SVG: an axis per varied parameter and one for the metric, a polyline per finished
    // child coloured by its metric (dashed when it reported none), the best one on top.
    function drawParallel(t, names, metric) {
      const svg = $("parcoords");
      const width = Math.max(320, svg.clientWidth || 560), height = 280, top = 34, bottom = 14, side = 56;
      svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
      const axes = names.map((n) => ({ ...axisOf(n, t.executions.map((c) => c.parameters[n]), t.parameters[n]),
        value: (c) => c.parameters[n] }));
      if (metric) {
        axes.push({ ...axisOf(metric, t.executions.map((c) => numeric((c.metadata || {})[metric])), null),
          value: (c) => numeric((c.metadata || {})[metric]), metric: true });
      }
      const metricAxis = axes.find((a) => a.metric);
      const xAt = (i) => axes.length === 1 ? width / 2 : side + i * (width - 2 * side) / (axes.length - 1);
      const yAt = (f) => top + (1 - f) * (height - top - bottom);
      const bestId = t.best ? t.best.execution : null;
      const accent = cssVar("--accent");
      const finished = t.executions.filter((c) => FINAL.includes(c.status))
        .sort((a, b) => (a.id === bestId) - (b.id === bestId));  // the best one drawn last, on top
      const lines = finished.map((c) => {
        const at = axes.map((a, i) => [xAt(i), a.at(a.value(c))]).filter(([, f]) => f != null);
        const f = metricAxis ? metricAxis.at(metricAxis.value(c)) : null;
        const isBest = c.id === bestId;
        return svgEl("a", { href: `/executions/${c.id}/` }, svgEl("polyline", {
          class: isBest ? "line best" : "line", "data-counter": c.counter, fill: "none",
          stroke: isBest ? accent : f == null ? statusColor(c.status) : ramp(f),
          ...(f == null ? { "stroke-dasharray": "4 3" } : {}),
          points: at.map(([x, y]) => `${x.toFixed(1)},${yAt(y).toFixed(1)}`).join(" ") },
        svgEl("title", { text: describe(c, metric) })));
      });
      const last = axes.length - 1;
      const rightmost = (i) => i === last && last > 0;  // its labels go to the left, inside the picture
      const ticks = axes.map((a, i) => svgEl("g", { class: a.metric ? "axis metric" : "axis", "data-key": a.name },
        svgEl("line", { x1: xAt(i), x2: xAt(i), y1: top, y2: height - bottom }),
        svgEl("text", { class: "axis-label", x: xAt(i), y: 16, text: a.name,
          "text-anchor": i === 0 && last > 0 ? "start" : rightmost(i) ? "end" : "middle" }),
        ...a.ticks.map(([v, f]) => svgEl("text", { class: "tick", x: xAt(i) + (rightmost(i) ? -5 : 5), y: yAt(f) + 4,
          "text-anchor": rightmost(i) ? "end" : "start", text: shown(v) }))));
      svg.replaceChildren(...lines, ...ticks);
      for (const label of svg.querySelectorAll("text.tick")) {  // readable over the lines
        const box = label.getBBox();
        label.before(svgEl("rect", { class: "tick-bg", x: box.x - 2, y: box.y, width: box.width + 4,
          height: box.height, rx: 2 }));
      }
      svg.dataset.lines = String(lines.length);
      const gradient = `background:linear-gradient(90deg, ${ramp(0)}, ${ramp(1)})`;
      legend($("pc-legend"), [
        ...(metricAxis && metricAxis.kind === "number" ? [[el("i", { class: "ramp", style: gradient }), `${metric}: low to high`]] : []),
        ...(finished.some((c) => c.id === bestId)
          ? [[el("i", { class: "bar", style: `background:${accent}` }), `best (#${t.best.counter})`]] : []),
        ...(finished.some((c) => metricAxis == null || metricAxis.at(metricAxis.value(c)) == null)
          ? [[el("i", { class: "bar dashed" }), "no metric"]] : [])]);
    }

    function render() {
      const t = task;
      const names = varied(t);
      choose($("metric"), metricKeys(t), "metric");
      choose($("sc-param"), names, "param");
      const metric = $("metric").value, param = $("sc-param").value;
      header(t);
      table(t, metric);
      const key = JSON.stringify([t.executions, t.best, metric, param, $("parcoords").clientWidth]);
      if (key !== drawn) {
        drawn = key;
        drawScatter(t, param, metric);
        drawParallel(t, names, metric);
      }
    }

    async function load() {
      const t = await api(`/tasks/${id}/`, { signal: AbortSignal.timeout(20000) });
      const now = JSON.stringify(t);
      if (now !== snapshot) { task = t; render(); snapshot = now; }  // a render that failed is tried again
      return t;
    }

    // Polled while the task runs: every 2 s (not while the page is hidden), until it is final.
    async function poll() {
      let t = null;
      try { if (!document.hidden || !task) t = await load(); } catch (err) { console.error(err); }
      if (!t || !FINAL.includes(t.status)) setTimeout(poll, 2000);
    }

    setInterval(() => { if (task && !FINAL.includes(task.status)) elapsed(); }, 1000);
    onThemeChange(() => { drawn = ""; if (task) render(); });
    $("metric").addEventListener("change", () => { picked.metric = $("metric").value; render(); });
    $("sc-param").addEventListener("change", () => { picked.param = $("sc-param").value; render(); });
    $("sc-log").addEventListener("change", () => { drawn = ""; render(); });
    let resizing = false;
    window.addEventListener("resize", () => {
      if (resizing || !task) return;
      resizing = true;
      requestAnimationFrame(() => { resizing = false; render(); });
    });
    $("stop").addEventListener("click", async () => {
      if (!confirm("Stop this task? Queued executions will not run; running ones stop, keeping their outputs so far.")) return;
      await api(`/tasks/${id}/stop/`, { method: "POST" });
      load();  // the polling goes on until every execution has stopped
    });
    poll();
  }

  // -- a pipeline: its graph, live ---------------------------------------------------------------
  const PIPELINE_FINAL = ["stopped", "error", "complete"];
  const NODE = { width: 190, height: 56, gapX: 70, gapY: 22, pad: 14 };
  const refOf = (v) => v && typeof v === "object" ? v.id : v;  // an id, or {id, ...}

  // Each node's depth: 0 without upstream nodes, else one more than its deepest upstream node.
  function depths(names, edges) {
    const upstream = new Map(names.map((n) => [n, []]));
    for (const e of edges) upstream.get(e.to).push(e.from);
    const depth = new Map();
    const visit = (n, seen) => {
      if (depth.has(n)) return depth.get(n);
      if (seen.has(n)) return 0;  // a cycle is refused at creation; drawn flat if one ever came
      seen.add(n);
      const d = Math.max(-1, ...upstream.get(n).map((u) => visit(u, seen))) + 1;
      depth.set(n, d);
      return d;
    };
    for (const n of names) visit(n, new Set());
    return depth;
  }

  // Where a node's page is: its task, its (latest) execution, or the execution it reused.
  function nodeLink(n) {
    if (n.task != null) return `/tasks/${refOf(n.task)}/`;
    const execution = refOf(n.execution) ?? refOf(n.reused_execution) ?? (n.executions || []).slice(-1).map(refOf)[0];
    return execution != null ? `/executions/${execution}/` : null;
  }

  function pipelinePage() {
    const id = $("facts").dataset.pipeline;
    let snapshot = "";

    function header(p) {
      $("status").textContent = p.status;
      $("status").dataset.status = p.status;
      $("reason").textContent = p.status_reason || "";
      $("stop").hidden = PIPELINE_FINAL.includes(p.status);
      const commit = p.commit && typeof p.commit === "object" ? p.commit.identifier : p.commit;
      $("facts").replaceChildren(el("dl", {}, ...[
        ["pipeline", p.name || ""], ["commit", commit ? commit.slice(0, 13) : ""], ["by", p.user || (p.creator || {}).username || ""],
        ["created", when(p.created_at || p.ctime)], ["started", when(p.started_at)], ["ended", when(p.ended_at)],
        ["parameters", Object.entries(p.parameters || {}).map(([k, v]) => `${k}=${shown(v && v.expression !== undefined ? v.expression : v)}`).join(" ")],
        ["reuses executions", p.reuse_executions ? "yes" : ""], ["cost", money(p.cost_usd)],
      ].filter(([, v]) => v).map(([k, v]) => el("div", {}, el("dt", { text: k }), el("dd", { text: v })))));
    }

    function draw(p) {
      const names = p.nodes.map((n) => n.name);
      const byId = new Map(p.nodes.map((n) => [n.id, n.name]));
      const nameOf = (v) => names.includes(v) ? v : byId.get(v);
      const pairs = new Map();  // one line per pair of nodes, its title every edge between them
      for (const e of p.edges || []) {
        const from = nameOf(e.source_node), to = nameOf(e.target_node);
        if (from == null || to == null) continue;
        const key = JSON.stringify([from, to]);
        if (!pairs.has(key)) pairs.set(key, { from, to, labels: [] });
        pairs.get(key).labels.push(`${e.source_type}.${e.source_key} → ${e.target_type}.${e.target_key}`);
      }
      const edges = [...pairs.values()];
      const depth = depths(names, edges);
      const columns = [];
      for (const n of names) (columns[depth.get(n)] = columns[depth.get(n)] || []).push(n);
      const at = new Map();
      columns.forEach((column, d) => column.forEach((n, row) => at.set(n, {
        x: NODE.pad + d * (NODE.width + NODE.gapX), y: NODE.pad + row * (NODE.height + NODE.gapY) })));
      const width = NODE.pad * 2 + Math.max(1, columns.length) * (NODE.width + NODE.gapX) - NODE.gapX;
      const height = NODE.pad * 2 + Math.max(1, ...columns.map((c) => c.length)) * (NODE.height + NODE.gapY) - NODE.gapY;
      const svg = $("graph");
      svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
      svg.setAttribute("width", width);
      svg.setAttribute("height", height);
      const arrow = svgEl("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5", markerWidth: "7",
        markerHeight: "7", orient: "auto-start-reverse" }, svgEl("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow-head" }));
      const lines = edges.map((e) => {
        const a = at.get(e.from), b = at.get(e.to);
        const x1 = a.x + NODE.width, y1 = a.y + NODE.height / 2, x2 = b.x - 2, y2 = b.y + NODE.height / 2;
        const bend = Math.max(30, (x2 - x1) / 2);
        return svgEl("path", { class: "edge", "data-from": e.from, "data-to": e.to, "marker-end": "url(#arrow)",
          d: `M${x1},${y1} C${x1 + bend},${y1} ${x2 - bend},${y2} ${x2},${y2}` }, svgEl("title", { text: e.labels.join("\n") }));
      });
      const boxes = p.nodes.map((n) => {
        const { x, y } = at.get(n.name);
        const label = n.name.length > 24 ? n.name.slice(0, 23) + "…" : n.name;
        const group = svgEl("g", { class: "node", "data-node": n.name, "data-status": n.status },
          svgEl("rect", { x, y, width: NODE.width, height: NODE.height, rx: 8 }),
          svgEl("text", { class: "node-name", x: x + 10, y: y + 22, text: label }),
          svgEl("text", { class: "node-state", x: x + 10, y: y + 42, text: `${n.type} · ${n.status}` }),
          svgEl("title", { text: [`${n.name}: ${n.status}`, n.status_reason || ""].filter(Boolean).join("\n") }));
        const link = nodeLink(n);
        return link ? svgEl("a", { href: link, class: "node-link", "data-node": n.name }, group) : group;
      });
      svg.replaceChildren(svgEl("defs", {}, arrow), ...lines, ...boxes);
      const states = [...new Set(p.nodes.map((n) => n.status))].sort();
      $("graph-legend").replaceChildren(...states.map((s) => el("span", {}, el("i", { class: "swatch", "data-status": s }), s)));
    }

    function table(p) {
      $("nodes").tBodies[0].replaceChildren(...p.nodes.map((n) => {
        const link = nodeLink(n);
        const work = link ? el("a", { href: link, text: n.task != null ? "task" : (refOf(n.reused_execution) != null && refOf(n.execution) == null
          ? "reused execution" : "execution") }) : "";
        const actions = el("td", {});
        if (n.status === "waiting-approval") {
          const button = el("button", { type: "button", class: "approve", "data-approve": n.name, text: "Approve" });
          button.addEventListener("click", async () => {
            button.disabled = true;
            $("node-error").hidden = true;
            const answer = await post(`/pipelines/${id}/nodes/${encodeURIComponent(n.name)}/approve/`, {});
            if (!answer.ok) { showError($("node-error"), answer.body); button.disabled = false; }
            load();
          });
          actions.append(button);
        }
        return el("tr", { "data-node": n.name },
          el("td", { text: n.name }), el("td", { text: n.type }),
          el("td", {}, el("span", { class: "status", "data-status": n.status, text: n.status })),
          el("td", {}, work), el("td", { class: "reason", text: n.status_reason || "" }), actions);
      }));
    }

    async function load() {
      const p = await api(`/pipelines/${id}/`, { signal: AbortSignal.timeout(20000) });
      const now = JSON.stringify(p);
      if (now !== snapshot) { header(p); draw(p); table(p); snapshot = now; }
      return p;
    }

    // Polled while the pipeline runs: every 2 s (not while the page is hidden), until it is final.
    async function poll() {
      let p = null;
      try { if (!document.hidden || !snapshot) p = await load(); } catch (err) { console.error(err); }
      if (!p || !PIPELINE_FINAL.includes(p.status)) setTimeout(poll, 2000);
    }

    $("stop").addEventListener("click", async () => {
      if (!confirm("Stop this pipeline? Its running executions and tasks stop; nodes that have not started never will.")) return;
      const answer = await post(`/pipelines/${id}/stop/`, {});
      if (!answer.ok) showError($("node-error"), answer.body);
      load();
    });
    poll();
  }

  // -- operations (administrators) -------------------------------------------------------------
  function operationsPage() {
    let chart = null;
    async function load() {
      const [status, machines, failures] = await Promise.all([api("/status/"), api("/machines/"), api("/launch-failures/")]);
      $("environments").tBodies[0].replaceChildren(...status.map((r) => el("tr", { "data-environment": r.environment },
        el("td", { text: r.environment }), el("td", { text: r.cloud }),
        el("td", { text: Object.entries(r.machines).map(([s, n]) => `${s} ${n}`).join(", ") || "none" }),
        el("td", { class: "num", text: String(r.queued + r.held_by_quota) }), el("td", { class: "num", text: String(r.running) }),
        el("td", { class: "num", text: `$${r.cost_per_hour.toFixed(2)}` }),
        el("td", { text: r.last_launch_failure ? `${r.last_launch_failure.kind}: ${r.last_launch_failure.message}` : "" }))));
      $("machines").tBodies[0].replaceChildren(...machines.map((m) => el("tr", {},
        el("td", { text: String(m.id) }), el("td", { text: m.environment }), el("td", {}, el("span", { class: "status", text: m.state })),
        el("td", { text: m.instance_id || "" }), el("td", { text: m.address || "" }),
        el("td", { class: "gpus", text: gpuText(m) }), el("td", { text: when(m.state_changed_at) }),
        el("td", { class: "input-cache", text: inputCache(m.input_cache) }))));
      $("no-machines").hidden = machines.length > 0;
      const rows = Object.entries(failures).flatMap(([env, list]) => list.map((f) => ({ env, ...f })))
        .sort((a, b) => b.time.localeCompare(a.time)).slice(0, 20);
      $("failures").tBodies[0].replaceChildren(...rows.map((f) => el("tr", {},
        el("td", { text: when(f.time) }), el("td", { text: f.env }), el("td", { text: f.kind }), el("td", { text: f.message }))));
      $("no-failures").hidden = rows.length > 0;
    }
    async function costs() {
      const c = await api(`/cost/?hours=${$("cost-hours").value}`);
      const names = Object.keys(c.environments);
      const data = [c.hours.map((h) => Date.parse(h) / 1000), ...names.map((n) => c.environments[n])];
      if (chart) chart.destroy();
      chart = new uPlot({ width: Math.max(300, $("cost-chart").clientWidth || 600), height: 220,
        series: [{}, ...names.map((n, i) => ({ label: n, stroke: `hsl(${(i * 137) % 360} 70% 50%)`, value: (u, v) => v == null ? "" : `$${v.toFixed(2)}` }))] },
        data, $("cost-chart"));
    }
    async function spend() {
      const [users, projects] = await Promise.all(["user", "project"].map((by) => api(`/cost/?by=${by}&since=${monthStart()}`)));
      const rows = (report, id) => $(id).tBodies[0].replaceChildren(...report.rows.filter((r) => !r.idle).map((r) =>
        el("tr", { "data-key": r.key == null ? "" : String(r.key) }, el("td", { text: r.key == null ? "(none)" : String(r.key) }),
          el("td", { class: "num", text: money(r.cost_usd) }), el("td", { class: "num", text: r.machine_hours.toFixed(2) }),
          el("td", { class: "num", text: String(r.executions) }))));
      rows(users, "spend-users");
      rows(projects, "spend-projects");
      const idle = users.rows.filter((r) => r.idle);
      $("spend-idle").textContent = `Total ${money(users.total_usd)}` + (idle.length
        ? `, of which idle machines: ${idle.map((r) => `${r.key} ${money(r.cost_usd)}`).join(", ")}` : "");
    }
    $("cost-hours").addEventListener("change", costs);
    // The cost chart follows its box's width (a window resize), as the other charts do.
    new ResizeObserver(() => chart && chart.setSize({ width: Math.max(300, $("cost-chart").clientWidth), height: 220 }))
      .observe($("cost-chart"));
    load(); costs(); spend();
    setInterval(() => { if (!document.hidden) { load().catch(() => {}); spend().catch(() => {}); } }, 5000);
  }

  // -- charts of series (execution metadata, compare) ------------------------------------------
  // One uPlot panel per metric, so each keeps its own y scale (a loss of 0.002-0.01 is not flattened
  // against an accuracy of 0-1); the cursor is shared across panels. Colours come from the theme's CSS
  // variables, so the charts are redrawn when the theme changes, and resized with their box.
  const STEP_LIKE = ["step", "epoch", "iteration", "iter", "batch"];
  const INTEGER_STEPS = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1e3, 2e3, 2.5e3, 5e3, 1e4, 2e4, 5e4, 1e5, 1e6];
  const seriesColor = (i, alpha = 1) => `hsl(${(210 + i * 137) % 360} 70% 50% / ${alpha})`;
  const ink = () => ({ stroke: cssVar("--fg"), grid: { stroke: cssVar("--line") }, ticks: { stroke: cssVar("--line") } });

  // Exponential moving average (0 = none); gaps stay gaps.
  function smoothed(values, weight) {
    let last = null;
    return values.map((v) => {
      if (v == null || !weight) return v;
      last = last == null ? v : weight * last + (1 - weight) * v;
      return last;
    });
  }

  // Several points at one x (a repeated step) would leave the x scale empty: pad around that x.
  function xRange(isTime) {
    return (u, lo, hi) => lo == null ? [0, 1] : lo === hi ? [lo - (isTime ? 60 : 1), hi + (isTime ? 60 : 1)] : [lo, hi];
  }

  // uPlot ranges one lone x by itself (onto years, for a time axis), passing over a range function: set it.
  function padLoneX(u, isTime) {
    const xs = u.data[0];
    if (xs.length && xs[0] === xs[xs.length - 1]) u.setScale("x", { min: xs[0] - (isTime ? 60 : 1), max: xs[0] + (isTime ? 60 : 1) });
  }

  const lastValue = (values) => { for (let i = values.length - 1; i >= 0; i--) if (values[i] != null) return values[i]; return null; };

  // The legend under a panel: each series' value at the cursor, or its last value when the cursor is away.
  function panelLegend(box, u, lines) {
    const idx = u.cursor.idx;
    box.replaceChildren(...lines.map((l) => {
      const values = u.data[l.index] || [];
      const v = idx == null ? lastValue(values) : values[idx];
      return el("span", { "data-label": l.label }, el("i", { class: "bar", style: `background:${l.color}` }),
        `${l.label}: ${v == null ? "" : shown(v)}${idx == null ? " (last)" : ""}`);
    }));
  }

  // Draws panels into `box`: xs, a list of panels {key, lines: [{label, values, color}]}, the x key
  // and options {log, smooth, time, height}. Returns the uPlot objects (also on box.charts, for tests).
  function drawPanels(box, xs, panels, xKey, options) {
    const signature = JSON.stringify([xKey, options, panels.map((p) => [p.key, p.lines.map((l) => [l.label, l.color])]),
      cssVar("--fg")]);
    if (box.signature === signature && (box.charts || []).length === panels.length) {  // new points only
      box.charts.forEach((u, i) => u.setData([xs, ...panels[i].lines.flatMap((l) =>
        options.smooth ? [l.values, smoothed(l.values, options.smooth)] : [l.values])]));
      for (const u of box.charts) { padLoneX(u, Boolean(options.time)); u.refreshLegend(); }
      return box.charts;
    }
    box.signature = signature;
    for (const u of box.charts || []) u.destroy();
    const isTime = Boolean(options.time);
    const integer = !isTime && STEP_LIKE.includes(xKey);
    const sync = uPlot.sync(`panels-${box.id}`);
    const width = () => Math.max(280, box.clientWidth || 500);
    box.replaceChildren();
    box.charts = panels.map((panel) => {
      const positive = panel.lines.every((l) => l.values.every((v) => v == null || v > 0));
      const log = Boolean(options.log) && positive;
      const drawn = [];  // raw (faint) behind smoothed when smoothing is on
      for (const l of panel.lines) {
        if (options.smooth) drawn.push({ label: `${l.label} (raw)`, values: l.values, color: l.faint, raw: true });
        drawn.push({ label: l.label, values: smoothed(l.values, options.smooth), color: l.color });
      }
      drawn.forEach((d, i) => { d.index = i + 1; });
      const shownLines = drawn.filter((d) => !d.raw);
      const holder = el("div", { class: "panel", "data-key": panel.key, "data-scale": log ? "log" : "linear" });
      const legendBox = el("div", { class: "legend panel-legend" });
      box.append(holder);
      const u = new uPlot({
        width: width(), height: options.height || 180, legend: { show: false },
        cursor: { sync: { key: sync.key }, points: { size: 6 } },
        scales: { x: { time: isTime, range: xRange(isTime) }, y: { distr: log ? 3 : 1 } },
        axes: [{ label: isTime ? "time" : xKey, ...ink(), ...(integer ? { incrs: INTEGER_STEPS } : {}) },
          { label: panel.key, size: 64, space: 22, ...ink() }],
        series: [{ label: xKey }, ...drawn.map((d) => ({ label: d.label, stroke: d.color, width: d.raw ? 1 : 2, spanGaps: true }))],
        hooks: { setCursor: [(uu) => panelLegend(legendBox, uu, shownLines)] },
      }, [xs, ...drawn.map((d) => d.values)], holder);
      padLoneX(u, isTime);
      holder.uplot = u;
      holder.append(legendBox);
      u.refreshLegend = () => panelLegend(legendBox, u, shownLines);
      u.refreshLegend();
      return u;
    });
    if (!box.resizer) {  // charts follow their box's width (a window resize, a sidebar opening)
      box.resizer = new ResizeObserver(() => { for (const u of box.charts || []) u.setSize({ width: width(), height: u.height }); });
      box.resizer.observe(box);
    }
    return box.charts;
  }

  // Redraw charts when the theme changes (the toggle or the system setting): their colours are baked in.
  function onThemeChange(redraw) {
    window.addEventListener("vh-theme", redraw);
    window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", redraw);
  }

  // -- several executions side by side ---------------------------------------------------------
  async function comparePage() {
    const box = $("compare");
    if (!box) return;
    const ids = box.dataset.executions.split(",");
    const runs = await Promise.all(ids.map(async (id) => ({
      e: await api(`/executions/${id}/`), points: (await api(`/executions/${id}/metadata/`)).points })));
    const label = (r) => `#${r.e.counter} ${r.e.step}`;
    const params = [...new Set(runs.flatMap((r) => Object.keys(r.e.parameters)))].sort();
    const metrics = [...new Set(runs.flatMap((r) => Object.keys(r.e.metadata || {})))].sort();
    // Adding or removing a run is a new address: the comparison stays a link to share or reload.
    const compareUrl = (list) => "/compare/?" + list.map((id) => `e=${encodeURIComponent(id)}`).join("&");
    const table = $("cmp-table");
    table.tHead.rows[0].replaceChildren(el("th", { text: "" }), ...runs.map((r) => {
      const remove = el("button", { type: "button", class: "remove", "data-id": r.e.id, title: `Remove ${label(r)}`,
        "aria-label": `Remove ${label(r)} from the comparison`, text: "×" });
      remove.addEventListener("click", () => { location.href = compareUrl(ids.filter((id) => id !== String(r.e.id))); });
      return el("th", { scope: "col" }, el("a", { href: `/executions/${r.e.id}/`, text: label(r) }), " ",
        ...(runs.length > 1 ? [remove] : []));
    }));
    // A row whose values are not all the same is marked, and so are its cells: what tells the runs apart.
    const row = (name, values, cls) => {
      const texts = values.map(shown);
      const differs = new Set(texts).size > 1;
      return el("tr", { class: cls + (differs ? " differs" : ""), "data-key": name }, el("th", { scope: "row", text: name }),
        ...texts.map((v) => el("td", { class: "num" + (differs ? " differs" : ""), text: v })));
    };
    table.tBodies[0].replaceChildren(
      ...params.map((p) => row(p, runs.map((r) => r.e.parameters[p]), "param")),
      ...metrics.map((m) => row(m, runs.map((r) => (r.e.metadata || {})[m]), "metric")));
    $("cmp-differ").addEventListener("change", () => table.classList.toggle("only-differs", $("cmp-differ").checked));
    addChoices(ids);

    const numeric = [...new Set(runs.flatMap((r) => r.points.flatMap((p) => Object.keys(p).filter((k) =>
      typeof p[k] === "number" && !k.startsWith("_")))))].sort();
    const stepLike = numeric.filter((m) => STEP_LIKE.includes(m));
    $("cmp-key").replaceChildren(...numeric.filter((m) => !stepLike.includes(m)).map((m) => el("option", { text: m })));
    $("cmp-x").replaceChildren(...[...stepLike, "_time"].map((m) => el("option", { text: m })));
    function draw() {
      const key = $("cmp-key").value, xKey = $("cmp-x").value;
      $("cmp-controls").hidden = !key;
      $("cmp-empty").hidden = Boolean(key);
      if (!key) return;
      // One x axis: the union of every run's x values; each run's y where it has one (seconds since
      // its start when x is _time, so runs of different days overlay).
      const series = runs.map((r) => {
        const t0 = r.points.length ? Date.parse(r.points[0]._time) / 1000 : 0;
        return new Map(r.points.filter((p) => typeof p[key] === "number")
          .map((p) => [xKey === "_time" ? Date.parse(p._time) / 1000 - t0 : p[xKey], p[key]]));
      });
      const xs = [...new Set(series.flatMap((m) => [...m.keys()]))].filter((x) => typeof x === "number").sort((a, b) => a - b);
      $("cmp-chart").dataset.series = String(runs.length);
      drawPanels($("cmp-chart"), xs, [{ key, lines: runs.map((r, i) => ({ label: label(r), color: seriesColor(i),
        faint: seriesColor(i, 0.25), values: xs.map((x) => series[i].has(x) ? series[i].get(x) : null) })) }],
      xKey === "_time" ? "seconds since start" : xKey, { log: $("cmp-log").checked, height: 280 });
    }
    for (const id of ["cmp-key", "cmp-x", "cmp-log"]) $(id).addEventListener("change", draw);
    onThemeChange(() => { $("cmp-chart").signature = null; draw(); });
    draw();

    // The project's latest executions not compared yet, offered in the "add" select.
    async function addChoices(current) {
      const pid = box.dataset.project;
      if (!pid) return;
      const listed = (await api(`/executions/?project=${encodeURIComponent(pid)}&limit=100`)).results
        .filter((e) => !current.includes(String(e.id)));
      $("cmp-add").append(...listed.map((e) => el("option", { value: e.id, text: `#${e.counter} ${e.step} (${e.status})` })));
      $("cmp-add").addEventListener("change", () => {
        if ($("cmp-add").value) location.href = compareUrl([...current, $("cmp-add").value]);
      });
    }
  }

  return { projectPage, executionPage, taskPage, pipelinePage, operationsPage, comparePage, api };
})();

// A page names its part on the element that loads this file (`<script src=... data-page="taskPage">`):
// the pages' Content-Security-Policy allows no inline script to call it.
(() => {
  const page = document.currentScript && document.currentScript.dataset.page;
  if (page && page.endsWith("Page") && typeof VhOrch[page] === "function") VhOrch[page]();
})();
