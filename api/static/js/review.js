/* Review map: warnings of one county and period over the before/after imagery, with permits and the
 * three control lines as layers, a filterable list sorted by priority and a detail panel. */
"use strict";

(function () {
  var C = Cspon, h = C.h;
  var state = {
    user: null,
    key: null,          // {county_code, period}
    summary: null,      // GET map/{county}/{period}/summary: total, extent, filter counts
    view: null,         // GET .../features of the current view: {total, mode: polygons|points, features}
    list: { rows: [], total: 0 },  // list pages loaded so far (GET .../list)
    layersById: {},     // warning id -> Leaflet layer (current view only)
    selected: null,
    imagery: null,      // {before: L.ImageOverlay, after: L.ImageOverlay, bounds, images: {before, after}}
    permits: null,      // GeoJSON of permits (for the chips' outlines)
    controls: null,     // GeoJSON of control lines (for the chips' outlines)
    loadToken: 0
  };

  // ------------------------------------------------------------------------------------------------ map
  var map = L.map("map", { zoomSnap: 0.25, zoomControl: true, attributionControl: true });
  map.attributionControl.setPrefix(false);
  map.setView([22.3, 114.2], 12);
  L.control.scale({ imperial: false }).addTo(map);

  var warningLayer = L.featureGroup().addTo(map);
  var permitLayer = L.featureGroup();
  var townshipLayer = L.featureGroup();
  var controlLayers = {};
  Object.keys(C.CONTROL).forEach(function (kind) { controlLayers[kind] = L.featureGroup(); });
  var noImagery = L.layerGroup();

  var layerControl = null;
  var extraOverlays = {};  // label -> layer (change probability / mask tiles)
  function buildLayerControl(baseLayers) {
    if (layerControl) layerControl.remove();
    var overlays = {};
    overlays["预警图斑 warnings"] = warningLayer;
    overlays["批准用地 permits"] = permitLayer;
    Object.keys(C.CONTROL).forEach(function (kind) {
      overlays[C.CONTROL[kind].zh + " " + kind] = controlLayers[kind];
    });
    overlays["乡镇 townships"] = townshipLayer;
    Object.keys(extraOverlays).forEach(function (label) { overlays[label] = extraOverlays[label]; });
    layerControl = L.control.layers(baseLayers, overlays, { collapsed: false, position: "topright" }).addTo(map);
  }
  buildLayerControl({ "无影像 no imagery": noImagery });

  var legend = L.control({ position: "bottomright" });
  legend.onAdd = function () {
    var box = h("div", { class: "legend" });
    Object.keys(C.CATEGORY).forEach(function (key) {
      if (key === "none") return;
      var c = C.CATEGORY[key];
      box.appendChild(h("div", {}, h("i", { style: { background: c.color } }), c.zh + " " + c.en));
    });
    Object.keys(C.CONTROL).forEach(function (kind) {
      box.appendChild(h("div", {}, h("i", { class: "line", style: { borderColor: C.CONTROL[kind].color } }),
        C.CONTROL[kind].zh + " " + kind));
    });
    box.appendChild(h("div", {}, h("i", { class: "line dashed" }), "批准用地 permit"));
    return box;
  };
  legend.addTo(map);

  // ------------------------------------------------------------------------------------------ imagery
  function showImagery(which) {
    if (!state.imagery) return;
    var other = which === "before" ? "after" : "before";
    if (map.hasLayer(state.imagery[other])) map.removeLayer(state.imagery[other]);
    if (map.hasLayer(noImagery)) map.removeLayer(noImagery);
    state.imagery[which].addTo(map);
  }
  map.on("baselayerchange", function (ev) { syncToggle(ev.layer); });
  function syncToggle(layer) {
    var im = state.imagery;
    document.getElementById("show-before").classList.toggle("active", !!im && layer === im.before);
    document.getElementById("show-after").classList.toggle("active", !!im && layer === im.after);
  }
  document.getElementById("show-before").addEventListener("click", function () {
    showImagery("before"); syncToggle(state.imagery && state.imagery.before);
  });
  document.getElementById("show-after").addEventListener("click", function () {
    showImagery("after"); syncToggle(state.imagery && state.imagery.after);
  });

  function loadImage(url) {
    return new Promise(function (resolve, reject) {
      var img = new Image();
      img.onload = function () { resolve(img); };
      img.onerror = function () { reject(new Error("cannot decode " + url)); };
      img.src = url;
    });
  }

  /** XYZ tiles of both dates (full resolution at any zoom) plus change probability and mask overlays. */
  function setTiles(ctx, index, token) {
    if (token !== state.loadToken) return;
    var bounds = L.latLngBounds(index.bounds);
    function layer(name, extra) {
      var info = index.layers[name];
      return C.tileLayer(info.url, Object.assign({
        bounds: bounds, minNativeZoom: info.minzoom, maxNativeZoom: info.max_native_zoom + 1,
        maxZoom: 21, className: "imagery-tiles tiles-" + name, keepBuffer: 1
      }, extra || {}));
    }
    var before = layer("before"), after = layer("after");
    state.imagery = { before: before, after: after, bounds: bounds, tiles: index, images: {}, ready: Promise.resolve() };
    extraOverlays = {};
    if (index.layers.prob) extraOverlays["变化概率 change probability"] = layer("prob", { opacity: 0.8, pane: "overlayPane" });
    if (index.layers.mask) extraOverlays["变化掩膜 change mask"] = layer("mask", { pane: "overlayPane" });
    var base = {};
    base["前时相 before " + (index.layers.before.date || "")] = before;
    base["后时相 after " + (index.layers.after.date || "")] = after;
    buildLayerControl(base);
    document.getElementById("show-before").textContent = "前时相 before " + (index.layers.before.date || "");
    document.getElementById("show-after").textContent = "后时相 after " + (index.layers.after.date || "");
    showImagery("after");
    syncToggle(after);
  }

  function setImagery(ctx, token) {
    if (state.imagery) {
      map.removeLayer(state.imagery.before);
      map.removeLayer(state.imagery.after);
      state.imagery = null;
    }
    Object.keys(extraOverlays).forEach(function (k) { map.removeLayer(extraOverlays[k]); });
    extraOverlays = {};
    if (ctx.imagery && ctx.tiles_url && !/[?&]overlay=1/.test(window.location.search)) {
      return C.api(ctx.tiles_url).then(function (index) {
        if (index.layers.before && index.layers.after) { setTiles(ctx, index, token); return; }
        return setOverlays(ctx, token);
      });
    }
    return setOverlays(ctx, token);
  }

  /** Fallback: one PNG of at most 2048 px per date (older services, or ?overlay=1). */
  function setOverlays(ctx, token) {
    if (!ctx.imagery) {
      buildLayerControl({ "无影像 no imagery": noImagery });
      noImagery.addTo(map);
      return Promise.resolve();
    }
    var im = ctx.imagery;
    return Promise.all([C.authImageUrl(im.before_url), C.authImageUrl(im.after_url)]).then(function (urls) {
      if (token !== state.loadToken) return;
      var opts = { interactive: false, className: "imagery" };
      var before = L.imageOverlay(urls[0], im.bounds, Object.assign({ alt: "before" }, opts));
      var after = L.imageOverlay(urls[1], im.bounds, Object.assign({ alt: "after" }, opts));
      state.imagery = { before: before, after: after, bounds: L.latLngBounds(im.bounds), images: {} };
      var base = {};
      base["前时相 before " + (im.before_date || "")] = before;
      base["后时相 after " + (im.after_date || "")] = after;
      buildLayerControl(base);
      document.getElementById("show-before").textContent = "前时相 before " + (im.before_date || "");
      document.getElementById("show-after").textContent = "后时相 after " + (im.after_date || "");
      showImagery("after");
      syncToggle(after);
      var im2 = state.imagery;
      im2.ready = Promise.all([loadImage(urls[0]), loadImage(urls[1])]).then(function (imgs) {
        im2.images.before = imgs[0];
        im2.images.after = imgs[1];
      });
      return im2.ready;
    });
  }

  // ------------------------------------------------------------------------------------------- layers
  function loadLayers(ctx, token) {
    permitLayer.clearLayers();
    townshipLayer.clearLayers();
    Object.keys(controlLayers).forEach(function (k) { controlLayers[k].clearLayers(); });
    state.permits = null;
    state.controls = null;
    var jobs = [];
    if (ctx.layers.permits) {
      jobs.push(C.api(ctx.layers.permits).then(function (gj) {
        if (token !== state.loadToken) return;
        state.permits = gj;
        L.geoJSON(gj, {
          style: { color: "#ffffff", weight: 2, dashArray: "6 4", fillOpacity: 0.05, className: "permit-poly" },
          onEachFeature: function (f, layer) {
            var p = f.properties || {};
            // A DOM node, never an HTML string: permit fields come from uploaded files (stored XSS otherwise).
            layer.bindTooltip(C.h("span", {}, (p.permit_no || "permit") + " · " + (p.project || "") + " · " + (p.status || "")));
          }
        }).addTo(permitLayer);
        permitLayer.addTo(map);
      }));
    }
    if (ctx.layers.control_lines) {
      jobs.push(C.api(ctx.layers.control_lines).then(function (gj) {
        if (token !== state.loadToken) return;
        state.controls = gj;
        (gj.features || []).forEach(function (f) {
          var kind = (f.properties || {}).kind;
          if (!controlLayers[kind]) return;
          L.geoJSON(f, {
            style: { color: C.CONTROL[kind].color, weight: 2, fillOpacity: 0.06,
                     className: "control-line control-" + kind },
            interactive: false
          }).addTo(controlLayers[kind]);
        });
        Object.keys(controlLayers).forEach(function (k) { controlLayers[k].addTo(map); });
      }));
    }
    if (ctx.layers.townships) {
      jobs.push(C.api(ctx.layers.townships).then(function (gj) {
        if (token !== state.loadToken) return;
        L.geoJSON(gj, {
          style: { color: "#d0d4da", weight: 1, fill: false, dashArray: "2 4", className: "township-line" },
          interactive: false
        }).addTo(townshipLayer);
      }));
    }
    return Promise.all(jobs);
  }

  // ----------------------------------------------------------------------------------------- warnings
  // County scale (10,000 warnings and more): nothing downloads the whole period. The filters and the first
  // view come from GET map/{county}/{period}/summary (counts, extent); the map asks for the warnings of its
  // view (GET .../features?bbox=: outlines up to 3000 in view, points beyond, a few properties each); the
  // list pages through GET .../list (200 rows at a time, "更多 more"); the detail, history and chips of a
  // warning are loaded when it is clicked (GET /warnings/{id}).
  var LIST_PAGE = 200;
  var SVG_MAX = 1500;  // more outlines than this are drawn on one canvas instead of as SVG paths
  var canvasRenderer = L.canvas({ padding: 0.3 });
  function props(f) { return f.properties || {}; }

  function mapBase() { return "map/" + state.key.county_code + "/" + state.key.period; }

  function filterQuery() {
    var flt = currentFilters(), q = "";
    if (flt.category) q += "&category=" + encodeURIComponent(flt.category);
    if (flt.status) q += "&status=" + encodeURIComponent(flt.status);
    if (flt.township) q += "&township_code=" + encodeURIComponent(flt.township);
    if (flt.landuse) q += "&landuse=" + encodeURIComponent(flt.landuse);
    return q;
  }

  function styleFor(f, selected) {
    var c = C.category(f ? f.c : "").color;
    return { color: selected ? "#ffffff" : c, fillColor: c, weight: selected ? 4 : 2,
             fillOpacity: selected ? 0.15 : 0.3, opacity: 1 };
  }

  var viewToken = 0;
  /** The warnings inside the current view (with a margin), drawn over the imagery. */
  function loadView() {
    if (!state.key) return Promise.resolve();
    var token = ++viewToken, b = map.getBounds().pad(0.25);
    function clamp(v, lim) { return Math.max(-lim, Math.min(lim, v)).toFixed(6); }
    var bbox = [clamp(b.getWest(), 180), clamp(b.getSouth(), 90), clamp(b.getEast(), 180), clamp(b.getNorth(), 90)];
    state.viewPending = true;
    return C.api(mapBase() + "/features?bbox=" + bbox.join(",") + filterQuery()).then(function (body) {
      if (token !== viewToken) return;
      state.view = body;
      drawWarnings();
      state.viewPending = false;  // the drawn warnings are those of the current view
    });
  }

  function drawWarnings() {
    warningLayer.clearLayers();
    state.layersById = {};
    state.featById = {};
    var view = state.view || { features: [], mode: "polygons", total: 0 };
    var svg = view.mode === "polygons" && view.features.length <= SVG_MAX;
    view.features.forEach(function (f) {
      var layer, sel = f.id === state.selected;
      if (view.mode === "polygons") {
        layer = L.geoJSON(f.g, { renderer: svg ? undefined : canvasRenderer, warningId: f.id,
          style: Object.assign({ className: "warning-poly cat-" + f.c }, styleFor(f, sel)) });
      } else {  // warningId: for the one click handler on the group (below), not one per layer
        layer = L.circleMarker([f.pt[1], f.pt[0]], Object.assign({ renderer: canvasRenderer, radius: 4,
          warningId: f.id }, styleFor(f, sel), { weight: sel ? 3 : 1, fillOpacity: 0.7 }));
      }
      if (svg) layer.bindTooltip(C.h("span", {}, C.category(f.c).zh + " · " + f.id), { sticky: true });
      layer.addTo(warningLayer);
      state.layersById[f.id] = layer;
      state.featById[f.id] = f;
    });
    var hint = document.getElementById("view-hint");
    if (hint) {
      hint.textContent = view.mode === "points" ? "视图内 " + view.total + " 条, 以点显示, 放大查看轮廓 · " +
        view.total + " in view as points, zoom in for outlines" : "";
      hint.hidden = view.mode !== "points";
    }
    if (state.selected && state.layersById[state.selected]) state.layersById[state.selected].bringToFront();
  }
  warningLayer.on("click", function (ev) {
    var id = ev.sourceTarget && ev.sourceTarget.options ? ev.sourceTarget.options.warningId : undefined;
    if (id === undefined && ev.layer && ev.layer.options) id = ev.layer.options.warningId;
    if (id !== undefined) select(String(id), true);
  });
  var moveTimer = null;
  map.on("moveend", function () {
    if (!state.key || !state.summary) return;
    clearTimeout(moveTimer);
    state.viewPending = true;
    // after a click, the warning's detail is drawn first, the new view after it
    moveTimer = setTimeout(function () { Promise.resolve(state.detailPending).then(loadView); }, 120);
  });

  function currentFilters() {
    return {
      category: document.getElementById("filter-category").value,
      status: document.getElementById("filter-status").value,
      township: document.getElementById("filter-township").value,
      landuse: document.getElementById("filter-landuse").value
    };
  }

  function fillFilter(select, values, label) {
    var current = select.value;
    while (select.options.length > 1) select.remove(1);
    values.forEach(function (v) { select.appendChild(h("option", { value: v.value }, label(v))); });
    select.value = values.some(function (v) { return v.value === current; }) ? current : "";
  }

  /** Filter choices with their counts, from the summary (the whole period, not the loaded view). */
  function buildFilters() {
    var s = state.summary || { categories: [], statuses: [], townships: [], landuse: [] };
    function n(f) { return { value: f.value, name: f.name, n: f.count }; }
    fillFilter(document.getElementById("filter-category"), s.categories.map(n),
      function (v) { return C.category(v.value).zh + " (" + v.n + ")"; });
    fillFilter(document.getElementById("filter-status"), s.statuses.map(n),
      function (v) { return (C.STATUS[v.value] || v.value) + " (" + v.n + ")"; });
    fillFilter(document.getElementById("filter-township"), s.townships.filter(function (f) { return f.value; }).map(n),
      function (v) { return (v.name || v.value) + " (" + v.n + ")"; });
    // 地类 (GB/T 21010 first-level class of the main land class before the change), and 占用耕地
    fillFilter(document.getElementById("filter-landuse"), (s.landuse || []).map(n), function (v) {
      if (v.value === "cropland") return "占用耕地 cropland taken (" + v.n + ")";
      return v.value + " " + (LAND_CLASS[v.value] || "") + " (" + v.n + ")";
    });
  }
  /** GB/T 21010 first-level classes (configs/landuse_gbt21010.yaml). */
  var LAND_CLASS = { "01": "耕地", "02": "园地", "03": "林地", "04": "草地", "05": "商服用地",
    "06": "工矿仓储用地", "07": "住宅用地", "08": "公共管理与公共服务用地", "09": "特殊用地",
    "10": "交通运输用地", "11": "水域及水利设施用地", "12": "其他土地" };

  function loadSummary() {
    return C.api(mapBase() + "/summary").then(function (s) { state.summary = s; buildFilters(); return s; });
  }

  var listToken = 0;
  /** One page of the list (highest priority first); ``more`` appends the next page. */
  function loadList(more) {
    var token = ++listToken, offset = more ? state.list.rows.length : 0;
    return C.api(mapBase() + "/list?limit=" + LIST_PAGE + "&offset=" + offset + filterQuery()).then(function (page) {
      if (token !== listToken) return;
      state.list = { rows: (more ? state.list.rows : []).concat(page.items), total: page.total };
      state.rowById = {};
      state.list.rows.forEach(function (r) { state.rowById[String(r.id)] = r; });
      renderList();
    });
  }

  function matchesFilters(p) {
    var flt = currentFilters();
    if (flt.category && p.category !== flt.category) return false;
    if (flt.status && p.status !== flt.status) return false;
    if (flt.township && (p.township_code || p.township_name || "") !== flt.township) return false;
    return true;
  }

  function renderList() {
    var list = C.clear(document.getElementById("warning-list"));
    var rows = state.list.rows;
    document.getElementById("list-count").textContent = rows.length + " / " + state.list.total + " 条预警 warnings";
    rows.forEach(function (p) {
      var id = String(p.id), cat = C.category(p.category);
      var flags = (p.flags || []).map(function (fl) { return h("span", { class: "badge flag" }, fl); });
      list.appendChild(h("li", {
        class: "warning-row" + (id === state.selected ? " selected" : ""),
        dataset: { id: id, category: p.category || "", status: p.status || "" },
        tabindex: "0",
        onclick: function () { select(id, true); },
        onkeydown: function (ev) { if (ev.key === "Enter") select(id, true); }
      },
      h("span", { class: "swatch", style: { background: cat.color } }),
      h("div", { class: "row-main" },
        h("div", { class: "row-title" }, h("strong", {}, cat.zh), " ", h("span", { class: "muted" }, id)),
        h("div", { class: "row-sub" },
          (p.township_name || "–") + " · " + C.fmt(p.area_mu, 1) + " 亩 · P " + C.fmt(p.priority, 0), " ",
          h("span", { class: "badge status-" + p.status }, C.STATUS[p.status] || p.status),
          p.verification_result ? h("span", { class: "badge verdict verdict-" + p.verification_result },
            C.RESULT[p.verification_result] || p.verification_result) : null, flags))));
    });
    if (rows.length < state.list.total) {
      list.appendChild(h("li", { class: "list-more" }, h("button", { type: "button", id: "list-more", class: "link",
        onclick: function () { loadList(true); } }, "更多 more (" + (state.list.total - rows.length) + ")")));
    }
  }

  /** List and map again from the service (after a filter change or an update); ``body[data-loaded]`` is
   * cleared meanwhile so that a test (or a person) can tell when the page shows the new state. */
  var refreshToken = 0;
  function refresh() {
    var token = ++refreshToken;
    delete document.body.dataset.loaded;
    return Promise.all([loadList(false), loadView()]).then(function () {
      if (token !== refreshToken || !state.key) return;
      if (state.selected) highlight(state.selected);
      document.body.dataset.loaded = state.key.county_code + "/" + state.key.period;
    });
  }
  ["filter-category", "filter-status", "filter-township", "filter-landuse"].forEach(function (id) {
    document.getElementById(id).addEventListener("change", refresh);
  });

  /** Restyle only the previous and the new selection (never every layer: 10,000 of them at county scale). */
  function highlight(id) {
    var prev = state.highlighted;
    if (prev && prev !== id && state.layersById[prev]) state.layersById[prev].setStyle(styleFor(state.featById[prev], false));
    if (id && state.layersById[id]) {
      state.layersById[id].setStyle(styleFor(state.featById[id], true));
      state.layersById[id].bringToFront();
    }
    state.highlighted = id;
    var list = document.getElementById("warning-list");
    var old = list.querySelector("li.warning-row.selected");
    if (old && old.dataset.id !== id) old.classList.remove("selected");
    var li = id ? list.querySelector("li.warning-row[data-id=\"" + CSS.escape(id) + "\"]") : null;
    if (li) { li.classList.add("selected"); li.scrollIntoView({ block: "nearest" }); }
  }

  /** Bounds of a warning known to the page without a request (its outline in view, or its list row). */
  function knownBounds(id) {
    var layer = state.layersById[id];
    if (layer && layer.getBounds) return layer.getBounds();
    var row = state.rowById && state.rowById[id];
    if (row && row.bbox) return L.latLngBounds([row.bbox[1], row.bbox[0]], [row.bbox[3], row.bbox[2]]);
    return null;
  }

  function zoomTo(bounds) {
    map.fitBounds(bounds, { padding: [60, 60], maxZoom: 16, animate: false });
  }

  function select(id, zoom) {
    state.selected = id;
    highlight(id);
    var bounds = zoom !== false ? knownBounds(id) : null;
    showDetail(id, zoom !== false && !bounds);  // first: the panel narrows the map
    // the map moves once the detail is drawn and painted: re-projecting thousands of points must not delay it
    if (bounds) state.detailPending.then(function () { afterPaint(function () { if (state.selected === id) zoomTo(bounds); }); });
  }

  // ------------------------------------------------------------------------------------------- detail
  var detailBox = document.getElementById("detail");
  document.getElementById("detail-close").addEventListener("click", function () {
    detailBox.hidden = true;
    state.selected = null;
    highlight(null);
    map.invalidateSize({ pan: false });
  });

  function section(title) {
    var body = Array.prototype.slice.call(arguments, 1);
    return h("section", { class: "dsec" }, h("h3", {}, title), body);
  }

  function ringsOf(geometry) {
    if (!geometry) return [];
    if (geometry.type === "Polygon") return geometry.coordinates;
    if (geometry.type === "MultiPolygon") return [].concat.apply([], geometry.coordinates);
    return [];
  }

  function bboxOf(geometry) {
    var b = [Infinity, Infinity, -Infinity, -Infinity];
    ringsOf(geometry).forEach(function (ring) {
      ring.forEach(function (pt) {
        b[0] = Math.min(b[0], pt[0]); b[1] = Math.min(b[1], pt[1]);
        b[2] = Math.max(b[2], pt[0]); b[3] = Math.max(b[3], pt[1]);
      });
    });
    return b;
  }

  /** Crop of one date around the warning, with the warning (category colour) and permits (white, dashed). */
  function chipCanvas(which, feature, permitNos) {
    var im = state.imagery;
    var img = im && im.images[which];
    if (!img) return null;
    var crs = L.CRS.EPSG3857;
    var sw = crs.project(im.bounds.getSouthWest()), ne = crs.project(im.bounds.getNorthEast());
    var sx = img.naturalWidth / (ne.x - sw.x), sy = img.naturalHeight / (ne.y - sw.y);
    function toPx(lon, lat) {
      var p = crs.project(L.latLng(lat, lon));
      return [(p.x - sw.x) * sx, (ne.y - p.y) * sy];
    }
    var b = bboxOf(feature.geometry);
    var a = toPx(b[0], b[1]), c = toPx(b[2], b[3]);
    var cx = (a[0] + c[0]) / 2, cy = (a[1] + c[1]) / 2;
    var half = Math.max(24, Math.abs(c[0] - a[0]) * 0.8, Math.abs(c[1] - a[1]) * 0.8);
    var x0 = cx - half, y0 = cy - half, size = 2 * half, out = 256, k = out / size;
    var canvas = h("canvas", { width: out, height: out, class: "chip-canvas", "data-which": which });
    var g = canvas.getContext("2d");
    g.fillStyle = "#000"; g.fillRect(0, 0, out, out);
    g.imageSmoothingEnabled = false;
    g.drawImage(img, x0, y0, size, size, 0, 0, out, out);
    function outline(geometry, color, dash, width) {
      g.strokeStyle = color; g.lineWidth = width; g.setLineDash(dash);
      ringsOf(geometry).forEach(function (ring) {
        g.beginPath();
        ring.forEach(function (pt, i) {
          var q = toPx(pt[0], pt[1]);
          var X = (q[0] - x0) * k, Y = (q[1] - y0) * k;
          if (i === 0) g.moveTo(X, Y); else g.lineTo(X, Y);
        });
        g.closePath(); g.stroke();
      });
    }
    if (state.controls) {
      state.controls.features.forEach(function (cf) {
        var kind = (cf.properties || {}).kind;
        if (C.CONTROL[kind]) outline(cf.geometry, C.CONTROL[kind].color, [], 1.5);
      });
    }
    if (state.permits) {
      state.permits.features.forEach(function (pf) {
        var own = permitNos.indexOf((pf.properties || {}).permit_no) >= 0;
        outline(pf.geometry, own ? "#ffffff" : "rgba(255,255,255,0.55)", [6, 4], own ? 2 : 1);
      });
    }
    outline(feature.geometry, C.category(props(feature).category).color, [], 2.5);
    return canvas;
  }

  function chipFigure(which, label, node) {
    return h("figure", { class: "chip chip-" + which }, node || h("div", { class: "chip-missing" }, "无影像 no imagery"),
      h("figcaption", {}, label));
  }

  /** Chip of one date cut from the tiles at (up to) full resolution, with the same outlines. */
  function tileChip(which, feature, permitNos) {
    var index = state.imagery.tiles, info = index.layers[which];
    var b = bboxOf(feature.geometry), z = info.max_native_zoom + 1;
    var crs = L.CRS.EPSG3857;
    while (z > 0) {
      var a = crs.latLngToPoint(L.latLng(b[3], b[0]), z), c = crs.latLngToPoint(L.latLng(b[1], b[2]), z);
      if (Math.max(c.x - a.x, c.y - a.y) * 1.6 <= 512) break;
      z--;
    }
    return C.mosaic(info.url, b, z, 256).then(function (m) {
      var g = m.canvas.getContext("2d");
      if (state.controls) {
        state.controls.features.forEach(function (cf) {
          var kind = (cf.properties || {}).kind;
          if (C.CONTROL[kind]) C.strokeGeometry(g, cf.geometry, m.toPx, C.CONTROL[kind].color, [], 1.5);
        });
      }
      if (state.permits) {
        state.permits.features.forEach(function (pf) {
          var own = permitNos.indexOf((pf.properties || {}).permit_no) >= 0;
          C.strokeGeometry(g, pf.geometry, m.toPx, own ? "#ffffff" : "rgba(255,255,255,0.55)", [6, 4], own ? 2 : 1);
        });
      }
      C.strokeGeometry(g, feature.geometry, m.toPx, C.category(props(feature).category).color, [], 2.5);
      m.canvas.className = "chip-canvas";
      m.canvas.dataset.which = which;
      m.canvas.dataset.zoom = String(z);
      return m.canvas;
    });
  }

  function renderChips(detail, feature) {
    var permitNos = (detail.permits || []).map(function (p) { return p.permit_no; });
    var box;
    if (state.imagery && state.imagery.tiles) {
      box = h("div", { class: "chips drawn" });
      Promise.all([tileChip("before", feature, permitNos), tileChip("after", feature, permitNos)]).then(function (cs) {
        C.append(box, [chipFigure("before", "前时相 before " + (detail.t1 || ""), cs[0]),
          chipFigure("after", "后时相 after " + (detail.t2 || ""), cs[1])]);
      });
    } else {
      box = h("div", { class: "chips drawn" },
        chipFigure("before", "前时相 before " + (detail.t1 || ""), chipCanvas("before", feature, permitNos)),
        chipFigure("after", "后时相 after " + (detail.t2 || ""), chipCanvas("after", feature, permitNos)));
    }
    var exported = h("div", { class: "chips exported" });
    var urls = chipUrls(detail);
    urls.forEach(function (u) {
      var img = h("img", { alt: u.label, class: "chip-img" });
      exported.appendChild(h("figure", { class: "chip" }, img, h("figcaption", {}, u.label)));
      C.authImageUrl(u.url).then(function (src) { img.src = src; }).catch(function () {
        img.replaceWith(h("div", { class: "chip-missing" }, "图片不可用 chip unavailable"));
      });
    });
    return urls.length ? h("div", {}, box, exported) : box;
  }

  function chipUrls(detail) {
    var out = [];
    var chips = detail.chips || detail.chip_urls || null;
    if (Array.isArray(chips)) {
      chips.forEach(function (c, i) {
        if (typeof c === "string") out.push({ url: c, label: "导出切片 chip " + (i + 1) });
        else if (c && c.url) out.push({ url: c.url, label: c.label || c.kind || "chip" });
      });
    } else if (chips && typeof chips === "object") {
      var names = { before_after: "导出切片 exported chip (前 before | 后 after)", before: "导出切片 before",
                    after: "导出切片 after" };
      Object.keys(chips).forEach(function (k) { if (chips[k]) out.push({ url: chips[k], label: names[k] || k }); });
    } else if (detail.chip_url) {
      out.push({ url: detail.chip_url, label: "导出切片 chip" });
    }
    return out;
  }

  function renderDetail(detail, feature) {
    var cat = C.category(detail.category);
    var reasons = (detail.reasons || []).map(function (r) {
      return h("li", {}, h("strong", {}, r.zh || r.code || ""), r.en ? h("div", { class: "muted" }, r.en) : null);
    });
    var permits = (detail.permits || []).map(function (p) {
      return h("tr", {}, h("td", {}, p.permit_no || "–"), h("td", {}, p.role || p.relation || "–"),
        h("td", {}, p.status || "–"), h("td", {}, p.approved_on || "–"),
        h("td", {}, p.overlap_share !== undefined ? C.fmt(100 * p.overlap_share, 0) + "%" :
          (p.share !== undefined ? C.fmt(100 * p.share, 0) + "%" : "–")));
    });
    var history = (detail.history || []).map(function (ev) {
      return h("li", {}, h("span", { class: "muted" }, C.fmtTime(ev.at)), " ", h("strong", {}, ev.event),
        ev.from_status || ev.to_status ? " " + (ev.from_status || "") + " → " + (ev.to_status || "") : "",
        ev.by ? " · " + ev.by : "", ev.why ? h("div", { class: "muted" }, ev.why) : null);
    });
    function isNum(x) { return typeof x === "number" && isFinite(x); }
    /** One photo's evidence line (举证): time, lon/lat (source), bearing, distance to the 图斑, who, flags. */
    function photoCaption(p) {
      var FLAG = { far: "远离图斑 far from the 图斑", early: "早于核查 before the check window",
        late: "晚于核查 after the check", no_position: "无位置 no position", no_time: "无时间 no time" };
      var parts = [p.taken_at ? C.fmtTime(p.taken_at) : "时间不明 time unknown"];
      if (isNum(p.lon) && isNum(p.lat)) parts.push(C.fmt(p.lon, 6) + ", " + C.fmt(p.lat, 6) + " (" + (p.position_source || "?") + ")");
      if (isNum(p.bearing_deg)) parts.push("方位 bearing " + C.fmt(p.bearing_deg, 0) + "°");
      if (isNum(p.distance_m)) parts.push("距图斑 to 图斑 " + C.fmt(p.distance_m, 0) + " m");
      if (p.by) parts.push(p.by);
      var flags = (p.flags || []).map(function (f) { return FLAG[f] || f; });
      return parts.join(" · ") + (flags.length ? " · ⚠ " + flags.join(", ") : "");
    }

    /** "拍摄 taken …" for the photos of one verification that have a time (EXIF or the phone's file time). */
    function photoTimes(vid) {
      var times = (detail.photos || []).filter(function (p) { return p.verification_id === vid && p.taken_at; })
        .map(function (p) { return C.fmtTime(p.taken_at); });
      return times.length ? h("div", { class: "muted capture-photos" }, "照片拍摄 photos taken " + times.join(", ")) : null;
    }
    var verifications = (detail.verifications || []).map(function (v) {
      return h("li", {}, h("strong", {}, C.RESULT[v.result] || v.result), " · ", C.fmtTime(v.observed_at || v.created_at),
        v.by ? " · " + v.by : "",
        v.actual_use ? h("div", { class: "actual-use" }, "实际用途 actual use: ", h("strong", {}, v.actual_use)) : null,
        v.lon !== null && v.lon !== undefined ? h("div", { class: "muted capture-position" },
          "GPS " + C.fmt(v.lon, 6) + ", " + C.fmt(v.lat, 6),
          isNum(v.position_accuracy_m) ? " ±" + C.fmt(v.position_accuracy_m, 0) + " m" : "",
          v.position_at ? " · 定位于 fix at " + C.fmtTime(v.position_at) : "") : null,
        isNum(v.heading_deg) ? h("div", { class: "muted capture-heading" },
          "方向 heading " + C.fmt(v.heading_deg, 0) + "°") : null,
        v.recorded_at ? h("div", { class: "muted capture-recorded" },
          "设备时间 device time " + C.fmtTime(v.recorded_at)) : null,
        photoTimes(v.id),
        v.has_track ? h("div", { class: "muted capture-track" }, h("a", { href: "#", class: "track-link",
          onclick: function (ev) {
            ev.preventDefault();
            C.download("warnings/" + encodeURIComponent(detail.id) + "/verifications/" + v.id + "/track.gpx", "track.gpx")
              .catch(function (err) { C.toast("下载失败 " + err.message, "error"); });
          } }, "巡查轨迹 GPS track (GPX)")) : null,
        v.notes ? h("div", { class: "muted notes" }, v.notes) : null);
    });
    var photos = h("div", { class: "photos" });
    (detail.photos || []).forEach(function (p) {
      if (!p.url) return;
      var img = h("img", { alt: "photo", class: "photo" });
      photos.appendChild(h("figure", { class: "photo-fig" + (p.flags && p.flags.length ? " flagged" : ""),
        dataset: { flags: (p.flags || []).join(",") } }, img, h("figcaption", { class: "photo-caption" }, photoCaption(p))));
      C.authImageUrl(p.url).then(function (src) { img.src = src; }).catch(function () { img.remove(); });
    });
    var body = C.clear(document.getElementById("detail-body"));
    C.append(body, [
      h("h2", { class: "dtitle" }, h("span", { class: "swatch", style: { background: cat.color } }), cat.zh,
        h("span", { class: "badge " + (detail.verification_result ? "verdict verdict-" + detail.verification_result : "suspect"),
          id: "detail-verdict" }, C.verdict(detail))),
      h("div", { class: "muted", id: "detail-id" }, detail.id),
      h("dl", { class: "facts" },
        h("dt", {}, "状态 status"), h("dd", { id: "detail-status" }, C.STATUS[detail.status] || detail.status),
        detail.verification_result ? [h("dt", {}, "核查结论 result"),
          h("dd", { id: "detail-result" }, C.RESULT[detail.verification_result] || detail.verification_result)] : null,
        lastActualUse(detail) ? [h("dt", {}, "实际用途 actual use"), h("dd", { id: "detail-actual-use" }, lastActualUse(detail))] : null,
        detail.due_date ? [h("dt", {}, "期限 due"), h("dd", { class: detail.due_date < C.today() && detail.status === "assigned" ? "overdue" : "" },
          C.dueLabel(detail.due_date))] : null,
        h("dt", {}, "面积 area"), h("dd", {}, C.fmt(detail.area_mu, 2) + " 亩 (" + C.fmt(detail.area_m2, 0) + " m²)"),
        h("dt", {}, "优先级 priority"), h("dd", {}, C.fmt(detail.priority, 1) + (detail.rank ? " · #" + detail.rank : "")),
        h("dt", {}, "乡镇 township"), h("dd", {}, detail.township_name || "–"),
        h("dt", {}, "管控线 flags"), h("dd", {}, (detail.flags || []).join(", ") || "–"),
        h("dt", {}, "时相 dates"), h("dd", {}, (detail.t1 || "?") + " → " + (detail.t2 || "?")),
        h("dt", {}, "置信度 confidence"), h("dd", {}, C.fmt(detail.confidence, 2)),
        h("dt", {}, "派发 team"), h("dd", {}, detail.assigned_team || "–")),
      section("前后对比 before / after", renderChips(detail, feature)),
      section("判定理由 reasons", reasons.length ? h("ol", { class: "reasons" }, reasons) : h("p", { class: "muted" }, "–")),
      section("相关批文 permits", permits.length ? h("table", { class: "permits" },
        h("thead", {}, h("tr", {}, h("th", {}, "文号 no."), h("th", {}, "关系 role"), h("th", {}, "状态"),
          h("th", {}, "批准 approved"), h("th", {}, "重叠 overlap"))),
        h("tbody", {}, permits)) : h("p", { class: "muted" }, "无 none")),
      section("核查 verifications", verifications.length ? h("ul", { class: "history", id: "detail-verifications" }, verifications) :
        h("p", { class: "muted" }, "尚未核查 not checked yet"), photos),
      actions(detail),
      caseSection(detail),
      section("历史 history", history.length ? h("ul", { class: "history", id: "detail-history" }, history) : h("p", { class: "muted" }, "–"))
    ]);
  }

  /** 查处/整改 after the check: case fields, rectification status, steps with dates and documents
   * (GET warnings/{id}/case; recorded through PUT .../case and POST .../case/steps). */
  function caseSection(detail) {
    if (detail.status !== "verified" && detail.status !== "closed") return null;
    var box = h("div", { id: "detail-case" }, h("p", { class: "muted" }, "加载中 loading …"));
    C.api("warnings/" + encodeURIComponent(detail.id) + "/case").then(function (c) {
      var steps = (c.steps || []).map(function (s) {
        var docs = (c.documents || []).filter(function (d) { return d.step_id === s.id; }).map(function (d) {
          var link = h("a", { href: "#", class: "case-doc" }, d.original_name || ("#" + d.id));
          link.addEventListener("click", function (ev) {
            ev.preventDefault();
            C.authImageUrl(d.url).then(function (u) { window.open(u, "_blank", "noopener"); });
          });
          return h("div", { class: "muted" }, "材料 document: ", link);
        });
        return h("li", {}, h("strong", {}, (s.on_date || "") + " " + s.step_zh),
          s.to_status && s.to_status !== s.from_status ? " → " + (CASE_STATUS[s.to_status] || s.to_status) : "",
          s.by ? " · " + s.by : "", s.notes ? h("div", { class: "muted" }, s.notes) : null, docs);
      });
      C.append(C.clear(box), [
        h("dl", { class: "facts" },
          h("dt", {}, "整改状态 rectification"), h("dd", { id: "case-status" }, c.rectification_zh || "–"),
          h("dt", {}, "用地主体 land user"), h("dd", {}, c.land_user || "–"),
          h("dt", {}, "项目名称 project"), h("dd", {}, c.project_name || "–"),
          h("dt", {}, "建设状态 construction"), h("dd", {}, c.construction_status_zh || "–"),
          h("dt", {}, "违法类型 violation"), h("dd", {}, c.violation_type || "–")),
        steps.length ? h("ul", { class: "history", id: "case-steps" }, steps) : h("p", { class: "muted" }, "尚无整改记录 no steps yet")
      ]);
    }).catch(function (err) { C.clear(box).appendChild(h("p", { class: "error" }, err.message)); });
    return section("查处整改 case", box);
  }
  var CASE_STATUS = { pending: "待整改", in_progress: "整改中", rectified: "已整改", closed_out: "已销号" };

  function lastActualUse(detail) {
    var vs = (detail.verifications || []).filter(function (v) { return v.actual_use; });
    return vs.length ? vs[vs.length - 1].actual_use : null;
  }

  /** Bureau actions on the lifecycle new → assigned → verified → closed (the API enforces the rules). */
  function actions(detail) {
    var role = state.user && state.user.role;
    if (role !== "bureau" && role !== "admin") return null;
    var message = h("p", { class: "error", role: "alert" });
    var box = h("form", { class: "actions", id: "detail-actions", autocomplete: "off" });
    function post(path, body, done) {
      message.textContent = "";
      Array.prototype.forEach.call(box.querySelectorAll("button"), function (b) { b.disabled = true; });
      body.expected_version = detail.version;
      C.api("warnings/" + encodeURIComponent(detail.id) + "/" + path, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body)
      }).then(function (updated) {
        applyUpdate(updated);
        C.toast(done + " " + detail.id, "ok");
        showDetail(detail.id);
      }).catch(function (err) {
        Array.prototype.forEach.call(box.querySelectorAll("button"), function (b) { b.disabled = false; });
        message.textContent = (err.status === 409 ? "已被他人修改，请刷新 changed by someone else. " : "") + err.message;
      });
    }
    var team = h("input", { type: "text", name: "team", placeholder: "外业队 team", maxlength: "64",
      value: detail.assigned_team || "", required: true });
    var due = h("input", { type: "date", name: "due_date", value: detail.due_date || "" });
    var why = h("input", { type: "text", name: "why", placeholder: "说明 reason (可选 optional)", maxlength: "2000" });
    function button(label, cls, onclick) {
      return h("button", { type: "button", class: cls, onclick: onclick }, label);
    }
    var assign = button(detail.status === "assigned" ? "改派 re-assign" : "派发 assign", "primary", function () {
      if (!team.value.trim()) { message.textContent = "请填写外业队 enter a team"; team.focus(); return; }
      post("assign", { team: team.value.trim(), due_date: due.value || null }, "已派发 assigned");
    });
    function status(to, label) {
      return button(label, "", function () {
        post("status", { to_status: to, why: why.value.trim() || null }, label);
      });
    }
    var rows = [];
    // 待外业 / 内业排除 after the desk triage: still assignable to a field team (the field result overrides the desk)
    if (["new", "to_field", "desk_excluded", "assigned"].indexOf(detail.status) >= 0) {
      rows.push(h("div", { class: "arow" }, team, due, assign));
    }
    if (detail.status === "assigned") rows.push(h("div", { class: "arow" }, why, status("new", "撤回 un-assign")));
    if (detail.status === "verified") {
      rows.push(h("div", { class: "arow" }, why, status("closed", "办结 close"), status("assigned", "复核 re-check")));
    }
    if (!rows.length) return section("处置 actions", h("p", { class: "muted" }, "已办结 closed"));
    C.append(box, [rows, message]);
    return section("处置 actions", box);
  }

  /** Put a WarningOut returned by the API into the list at once (a row that left the filter goes), then
   * reload list, view and counts from the service. */
  function applyUpdate(updated) {
    var id = String(updated.id), row = state.rowById && state.rowById[id];
    if (row) Object.keys(updated).forEach(function (k) { row[k] = updated[k]; });
    if (row && !matchesFilters(row)) {
      state.list.rows = state.list.rows.filter(function (r) { return String(r.id) !== id; });
      state.list.total = Math.max(0, state.list.total - 1);
    }
    var f = state.featById && state.featById[id];
    if (f) { f.s = updated.status; f.r = updated.verification_result; }
    renderList();
    loadSummary().catch(function () {});
    refresh();
  }

  function showDetail(id, zoomWhenLoaded) {
    var request = C.api("warnings/" + encodeURIComponent(id));  // first: it travels while the page works
    var opened = detailBox.hidden;
    detailBox.hidden = false;
    var body = C.clear(document.getElementById("detail-body"));
    body.appendChild(h("p", { class: "muted" }, "加载中 loading " + id + " …"));
    var imagesReady = state.imagery && state.imagery.ready ? state.imagery.ready.catch(function () {}) : null;
    state.detailPending = Promise.all([request, imagesReady]).then(function (res) {
      var detail = res[0];
      if (state.selected !== id) return;
      var feature = { geometry: detail.geometry, properties: detail };
      renderDetail(detail, feature);
      if (zoomWhenLoaded && detail.geometry) {
        var gb = L.geoJSON(detail.geometry).getBounds();
        afterPaint(function () { afterPaint(function () { if (state.selected === id) zoomTo(gb); }); });
      }
    }).catch(function (err) {
      C.clear(body).appendChild(h("p", { class: "error" }, "无法加载 " + id + ": " + err.message));
    }).then(function () {
      // the panel narrows the map: Leaflet re-measures (and redraws thousands of points) after the panel is painted
      if (opened) afterPaint(function () { map.invalidateSize({ pan: false }); });
    });
  }

  /** Run ``fn`` after the browser has painted what is on the page now. */
  function afterPaint(fn) {
    requestAnimationFrame(function () { setTimeout(fn, 0); });
  }

  // ------------------------------------------------------------------------------------------- period
  function loadPeriod(key) {
    var token = ++state.loadToken;
    state.key = key;
    setupExports(key);
    state.selected = null;
    detailBox.hidden = true;
    var notes = document.getElementById("notes");
    notes.hidden = true;
    return C.api("map/" + key.county_code + "/" + key.period + "/context").then(function (ctx) {
      if (token !== state.loadToken) return;
      if (ctx.notes && ctx.notes.length) { notes.textContent = ctx.notes.join(" · "); notes.hidden = false; }
      function soft(promise, what) {  // imagery and layers are optional: the warnings still show
        return promise.catch(function (err) {
          notes.textContent = (notes.hidden ? "" : notes.textContent + " · ") + what + ": " + err.message;
          notes.hidden = false;
        });
      }
      state.summary = null;
      delete document.body.dataset.drawn;
      // The warnings of the first view do not wait for the permit / control-line layers (drawn when they come).
      var layers = soft(loadLayers(ctx, token), "图层 layers");
      var warnings = Promise.all([soft(setImagery(ctx, token), "影像 imagery"), loadSummary(), loadList(false)])
        .then(function (res) {
          if (token !== state.loadToken) return;
          var s = res[1];
          var bounds = s.bounds ? L.latLngBounds(s.bounds) : null;
          if (state.imagery) bounds = bounds ? bounds.extend(state.imagery.bounds) : state.imagery.bounds;
          if (bounds) map.fitBounds(bounds, { padding: [10, 10], animate: false });
          clearTimeout(moveTimer);  // the view is loaded right here, not again by that move
          return loadView().then(function () {
            if (token === state.loadToken) document.body.dataset.drawn = key.county_code + "/" + key.period;
          });
        });
      return Promise.all([warnings, layers]).then(function () {
        if (token !== state.loadToken) return;
        document.body.dataset.loaded = key.county_code + "/" + key.period;
      });
    }).catch(function (err) {
      C.toast("加载失败 loading failed: " + err.message, "error");
      document.body.dataset.loaded = "error";
    });
  }

  // ------------------------------------------------------------------------------------------ exports
  /** Exports of the selected county and period (GET /exports/..., the files router), downloaded with the
   * page's credentials (a plain link would carry no bearer token). */
  function setupExports(key) {
    var box = document.getElementById("exports");
    var role = state.user && state.user.role;
    box.hidden = !(role === "bureau" || role === "researcher" || role === "admin");
    Array.prototype.forEach.call(box.querySelectorAll("a.export-link"), function (a) {
      a.dataset.url = C.API + "/exports/" + a.dataset.path + "?period=" + encodeURIComponent(key.period) +
        "&county_code=" + encodeURIComponent(key.county_code);
      a.setAttribute("href", a.dataset.url);
    });
  }
  Array.prototype.forEach.call(document.querySelectorAll("#exports a.export-link"), function (a) {
    a.addEventListener("click", function (ev) {
      ev.preventDefault();
      if (a.dataset.path === "report.pdf") { reportJob(); return; }
      C.download(a.dataset.url, a.dataset.path).catch(function (err) {
        C.toast("导出失败 export failed: " + err.message, "error");
      });
    });
  });

  /** The report PDF is made by the job worker (POST /exports/report-jobs): the export row shows its
   * progress, then a download link; an unchanged store answers at once with the cached file. */
  var reportActive = null;  // "county/period" of the report job this page follows, while it runs
  function reportJob() {
    var box = document.getElementById("report-job"), key = state.key;
    if (!box || !key) return;
    var tag = key.county_code + "/" + key.period;
    if (reportActive === tag) { C.toast("报告生成中 the report is being made", "ok"); return; }
    reportActive = tag;
    function show(text, cls) { box.hidden = false; box.className = "report-job " + (cls || ""); C.clear(box).append(text); }
    function ready(job) {
      var url = (job.result || {}).download_url;
      C.clear(box).appendChild(h("a", { href: url, class: "report-download", onclick: function (ev) {
        ev.preventDefault();
        C.download(url, "report_" + key.county_code + "_" + key.period + ".pdf").catch(function (err) {
          C.toast("下载失败 download failed: " + err.message, "error");
        });
      } }, "报告已生成, 下载 download PDF (" + C.fmt(((job.result || {}).bytes || 0) / 1e6, 1) + " MB)"));
      box.className = "report-job done";
      box.dataset.state = "succeeded";
    }
    function poll(id) {
      C.api("jobs/" + id).then(function (job) {
        box.dataset.state = job.state;
        if (job.state === "succeeded") { reportActive = null; ready(job); return; }
        if (job.state === "failed" || job.state === "cancelled") {
          reportActive = null;
          show("报告失败 report " + job.state + ": " + (job.error || ""), "error");
          return;
        }
        show("报告生成中 report " + (job.state === "queued" ? "排队 queued" : Math.round(100 * job.progress) + " %"));
        setTimeout(function () { poll(id); }, 1000);
      }).catch(function (err) { reportActive = null; show("报告状态未知 " + err.message, "error"); });
    }
    show("报告提交中 submitting …");
    C.api("exports/report-jobs", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ period: key.period, county_code: key.county_code }) }).then(function (job) {
      box.dataset.jobId = String(job.id);
      if (job.state === "succeeded") { reportActive = null; ready(job); } else poll(job.id);
    }).catch(function (err) {
      reportActive = null;
      show((err.status === 409 ? "已有报告任务 a report job of yours is running: " : "报告失败 ") + err.message, "error");
    });
  }

  function start(user) {
    state.user = user;
    document.getElementById("user-name").textContent = user.name + " (" + user.role +
      (user.county_code ? " · " + user.county_code : "") + ")";
    C.api("map/periods").then(function (periods) {
      var sel = C.clear(document.getElementById("period-select"));
      periods.forEach(function (p) {
        sel.appendChild(h("option", { value: p.county_code + "/" + p.period },
          p.period + " · " + p.county_code + " (" + p.warnings + ")"));
      });
      if (!periods.length) {
        sel.appendChild(h("option", { value: "" }, "无预警 no warnings yet"));
        document.getElementById("list-count").textContent = "0 条预警 warnings";
        document.body.dataset.loaded = "empty";
        return;
      }
      var wanted = (window.location.hash || "").replace(/^#/, "");
      if (wanted && periods.some(function (p) { return p.county_code + "/" + p.period === wanted; })) sel.value = wanted;
      var go = function () {
        var parts = sel.value.split("/");
        window.history.replaceState(null, "", "#" + sel.value);
        loadPeriod({ county_code: parts[0], period: parts[1] });
      };
      sel.onchange = go;
      go();
    }).catch(function (err) { C.toast("加载失败 " + err.message, "error"); });
  }

  document.getElementById("logout").addEventListener("click", C.logout);
  C.onUnauthorized(function () { C.toast("令牌失效，请重新登录 token rejected: sign in again", "error"); });
  C.login().then(start);
  window.csponReview = { state: state, map: map, select: select };
})();
