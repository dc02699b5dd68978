/* Field app (phone, works without signal): the team's open patrol targets in route order on a map with the
 * imagery tiles, chips, links to the phone's map apps, and a verification form whose records are queued in
 * IndexedDB and sent when there is signal. "Download my targets" stores everything a patrol needs. */
"use strict";

(function () {
  var C = Cspon, O = CsponOffline, h = C.h;
  var state = {
    user: null, targets: [], details: {}, tiles: null, here: null, start: null, routeLength: null,
    queue: [], setAside: 0, syncing: false, fromCache: false, track: [], recording: false, selected: null
  };
  /** Zoom levels stored around each target: native .. native - 2 (native first, so a capped download
   * still covers every stop); the whole route's box at native - 5 .. - 3 (see tilePlan). */
  var NEAR_ZOOMS_BY_PRIORITY = [0, -1, -2], ROUTE_ZOOMS = [-5, -4, -3];
  /** Zooms offered offline beyond the native one (native tiles drawn enlarged, pixel for pixel). */
  var OFFLINE_OVERZOOM = 3;
  var NEAR_BUFFER_DEG = 0.003, MAX_TILES = 3000;

  // ------------------------------------------------------------------------------------------ helpers
  /** Great-circle distance in metres between two [lon, lat] points (WGS84 sphere). */
  function distance(a, b) {
    var R = 6371008.8, rad = Math.PI / 180;
    var dLat = (b[1] - a[1]) * rad, dLon = (b[0] - a[0]) * rad;
    var s = Math.sin(dLat / 2) * Math.sin(dLat / 2) +
      Math.cos(a[1] * rad) * Math.cos(b[1] * rad) * Math.sin(dLon / 2) * Math.sin(dLon / 2);
    return 2 * R * Math.asin(Math.min(1, Math.sqrt(s)));
  }

  /** Nearest-neighbour visiting order from `start` ([lon, lat]); used when the user has no team. */
  function routeOrder(targets, start) {
    var left = targets.slice().sort(function (a, b) { return (b.priority || 0) - (a.priority || 0); });
    var out = [];
    var pos = start;
    while (left.length) {
      var best = 0;
      if (pos) {
        var bestD = Infinity;
        left.forEach(function (t, i) {
          var d = distance(pos, [t.centroid_lon, t.centroid_lat]);
          if (d < bestD) { bestD = d; best = i; }
        });
      }
      var next = left.splice(best, 1)[0];
      pos = [next.centroid_lon, next.centroid_lat];
      out.push(next);
    }
    return out;
  }

  function online() { return navigator.onLine !== false; }

  function showNet() {
    var net = document.getElementById("net");
    var on = online();
    net.textContent = on ? "在线 online" : "离线 offline";
    net.className = "net " + (on ? "on" : "off");
    document.body.dataset.online = on ? "1" : "0";
  }

  // ---------------------------------------------------------------------------------------------- map
  var map = L.map("fmap", { zoomControl: true, attributionControl: false });
  map.setView([22.3, 114.2], 12);
  L.control.scale({ imperial: false }).addTo(map);
  var targetLayer = L.featureGroup().addTo(map);
  var routeLayer = L.layerGroup().addTo(map);
  var meLayer = L.layerGroup().addTo(map);
  var imagery = null, layerControl = null;

  /** Leaflet layer of imagery tiles (WebP) that, where a tile is neither cached nor reachable, draws the
   * enlarged part of the nearest cached coarser tile instead, so no grey gap shows at the zooms offered. */
  function fieldTileLayer(template, options) {
    var Layer = L.TileLayer.extend({
      createTile: function (coords, done) {
        var canvas = document.createElement("canvas");
        canvas.width = canvas.height = 256;
        canvas.setAttribute("role", "presentation");
        function attempt(d) {
          if (d > 8 || coords.z - d < 0) { canvas.classList.add("tile-missing"); done(new Error("no tile"), canvas); return; }
          var f = Math.pow(2, d), x = Math.floor(coords.x / f), y = Math.floor(coords.y / f);
          O.cachedBlob(C.tileUrl(template, coords.z - d, x, y)).then(function (blob) {
            if (!blob) return attempt(d + 1);
            return createImageBitmap(blob).then(function (bmp) {
              var ctx = canvas.getContext("2d"), size = 256 / f;
              ctx.imageSmoothingEnabled = false;
              ctx.drawImage(bmp, (coords.x % f) * size, (coords.y % f) * size, size, size, 0, 0, 256, 256);
              bmp.close();
              if (d) canvas.dataset.from = String(coords.z - d);
              done(null, canvas);
            });
          }).catch(function () { attempt(d + 1); });
        }
        attempt(0);
        return canvas;
      }
    });
    return new Layer(template, options);
  }

  function setTiles(index) {
    if (!index || !index.layers || !index.layers.after) return;
    if (imagery) return;
    var bounds = L.latLngBounds(index.bounds);
    var plan = index.offline || null;
    function layer(name) {
      var info = index.layers[name];
      return fieldTileLayer(webp(info.url), { bounds: bounds, minNativeZoom: info.minzoom,
        maxNativeZoom: info.max_native_zoom, maxZoom: info.max_native_zoom + OFFLINE_OVERZOOM,
        className: "imagery-tiles tiles-" + name });
    }
    imagery = { after: layer("after"), before: index.layers.before ? layer("before") : null };
    imagery.after.addTo(map);
    if (plan && plan.zooms && (state.fromCache || !online())) {
      // offline: only the zooms that were downloaded, inside the downloaded box
      map.setMinZoom(plan.zooms[0]);
      map.setMaxZoom(plan.zooms[1]);
      if (plan.box) map.setMaxBounds(L.latLngBounds([[plan.box[1], plan.box[0]], [plan.box[3], plan.box[2]]]).pad(0.05));
    }
    var base = {};
    base["后时相 after " + (index.layers.after.date || "")] = imagery.after;
    if (imagery.before) base["前时相 before " + (index.layers.before.date || "")] = imagery.before;
    layerControl = L.control.layers(base, { "目标 targets": targetLayer, "路线 route": routeLayer }, { collapsed: true })
      .addTo(map);
  }

  function drawTargets() {
    targetLayer.clearLayers();
    routeLayer.clearLayers();
    var line = state.start ? [[state.start[1], state.start[0]]] : [];
    state.targets.forEach(function (t, i) {
      var d = state.details[t.id];
      var color = C.category(t.category).color;
      var queued = queuedFor(t.id);
      var done = t.status !== "assigned" || queued;
      if (d && d.geometry) {
        L.geoJSON(d.geometry, { style: { color: done ? "#2bb35b" : color, weight: 3, fillOpacity: 0.15,
          className: "target-poly" } })
          .bindTooltip(C.h("span", {}, (i + 1) + " · " + C.category(t.category).zh + " · " + t.id))
          .on("click", function () { focusCard(t.id); })
          .addTo(targetLayer);
      }
      L.marker([t.centroid_lat, t.centroid_lon], {
        icon: L.divIcon({ className: "stop-icon" + (done ? " done" : ""), html: "", iconSize: [24, 24] }),
        title: t.id
      }).on("add", function (ev) { ev.target.getElement().textContent = String(i + 1); })
        .on("click", function () { focusCard(t.id); }).addTo(targetLayer);
      line.push([t.centroid_lat, t.centroid_lon]);
    });
    if (line.length > 1) L.polyline(line, { color: "#1f6feb", weight: 3, dashArray: "6 6", className: "route-line" }).addTo(routeLayer);
    if (targetLayer.getLayers().length && !state.fitted) {
      map.fitBounds(targetLayer.getBounds(), { padding: [20, 20], maxZoom: 17, animate: false });
      state.fitted = true;
    }
  }

  // ------------------------------------------------------------------------------------ navigation
  /** Initial bearing in degrees clockwise from north from a to b ([lon, lat]). */
  function bearing(a, b) {
    var rad = Math.PI / 180, p1 = a[1] * rad, p2 = b[1] * rad, dl = (b[0] - a[0]) * rad;
    var y = Math.sin(dl) * Math.cos(p2), x = Math.cos(p1) * Math.sin(p2) - Math.sin(p1) * Math.cos(p2) * Math.cos(dl);
    return (Math.atan2(y, x) / rad + 360) % 360;
  }

  var COMPASS = ["北 N", "东北 NE", "东 E", "东南 SE", "南 S", "西南 SW", "西 W", "西北 NW"];

  /** Distance and bearing from the phone to the selected target, with an arrow (works offline: GPS only).
   * With a compass heading the arrow points relative to where the phone faces, else relative to north. */
  function updateNav() {
    var box = document.getElementById("nav");
    var t = state.targets.filter(function (x) { return x.id === state.selected; })[0] ||
      state.targets.filter(function (x) { return x.status === "assigned" && !queuedFor(x.id); })[0];
    if (!t || !state.here) { box.hidden = true; return; }
    box.hidden = false;
    var here = [state.here.lon, state.here.lat], there = [t.centroid_lon, t.centroid_lat];
    var d = distance(here, there), b = bearing(here, there);
    var facing = state.here.compass;
    var turn = typeof facing === "number" && isFinite(facing) ? (b - facing + 360) % 360 : b;
    var arrow = document.getElementById("nav-arrow");
    arrow.style.transform = "rotate(" + turn.toFixed(0) + "deg)";
    arrow.dataset.bearing = b.toFixed(1);
    document.getElementById("nav-text").textContent = (state.targets.indexOf(t) + 1) + " · " + t.id + " · " +
      (d < 1000 ? Math.round(d) + " m" : (d / 1000).toFixed(2) + " km") + " · 方位 " + Math.round(b) + "° " +
      COMPASS[Math.round(b / 45) % 8] + " (直线 straight line)" +
      (typeof facing === "number" ? "" : " · 箭头以北为上 arrow: north up");
    box.dataset.distance = String(Math.round(d));
    box.dataset.target = t.id;
  }

  function select(id) { state.selected = id; updateNav(); }

  // ------------------------------------------------------------------------------------ GPS track
  /** Optional track recording during a patrol: every fix (≥ 5 m or ≥ 30 s from the last point) is kept on the
   * phone (IndexedDB, survives reloads) and sent with each check saved while recording (GET .../track.gpx). */
  function trackPoint(pos) {
    if (!state.recording) return;
    var last = state.track[state.track.length - 1];
    var now = new Date().toISOString();
    if (last && distance([last[0], last[1]], [pos.lon, pos.lat]) < 5 && Date.now() - new Date(last[2]).getTime() < 30000) return;
    state.track.push([Number(pos.lon.toFixed(7)), Number(pos.lat.toFixed(7)), localIso(Date.now()) || now]);
    O.put("track", { recording: true, points: state.track });
    showTrack();
  }

  function trackLength() {
    var m = 0;
    for (var i = 1; i < state.track.length; i++) m += distance(state.track[i - 1], state.track[i]);
    return m;
  }

  function showTrack() {
    var button = document.getElementById("track");
    button.setAttribute("aria-pressed", state.recording ? "true" : "false");
    button.textContent = state.recording ? "停止轨迹 stop track (" + state.track.length + " 点 points, " +
      (trackLength() / 1000).toFixed(2) + " km)" : "记录轨迹 record track";
    document.body.dataset.trackPoints = String(state.track.length);
  }

  function toggleTrack() {
    state.recording = !state.recording;
    if (state.recording) {
      state.track = [];
      if (state.here) trackPoint(state.here);
    }
    O.put("track", { recording: state.recording, points: state.track });
    showTrack();
  }

  function focusCard(id) {
    select(id);
    var card = document.querySelector("#targets li.target[data-id='" + CSS.escape(id) + "']");
    if (card) card.scrollIntoView({ block: "start", behavior: "smooth" });
  }

  function showMe(pos) {
    meLayer.clearLayers();
    if (!pos) return;
    L.circle([pos.lat, pos.lon], { radius: pos.accuracy || 0, color: "#1f6feb", weight: 1, fillOpacity: 0.1,
      interactive: false, className: "me-accuracy" }).addTo(meLayer);
    L.circleMarker([pos.lat, pos.lon], { radius: 7, color: "#fff", weight: 2, fillColor: "#1f6feb", fillOpacity: 1,
      className: "me-marker" }).addTo(meLayer);
  }

  function watchPosition() {
    if (!navigator.geolocation || !window.isSecureContext) return;
    navigator.geolocation.watchPosition(function (p) {
      var first = !state.here;
      state.here = { lon: p.coords.longitude, lat: p.coords.latitude, accuracy: p.coords.accuracy,
        heading: (p.coords.heading === null || isNaN(p.coords.heading)) ? (state.here && state.here.compass) : p.coords.heading,
        compass: state.here && state.here.compass, at: new Date(p.timestamp).toISOString() };
      showMe(state.here);
      trackPoint(state.here);
      updateNav();
      if (first) document.body.dataset.located = "1";
    }, function () { /* no position: the route starts at the highest-priority target */ },
    { enableHighAccuracy: true, maximumAge: 10000, timeout: 30000 });
    // compass heading where the device gives it (deviceorientationabsolute: alpha counter-clockwise from north)
    window.addEventListener("deviceorientationabsolute", function (ev) {
      if (ev.alpha === null || ev.alpha === undefined) return;
      var heading = (360 - ev.alpha) % 360;
      if (state.here) { state.here.compass = heading; if (state.here.heading === undefined || state.here.heading === null) state.here.heading = heading; }
      updateNav();
    });
  }

  // ----------------------------------------------------------------------------------------- targets
  function queuedFor(id) {
    return state.queue.filter(function (q) { return q.warning_id === id; })[0] || null;
  }

  function mapLinks(t) {
    var lat = t.centroid_lat.toFixed(6), lon = t.centroid_lon.toFixed(6);
    var label = encodeURIComponent(t.id);
    return h("div", { class: "links" },
      h("a", { href: "geo:" + lat + "," + lon + "?q=" + lat + "," + lon + "(" + label + ")", class: "geo-link" },
        "导航 open in maps"),
      h("a", { href: "https://uri.amap.com/marker?position=" + lon + "," + lat + "&name=" + label +
        "&coordinate=wgs84&callnative=1&src=cspon-rs", class: "amap-link", rel: "noopener", target: "_blank" }, "高德 Amap"));
  }

  function chipFigure(t) {
    var d = state.details[t.id];
    var url = d && d.chip_urls && d.chip_urls.before_after;
    if (!url) return null;
    var img = h("img", { class: "chip-img", alt: "前后对比 before/after " + t.id });
    var fig = h("figure", { class: "chip field-chip" }, img, h("figcaption", {}, "前时相 before | 后时相 after"));
    O.cachedBlob(url).then(function (blob) {
      if (!blob) { fig.replaceChildren(h("div", { class: "chip-missing" }, "切片未下载 chip not downloaded")); return; }
      img.src = URL.createObjectURL(blob);
    });
    return fig;
  }

  /** Photo picker with thumbnails and removal: each picked file is downscaled (long edge 2048 px, JPEG, EXIF
   * kept; CsponPhotos) and hashed on the phone, the same photo picked twice is kept once, and the phone's fix
   * and compass at that moment go with it (the server uses them where the file has no EXIF GPS/direction). */
  function photoField(t) {
    var id = "photos-" + t.id.replace(/[^0-9A-Za-z_-]/g, "_");
    var input = h("input", { type: "file", name: "photos", id: id, accept: "image/jpeg,image/png", multiple: true,
      capture: "environment" });
    var thumbs = h("ul", { class: "thumbs", "aria-label": "照片 photos" });
    var total = h("p", { class: "muted photo-total", role: "status" });
    var box = h("div", { class: "photo-field" }, h("label", { for: id }, "照片 photos"), input, thumbs, total);
    var picked = [];
    box.picked = picked;
    box.pending = Promise.resolve();
    function render() {
      C.clear(thumbs);
      picked.forEach(function (p, i) {
        var img = h("img", { class: "thumb-img", alt: p.name });
        img.src = URL.createObjectURL(p.blob);
        var remove = h("button", { type: "button", class: "link-btn remove-photo", "aria-label": "移除 remove " + p.name },
          "移除 remove");
        remove.addEventListener("click", function () { picked.splice(i, 1); render(); });
        thumbs.appendChild(h("li", { class: "thumb", dataset: { hash: p.hash || "" } }, img,
          h("span", { class: "thumb-cap" }, p.width + "×" + p.height + " · " + Math.round(p.size / 1024) + " KB" +
            (p.exif ? " · EXIF" : "")), remove));
      });
      var bytes = picked.reduce(function (s, p) { return s + p.size; }, 0);
      total.textContent = picked.length ? picked.length + " 张 photos · " + (bytes / 1048576).toFixed(2) + " MB" : "";
      box.dataset.count = String(picked.length);
      box.dataset.bytes = String(bytes);
    }
    input.addEventListener("change", function () {
      var files = Array.prototype.slice.call(input.files || []);
      input.value = "";
      box.dataset.busy = "1";
      box.pending = files.reduce(function (chain, f) {
        return chain.then(function () {
          return CsponPhotos.prepare(f, { original: !!state.photoOriginals }).then(function (p) {
            if (p.hash && picked.some(function (q) { return q.hash === p.hash; })) {
              C.toast("同一照片已添加 photo already added: " + f.name, "error");
              return;
            }
            p.last_modified = new Date(f.lastModified).toISOString();
            if (state.here) p.capture = { lon: state.here.lon, lat: state.here.lat, heading: state.here.heading };
            picked.push(p);
          }, function (err) { C.toast("照片无法处理 cannot read photo " + f.name + ": " + err.message, "error"); });
        });
      }, box.pending).then(function () { delete box.dataset.busy; render(); });
    });
    render();
    return box;
  }

  function verifyForm(t, card) {
    var safe = t.id.replace(/[^0-9A-Za-z_-]/g, "_");
    var photos = photoField(t);
    var gps = h("input", { type: "text", name: "gps", placeholder: "经度,纬度 lon,lat (默认当前位置 default: here)",
      inputmode: "decimal", "aria-label": "GPS" });
    var message = h("p", { class: "error", role: "alert" });
    var form = h("form", { class: "vform", dataset: { id: t.id } },
      h("fieldset", {},
        h("legend", { class: "muted" }, "核查结论 result"),
        Object.keys(C.RESULT).map(function (key, i) {
          return h("label", {}, h("input", { type: "radio", name: "result", value: key, required: true,
            checked: i === 0 ? true : null }), C.RESULT[key]);
        })),
      h("label", { for: "use-" + safe }, "实际用途 actual use"),
      h("input", { type: "text", name: "actual_use", id: "use-" + safe, placeholder: "e.g. 厂房", maxlength: "128" }),
      h("label", { for: "notes-" + safe }, "备注 notes"),
      h("textarea", { name: "notes", id: "notes-" + safe, rows: "3", placeholder: "现场情况", maxlength: "9000" }),
      photos,
      h("div", { class: "gps-row" }, gps, h("button", { type: "button", class: "link-btn", onclick: function () { locate(gps); } },
        "定位 use my location")),
      message,
      h("button", { type: "submit" }, "保存核查 save"));
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      photos.pending.then(function () { record(t, form, card, message, gps, photos.picked); });
    });
    return form;
  }

  function locate(input) {
    if (state.here) { input.value = state.here.lon.toFixed(6) + "," + state.here.lat.toFixed(6); return; }
    if (!navigator.geolocation) { C.toast("此设备无定位 no GPS on this device", "error"); return; }
    navigator.geolocation.getCurrentPosition(function (p) {
      input.value = p.coords.longitude.toFixed(6) + "," + p.coords.latitude.toFixed(6);
    }, function (err) { C.toast("定位失败 " + err.message, "error"); }, { enableHighAccuracy: true, timeout: 15000 });
  }

  /** Put a verification into the queue (IndexedDB), then send it when there is signal. */
  function record(t, form, card, message, gps, picked) {
    var chosen = form.querySelector("input[name=result]:checked");
    var item = {
      warning_id: t.id, expected_version: t.version, result: chosen ? chosen.value : "",
      actual_use: form.elements.actual_use.value.trim(), notes: form.elements.notes.value.trim(),
      observed_at: new Date().toISOString(), recorded_at: localIso(Date.now()), created_at: new Date().toISOString(),
      state: "pending",
      photos: picked.map(function (p) {
        return { name: p.name, type: p.type, size: p.size, original_size: p.original_size, hash: p.hash,
          last_modified: p.last_modified, blob: p.blob, capture: p.capture || null };
      })
    };
    if (state.recording && state.track.length > 1) item.track = state.track.slice();
    if (gps.value.trim()) {
      var parts = gps.value.split(",").map(function (x) { return parseFloat(x); });
      if (parts.length !== 2 || parts.some(isNaN)) { message.textContent = "GPS 格式: 经度,纬度 lon,lat"; return; }
      item.lon = parts[0]; item.lat = parts[1]; item.position_source = "typed";
    } else if (state.here) {
      item.lon = state.here.lon; item.lat = state.here.lat; item.accuracy_m = state.here.accuracy;
      item.position_at = state.here.at; item.position_source = "device";
      if (state.here.heading !== null && state.here.heading !== undefined) item.heading_deg = state.here.heading;
    }
    var button = form.querySelector("button[type=submit]");
    button.disabled = true;
    O.queueAdd(item).then(function () {
      form.remove();
      C.toast("已保存，待同步 saved, will sync " + t.id, "ok");
      return refreshQueue();
    }).then(function () {
      renderTargets();
      if (online()) sync();
    }).catch(function (err) {
      button.disabled = false;
      message.textContent = "无法保存 cannot save on this phone: " + err.message;
    });
  }

  function card(t, i) {
    var cat = C.category(t.category);
    var due = C.dueLabel(t.due_date);
    var queued = queuedFor(t.id);
    var done = t.status !== "assigned";
    var box = h("li", { class: "target" + (done ? " done" : "") + (queued ? " queued" : ""), dataset: { id: t.id } },
      h("div", { class: "head" }, h("span", { class: "order" }, String(i + 1)),
        h("button", { type: "button", class: "link-btn nav-btn", "aria-label": "指向 point to " + t.id,
          onclick: function () { select(t.id); } }, "➤"),
        h("div", { class: "title" }, h("strong", {}, cat.zh), " ", h("span", { class: "muted" }, t.id)),
        h("span", { class: "badge status" }, C.STATUS[t.status] || t.status)),
      h("div", { class: "meta" },
        (t.township_name || "–") + " · " + C.fmt(t.area_mu, 1) + " 亩 · P " + C.fmt(t.priority, 0) +
        (t.flags && t.flags.length ? " · " + t.flags.join(", ") : "") +
        (t.leg_m ? " · " + (i === 0 ? "距起点 from start " : "距上一点 from previous ") + (t.leg_m / 1000).toFixed(1) + " km" : ""),
        due ? h("span", { class: "due" + (due.indexOf("逾期") === 0 ? " overdue" : "") }, " · " + due) : null),
      chipFigure(t),
      mapLinks(t));
    if (done) {
      box.appendChild(h("p", { class: "done-note" }, C.verdict(t)));
    } else if (queued) {
      box.appendChild(h("p", { class: "queued-note" }, (queued.state === "conflict" ? "冲突 conflict — 见上方队列 see queue: " :
        "已保存，待同步 saved, waiting for signal: ") + (C.RESULT[queued.result] || queued.result)));
    } else {
      var open = h("button", { type: "button", class: "verify-btn" }, "核查 verify");
      open.addEventListener("click", function () {
        open.remove();
        box.appendChild(verifyForm(t, box));
      });
      box.appendChild(open);
    }
    return box;
  }

  function updateSummary() {
    var open = state.targets.filter(function (t) { return t.status === "assigned" && !queuedFor(t.id); }).length;
    var total = state.routeLength || state.targets.reduce(function (s, t) { return s + (t.leg_m || 0); }, 0);
    document.getElementById("summary").textContent = C.today() + " · " + (state.user.team || "–") + " · " +
      open + " / " + state.targets.length + " 待核查 open" + (total ? " · 路线 " + (total / 1000).toFixed(1) + " km " + (state.alongRoads ? "(沿道路 along roads)" :
        "(直线 straight lines)") : "") +
      (state.fromCache ? " · 离线数据 offline copy " + C.fmtTime(state.downloadedAt) : "");
  }

  function renderTargets() {
    var list = C.clear(document.getElementById("targets"));
    var pos = state.start;
    state.targets.forEach(function (t) {
      var here = [t.centroid_lon, t.centroid_lat];
      t.leg_m = pos ? distance(pos, here) : null;
      pos = here;
    });
    state.targets.forEach(function (t, i) { list.appendChild(card(t, i)); });
    if (!state.targets.length) list.appendChild(h("li", { class: "target muted" }, "今日无待核查目标 nothing assigned to your team"));
    updateSummary();
    drawTargets();
    updateNav();
  }

  // ------------------------------------------------------------------------------------------- queue
  function refreshQueue() {
    return Promise.all([O.queueAll(), O.setAsideAll()]).then(function (res) {
      state.queue = res[0];
      state.setAside = res[1].length;
      renderQueue();
    });
  }

  function renderQueue() {
    var box = document.getElementById("queue");
    var list = C.clear(document.getElementById("queue-list"));
    document.getElementById("queue-count").textContent = String(state.queue.length);
    box.hidden = !state.queue.length && !state.setAside;
    state.queue.forEach(function (q) {
      var label = { pending: "待同步 pending", conflict: "冲突 conflict", error: "被拒绝 refused" }[q.state] || q.state;
      var row = h("li", { class: "qitem q-" + q.state, dataset: { id: q.warning_id, state: q.state } },
        h("div", {}, h("strong", {}, q.warning_id), " · ", C.RESULT[q.result] || q.result,
          q.actual_use ? " · " + q.actual_use : "", q.photos.length ? " · " + q.photos.length + " 张照片 photos" : "",
          " ", h("span", { class: "badge qstate" }, label)),
        h("div", { class: "muted qage" }, "记录于 recorded " + C.fmtTime(q.observed_at) + " · " + age(q.created_at || q.observed_at)));
      if (q.state === "conflict" && q.server) {
        row.appendChild(h("p", { class: "conflict-text" },
          "服务器上已被更新 changed on the server: " + (C.STATUS[q.server.status] || q.server.status) +
          (q.server.verification_result ? " · " + (C.RESULT[q.server.verification_result] || q.server.verification_result) : "") +
          (q.server.by ? " · " + q.server.by : "") + (q.server.at ? " · " + C.fmtTime(q.server.at) : "") +
          " (v" + q.server.version + ")"));
      }
      if (q.state === "error" && q.error) row.appendChild(h("p", { class: "error" }, q.error));
      if (q.state !== "pending") {
        row.appendChild(h("div", { class: "qactions" },
          h("button", { type: "button", class: "resubmit", onclick: function () { resubmit(q); } },
            q.state === "conflict" ? "按最新版本提交 send on top of theirs" : "重试 retry"),
          h("button", { type: "button", class: "set-aside", onclick: function () { putAside(q); } },
            "保留在本机不发送 keep on phone, don't send")));
      }
      list.appendChild(row);
    });
    if (state.setAside) list.appendChild(h("li", { class: "muted" }, "本机保留 kept on this phone, not sent: " + state.setAside));
    var stale = state.queue.filter(function (q) {
      return Date.now() - new Date(q.created_at || q.observed_at).getTime() > 86400000;
    }).length;
    var warn = document.getElementById("queue-warning");
    warn.hidden = !stale;
    warn.textContent = stale ? "⚠ " + stale + " 条核查超过1天未发送 unsent for more than a day: 请到有信号处同步 " +
      "find signal and sync (手机可能清理离线数据 the phone may clear offline data)" : "";
    document.body.dataset.stale = String(stale);
    document.body.dataset.queue = String(state.queue.length);
    document.body.dataset.conflicts = String(state.queue.filter(function (q) { return q.state === "conflict"; }).length);
  }

  /** "5 分钟前 5 min ago" style age of an ISO time. */
  function age(iso) {
    var ms = Date.now() - new Date(iso).getTime();
    if (!isFinite(ms)) return "";
    var min = Math.max(0, Math.round(ms / 60000));
    if (min < 60) return min + " 分钟前 min ago";
    if (min < 2880) return Math.round(min / 60) + " 小时前 h ago";
    return Math.round(min / 1440) + " 天前 days ago";
  }

  function resubmit(q) {
    if (q.server && q.server.version) q.expected_version = q.server.version;
    q.state = "pending";
    delete q.error;
    O.queuePut(q).then(refreshQueue).then(function () { renderTargets(); sync(); });
  }

  function putAside(q) {
    O.setAside(q).then(refreshQueue).then(renderTargets);
  }

  /** A time as ISO 8601 with the phone's own UTC offset (2026-05-01T09:30:00+08:00): the server reads the
   * photos' EXIF times, which carry no zone, in that offset. Unparseable input gives "". */
  function localIso(value) {
    var d = new Date(value);
    if (isNaN(d.getTime())) return "";
    var off = -d.getTimezoneOffset(), sign = off >= 0 ? "+" : "-", a = Math.abs(off);
    function two(n) { return (n < 10 ? "0" : "") + n; }
    return d.getFullYear() + "-" + two(d.getMonth() + 1) + "-" + two(d.getDate()) + "T" + two(d.getHours()) + ":" +
      two(d.getMinutes()) + ":" + two(d.getSeconds()) + sign + two(Math.floor(a / 60)) + ":" + two(a % 60);
  }

  function finite(x) { return typeof x === "number" && isFinite(x); }

  /** The multipart body of a queued verification. Capture details travel as their own fields (accuracy_m,
   * heading_deg, position_at, recorded_at, photo_times); items queued by older versions of the app have the
   * same keys (or fewer) and sync the same way; notes are sent as the user typed them. */
  function formFor(q) {
    var data = new FormData();
    data.append("result", q.result);
    data.append("expected_version", String(q.expected_version));
    if (q.actual_use) data.append("actual_use", q.actual_use);
    if (q.notes) data.append("notes", q.notes.slice(0, 10000));
    if (finite(q.lon) && finite(q.lat)) {
      data.append("lon", String(q.lon));
      data.append("lat", String(q.lat));
      if (finite(q.accuracy_m) && q.accuracy_m >= 0) data.append("accuracy_m", String(q.accuracy_m));
      if (!q.drop_times && q.position_at && localIso(q.position_at)) data.append("position_at", localIso(q.position_at));
    }
    if (finite(q.heading_deg)) data.append("heading_deg", String(((q.heading_deg % 360) + 360) % 360));
    var recorded = q.recorded_at || q.observed_at;
    if (!q.drop_times && recorded && localIso(recorded)) data.append("recorded_at", localIso(recorded));
    if (q.observed_at) data.append("observed_at", q.observed_at);
    var times = q.photos.map(function (p) { return p.last_modified ? localIso(p.last_modified) : ""; });
    if (!q.drop_times && times.some(function (t) { return t; })) {
      times.forEach(function (t) { data.append("photo_times", t); });
    }
    if (q.photos.some(function (p) { return p.capture; })) {
      q.photos.forEach(function (p) {
        var c = p.capture;
        data.append("photo_capture", c && finite(c.lon) && finite(c.lat) ? JSON.stringify({ lon: c.lon, lat: c.lat,
          heading: finite(c.heading) ? ((c.heading % 360) + 360) % 360 : null }) : "");
      });
    }
    if (q.track && q.track.length > 1) data.append("track", JSON.stringify(q.track));
    q.photos.forEach(function (p) { data.append("photos", p.blob, p.name); });
    return data;
  }

  /** Send the pending verifications in order; a 409 becomes a conflict the user resolves, never a loss. */
  function sync() {
    if (state.syncing) return Promise.resolve();
    state.syncing = true;
    document.body.dataset.syncing = "1";
    var pending = state.queue.filter(function (q) { return q.state === "pending"; });
    var sent = 0;
    var ready = pending.length ? C.ensureSession() : Promise.resolve();
    function next(i) {
      if (i >= pending.length) return Promise.resolve();
      var q = pending[i];
      return C.api("warnings/" + encodeURIComponent(q.warning_id) + "/verifications", { method: "POST", body: formFor(q) })
        .then(function (res) {
          sent++;
          applyWarning(res.warning);
          return O.queueDelete(q.qid).then(function () { return next(i + 1); });
        }, function (err) {
          if (C.isNetworkError(err)) throw err;  // no signal after all: keep everything pending
          if (err.status === 401) throw err;
          if (err.status === 409) {
            return C.api("warnings/" + encodeURIComponent(q.warning_id)).then(function (w) {
              var last = (w.verifications || []).slice(-1)[0] || {};
              q.server = { status: w.status, version: w.version, verification_result: w.verification_result,
                by: last.by || null, at: last.created_at || w.updated_at || null };
              applyWarning(w);
            }, function () { q.server = q.server || { status: "?", version: q.expected_version }; }).then(function () {
              q.state = "conflict";
              q.error = err.message;
              return O.queuePut(q);
            }).then(function () { return next(i + 1); });
          }
          if (err.status === 422 && !q.drop_times && /^(recorded_at|position_at|photo_times)\b/.test(err.message)) {
            // The phone's clock is off (a time in the future or before 2000): the check itself is still
            // good, so send it again without the device times and keep them, as recorded, in the notes.
            q.drop_times = true;
            q.notes = (q.notes ? q.notes + "\n" : "") + "[设备时间 device time " + (q.recorded_at || q.observed_at) +
              " — 时钟异常 clock rejected: " + err.message + "]";
            return O.queuePut(q).then(function () { return next(i); });
          }
          q.state = "error";
          q.error = err.message;
          return O.queuePut(q).then(function () { return next(i + 1); });
        });
    }
    return ready.then(function () { return next(0); }).catch(function (err) {
      C.toast((err.status === 401 ? "请重新登录 sign in again: " : "无信号，稍后同步 no signal, will retry: ") + err.message, "error");
    }).then(function () {
      state.syncing = false;
      delete document.body.dataset.syncing;
      return refreshQueue();
    }).then(function () {
      if (sent) C.toast("已同步 synced " + sent, "ok");
      renderTargets();
      document.body.dataset.synced = String(Number(document.body.dataset.synced || 0) + 1);
    });
  }

  /** Take a warning as the service now has it into the target list and the offline copy. */
  function applyWarning(w) {
    state.targets.forEach(function (t) {
      if (t.id === w.id) ["status", "version", "verification_result", "assigned_team", "due_date"].forEach(function (k) {
        if (w[k] !== undefined) t[k] = w[k];
      });
    });
    return O.put("targets", { targets: state.targets, start: state.start, routeLength: state.routeLength,
      downloadedAt: state.downloadedAt || null });
  }

  // ---------------------------------------------------------------------------------------- loading
  /**
   * The team's assigned warnings in visiting order, from the service (GET /patrols/{team}: nearest
   * neighbour + 2-opt from the phone's position or the highest-priority target), or the offline copy.
   */
  function fetchTargets() {
    return C.api("warnings?status=assigned&limit=5000").then(function (page) {
      var items = page.items;
      if (!items.length) return { targets: [], start: null, routeLength: null };
      var top = items.slice().sort(function (a, b) { return (b.priority || 0) - (a.priority || 0); })[0];
      var start = state.here ? [state.here.lon, state.here.lat] : [top.centroid_lon, top.centroid_lat];
      if (!state.user.team || items.length > 500) return { targets: routeOrder(items, start), start: start, routeLength: null };
      return C.api("patrols/" + encodeURIComponent(state.user.team) + "?limit=500&start_lon=" + start[0] +
        "&start_lat=" + start[1]).then(function (route) {
        return { targets: route.stops, start: start, routeLength: route.length_m, alongRoads: !!route.along_roads,
          photoMode: route.photo_mode || "downscaled" };
      });
    });
  }

  function useTargets(got, fromCache) {
    state.targets = got.targets || [];
    state.start = got.start || null;
    state.routeLength = got.routeLength || null;
    state.alongRoads = !!got.alongRoads;
    state.photoOriginals = got.photoMode === "original";
    state.fromCache = !!fromCache;
    state.downloadedAt = got.downloadedAt || state.downloadedAt || null;
  }

  function loadOffline() {
    return Promise.all([O.get("targets"), O.get("details"), O.get("tiles")]).then(function (res) {
      if (!res[0]) throw new Error("没有离线数据 nothing downloaded on this phone yet");
      useTargets(res[0], true);
      state.details = res[1] || {};
      state.tiles = res[2] || null;
    });
  }

  function periodOf(targets) {
    var t = targets[0];
    return t ? { county_code: t.county_code, period: t.period } : null;
  }

  function load() {
    var work = C.auth.offline || !online() ? loadOffline() : fetchTargets().then(function (got) {
      useTargets(got, false);
      return Promise.all([O.get("details"), O.get("tiles")]).then(function (res) {
        state.details = res[0] || {};
        state.tiles = res[1] || null;
        var key = periodOf(state.targets);
        if (!state.tiles && key) {
          return C.api("map/" + key.county_code + "/" + key.period + "/tiles").then(function (idx) { state.tiles = idx; })
            .catch(function () { /* no imagery: map without tiles */ });
        }
      }).then(function () {
        var missing = state.targets.filter(function (t) { return !state.details[t.id]; });
        if (!missing.length) return;
        return C.api("warnings.geojson?status=assigned&limit=5000").then(function (gj) {
          (gj.features || []).forEach(function (f) {
            var id = String((f.properties || {}).id !== undefined ? f.properties.id : f.id);
            if (!state.details[id]) state.details[id] = { geometry: f.geometry, id: id };
          });
        }).catch(function () { /* polygons are optional */ });
      });
    }, function (err) {
      if (C.isNetworkError(err)) return loadOffline();
      throw err;
    });
    return work.then(function () {
      setTiles(state.tiles);
      renderTargets();
      setupRouteFiles();
      document.body.dataset.loaded = "1";
    }).catch(function (err) {
      C.toast("加载失败 " + err.message, "error");
      renderTargets();
      document.body.dataset.loaded = "1";
    });
  }

  // --------------------------------------------------------------------------------------- download
  function status(text) { document.getElementById("download-status").textContent = text; }

  /** Fetch `urls` (tiles, chips) with the page's credentials into the Cache Storage, `limit` at a time;
   * counts the bytes stored (cached copies included). */
  function store(urls, limit, progress) {
    var i = 0, ok = 0, failed = 0, bytes = 0;
    function worker() {
      if (i >= urls.length) return Promise.resolve();
      var url = urls[i++];
      return O.cachedSize(url).then(function (size) {
        if (size !== null) { ok++; bytes += size; return; }
        return fetchInto(url).then(function (n) { ok++; bytes += n; }, function () { failed++; });
      }).then(function () { progress(ok, failed, bytes); return worker(); });
    }
    var workers = [];
    for (var k = 0; k < limit; k++) workers.push(worker());
    return Promise.all(workers).then(function () { return { ok: ok, failed: failed, bytes: bytes }; });
  }

  /** Fetch one URL into the cache; resolves to its size in bytes. */
  function fetchInto(url) {
    return C.api(url, { raw: true }).then(function (resp) { return resp.blob(); }).then(function (blob) {
      return O.cachePut(url, new Response(blob, { headers: { "Content-Type": blob.type } })).then(function () { return blob.size; });
    });
  }

  /** Imagery URL template of a layer as WebP (a fifth of the PNG; masks and probability stay PNG). */
  function webp(template) { return template.replace(/\.png$/, ".webp"); }

  /** Zooms stored: around each target native, native - 1, native - 2 (deeper zooms draw the native tiles
   * enlarged, pixel for pixel, so they are not downloaded); the whole route's box at native - 5 .. - 3, never
   * below the coarsest zoom the service serves (minzoom). Returns {urls, zooms: [lo, hi], box}. */
  function tilePlan(index) {
    var seen = {}, out = [];
    var layers = ["after", "before"].filter(function (n) { return index.layers[n]; });
    if (!layers.length) return { urls: out, zooms: null, box: null };
    var info = index.layers[layers[0]];
    var native = info.max_native_zoom, minzoom = info.minzoom || 0;
    var ib = index.bounds;  // [[s, w], [n, e]]
    function clip(b) {
      return ib ? [Math.max(b[0], ib[0][1]), Math.max(b[1], ib[0][0]), Math.min(b[2], ib[1][1]), Math.min(b[3], ib[1][0])] : b;
    }
    var lo = Infinity;
    function add(bbox, zooms) {
      bbox = clip(bbox);
      if (bbox[0] > bbox[2] || bbox[1] > bbox[3]) return;
      zooms.forEach(function (dz) {
        var z = native + dz;
        if (z < minzoom || z < 0) return;
        lo = Math.min(lo, z);
        C.tilesFor(bbox, z).forEach(function (t) {
          layers.forEach(function (name) {
            var url = C.tileUrl(webp(index.layers[name].url), t.z, t.x, t.y);
            if (!seen[url] && out.length < MAX_TILES) { seen[url] = 1; out.push(url); }
          });
        });
      });
    }
    var boxes = state.targets.map(function (t) {
      var d = state.details[t.id];
      var b = d && d.geometry ? C.bboxOf(d.geometry) : [t.centroid_lon, t.centroid_lat, t.centroid_lon, t.centroid_lat];
      return [b[0] - NEAR_BUFFER_DEG, b[1] - NEAR_BUFFER_DEG, b[2] + NEAR_BUFFER_DEG, b[3] + NEAR_BUFFER_DEG];
    });
    var all = boxes.reduce(function (a, b) {
      return [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[2], b[2]), Math.max(a[3], b[3])];
    }, [Infinity, Infinity, -Infinity, -Infinity]);
    if (state.start) all = [Math.min(all[0], state.start[0]), Math.min(all[1], state.start[1]),
      Math.max(all[2], state.start[0]), Math.max(all[3], state.start[1])];
    // the route box at its coarse zooms first, then zoom by zoom (native first) every target
    if (isFinite(all[0])) add(all, ROUTE_ZOOMS.slice().reverse());
    if (lo === Infinity) add(all, [Math.max(minzoom, native - 2) - native]);  // coarse zooms not served
    NEAR_ZOOMS_BY_PRIORITY.forEach(function (dz) { boxes.forEach(function (b) { add(b, [dz]); }); });
    return { urls: out, zooms: isFinite(lo) ? [lo, native + OFFLINE_OVERZOOM] : null, box: isFinite(all[0]) ? clip(all) : null };
  }

  function mb(bytes) { return (bytes / 1048576).toFixed(2) + " MB"; }

  /** Seconds to move `bytes` at `kbit` kbit/s, as "N s" / "N 分钟 min". */
  function duration(bytes, kbit) {
    var s = bytes * 8 / (kbit * 1000);
    return s < 90 ? Math.max(1, Math.round(s)) + " s" : Math.round(s / 60) + " 分钟 min";
  }

  /** Average size of a few of `urls` (spread over the list), fetched into the cache as part of the download. */
  function sampleSize(urls, n) {
    if (!urls.length) return Promise.resolve(0);
    var picks = [], step = Math.max(1, Math.floor(urls.length / n));
    for (var i = 0; i < urls.length && picks.length < n; i += step) picks.push(urls[i]);
    return Promise.all(picks.map(function (u) {
      return O.cachedSize(u).then(function (size) { return size !== null ? size : fetchInto(u); }).catch(function () { return null; });
    })).then(function (sizes) {
      var got = sizes.filter(function (x) { return x !== null; });
      return got.length ? got.reduce(function (a, b) { return a + b; }, 0) / got.length : 0;
    });
  }

  /** Step 1 of "download my targets": the targets, their polygons and the tile index, then a size and time
   * estimate (a few tiles and a chip are fetched to measure them) with a button to start step 2. */
  function download() {
    var button = document.getElementById("download");
    if (!online()) { status("离线，无法下载 offline: cannot download now"); return Promise.resolve(); }
    persistStorage();
    button.disabled = true;
    delete document.body.dataset.downloaded;
    delete document.body.dataset.estimateBytes;
    status("下载目标 downloading targets …");
    var details = {};
    return fetchTargets().then(function (got) {
      useTargets(got, false);
      var i = 0;
      function one() {
        if (i >= state.targets.length) return Promise.resolve();
        var t = state.targets[i++];
        status("图斑 polygons " + i + " / " + state.targets.length);
        return C.api("warnings/" + encodeURIComponent(t.id)).then(function (d) {
          details[t.id] = { id: d.id, geometry: d.geometry, reasons: d.reasons, chip_urls: d.chip_urls || {},
            permits: d.permits, version: d.version };
        }).then(one);
      }
      return one();
    }).then(function () {
      state.details = details;
      var key = periodOf(state.targets);
      return key ? C.api("map/" + key.county_code + "/" + key.period + "/tiles").catch(function () { return null; }) : null;
    }).then(function (index) {
      state.tiles = index;
      var plan = index ? tilePlan(index) : { urls: [], zooms: null, box: null };
      var chips = Object.keys(details).map(function (id) { return details[id].chip_urls.before_after; }).filter(Boolean);
      status("估算大小 estimating size …");
      return Promise.all([sampleSize(plan.urls, 8), sampleSize(chips, 1)]).then(function (avg) {
        var json = JSON.stringify(details).length + JSON.stringify(state.targets).length;
        var total = Math.round(avg[0] * plan.urls.length + avg[1] * chips.length + json);
        showEstimate(plan, chips, total);
      });
    }).catch(function (err) {
      status("下载失败 download failed: " + err.message);
    }).then(function () { button.disabled = false; });
  }

  function showEstimate(plan, chips, total) {
    var n = state.targets.length;
    var box = C.clear(document.getElementById("download-estimate"));
    box.hidden = false;
    var go = h("button", { type: "button", id: "download-go", class: "tool" }, "开始下载 start download");
    var cancel = h("button", { type: "button", class: "link-btn" }, "取消 cancel");
    go.addEventListener("click", function () { box.hidden = true; fetchAll(plan, chips, total); });
    cancel.addEventListener("click", function () { box.hidden = true; status(""); });
    box.appendChild(h("span", { id: "estimate-text" }, "预计 estimate: " + n + " 个目标 targets, " + plan.urls.length +
      " 个瓦片 tiles" + (plan.zooms ? " (z" + plan.zooms[0] + "–" + (plan.zooms[1] - OFFLINE_OVERZOOM) + ")" : "") +
      ", " + chips.length + " 张切片 chips ≈ " + mb(total) + (n ? " (" + mb(total / n) + " / 目标 target)" : "") +
      "; 3G 400 kbit/s ≈ " + duration(total, 400) + ", 4G 5 Mbit/s ≈ " + duration(total, 5000)));
    box.appendChild(go);
    box.appendChild(cancel);
    status("");
    document.body.dataset.estimateBytes = String(total);
  }

  /** Step 2: chips and tiles into the Cache Storage, then the targets, polygons and tile plan into IndexedDB. */
  function fetchAll(plan, chips, estimate) {
    var button = document.getElementById("download");
    button.disabled = true;
    var started = Date.now();
    return store(chips, 2, function (ok, failed) { status("切片 chips " + ok + " / " + chips.length + (failed ? " (" + failed + " ✗)" : "")); })
      .then(function (chipRes) {
        return store(plan.urls, 4, function (ok, failed, bytes) {
          status("瓦片 tiles " + ok + " / " + plan.urls.length + " · " + mb(bytes) + (failed ? " (" + failed + " ✗)" : ""));
        }).then(function (tileRes) { return { chips: chipRes, tiles: tileRes, nTiles: plan.urls.length }; });
      }).then(function (res) {
        state.downloadedAt = new Date().toISOString();
        state.tiles.offline = { zooms: plan.zooms, box: plan.box };
        var json = JSON.stringify(state.details).length + JSON.stringify(state.targets).length;
        res.bytes = res.tiles.bytes + res.chips.bytes + json;
        return Promise.all([
          O.put("targets", { targets: state.targets, start: state.start, routeLength: state.routeLength,
            downloadedAt: state.downloadedAt }),
          O.put("details", state.details), O.put("tiles", state.tiles), O.put("user", state.user)
        ]).then(function () { return res; });
      }).then(function (res) {
        var n = state.targets.length;
        status("已下载 downloaded " + C.fmtTime(state.downloadedAt) + ": " + n + " 个目标 targets, " +
          res.chips.ok + " 张切片 chips, " + res.tiles.ok + " / " + res.nTiles + " 个瓦片 tiles, " + mb(res.bytes) +
          (n ? " (" + mb(res.bytes / n) + " / 目标 target)" : "") + " · 预计 estimated " + mb(estimate) + " · " +
          Math.round((Date.now() - started) / 1000) + " s" +
          (res.tiles.failed + res.chips.failed ? " (" + (res.tiles.failed + res.chips.failed) + " 失败 failed)" : ""));
        setTiles(state.tiles);
        renderTargets();
        document.body.dataset.downloadedBytes = String(res.bytes);
        document.body.dataset.downloaded = String(res.tiles.ok);
      }).catch(function (err) {
        status("下载失败 download failed: " + err.message);
      }).then(function () { button.disabled = false; });
  }

  /** The team's route as a file for other apps (GET /patrols/{team}?format=...), from the same start. */
  function setupRouteFiles() {
    var box = document.getElementById("route-files");
    box.hidden = !(state.user.team && state.targets.length && online() && !C.auth.offline);
  }
  Array.prototype.forEach.call(document.querySelectorAll("#route-files a"), function (a) {
    a.addEventListener("click", function (ev) {
      ev.preventDefault();
      var s = state.start || [state.targets[0].centroid_lon, state.targets[0].centroid_lat];
      C.download("patrols/" + encodeURIComponent(state.user.team) + "?format=" + a.dataset.fmt + "&limit=500&start_lon=" +
        s[0] + "&start_lat=" + s[1], "patrol." + a.dataset.fmt).catch(function (err) {
        C.toast("下载失败 " + err.message, "error");
      });
    });
  });

  // ------------------------------------------------------------------------------------------ start
  /** Ask the browser to keep the downloads and the queue (not evicted under storage pressure or, on iOS,
   * after 7 days unused); the answer is shown with the download status. */
  function persistStorage() {
    if (!navigator.storage || !navigator.storage.persist) { document.body.dataset.persist = "unsupported"; return Promise.resolve(false); }
    return navigator.storage.persisted().then(function (already) {
      return already || navigator.storage.persist();
    }).then(function (ok) {
      document.body.dataset.persist = ok ? "granted" : "denied";
      return ok;
    }, function () { document.body.dataset.persist = "failed"; return false; });
  }

  function start(user) {
    state.user = user;
    persistStorage();
    document.getElementById("user-name").textContent = user.name + (user.team ? " · " + user.team : "");
    if (!C.auth.offline) O.put("user", user);
    O.get("track").then(function (saved) {
      if (saved && saved.points) { state.track = saved.points; state.recording = !!saved.recording; }
      showTrack();
    }).catch(function () { /* no track kept */ });
    refreshQueue().then(load).then(function () { if (online() && state.queue.length) sync(); });
    watchPosition();
  }

  function registerWorker() {
    if (!("serviceWorker" in navigator)) return;
    navigator.serviceWorker.register("/sw.js", { scope: "/" }).then(function (reg) {
      document.body.dataset.sw = reg.active ? "active" : "installing";
      return navigator.serviceWorker.ready;
    }).then(function () { document.body.dataset.sw = "active"; })
      .catch(function (err) { document.body.dataset.sw = "failed: " + err.message; });
  }

  window.addEventListener("online", function () { showNet(); sync(); });
  window.addEventListener("offline", showNet);
  showNet();
  registerWorker();
  document.getElementById("download").addEventListener("click", download);
  document.getElementById("track").addEventListener("click", toggleTrack);
  document.getElementById("sync").addEventListener("click", function () {
    if (!online()) { C.toast("离线 offline: 有信号时自动同步 syncs when there is signal", "error"); return; }
    sync();
  });
  document.getElementById("logout").addEventListener("click", function () {
    if (state.queue.length && !window.confirm("还有 " + state.queue.length + " 条未同步 unsent verifications stay on this phone. 退出? Log out?")) return;
    O.wipe(false).then(C.logout, C.logout);
  });
  C.login({ offline: function () { return O.get("user").catch(function () { return null; }); } }).then(start);
  window.csponField = { state: state, routeOrder: routeOrder, sync: sync, download: download, map: map };
})();
