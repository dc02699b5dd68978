/* Service worker of the field app (served as /sw.js so that its scope covers /field).
 * It keeps the app shell -- the page, scripts, styles, Leaflet -- so /field opens without signal.
 * API data (targets, polygons, chips, tiles) is not handled here: the page downloads it on request into
 * IndexedDB and the Cache Storage "cspon-tiles-v1", and reads it from there when offline. */
"use strict";

var SHELL = "cspon-shell-v2";
var FILES = [
  "/field",
  "/static/css/app.css",
  "/static/js/common.js",
  "/static/js/offline.js",
  "/static/js/photos.js",
  "/static/js/field.js",
  "/static/manifest.webmanifest",
  "/static/favicon.svg",
  "/static/vendor/leaflet/leaflet.js",
  "/static/vendor/leaflet/leaflet.css",
  "/static/vendor/leaflet/images/marker-icon.png",
  "/static/vendor/leaflet/images/marker-icon-2x.png",
  "/static/vendor/leaflet/images/marker-shadow.png",
  "/static/vendor/leaflet/images/layers.png",
  "/static/vendor/leaflet/images/layers-2x.png"
];

self.addEventListener("install", function (event) {
  event.waitUntil(caches.open(SHELL).then(function (c) { return c.addAll(FILES); }).then(function () {
    return self.skipWaiting();
  }));
});

self.addEventListener("activate", function (event) {
  event.waitUntil(caches.keys().then(function (keys) {
    return Promise.all(keys.filter(function (k) { return k.indexOf("cspon-shell-") === 0 && k !== SHELL; })
      .map(function (k) { return caches.delete(k); }));
  }).then(function () { return self.clients.claim(); }));
});

function isShell(url) {
  return url.origin === self.location.origin &&
    (url.pathname === "/field" || url.pathname.indexOf("/static/") === 0);
}

/* Network first (a new version reaches the phone whenever it has signal), the cached copy otherwise. */
self.addEventListener("fetch", function (event) {
  var req = event.request;
  if (req.method !== "GET") return;
  var url = new URL(req.url);
  if (!isShell(url)) return;
  event.respondWith(fetch(req).then(function (resp) {
    if (resp.ok) {
      var copy = resp.clone();
      caches.open(SHELL).then(function (c) { return c.put(url.pathname, copy); });
    }
    return resp;
  }).catch(function () {
    return caches.open(SHELL).then(function (c) { return c.match(url.pathname); }).then(function (hit) {
      return hit || Response.error();
    });
  }));
});
