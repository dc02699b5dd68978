/* Desk triage (内业判读): one warning at a time, before | after side by side with synchronised pan and zoom,
 * one key per decision (1-4), U undo, J/K next/previous, bulk decisions with a confirmation that states the
 * count. The next warning's detail and tiles are fetched while the current one is judged.
 * Plain ES2017, no build step; text is always set as text (never parsed as HTML). */
"use strict";

(function () {
  var C = Cspon, h = C.h;
  var DECISIONS = {
    illegal: { key: "1", zh: "疑似违法 → 外业", en: "suspected illegal → field" },
    legal: { key: "2", zh: "合法/已批", en: "legal / permitted" },
    false_alarm: { key: "3", zh: "误报", en: "false alarm" },
    unsure: { key: "4", zh: "不确定 → 外业", en: "unsure → field" }
  };
  var BY_KEY = { "1": "illegal", "2": "legal", "3": "false_alarm", "4": "unsure" };
  var STATUS = {
    new: "待核查 new", to_field: "待外业 to field", desk_excluded: "内业排除 desk excluded",
    assigned: "核查中 assigned", verified: "已核查 verified", closed: "已办结 closed"
  };
  var TILE_CACHE_MAX = 800;

  var state = {
    user: null,
    key: null,        // {county_code, period}
    tiles: null,      // GET /map/{county}/{period}/tiles
    items: [],        // warnings in the order shown: this reviewer's earlier decisions, then the queue
    index: -1,
    details: {},      // id -> Promise of GET /warnings/{id}
    stale: {},        // id -> true: its cached detail predates a decision (history, status, version)
    decided: {},      // id -> active desk decision (DecisionOut)
    undo: [],         // ids decided by me, most recent last
    chain: Promise.resolve(),
    counters: null,
    refitN: null,     // labels a re-fit would use (GET /models/refit/labels), null when unknown
    showToken: 0
  };
  // Measurements the browser test reads: every triage API request and the time until the next warning is ready.
  var probe = window.__triage = { timings: [], ready: [], pending: 0, prefetch: 0, misses: 0 };

  // -------------------------------------------------------------------------------------------- requests
  function message(body, fallback) {
    if (body && typeof body.detail === "string") return body.detail;
    if (body && Array.isArray(body.detail)) {
      return body.detail.map(function (d) {
        var loc = Array.isArray(d.loc) ? d.loc.filter(function (x) { return x !== "body"; }).join(".") : "";
        return (loc ? loc + ": " : "") + d.msg;
      }).join("; ");
    }
    return fallback;
  }

  /** JSON request with the page's credentials (CSRF header on writes); rejects with an ApiError carrying .body. */
  function call(method, path, body) {
    var t0 = performance.now();
    var headers = C.authHeaders(method);
    if (body !== undefined) headers["Content-Type"] = "application/json";
    return fetch(C.API + "/" + path, {
      method: method, headers: headers, credentials: "same-origin", cache: "no-store", priority: "high",
      body: body === undefined ? undefined : JSON.stringify(body)
    }).then(function (resp) {
      return resp.json().catch(function () { return null; }).then(function (data) {
        probe.timings.push({ method: method, path: path.split("?")[0], status: resp.status, ms: performance.now() - t0 });
        if (resp.status === 401) C.onUnauthorized();
        if (!resp.ok) {
          var err = new C.ApiError(resp.status, message(data, resp.status + " " + resp.statusText));
          err.body = data;
          throw err;
        }
        return data;
      });
    });
  }

  function scope() {
    return "period=" + encodeURIComponent(state.key.period) + "&county_code=" + encodeURIComponent(state.key.county_code);
  }

  // ------------------------------------------------------------------------------------------------ maps
  function makeMap(id, zoomControl) {
    var map = L.map(id, { zoomSnap: 1, zoomControl: false, attributionControl: false, keyboard: false,
                          fadeAnimation: false, zoomAnimation: false });
    if (zoomControl) L.control.zoom({ position: "topright" }).addTo(map);
    map.setView([22.3, 114.2], 12);
    return map;
  }
  var mapBefore = makeMap("map-before", false), mapAfter = makeMap("map-after", true);
  L.control.scale({ imperial: false }).addTo(mapAfter);
  var outlines = [L.featureGroup().addTo(mapBefore), L.featureGroup().addTo(mapAfter)];
  var syncing = false;
  function follow(src, dst) {
    src.on("move", function () {
      if (syncing) return;
      syncing = true;
      dst.setView(src.getCenter(), src.getZoom(), { animate: false });
      syncing = false;
    });
  }
  follow(mapBefore, mapAfter);
  follow(mapAfter, mapBefore);

  /*
   * Tiles go through a line of at most TILE_SLOTS requests at once (the browser opens 6 connections per host:
   * the decisions must never queue behind tiles), the current view's tiles before the prefetched ones.
   */
  var TILE_SLOTS = 3;
  var tileLine = { active: 0, high: [], low: [] };
  function pump() {
    while (tileLine.active < TILE_SLOTS && (tileLine.high.length || tileLine.low.length)) {
      var job = tileLine.high.length ? tileLine.high.shift() : tileLine.low.shift();
      job.started = true;
      tileLine.active += 1;
      job.run().then(job.resolve, job.reject).then(function () { tileLine.active -= 1; pump(); });
    }
  }
  function fetchTileBlob(url, high) {
    return fetch(url, { headers: C.authHeaders("GET"), credentials: "same-origin", priority: high ? "high" : "low" })
      .then(function (resp) {
        if (!resp.ok) throw new C.ApiError(resp.status, "tile " + resp.status);
        return resp.blob();
      });
  }
  var tileCache = new Map();  // url -> {promise, job}, shared by the layers and the prefetch
  function getTile(url, high) {
    var hit = tileCache.get(url);
    if (hit) {
      tileCache.delete(url);
      tileCache.set(url, hit);
      if (high && !hit.job.started && !hit.job.high) {  // wanted on screen now: move it up the line
        tileLine.low.splice(tileLine.low.indexOf(hit.job), 1);
        hit.job.high = true;
        tileLine.high.push(hit.job);
      }
      return hit.promise;
    }
    if (high) probe.misses += 1;  // a tile on screen that the prefetch did not fetch
    var job = { high: !!high, started: false, run: function () { return fetchTileBlob(url, job.high); } };
    var promise = new Promise(function (resolve, reject) { job.resolve = resolve; job.reject = reject; });
    promise.catch(function () { tileCache.delete(url); });
    tileCache.set(url, { promise: promise, job: job });
    (high ? tileLine.high : tileLine.low).push(job);
    pump();
    while (tileCache.size > TILE_CACHE_MAX) tileCache.delete(tileCache.keys().next().value);
    return promise;
  }

  var layers = { before: null, after: null };
  function tileLayer(name) {
    var info = state.tiles.layers[name];
    var Layer = L.TileLayer.extend({
      createTile: function (coords, done) {
        var img = document.createElement("img");
        img.alt = "";
        img.setAttribute("role", "presentation");
        var url = C.tileUrl(info.url, coords.z, coords.x, coords.y);
        img.dataset.src = url;
        getTile(url, true).then(function (blob) {
          var src = URL.createObjectURL(blob);
          img.onload = function () { URL.revokeObjectURL(src); done(null, img); };
          img.onerror = function () { URL.revokeObjectURL(src); done(new Error("bad tile"), img); };
          img.src = src;
        }).catch(function (err) { img.classList.add("tile-missing"); done(err, img); });
        return img;
      }
    });
    var bounds = state.tiles.bounds ? L.latLngBounds(state.tiles.bounds) : undefined;
    return new Layer(info.url, {
      bounds: bounds, minNativeZoom: info.minzoom, maxNativeZoom: info.max_native_zoom + 2, minZoom: info.minzoom,
      maxZoom: info.max_native_zoom + 4, className: "imagery-tiles tiles-" + name, keepBuffer: 1
    });
  }

  function setImagery() {
    ["before", "after"].forEach(function (name) {
      var map = name === "before" ? mapBefore : mapAfter;
      if (layers[name]) map.removeLayer(layers[name]);
      layers[name] = null;
      if (state.tiles && state.tiles.layers[name]) {
        layers[name] = tileLayer(name).addTo(map);
        var date = state.tiles.layers[name].date || "";
        document.getElementById("label-" + name).textContent = (name === "before" ? "前时相 before " : "后时相 after ") + date;
      }
    });
  }

  /** Zoom and centre that show a warning: it fits with a margin, drawn at most 4x the file's pixels. */
  function viewFor(bbox) {
    var bounds = L.latLngBounds([[bbox[1], bbox[0]], [bbox[3], bbox[2]]]);
    var info = state.tiles && state.tiles.layers.after;
    var z = mapAfter.getBoundsZoom(bounds.pad(1.0), false);
    if (info) z = Math.max(info.minzoom, Math.min(z, info.max_native_zoom + 2));
    return { center: bounds.getCenter(), zoom: z };
  }

  /** Fetch the tiles of both dates that the view of `bbox` will show (into the shared cache). */
  function prefetchTiles(bbox) {
    if (!state.tiles) return Promise.resolve();
    var view = viewFor(bbox), size = mapAfter.getSize();
    var jobs = [];
    ["before", "after"].forEach(function (name) {
      var info = state.tiles.layers[name];
      if (!info) return;
      var z = Math.max(info.minzoom, Math.min(view.zoom, info.max_native_zoom + 2));
      var scale = Math.pow(2, view.zoom - z);
      var p = mapAfter.project(view.center, z), half = size.divideBy(2 * scale);
      var n = Math.pow(2, z);
      var x0 = Math.max(0, Math.floor((p.x - half.x) / 256)), x1 = Math.min(n - 1, Math.floor((p.x + half.x) / 256));
      var y0 = Math.max(0, Math.floor((p.y - half.y) / 256)), y1 = Math.min(n - 1, Math.floor((p.y + half.y) / 256));
      for (var x = x0; x <= x1; x++) {
        for (var y = y0; y <= y1; y++) {
          jobs.push(getTile(C.tileUrl(info.url, z, x, y), false).catch(function () { return null; }));
        }
      }
    });
    return Promise.all(jobs);
  }

  function whenTilesLoaded() {
    return Promise.all(["before", "after"].map(function (name) {
      var layer = layers[name];
      if (!layer || !layer.isLoading()) return Promise.resolve();
      return new Promise(function (resolve) {
        var timer = setTimeout(resolve, 10000);
        layer.once("load", function () { clearTimeout(timer); resolve(); });
      });
    }));
  }

  // ---------------------------------------------------------------------------------------------- items
  function detail(id) {
    if (!state.details[id]) {
      state.details[id] = call("GET", "warnings/" + encodeURIComponent(id)).catch(function (err) {
        delete state.details[id];
        throw err;
      });
    }
    return state.details[id];
  }

  function current() { return state.items[state.index] || null; }

  function open(item) {
    return !state.decided[item.id] && (item.status === undefined || item.status === "new");
  }

  function nextOpen(from) {
    for (var j = from + 1; j < state.items.length; j++) if (open(state.items[j])) return j;
    return -1;
  }

  /** Item data from a warning detail (for decisions loaded after a reload). */
  function merge(item, d) {
    ["bbox", "version", "status", "confidence", "category", "township_name", "area_m2", "area_mu", "flags",
     "verification_result", "priority"].forEach(function (k) { item[k] = d[k]; });
    return item;
  }

  /** Fetch item i's detail and tiles in the background (probe.prefetch counts those still running). */
  function prefetch(i) {
    var item = state.items[i];
    if (!item) return;
    probe.prefetch += 1;
    var d = detail(item.id);
    var tiles = item.bbox ? prefetchTiles(item.bbox)
      : d.then(function (data) { merge(item, data); return prefetchTiles(item.bbox); });
    Promise.all([d, tiles]).catch(function () {}).then(function () { probe.prefetch -= 1; });
  }

  function render(item, d) {
    var cat = C.category(item.category);
    document.getElementById("current").dataset.id = item.id;
    document.getElementById("current-title").textContent = item.id + " · " + cat.zh + " " + cat.en;
    var facts = document.getElementById("current-facts");
    C.clear(facts);
    C.append(facts, [
      h("div", {}, "置信度 confidence " + C.fmt(item.confidence, 2) + " · 面积 area " + C.fmt(item.area_mu, 2) +
        " 亩 (" + C.fmt(item.area_m2, 0) + " m²)"),
      h("div", {}, "乡镇 township " + C.fmt(item.township_name) + " · 状态 status " + (STATUS[item.status] || item.status)),
      (item.flags && item.flags.length) ? h("div", {}, "管控线 flags " + item.flags.join(", ")) : null,
      h("div", { class: "muted" }, ((d && d.reasons) || []).map(function (r) { return r.zh || r.en || ""; }).join("；"))
    ]);
    var line = document.getElementById("current-decision");
    var dec = state.decided[item.id];
    line.className = "decision-line " + (dec ? dec.to_status || "" : "");
    line.textContent = dec
      ? "已判 decided: " + DECISIONS[dec.decision].zh + " " + DECISIONS[dec.decision].en + " · " + (dec.by || "") + " · " +
        C.fmtTime(dec.at)
      : item.status && item.status !== "new" ? "不在队列 not in the queue: " + (STATUS[item.status] || item.status)
        : "未判读 untriaged";
    var hist = document.getElementById("history");
    C.clear(hist);
    ((d && d.history) || []).slice().reverse().forEach(function (ev) {
      hist.appendChild(h("li", { class: "event-" + ev.event }, C.fmtTime(ev.at) + " · " + ev.event + " · " +
        (ev.from_status || "–") + " → " + (ev.to_status || "–") + " · " + (ev.by || "") + (ev.why ? " · " + ev.why : "")));
    });
    outlines.forEach(function (group) {
      group.clearLayers();
      if (d && d.geometry) {
        L.geoJSON(d.geometry, { interactive: false,
          style: { color: cat.color, weight: 2, fill: false, className: "triage-outline" } }).addTo(group);
      }
    });
  }

  /** Show item i; `t0` (performance.now() of the key press) measures how soon it is ready (`what` says why).
   * A warning changed by a decision is shown from its cached detail at once and its history refreshed after. */
  function show(i, t0, what) {
    var item = state.items[i];
    if (!item) return Promise.resolve();
    state.index = i;
    var token = ++state.showToken;
    var box = document.getElementById("current");
    box.dataset.ready = "0";
    document.getElementById("conflict").hidden = true;
    var d = detail(item.id);
    var placed = item.bbox ? Promise.resolve() : d.then(function (data) { merge(item, data); });
    var stale = !!state.stale[item.id];
    var misses = probe.misses;
    return placed.then(function () {
      if (token !== state.showToken) return null;
      var view = viewFor(item.bbox);
      mapAfter.setView(view.center, view.zoom, { animate: false });
      render(item, null);
      return Promise.all([d, whenTilesLoaded()]);
    }).then(function (res) {
      if (!res || token !== state.showToken) return;
      if (!stale) merge(item, res[0]);
      render(item, res[0]);
      box.dataset.ready = "1";
      if (t0 !== undefined) {
        probe.ready.push({ id: item.id, ms: performance.now() - t0, what: what || "show", misses: probe.misses - misses });
      }
      var j = nextOpen(i);
      if (j >= 0) prefetch(j);
      if (i + 1 < state.items.length && i + 1 !== j) prefetch(i + 1);
      if (i > 0) prefetch(i - 1);
      if (stale) {
        delete state.stale[item.id];
        delete state.details[item.id];
        return detail(item.id).then(function (fresh) {
          if (token !== state.showToken) return;
          merge(item, fresh);
          render(item, fresh);
        });
      }
    }).catch(function (err) {
      C.toast("无法加载 cannot load " + item.id + ": " + err.message, "error");
    });
  }

  function showRefitN(n) {
    document.getElementById("refit-n").textContent = String(n);
    document.getElementById("refit-n2").textContent = String(n);
  }

  function showCounters(c) {
    state.counters = c;
    document.getElementById("counter-done").textContent = String(c.done);
    document.getElementById("counter-left").textContent = String(c.left);
    document.getElementById("counter-rate").textContent = c.per_hour.toFixed(0);
    if (state.refitN === null) showRefitN(c.labels_desk + c.labels_field);
    refreshRefitN();
  }

  /** N of the re-fit button: the labels a re-fit would use now (GET /models/refit/labels), asked at most
   * once every 2 s of quiet; where the service has no such endpoint, desk + field labels from the counters. */
  var refitTimer = null;
  function refreshRefitN() {
    clearTimeout(refitTimer);
    refitTimer = setTimeout(function () {
      if (!state.key) return;
      call("GET", "models/refit/labels?county_code=" + encodeURIComponent(state.key.county_code)).then(function (r) {
        state.refitN = r.labels;
        showRefitN(r.labels);
      }, function () {
        state.refitN = null;
        if (state.counters) showRefitN(state.counters.labels_desk + state.counters.labels_field);
      });
    }, 2000);
  }

  function updateCounters() {
    return call("GET", "triage/counters?" + scope()).then(showCounters).catch(function () {});
  }

  // ------------------------------------------------------------------------------------------ decisions
  function enqueue(fn) {
    probe.pending += 1;
    state.chain = state.chain.then(fn).catch(function (err) { C.toast(err.message || String(err), "error"); })
      .then(function () { probe.pending -= 1; });
    return state.chain;
  }

  function showConflict(err) {
    var first = err.body && err.body.first;
    var box = document.getElementById("conflict");
    box.textContent = first
      ? "已被判读 already decided: " + DECISIONS[first.decision].zh + " " + DECISIONS[first.decision].en + " · " +
        (first.by || "?") + " · " + C.fmtTime(first.at) + " — 未覆盖 not overwritten"
      : err.message;
    box.hidden = false;
    if (err.body && err.body.warning) {
      var item = current();
      if (item && item.id === err.body.warning.id) {
        item.version = err.body.warning.version;
        item.status = err.body.warning.status;
      }
    }
    if (first && first.by !== (state.user && state.user.name)) state.decided[first.warning_id] = first;
    var shown = current();
    if (shown) {  // show the warning as it is now (status, decision, history), the conflict note stays
      delete state.details[shown.id];
      delete state.stale[shown.id];
      return detail(shown.id).then(function (d) {
        if (current() !== shown) return;
        merge(shown, d);
        render(shown, d);
        box.hidden = false;
      }, function () {});
    }
  }

  function decide(decision, t0) {
    var item = current();
    if (!item) return Promise.resolve();
    return call("POST", "triage/" + encodeURIComponent(item.id) + "/decide",
                { decision: decision, expected_version: item.version })
      .then(function (res) {
        item.version = res.warning.version;
        item.status = res.warning.status;
        state.decided[item.id] = res.decision;
        state.stale[item.id] = true;  // its history changed
        state.undo = state.undo.filter(function (id) { return id !== item.id; });
        state.undo.push(item.id);
        if (res.counters) showCounters(res.counters);
        var counted = res.counters ? Promise.resolve() : updateCounters();
        var j = nextOpen(state.index);
        if (j < 0) {
          delete state.details[item.id];  // stay on it: show its new history
          delete state.stale[item.id];
          render(item, null);
          C.toast("队列已判完 all warnings of the queue are decided", "ok");
          return Promise.all([counted, detail(item.id).then(function (d) { render(item, d); })]);
        }
        return Promise.all([counted, show(j, t0, "next")]);
      }, function (err) {
        if (err.status === 409) return showConflict(err);
        throw err;
      });
  }

  function undo(t0) {
    var id = state.undo.pop();
    if (!id) { C.toast("没有可撤销的判读 nothing to undo", "info"); return Promise.resolve(); }
    return call("POST", "triage/" + encodeURIComponent(id) + "/undo", {}).then(function (res) {
      delete state.decided[id];
      state.stale[id] = true;
      var i = state.items.findIndex(function (it) { return it.id === id; });
      var item = state.items[i];
      item.version = res.warning.version;
      item.status = res.warning.status;
      if (res.counters) showCounters(res.counters);
      return show(i, t0, "undo");
    }, function (err) {
      if (err.status === 409) { showConflict(err); return; }
      throw err;
    });
  }

  function move(step, t0) {
    var i = state.index + step;
    if (i < 0 || i >= state.items.length) {
      C.toast(step > 0 ? "已是最后一条 last warning" : "已是第一条 first warning", "info");
      return Promise.resolve();
    }
    return show(i, t0, step > 0 ? "next (J)" : "previous (K)");
  }

  // ------------------------------------------------------------------------------------------------ bulk
  var pendingBulk = null;
  var confirmBox = document.getElementById("confirm");

  function askBulk(selection, what) {
    var body = Object.assign({ period: state.key.period, county_code: state.key.county_code,
                               decision: document.getElementById("bulk-decision").value }, selection);
    return call("POST", "triage/bulk", Object.assign({}, body, { dry_run: true })).then(function (res) {
      if (!res.count) { C.toast("没有未判读的预警符合条件 no untriaged warning in " + what, "info"); return; }
      var dec = DECISIONS[body.decision];
      pendingBulk = body;
      document.getElementById("confirm-text").textContent =
        "将把 " + res.count + " 条未判读预警（" + what + "）判为「" + dec.zh + "」。 Mark " + res.count +
        " untriaged warnings (" + what + ") as " + dec.en + "?";
      confirmBox.dataset.count = String(res.count);
      confirmBox.hidden = false;
      document.getElementById("confirm-yes").focus();
    });
  }

  function closeConfirm() {
    confirmBox.hidden = true;
    pendingBulk = null;
  }

  function applyBulk() {
    var body = pendingBulk;
    closeConfirm();
    if (!body) return Promise.resolve();
    return call("POST", "triage/bulk", body).then(function (res) {
      var me = state.user && state.user.name;
      res.ids.forEach(function (id) {
        state.decided[id] = { warning_id: id, decision: res.decision, by: me, at: new Date().toISOString(),
                              to_status: res.decision === "illegal" || res.decision === "unsure" ? "to_field" : "desk_excluded" };
        state.stale[id] = true;
        var item = state.items.find(function (it) { return it.id === id; });
        if (item) { item.status = state.decided[id].to_status; item.version = undefined; }
      });
      C.toast("已批量判读 " + res.count + " 条 bulk: " + res.count + " warnings decided", "ok");
      var counted = updateCounters();
      var item = current();
      if (item && state.decided[item.id]) {
        var j = nextOpen(state.index);
        return Promise.all([counted, show(j >= 0 ? j : state.index)]);
      }
      return counted;
    });
  }

  document.getElementById("bulk-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var lo = document.getElementById("bulk-min").value, hi = document.getElementById("bulk-max").value;
    var sel = {};
    if (lo !== "") sel.min_confidence = Number(lo);
    if (hi !== "") sel.max_confidence = Number(hi);
    if (lo === "" && hi === "") { C.toast("请填置信度区间 give a confidence band", "error"); return; }
    document.activeElement.blur();
    enqueue(function () {
      return askBulk(sel, "置信度 confidence " + (lo || "0") + "–" + (hi || "1"));
    });
  });
  document.getElementById("confirm-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    enqueue(applyBulk);
  });
  document.getElementById("confirm-no").addEventListener("click", closeConfirm);

  function bboxOf(bounds) {
    return [bounds.getWest(), bounds.getSouth(), bounds.getEast(), bounds.getNorth()].map(function (v) {
      return Math.round(v * 1e6) / 1e6;
    });
  }

  function bulkInView() {
    return askBulk({ bbox: bboxOf(mapAfter.getBounds()) }, "当前视图内 in the current view");
  }

  // Draw a box on the after image (X, then drag); Esc cancels.
  var drawing = null;
  function startDrawing() {
    if (drawing) return;
    drawing = { start: null, rect: null };
    mapAfter.dragging.disable();
    document.getElementById("map-after").classList.add("drawing");
    C.toast("在后时相影像上拖出一个框 drag a box on the after image (Esc cancels)", "info");
  }
  function stopDrawing() {
    if (!drawing) return;
    if (drawing.rect) mapAfter.removeLayer(drawing.rect);
    drawing = null;
    mapAfter.dragging.enable();
    document.getElementById("map-after").classList.remove("drawing");
  }
  mapAfter.on("mousedown", function (ev) {
    if (!drawing) return;
    drawing.start = ev.latlng;
    drawing.rect = L.rectangle(L.latLngBounds(ev.latlng, ev.latlng), { className: "draw-box", weight: 2 }).addTo(mapAfter);
  });
  mapAfter.on("mousemove", function (ev) {
    if (drawing && drawing.start) drawing.rect.setBounds(L.latLngBounds(drawing.start, ev.latlng));
  });
  mapAfter.on("mouseup", function (ev) {
    if (!drawing || !drawing.start) return;
    var bounds = L.latLngBounds(drawing.start, ev.latlng);
    stopDrawing();
    enqueue(function () { return askBulk({ bbox: bboxOf(bounds) }, "框选范围内 in the drawn box"); });
  });

  // ------------------------------------------------------------------------------------------------ re-fit
  document.getElementById("refit").addEventListener("click", function () {
    var out = document.getElementById("refit-message");
    out.textContent = "重新训练中 re-fitting…";
    out.dataset.done = "0";
    call("POST", "models/refit", { county_code: state.key.county_code }).then(function (res) {
      out.textContent = (res.promoted ? "已启用 promoted: " : "未启用 not promoted: ") + (res.message || "");
      out.dataset.done = "1";
      updateCounters();
    }, function (err) {
      out.textContent = "失败 failed (" + err.status + "): " + err.message;
      out.dataset.done = "1";
    });
  });

  // -------------------------------------------------------------------------------------------- keyboard
  document.addEventListener("keydown", function (ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (!document.getElementById("login").hidden) return;
    if (!confirmBox.hidden) {
      if (ev.key === "Escape") { ev.preventDefault(); closeConfirm(); }
      return;  // Enter submits the confirmation form (its button has the focus)
    }
    var tag = ev.target && ev.target.tagName;
    if (tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA") {
      if (ev.key === "Escape") { ev.preventDefault(); ev.target.blur(); }
      return;
    }
    if (!state.key) return;
    var t0 = performance.now();
    var key = ev.key.length === 1 ? ev.key.toLowerCase() : ev.key;
    if (key === "Escape" && drawing) stopDrawing();
    else if (BY_KEY[key]) { if (ev.repeat) return; enqueue(function () { return decide(BY_KEY[key], t0); }); }
    else if (key === "u") enqueue(function () { return undo(t0); });
    else if (key === "j") enqueue(function () { return move(1, t0); });
    else if (key === "k") enqueue(function () { return move(-1, t0); });
    else if (key === "b") document.getElementById("bulk-decision").focus();
    else if (key === "v") enqueue(bulkInView);
    else if (key === "x") startDrawing();
    else return;
    ev.preventDefault();
  });
  Array.prototype.forEach.call(document.querySelectorAll(".key[data-decision]"), function (btn) {
    btn.addEventListener("click", function () {
      var t0 = performance.now();
      btn.blur();
      enqueue(function () { return decide(btn.dataset.decision, t0); });
    });
  });
  document.getElementById("key-undo").addEventListener("click", function () { enqueue(function () { return undo(); }); });
  document.getElementById("key-next").addEventListener("click", function () { enqueue(function () { return move(1); }); });
  document.getElementById("key-prev").addEventListener("click", function () { enqueue(function () { return move(-1); }); });

  // ------------------------------------------------------------------------------------------ loading
  function load() {
    var key = state.key;
    document.body.dataset.loaded = "";
    document.getElementById("review-link").setAttribute("href", "/#" + key.county_code + "/" + key.period);
    var order = document.getElementById("order-select").value;
    var base = "map/" + encodeURIComponent(key.county_code) + "/" + encodeURIComponent(key.period);
    return Promise.all([
      call("GET", base + "/tiles").catch(function () { return null; }),
      call("GET", "triage/decisions?" + scope() + "&mine=true&limit=500"),
      call("GET", "triage/queue?" + scope() + "&order=" + order + "&limit=5000")
    ]).then(function (res) {
      if (key !== state.key) return;
      state.tiles = res[0] && res[0].layers && res[0].layers.after ? res[0] : null;
      setImagery();
      state.decided = {};
      state.details = {};
      state.stale = {};
      var mine = res[1].filter(function (d) { return !d.undone_at; }).reverse();  // oldest first
      mine.forEach(function (d) { state.decided[d.warning_id] = d; });
      state.undo = mine.map(function (d) { return d.warning_id; });
      state.items = mine.map(function (d) { return { id: d.warning_id, confidence: d.confidence }; })
        .concat(res[2].items);
      var counted = updateCounters();
      var start = nextOpen(-1);
      if (start < 0 && state.items.length) start = state.items.length - 1;
      if (start < 0) {
        C.toast("此期次没有待判读的预警 nothing to triage in this period", "info");
        return counted.then(function () { document.body.dataset.loaded = key.county_code + "/" + key.period; });
      }
      return Promise.all([counted, show(start)]).then(function () {
        document.body.dataset.loaded = key.county_code + "/" + key.period;
      });
    }).catch(function (err) {
      C.toast("无法加载 cannot load: " + err.message, "error");
    });
  }

  function loadPeriods() {
    return call("GET", "map/periods").then(function (periods) {
      var select = document.getElementById("period-select");
      C.clear(select);
      periods.forEach(function (p) {
        select.appendChild(h("option", { value: p.county_code + "/" + p.period },
          p.county_code + " · " + p.period + " (" + p.warnings + ")"));
      });
      var wanted = window.location.hash.replace(/^#/, "");
      var found = periods.find(function (p) { return p.county_code + "/" + p.period === wanted; }) || periods[0];
      if (!found) { C.toast("没有预警 no warnings yet", "info"); return; }
      select.value = found.county_code + "/" + found.period;
      choose(found.county_code, found.period);
    });
  }

  function choose(county, period) {
    state.key = { county_code: county, period: period };
    if (window.location.hash !== "#" + county + "/" + period) {
      window.history.replaceState(null, "", "#" + county + "/" + period);
    }
    state.chain = Promise.resolve();
    return enqueue(load);
  }

  document.getElementById("period-select").addEventListener("change", function (ev) {
    var parts = ev.target.value.split("/");
    ev.target.blur();
    choose(parts[0], parts[1]);
  });
  document.getElementById("order-select").addEventListener("change", function (ev) {
    ev.target.blur();
    if (state.key) enqueue(load);
  });
  document.getElementById("logout").addEventListener("click", C.logout);
  C.onUnauthorized(function () { C.toast("登录已失效 signed out: reload and sign in", "error"); });

  C.login().then(function (user) {
    state.user = user;
    document.getElementById("user-name").textContent = user.name + " (" + user.role + ")";
    if (user.role !== "bureau" && user.role !== "admin") {
      C.toast("内业判读需要 bureau 角色 desk triage needs the bureau role", "error");
    }
    return loadPeriods();
  });
})();
