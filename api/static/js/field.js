/* Field view (phone): the team's open patrol targets in route order, links to the phone's map app and a
 * verification form with photos. */
"use strict";

(function () {
  var C = Cspon, h = C.h;
  var state = { user: null, targets: [], here: null, start: null, routeLength: null };

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

  function today() {
    var d = new Date();
    return d.getFullYear() + "-" + String(d.getMonth() + 1).padStart(2, "0") + "-" + String(d.getDate()).padStart(2, "0");
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

  function verifyForm(t, card) {
    var gps = h("input", { type: "text", name: "gps", placeholder: "经度,纬度 lon,lat (可选 optional)",
      inputmode: "decimal", "aria-label": "GPS" });
    var message = h("p", { class: "error", role: "alert" });
    var form = h("form", { class: "vform", dataset: { id: t.id } },
      h("fieldset", {},
        h("legend", { class: "muted" }, "核查结论 result"),
        Object.keys(C.RESULT).map(function (key, i) {
          return h("label", {}, h("input", { type: "radio", name: "result", value: key, required: true,
            checked: i === 0 ? true : null }), C.RESULT[key]);
        })),
      h("input", { type: "text", name: "actual_use", placeholder: "实际用途 actual use (e.g. 厂房)", maxlength: "128" }),
      h("textarea", { name: "notes", rows: "3", placeholder: "现场情况 notes", maxlength: "10000" }),
      h("label", {}, "照片 photos ", h("input", { type: "file", name: "photos", accept: "image/jpeg,image/png",
        multiple: true, capture: "environment" })),
      h("div", { class: "gps-row" }, gps, h("button", { type: "button", class: "link-btn", onclick: function () { locate(gps); } },
        "定位 use my location")),
      message,
      h("button", { type: "submit" }, "提交核查 submit"));
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      submit(t, form, card, message, gps);
    });
    return form;
  }

  function locate(input) {
    if (!navigator.geolocation) { C.toast("此设备无定位 no GPS on this device", "error"); return; }
    navigator.geolocation.getCurrentPosition(function (p) {
      input.value = p.coords.longitude.toFixed(6) + "," + p.coords.latitude.toFixed(6);
    }, function (err) { C.toast("定位失败 " + err.message, "error"); }, { enableHighAccuracy: true, timeout: 15000 });
  }

  function submit(t, form, card, message, gps) {
    var data = new FormData();
    var chosen = form.querySelector("input[name=result]:checked");
    data.append("result", chosen ? chosen.value : "");
    data.append("expected_version", String(t.version));
    ["actual_use", "notes"].forEach(function (name) {
      var v = form.elements[name].value.trim();
      if (v) data.append(name, v);
    });
    if (gps.value.trim()) {
      var parts = gps.value.split(",").map(function (x) { return parseFloat(x); });
      if (parts.length !== 2 || parts.some(isNaN)) { message.textContent = "GPS 格式: 经度,纬度 lon,lat"; return; }
      data.append("lon", String(parts[0]));
      data.append("lat", String(parts[1]));
    }
    Array.prototype.forEach.call(form.elements.photos.files, function (f) { data.append("photos", f, f.name); });
    data.append("observed_at", new Date().toISOString());
    var button = form.querySelector("button[type=submit]");
    button.disabled = true;
    message.textContent = "";
    C.api("warnings/" + encodeURIComponent(t.id) + "/verifications", { method: "POST", body: data })
      .then(function (res) {
        t.status = res.warning.status;
        t.version = res.warning.version;
        form.remove();
        card.classList.add("done");
        card.querySelector(".status").textContent = C.STATUS[t.status] || t.status;
        card.appendChild(h("p", { class: "done-note" }, "已提交 submitted: " + (C.RESULT[res.verification.result] || "") +
          (res.photos.length ? " · " + res.photos.length + " 张照片 photos" : "")));
        C.toast("已提交 " + t.id, "ok");
        updateSummary();
      })
      .catch(function (err) {
        button.disabled = false;
        message.textContent = (err.status === 409 ? "已被他人更新，请刷新 changed by someone else — reload. " : "") + err.message;
      });
  }

  function card(t, i) {
    var cat = C.category(t.category);
    var due = t.due_date ? (t.due_date <= today() ? "今日到期 due " : "到期 due ") + t.due_date : "";
    var box = h("li", { class: "target", dataset: { id: t.id } },
      h("div", { class: "head" }, h("span", { class: "order" }, String(i + 1)),
        h("div", { class: "title" }, h("strong", {}, cat.zh), " ", h("span", { class: "muted" }, t.id)),
        h("span", { class: "badge status" }, C.STATUS[t.status] || t.status)),
      h("div", { class: "meta" },
        (t.township_name || "–") + " · " + C.fmt(t.area_mu, 1) + " 亩 · P " + C.fmt(t.priority, 0) +
        (t.flags && t.flags.length ? " · " + t.flags.join(", ") : "") +
        (t.leg_m ? " · " + (i === 0 ? "距起点 from start " : "距上一点 from previous ") + (t.leg_m / 1000).toFixed(1) + " km" : "") +
        (due ? " · " + due : "")),
      mapLinks(t));
    var open = h("button", { type: "button", class: "verify-btn" }, "核查 verify");
    open.addEventListener("click", function () {
      open.remove();
      box.appendChild(verifyForm(t, box));
    });
    box.appendChild(open);
    return box;
  }

  function updateSummary() {
    var open = state.targets.filter(function (t) { return t.status === "assigned"; }).length;
    var total = state.routeLength || state.targets.reduce(function (s, t) { return s + (t.leg_m || 0); }, 0);
    document.getElementById("summary").textContent = today() + " · " + (state.user.team || "–") + " · " +
      open + " / " + state.targets.length + " 待核查 open" + (total ? " · 路线 " + (total / 1000).toFixed(1) + " km" : "");
  }

  function render() {
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
    document.body.dataset.loaded = "1";
  }

  /**
   * The team's assigned, unverified warnings in visiting order. The service orders them
   * (GET /patrols/{team}: nearest neighbour + 2-opt) from the phone's position when known, otherwise from
   * the highest-priority target; users without a team get the same order computed here.
   */
  function load() {
    return C.api("warnings?status=assigned&limit=5000").then(function (page) {
      var items = page.items;
      if (!items.length) { state.targets = []; render(); return; }
      var top = items.slice().sort(function (a, b) { return (b.priority || 0) - (a.priority || 0); })[0];
      state.start = state.here || [top.centroid_lon, top.centroid_lat];
      if (!state.user.team || items.length > 500) {
        state.targets = routeOrder(items, state.start);
        render();
        return;
      }
      return C.api("patrols/" + encodeURIComponent(state.user.team) + "?limit=500&start_lon=" + state.start[0] +
        "&start_lat=" + state.start[1]).then(function (route) {
        state.targets = route.stops;
        state.routeLength = route.length_m;
        render();
      });
    }).catch(function (err) { C.toast("加载失败 " + err.message, "error"); });
  }

  function start(user) {
    state.user = user;
    document.getElementById("user-name").textContent = user.name + (user.team ? " · " + user.team : "");
    load();
    if (navigator.geolocation && window.isSecureContext) {
      navigator.geolocation.getCurrentPosition(function (p) {
        state.here = [p.coords.longitude, p.coords.latitude];
        load();
      }, function () { /* no position: route starts at the highest-priority target */ }, { timeout: 10000 });
    }
  }

  document.getElementById("logout").addEventListener("click", C.logout);
  C.login().then(start);
  window.csponField = { state: state, routeOrder: routeOrder };
})();
