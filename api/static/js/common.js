/* cspon-rs web pages: shared helpers (token, authenticated fetch, DOM building, labels).
 * Plain ES2017, no build step, nothing loaded from the internet. */
"use strict";

var Cspon = (function () {
  var API = "/api/v1";
  var TOKEN_KEY = "cspon.token";

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

  function getToken() {
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
    var headers = Object.assign({}, options.headers || {});
    var token = options.token || getToken();
    if (token) headers.Authorization = "Bearer " + token;
    var url = path.indexOf("/") === 0 ? path : API + "/" + path;
    return fetch(url, { method: options.method || "GET", headers: headers, body: options.body })
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

  /**
   * Ask for a token until one works; resolves to the user (GET /users/me).
   * The form lives in the page (#login); the token is kept in localStorage when "remember" is ticked,
   * otherwise in sessionStorage (gone when the tab closes).
   */
  function login() {
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
      form.addEventListener("submit", function (ev) {
        ev.preventDefault();
        var token = input.value.trim();
        if (!token) { ask("请输入令牌 Enter a token"); return; }
        api("users/me", { token: token }).then(function (user) {
          setToken(token, remember.checked);
          input.value = "";
          box.hidden = true;
          resolve(user);
        }).catch(function (err) {
          ask(err.status === 401 ? "令牌无效 Unknown or revoked token" : "无法连接 " + err.message);
        });
      });
      var saved = getToken();
      if (!saved) { ask(""); return; }
      api("users/me", { token: saved }).then(resolve).catch(function (err) {
        if (err.status === 401) clearToken();
        ask(err.status === 401 ? "令牌已失效 Token no longer valid" : "无法连接 " + err.message);
      });
    });
  }

  function logout() {
    clearToken();
    window.location.reload();
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
