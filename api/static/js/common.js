/* cspon-rs web pages: shared helpers (session / token, authenticated fetch, tiles, DOM building, labels).
 * Plain ES2017, no build step, nothing loaded from the internet. */
"use strict";

var Cspon = (function () {
  var API = "/api/v1";
  var TOKEN_KEY = "cspon.token";
  var SESSION_KEY = "cspon.session";  // "1" while a cookie session is open (no secret in it)

  var CATEGORY = {
    built_before_approval: { zh: "未批先建", en: "built before approval", color: "#e0312b" },
    building_while_pending: { zh: "边批边建", en: "building while pending", color: "#ff8c1a" },
    exceeding_approval: { zh: "少批多建", en: "exceeding approval", color: "#b23cd6" },
    built_elsewhere: { zh: "批东建西", en: "built elsewhere", color: "#1f7bff" },
    approved_not_built: { zh: "批而不建", en: "approved, not built", color: "#8a8f98" },
    none: { zh: "合法(已批)", en: "permitted", color: "#2bb35b" }
  };
  var STATUS = {
    new: "新增 new",
    desk_excluded: "内业排除 desk excluded",
    to_field: "待外业 to field",
    assigned: "已派发 assigned",
    verified: "已核查 verified",
    closed: "已办结 closed"
  };
  var CONTROL = {
    YJJBNT: { zh: "永久基本农田", color: "#f2d13a" },
    STBHHX: { zh: "生态保护红线", color: "#13c2a3" },
    CZKFBJ: { zh: "城镇开发边界", color: "#ff4fd8" }
  };
  var RESULT = { illegal: "违法 illegal", legal: "合法 legal", false_change: "误报 false change" };

  function category(key) {
    return CATEGORY[key] || { zh: key || "?", en: key || "?", color: "#cccccc" };
  }

  /*
   * Two ways to authenticate (see login()):
   *  - "cookie": the service sets an HttpOnly SameSite=Strict cookie (POST /api/v1/session) and returns a CSRF
   *    token, kept in memory only and sent as X-CSRF-Token on POST/PUT/PATCH/DELETE. Nothing is stored in
   *    localStorage/sessionStorage.
   *  - "bearer": older services without /session: the token typed in is kept in localStorage (remember)
   *    or sessionStorage and sent as "Authorization: Bearer".
   */
  var auth = { mode: null, csrf: null };
  var UNSAFE = { POST: 1, PUT: 1, PATCH: 1, DELETE: 1 };

  function getToken() {
    if (auth.mode === "cookie") return "";
    return window.localStorage.getItem(TOKEN_KEY) || window.sessionStorage.getItem(TOKEN_KEY) || "";
  }

  function setToken(token, remember) {
    clearToken();
    (remember ? window.localStorage : window.sessionStorage).setItem(TOKEN_KEY, token);
  }

  function clearToken() {
    window.localStorage.removeItem(TOKEN_KEY);
    window.sessionStorage.removeItem(TOKEN_KEY);
  }

  /** Headers that authenticate a request of `method` (also used for tiles and chips fetched by hand). */
  function authHeaders(method, token) {
    var headers = {};
    if (auth.mode === "cookie") {
      if (UNSAFE[(method || "GET").toUpperCase()] && auth.csrf) headers["X-CSRF-Token"] = auth.csrf;
    } else if (token !== "-") {
      token = token || getToken();
      if (token) headers.Authorization = "Bearer " + token;
    }
    return headers;
  }

  /** Error carrying the HTTP status and the API's message. */
  function ApiError(status, message) {
    this.status = status;
    this.message = message;
  }
  ApiError.prototype = Object.create(Error.prototype);

  function detailMessage(body, fallback) {
    if (!body) return fallback;
    if (typeof body.detail === "string") return body.detail;
    if (Array.isArray(body.detail)) {
      return body.detail.map(function (d) {
        var loc = Array.isArray(d.loc) ? d.loc.filter(function (x) { return x !== "body"; }).join(".") : "";
        return (loc ? loc + ": " : "") + d.msg;
      }).join("; ");
    }
    return fallback;
  }

  /** fetch() with the bearer token; resolves to parsed JSON (or the Response when raw). */
  function api(path, options) {
    options = options || {};
    var method = options.method || "GET";
    var headers = Object.assign(authHeaders(method, options.token), options.headers || {});
    var url = path.indexOf("/") === 0 ? path : API + "/" + path;
    return fetch(url, { method: method, headers: headers, body: options.body, credentials: "same-origin",
                        cache: options.cache || "default" })
      .then(function (resp) {
        if (!resp.ok) {
          return resp.json().catch(function () { return null; }).then(function (body) {
            if (resp.status === 401 && !options.token) onUnauthorized();
            throw new ApiError(resp.status, detailMessage(body, resp.status + " " + resp.statusText));
          });
        }
        if (options.raw) return resp;
        var type = resp.headers.get("content-type") || "";
        return type.indexOf("json") >= 0 ? resp.json() : resp.text();
      });
  }

  /** An object URL for an image that needs the bearer token (img tags cannot send headers). */
  var blobCache = {};
  function authImageUrl(url) {
    if (!blobCache[url]) {
      blobCache[url] = api(url, { raw: true })
        .then(function (resp) { return resp.blob(); })
        .then(function (blob) { return URL.createObjectURL(blob); })
        .catch(function (err) { delete blobCache[url]; throw err; });
    }
    return blobCache[url];
  }

  /**
   * An XYZ tile layer whose tiles are fetched with the page's credentials (img tags cannot send a bearer
   * token); a tile found in the Cache Storage `cacheName` (the field app's downloads) is used from there
   * when the network fails. `url` is a template with {z}/{x}/{y}.
   */
  var TILE_CACHE = "cspon-tiles-v1";
  function tileUrl(template, z, x, y) {
    return template.replace("{z}", z).replace("{x}", x).replace("{y}", y);
  }

  function fetchTile(url) {
    function fromCache(err) {
      if (!window.caches) throw err;
      return caches.open(TILE_CACHE).then(function (c) { return c.match(url); }).then(function (hit) {
        if (!hit) throw err;
        return hit.blob();
      });
    }
    if (window.caches && navigator.onLine === false) {
      return fromCache(new Error("offline")).catch(function () { throw new Error("offline, tile not downloaded"); });
    }
    return api(url, { raw: true }).then(function (resp) { return resp.blob(); }).catch(function (err) {
      if (err instanceof ApiError && err.status !== 401) throw err;
      return fromCache(err);
    });
  }

  function tileLayer(template, options) {
    var Layer = L.TileLayer.extend({
      createTile: function (coords, done) {
        var img = document.createElement("img");
        img.alt = "";
        img.setAttribute("role", "presentation");
        var url = tileUrl(template, coords.z, coords.x, coords.y);
        img.dataset.src = url;
        fetchTile(url).then(function (blob) {
          var src = URL.createObjectURL(blob);
          img.onload = function () { URL.revokeObjectURL(src); done(null, img); };
          img.onerror = function () { URL.revokeObjectURL(src); done(new Error("bad tile " + url), img); };
          img.src = src;
        }).catch(function (err) { img.classList.add("tile-missing"); done(err, img); });
        return img;
      }
    });
    return new Layer(template, options);
  }

  /** Tile coordinates {z, x, y} covering a lon/lat box [w, s, e, n] at zoom z. */
  function tilesFor(bbox, z) {
    var crs = L.CRS.EPSG3857;
    var a = crs.latLngToPoint(L.latLng(bbox[3], bbox[0]), z), b = crs.latLngToPoint(L.latLng(bbox[1], bbox[2]), z);
    var out = [], n = Math.pow(2, z);
    for (var x = Math.max(0, Math.floor(a.x / 256)); x <= Math.min(n - 1, Math.floor(b.x / 256)); x++) {
      for (var y = Math.max(0, Math.floor(a.y / 256)); y <= Math.min(n - 1, Math.floor(b.y / 256)); y++) {
        out.push({ z: z, x: x, y: y });
      }
    }
    return out;
  }

  function loadBlobImage(blob) {
    return new Promise(function (resolve, reject) {
      var img = new Image(), src = URL.createObjectURL(blob);
      img.onload = function () { URL.revokeObjectURL(src); resolve(img); };
      img.onerror = function () { URL.revokeObjectURL(src); reject(new Error("cannot decode tile")); };
      img.src = src;
    });
  }

  /**
   * A square canvas (`size` px) of one tile layer around a lon/lat box, at zoom `z`, made from the tiles
   * (network, or the field app's cache when offline). Resolves to {canvas, toPx(lon, lat)}; tiles that
   * are missing stay black.
   */
  function mosaic(template, bbox, z, size) {
    var crs = L.CRS.EPSG3857;
    var a = crs.latLngToPoint(L.latLng(bbox[3], bbox[0]), z), b = crs.latLngToPoint(L.latLng(bbox[1], bbox[2]), z);
    var cx = (a.x + b.x) / 2, cy = (a.y + b.y) / 2;
    var half = Math.max(32, Math.abs(b.x - a.x) * 0.8, Math.abs(b.y - a.y) * 0.8);
    var x0 = cx - half, y0 = cy - half, k = size / (2 * half);
    var canvas = document.createElement("canvas");
    canvas.width = size; canvas.height = size;
    var g = canvas.getContext("2d");
    g.fillStyle = "#000"; g.fillRect(0, 0, size, size);
    g.imageSmoothingEnabled = false;
    var tiles = [], n = Math.pow(2, z);
    for (var tx = Math.max(0, Math.floor(x0 / 256)); tx <= Math.min(n - 1, Math.floor((x0 + 2 * half) / 256)); tx++) {
      for (var ty = Math.max(0, Math.floor(y0 / 256)); ty <= Math.min(n - 1, Math.floor((y0 + 2 * half) / 256)); ty++) {
        tiles.push({ z: z, x: tx, y: ty });
      }
    }
    function toPx(lon, lat) {
      var p = crs.latLngToPoint(L.latLng(lat, lon), z);
      return [(p.x - x0) * k, (p.y - y0) * k];
    }
    return Promise.all(tiles.map(function (t) {
      return fetchTile(tileUrl(template, t.z, t.x, t.y)).then(loadBlobImage).then(function (img) {
        g.drawImage(img, (t.x * 256 - x0) * k, (t.y * 256 - y0) * k, 256 * k, 256 * k);
        return 1;
      }).catch(function () { return 0; });
    })).then(function (got) {
      canvas.dataset.tiles = String(got.reduce(function (s, v) { return s + v; }, 0));
      return { canvas: canvas, toPx: toPx };
    });
  }

  /** Stroke the rings of a GeoJSON (Multi)Polygon on a 2D context through toPx(lon, lat). */
  function strokeGeometry(g, geometry, toPx, color, dash, width) {
    if (!geometry) return;
    var rings = geometry.type === "Polygon" ? geometry.coordinates :
      geometry.type === "MultiPolygon" ? [].concat.apply([], geometry.coordinates) : [];
    g.strokeStyle = color; g.lineWidth = width; g.setLineDash(dash || []);
    rings.forEach(function (ring) {
      g.beginPath();
      ring.forEach(function (pt, i) {
        var q = toPx(pt[0], pt[1]);
        if (i === 0) g.moveTo(q[0], q[1]); else g.lineTo(q[0], q[1]);
      });
      g.closePath(); g.stroke();
    });
  }

  /** [w, s, e, n] of a GeoJSON geometry. */
  function bboxOf(geometry) {
    var b = [Infinity, Infinity, -Infinity, -Infinity];
    (function walk(c) {
      if (typeof c[0] === "number") {
        b[0] = Math.min(b[0], c[0]); b[1] = Math.min(b[1], c[1]);
        b[2] = Math.max(b[2], c[0]); b[3] = Math.max(b[3], c[1]);
      } else c.forEach(walk);
    })(geometry.coordinates);
    return b;
  }

  /** Download a file the service makes (needs credentials, so no plain link) under its own file name. */
  function download(url, fallbackName) {
    return api(url, { raw: true }).then(function (resp) {
      var cd = resp.headers.get("content-disposition") || "";
      var star = /filename\*=(?:UTF-8'')?([^;]+)/i.exec(cd), plain = /filename="?([^";]+)"?/i.exec(cd);
      var name = star ? decodeURIComponent(star[1].replace(/"/g, "")) : plain ? plain[1] : fallbackName;
      return resp.blob().then(function (blob) {
        var link = h("a", { href: URL.createObjectURL(blob), download: name, hidden: true });
        document.body.appendChild(link);
        link.click();
        setTimeout(function () { URL.revokeObjectURL(link.href); link.remove(); }, 1000);
        return name;
      });
    });
  }

  var unauthorizedHandlers = [];
  function onUnauthorized(handler) {
    if (handler) { unauthorizedHandlers.push(handler); return; }
    unauthorizedHandlers.forEach(function (h) { h(); });
  }

  /** h("div", {class: "x", onclick: fn}, child, "text", ...) -> Element (text is never parsed as HTML). */
  function h(tag, attrs) {
    var el = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      var value = attrs[key];
      if (value === null || value === undefined || value === false) return;
      if (key.indexOf("on") === 0 && typeof value === "function") el.addEventListener(key.slice(2), value);
      else if (key === "dataset") Object.keys(value).forEach(function (k) { el.dataset[k] = value[k]; });
      else if (key === "style" && typeof value === "object") Object.assign(el.style, value);
      else el.setAttribute(key, value === true ? "" : String(value));
    });
    for (var i = 2; i < arguments.length; i++) append(el, arguments[i]);
    return el;
  }

  function append(el, child) {
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) { child.forEach(function (c) { append(el, c); }); return; }
    el.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }

  function clear(el) {
    while (el.firstChild) el.removeChild(el.firstChild);
    return el;
  }

  function fmt(value, digits) {
    if (value === null || value === undefined || value === "") return "–";
    if (typeof value === "number") return value.toFixed(digits === undefined ? 1 : digits);
    return String(value);
  }

  function fmtTime(value) {
    if (!value) return "–";
    var d = new Date(value);
    if (isNaN(d.getTime())) return String(value);
    return d.toLocaleString("zh-CN", { hour12: false });
  }

  /** True for a fetch that failed without an HTTP answer (offline, server unreachable). */
  function isNetworkError(err) {
    return !(err instanceof ApiError);
  }

  /**
   * Sign in; resolves to the user.
   *
   * Services with browser sessions (POST/GET/DELETE /api/v1/session): the form posts the token once, the
   * service sets an HttpOnly cookie and returns a CSRF token (kept in memory). A reload asks GET /session
   * for the CSRF token -- only when the marker "cspon.session" (no secret, just "1") says a session was
   * opened, so a first visit does not log a 401. A token kept by an older version of the page is traded
   * for a session and removed. Older services (404 on /session): the token is checked with GET /users/me
   * and kept in localStorage/sessionStorage as before ("bearer" mode).
   *
   * options.offline(): when the service cannot be reached at all, a promise of the user remembered by the
   * page (the field app keeps it in IndexedDB), or null to show the form.
   */
  function login(options) {
    options = options || {};
    var box = document.getElementById("login");
    var form = document.getElementById("login-form");
    var input = document.getElementById("login-token");
    var remember = document.getElementById("login-remember");
    var message = document.getElementById("login-message");
    return new Promise(function (resolve) {
      function ask(reason) {
        message.textContent = reason || "";
        box.hidden = false;
        input.focus();
      }
      function done(user) {
        input.value = "";
        box.hidden = true;
        resolve(user);
      }
      function unreachable(err) {
        var fallback = options.offline ? options.offline() : Promise.resolve(null);
        return fallback.then(function (user) {
          if (user) { auth.offline = true; resolve(user); } else ask("无法连接 " + err.message);
        });
      }
      function rejected(err) {
        return err.status === 401 || err.status === 422 ? "令牌无效 Unknown or revoked token" : "无法连接 " + err.message;
      }
      /** POST /session; resolves to the user, or to null when the service has no sessions (404/405). */
      function openSession(token, keep) {
        return api("session", { method: "POST", headers: { "Content-Type": "application/json" },
                                body: JSON.stringify({ token: token, remember: !!keep }), token: "-" })
          .then(function (s) {
            auth.mode = "cookie";
            auth.csrf = s.csrf_token;
            clearToken();
            (keep ? window.localStorage : window.sessionStorage).setItem(SESSION_KEY, "1");
            return s.user;
          }, function (err) {
            if (err.status === 404 || err.status === 405) return null;
            throw err;
          });
      }
      function bearer(token, keep) {
        auth.mode = "bearer";
        return api("users/me", { token: token }).then(function (user) {
          if (keep !== undefined) setToken(token, keep);
          return user;
        });
      }
      form.addEventListener("submit", function (ev) {
        ev.preventDefault();
        var token = input.value.trim();
        if (!token) { ask("请输入令牌 Enter a token"); return; }
        var keep = remember.checked;
        (auth.mode === "bearer" ? Promise.resolve(null) : openSession(token, keep)).then(function (user) {
          return user || bearer(token, keep);
        }).then(done).catch(function (err) { ask(rejected(err)); });
      });
      var marker = window.localStorage.getItem(SESSION_KEY) || window.sessionStorage.getItem(SESSION_KEY);
      var saved = getToken();
      var first;
      if (marker) {
        first = fetch(API + "/session", { credentials: "same-origin", cache: "no-store" }).then(function (resp) {
          if (resp.status === 200) {
            auth.mode = "cookie";
            return resp.json().then(function (s) { auth.csrf = s.csrf_token; return s.user; });
          }
          window.localStorage.removeItem(SESSION_KEY);
          window.sessionStorage.removeItem(SESSION_KEY);
          if (resp.status === 404 || resp.status === 405) { auth.mode = "bearer"; return null; }
          auth.mode = "cookie";
          ask("登录已过期 Session expired: sign in again");
          return false;
        });
      } else if (saved) {
        // a token from an older page version: trade it for a session where the service has them
        first = openSession(saved, !!window.localStorage.getItem(TOKEN_KEY)).then(function (user) {
          return user || bearer(saved);
        }).catch(function (err) {
          if (isNetworkError(err)) throw err;
          if (err.status === 401) clearToken();
          ask(err.status === 401 ? "令牌已失效 Token no longer valid" : "无法连接 " + err.message);
          return false;
        });
      } else {
        first = Promise.resolve(null);
      }
      first.then(function (user) {
        if (user) done(user);
        else if (user === null) ask("");
      }).catch(function (err) {
        if (!auth.mode) auth.mode = saved ? "bearer" : "cookie";
        return unreachable(err);
      });
    });
  }

  /**
   * After a start without signal (user from the phone's copy), get the CSRF token of the cookie session
   * once the service is reachable again. Resolves when requests can be made; rejects with an ApiError
   * (401: the session is gone, sign in again) or a network error.
   */
  function ensureSession() {
    if (auth.mode !== "cookie" || auth.csrf) return Promise.resolve();
    return fetch(API + "/session", { credentials: "same-origin", cache: "no-store" }).then(function (resp) {
      if (resp.status !== 200) throw new ApiError(401, "登录已过期 session expired: sign in again");
      return resp.json().then(function (s) { auth.csrf = s.csrf_token; auth.offline = false; });
    });
  }

  function logout() {
    var finish = function () {
      clearToken();
      window.localStorage.removeItem(SESSION_KEY);
      window.sessionStorage.removeItem(SESSION_KEY);
      window.location.reload();
    };
    if (auth.mode === "cookie") {
      api("session", { method: "DELETE" }).then(finish, finish);
    } else {
      finish();
    }
  }

  /** "YYYY-MM-DD" of today in the device's time zone. */
  function today() {
    var d = new Date();
    return d.getFullYear() + "-" + String(d.getMonth() + 1).padStart(2, "0") + "-" + String(d.getDate()).padStart(2, "0");
  }

  /** Label of a due date against today: overdue (逾期), due today (今日到期) or due (到期); "" without one. */
  function dueLabel(due, now) {
    if (!due) return "";
    var day = String(due).slice(0, 10);
    now = now || today();
    if (day < now) return "逾期 overdue " + day;
    if (day === now) return "今日到期 due today " + day;
    return "到期 due " + day;
  }

  /** Badge text of a warning: suspected until a field check, then the check's result. */
  function verdict(w) {
    if (w.verification_result) return "已核查 " + (RESULT[w.verification_result] || w.verification_result);
    return "疑似 suspected";
  }

  function toast(text, kind) {
    var box = document.getElementById("toast");
    if (!box) return;
    box.textContent = text;
    box.className = "toast " + (kind || "info");
    box.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(function () { box.hidden = true; }, 5000);
  }

  return {
    API: API,
    TILE_CACHE: TILE_CACHE,
    auth: auth,
    authHeaders: authHeaders,
    bboxOf: bboxOf,
    download: download,
    dueLabel: dueLabel,
    ensureSession: ensureSession,
    fetchTile: fetchTile,
    isNetworkError: isNetworkError,
    mosaic: mosaic,
    strokeGeometry: strokeGeometry,
    tileLayer: tileLayer,
    tileUrl: tileUrl,
    tilesFor: tilesFor,
    today: today,
    verdict: verdict,
    CATEGORY: CATEGORY,
    CONTROL: CONTROL,
    RESULT: RESULT,
    STATUS: STATUS,
    ApiError: ApiError,
    api: api,
    append: append,
    authImageUrl: authImageUrl,
    category: category,
    clear: clear,
    fmt: fmt,
    fmtTime: fmtTime,
    getToken: getToken,
    h: h,
    login: login,
    logout: logout,
    onUnauthorized: onUnauthorized,
    toast: toast
  };
})();
