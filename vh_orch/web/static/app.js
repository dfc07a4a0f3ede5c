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
      if (k === "text") node.textContent = v; else node.setAttribute(k, v);
    }
    for (const child of children) node.append(child);
    return node;
  };

  async function api(path, options = {}) {
    const headers = { Accept: "application/json", ...(options.headers || {}) };
    if (options.method && options.method !== "GET") headers["X-CSRF-Token"] = csrf();
    const answer = await fetch(path.startsWith("http") ? path : API + path, { ...options, headers });
    if (answer.status === 401) { location.href = "/login?next=" + encodeURIComponent(location.pathname); }
    if (!answer.ok) throw new Error(`${answer.status}: ${await answer.text()}`);
    return answer.json();
  }

  const seconds = (s) => s == null ? "" : s < 60 ? `${s.toFixed(1)} s` : s < 3600 ? `${(s / 60).toFixed(1)} min`
    : `${(s / 3600).toFixed(1)} h`;
  const when = (iso) => iso ? new Date(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" }) : "";
  const shown = (v) => typeof v === "number" ? (Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(4)))) :
    v == null ? "" : typeof v === "object" ? JSON.stringify(v) : String(v);

  // -- a project's executions ------------------------------------------------------------------
  function projectPage() {
    const table = $("executions");
    const project = table.dataset.project;
    const state = { ordering: "-counter", offset: 0, limit: 50, count: 0 };
    const base = ["counter", "status", "step", "parameters", "duration", "environment", "creator"];
    const picked = new Set();
    const showPicked = () => {
      $("compare").disabled = picked.size < 2;
      $("compare").textContent = picked.size ? `Compare ${picked.size} selected` : "Compare";
    };
    $("compare").addEventListener("click", () => {
      location.href = "/compare/?" + [...picked].map((id) => `e=${id}`).join("&");
    });
    showPicked();

    async function load() {
      const query = new URLSearchParams({ project, ordering: state.ordering, limit: state.limit, offset: state.offset });
      if ($("f-status").value) query.append("status", $("f-status").value);
      if ($("f-step").value.trim()) query.append("step", $("f-step").value.trim());
      const page = await api(`/executions/?${query}`);
      state.count = page.count;
      const keys = [...new Set(page.results.flatMap((r) => Object.keys(r.metadata || {})))].sort().slice(0, 8);
      const key = state.ordering.replace(/^-/, "");
      if (!base.includes(key) && !keys.includes(key)) keys.unshift(key);
      const head = table.tHead.rows[0];
      head.replaceChildren(el("th", { scope: "col", "aria-label": "Select" }), ...[...base, ...keys].map((name) => {
        const sortable = !["parameters", "environment", "creator"].includes(name);
        const th = el("th", { scope: "col" });
        if (sortable) {
          const arrow = key === name ? (state.ordering.startsWith("-") ? " ↓" : " ↑") : "";
          const button = el("button", { type: "button", class: "sort", "data-key": name, text: (name === "counter" ? "#" : name) + arrow });
          button.addEventListener("click", () => {
            state.ordering = state.ordering === `-${name}` ? name : `-${name}`;
            state.offset = 0;
            load();
          });
          th.append(button);
        } else th.textContent = name;
        th.setAttribute("aria-sort", key === name ? (state.ordering.startsWith("-") ? "descending" : "ascending") : "none");
        return th;
      }));
      const selectBox = (r) => {
        const box = el("input", { type: "checkbox", class: "pick", "aria-label": `Select #${r.counter}`, "data-id": r.id });
        box.checked = picked.has(r.id);
        box.addEventListener("change", () => { if (box.checked) picked.add(r.id); else picked.delete(r.id); showPicked(); });
        return box;
      };
      table.tBodies[0].replaceChildren(...page.results.map((r) => el("tr", { "data-counter": r.counter },
        el("td", {}, selectBox(r)),
        el("td", {}, el("a", { href: `/executions/${r.id}/`, text: `#${r.counter}` })),
        el("td", {}, el("span", { class: "status", "data-status": r.status, text: r.status })),
        el("td", { text: r.step }),
        el("td", { class: "params", text: Object.entries(r.parameters).map(([k, v]) => `${k}=${shown(v)}`).join(" ") }),
        el("td", { text: seconds(r.duration) }),
        el("td", { text: r.environment.name }),
        el("td", { text: r.creator.username || "" }),
        ...keys.map((k) => el("td", { class: "num", "data-key": k, text: shown((r.metadata || {})[k]) })))));
      $("no-executions").hidden = page.count > 0;
      $("page-info").textContent = page.count ? `${state.offset + 1}-${state.offset + page.results.length} of ${page.count}` : "";
      $("prev").disabled = state.offset === 0;
      $("next").disabled = state.offset + state.limit >= page.count;
    }

    $("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - state.limit); load(); });
    $("next").addEventListener("click", () => { state.offset += state.limit; load(); });
    $("f-status").addEventListener("change", () => { state.offset = 0; load(); });
    $("f-step").addEventListener("change", () => { state.offset = 0; load(); });
    $("f-key").addEventListener("change", () => {
      const k = $("f-key").value.trim();
      if (k) { state.ordering = `-${k}`; state.offset = 0; load(); }
    });
    load();
    setInterval(() => { if (!document.hidden) load().catch(() => {}); }, 3000);  // statuses stay current
  }

  // -- one execution ---------------------------------------------------------------------------
  const MAX_LINES = 5000;  // lines kept in the page; earlier ones are a click away

  function executionPage() {
    const id = $("facts").dataset.execution;
    const log = $("log");
    const points = [];
    let firstSeq = null;
    let chart = null;
    let xPicked = false;  // until the user picks an x, a step-like key wins over _time

    function line(ev, atTop = false) {
      const row = el("span", { class: `line ${ev.stream}`, "data-seq": ev.seq, text: ev.message + "\n" });
      if (atTop) log.prepend(row); else log.append(row);
    }

    function trim() {
      while (log.childElementCount > MAX_LINES) log.firstElementChild.remove();
      firstSeq = log.firstElementChild ? Number(log.firstElementChild.dataset.seq) : firstSeq;
    }

    function follow() { if ($("follow").checked) log.scrollTop = log.scrollHeight; }

    function showStatus(status, reason) {
      $("status").textContent = status;
      $("status").dataset.status = status;
      $("status").title = reason || "";
      $("stop").hidden = ["stopped", "error", "complete"].includes(status);
    }

    async function facts() {
      const e = await api(`/executions/${id}/`);
      showStatus(e.status, e.status_reason);
      $("facts").replaceChildren(el("dl", {}, ...[
        ["created", when(e.ctime)], ["started", when(e.started_at)], ["ended", when(e.ended_at)],
        ["duration", seconds(e.duration)],
        ["commit", e.commit ? e.commit.identifier : ""], ["image", e.image || ""], ["environment", e.environment.name],
        ["machine", e.machine == null ? "" : String(e.machine)], ["by", e.creator.username || ""],
        ["reason", e.status_reason || ""],
      ].flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v || "" })])));
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

    function draw() {
      const xKey = $("chart-x").value;
      const yKeys = [...$("chart-y").selectedOptions].map((o) => o.value);
      const rows = points.filter((p) => typeof p[xKey] === "number" || xKey === "_time");
      const xs = rows.map((p) => xKey === "_time" ? Date.parse(p._time) / 1000 : p[xKey]);
      const smooth = Number($("chart-smooth").value);  // exponential moving average, 0 = none
      const data = [xs, ...yKeys.map((k) => {
        let last = null;
        return rows.map((p) => {
          const v = typeof p[k] === "number" ? p[k] : null;
          if (v == null || !smooth) return v;
          last = last == null ? v : smooth * last + (1 - smooth) * v;
          return last;
        });
      })];
      $("chart").dataset.points = String(xs.length);
      const width = Math.max(300, $("chart").clientWidth || 500);
      if (chart && chart.series.length === yKeys.length + 1 && chart.xKey === xKey) { chart.setData(data); return; }
      if (chart) chart.destroy();
      chart = new uPlot({ width, height: 240, scales: { x: { time: xKey === "_time" } },
        series: [{ label: xKey }, ...yKeys.map((k, i) => ({ label: k, stroke: `hsl(${(i * 137) % 360} 70% 50%)`, spanGaps: true }))] },
        data, $("chart"));
      chart.xKey = xKey;
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

    async function start() {
      const tail = await api(`/executions/${id}/events/?limit=1000`);
      for (const ev of tail.events) line(ev);
      firstSeq = tail.events.length ? tail.events[0].seq : null;
      $("earlier").hidden = !tail.truncated;
      follow();
      const series = await api(`/executions/${id}/metadata/`);
      series.points.forEach(addPoint);
      keysChanged();
      if (points.length) draw();
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
    $("log-search").addEventListener("input", () => {
      const q = $("log-search").value.toLowerCase();
      for (const row of log.children) row.hidden = q !== "" && !row.textContent.toLowerCase().includes(q);
    });
    $("chart-x").addEventListener("change", () => { xPicked = true; keysChanged(); draw(); });
    $("chart-y").addEventListener("change", draw);
    $("chart-smooth").addEventListener("input", () => { $("smooth-value").textContent = $("chart-smooth").value; draw(); });
    $("stop").addEventListener("click", async () => {
      if (!confirm("Stop this execution? Its outputs so far are kept.")) return;
      await api(`/executions/${id}/stop/`, { method: "POST" });
      facts();
    });
    rerunForm(id);
    facts().then(start);
  }

  // A form made from the step's parameters; the server checks the values (its messages are shown).
  async function rerunForm(id) {
    const step = await api(`/executions/${id}/step/`);
    const fields = step.parameters.map((p) => {
      let input;
      const current = p.value ?? p.default;
      if (p.choices && p.choices.length) {
        input = el("select", {}, ...p.choices.map((c) => el("option", { value: String(c), text: String(c) })));
        input.value = current == null ? "" : String(current);
      } else if (p.type === "flag") {
        input = el("input", { type: "checkbox" });
        input.checked = Boolean(current);
      } else if ((p.type === "integer" || p.type === "float") && !p.multiple) {
        input = el("input", { type: "number", step: p.type === "integer" ? "1" : "any" });
        if (p.min != null) input.min = p.min;
        if (p.max != null) input.max = p.max;
        input.value = current == null ? "" : String(current);
      } else {
        input = el("input", { type: "text" });
        input.value = current == null ? "" : Array.isArray(current) ? current.join(", ") : String(current);
      }
      input.name = p.name;
      input.id = `param-${p.name}`;
      const hint = [p.type, p.multiple ? "several, comma-separated" : "", p.min != null ? `min ${p.min}` : "",
        p.max != null ? `max ${p.max}` : "", p.description || ""].filter(Boolean).join(" · ");
      return { p, input, row: el("label", { for: input.id }, el("span", { text: p.name }), input, el("small", { text: hint })) };
    });
    $("rerun-fields").replaceChildren(...(fields.length ? fields.map((f) => f.row) : [el("p", { class: "empty", text: "This step has no parameters." })]));
    $("rerun-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const parameters = {};
      for (const { p, input } of fields) {
        if (p.type === "flag") { parameters[p.name] = input.checked; continue; }
        const raw = input.value.trim();
        if (raw === "") { parameters[p.name] = null; continue; }
        const values = p.multiple ? raw.split(",").map((v) => v.trim()).filter(Boolean) : [raw];
        const typed = values.map((v) => (p.type === "integer" || p.type === "float") && !isNaN(Number(v)) ? Number(v) : v);
        parameters[p.name] = p.multiple ? typed : typed[0];
      }
      const answer = await fetch(`${API}/executions/${id}/run-again/`, {
        method: "POST", body: JSON.stringify({ parameters }),
        headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRF-Token": csrf() } });
      const body = await answer.json();
      if (answer.ok) { location.href = `/executions/${body.id}/`; return; }
      const messages = Object.entries(body).flatMap(([field, errors]) => Array.isArray(errors)
        ? errors.map((e) => typeof e === "string" ? e : e.message) : [typeof errors === "string" ? errors : JSON.stringify(errors)]);
      $("rerun-error").textContent = messages.join(" ");
      $("rerun-error").hidden = false;
    });
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
        el("td", { text: m.instance_id || "" }), el("td", { text: m.address || "" }), el("td", { text: when(m.state_changed_at) }))));
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
    $("cost-hours").addEventListener("change", costs);
    load(); costs();
    setInterval(() => { if (!document.hidden) load().catch(() => {}); }, 5000);
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
    const table = $("cmp-table");
    table.tHead.rows[0].replaceChildren(el("th", { text: "" }), ...runs.map((r) =>
      el("th", { scope: "col" }, el("a", { href: `/executions/${r.e.id}/`, text: label(r) }))));
    const row = (name, values, cls) => el("tr", { class: cls, "data-key": name }, el("th", { scope: "row", text: name }),
      ...values.map((v) => el("td", { class: "num", text: shown(v) })));
    table.tBodies[0].replaceChildren(
      ...params.map((p) => row(p, runs.map((r) => r.e.parameters[p]), "param")),
      ...metrics.map((m) => row(m, runs.map((r) => (r.e.metadata || {})[m]), "metric")));
    const numeric = metrics.filter((m) => runs.some((r) => r.points.some((p) => typeof p[m] === "number")));
    const stepLike = numeric.filter((m) => ["step", "epoch", "iteration"].includes(m));
    $("cmp-key").replaceChildren(...numeric.filter((m) => !stepLike.includes(m)).map((m) => el("option", { text: m })));
    $("cmp-x").replaceChildren(...[...stepLike, "_time"].map((m) => el("option", { text: m })));
    let chart = null;
    function draw() {
      const key = $("cmp-key").value, xKey = $("cmp-x").value;
      if (!key) return;
      // One x axis: the union of every run's x values; each run's y where it has one (seconds since
      // its start when x is _time, so runs of different days overlay).
      const series = runs.map((r) => {
        const t0 = r.points.length ? Date.parse(r.points[0]._time) / 1000 : 0;
        return new Map(r.points.filter((p) => typeof p[key] === "number")
          .map((p) => [xKey === "_time" ? Date.parse(p._time) / 1000 - t0 : p[xKey], p[key]]));
      });
      const xs = [...new Set(series.flatMap((m) => [...m.keys()]))].filter((x) => typeof x === "number").sort((a, b) => a - b);
      const data = [xs, ...series.map((m) => xs.map((x) => m.has(x) ? m.get(x) : null))];
      $("cmp-chart").dataset.series = String(runs.length);
      if (chart) chart.destroy();
      chart = new uPlot({ width: Math.max(300, $("cmp-chart").clientWidth || 700), height: 280,
        scales: { x: { time: false } },
        series: [{ label: xKey }, ...runs.map((r, i) => ({ label: label(r), stroke: `hsl(${(i * 137) % 360} 70% 50%)`, spanGaps: true }))] },
        data, $("cmp-chart"));
    }
    $("cmp-key").addEventListener("change", draw);
    $("cmp-x").addEventListener("change", draw);
    draw();
  }

  return { projectPage, executionPage, operationsPage, comparePage, api };
})();
