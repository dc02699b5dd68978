/* Field app storage on the phone: IndexedDB for the downloaded targets and the queue of verifications,
 * Cache Storage for tiles and chips. Nothing here talks to the service except through Cspon.api. */
"use strict";

var CsponOffline = (function () {
  var DB_NAME = "cspon-field", DB_VERSION = 1;
  var dbPromise = null;

  function open() {
    if (!dbPromise) {
      dbPromise = new Promise(function (resolve, reject) {
        var req = indexedDB.open(DB_NAME, DB_VERSION);
        req.onupgradeneeded = function () {
          var db = req.result;
          if (!db.objectStoreNames.contains("kv")) db.createObjectStore("kv");
          if (!db.objectStoreNames.contains("queue")) db.createObjectStore("queue", { keyPath: "qid", autoIncrement: true });
          // verifications the user chose not to send after a conflict: kept, never deleted by the app
          if (!db.objectStoreNames.contains("set_aside")) db.createObjectStore("set_aside", { keyPath: "qid" });
        };
        req.onsuccess = function () { resolve(req.result); };
        req.onerror = function () { reject(req.error); };
      });
    }
    return dbPromise;
  }

  function tx(store, mode, fn) {
    return open().then(function (db) {
      return new Promise(function (resolve, reject) {
        var t = db.transaction(store, mode);
        var result;
        t.oncomplete = function () { resolve(result); };
        t.onerror = function () { reject(t.error); };
        t.onabort = function () { reject(t.error || new Error("transaction aborted")); };
        var req = fn(t.objectStore(store));
        if (req) req.onsuccess = function () { result = req.result; };
      });
    });
  }

  function get(key) { return tx("kv", "readonly", function (s) { return s.get(key); }); }
  function put(key, value) { return tx("kv", "readwrite", function (s) { return s.put(value, key); }); }

  function queueAll() { return tx("queue", "readonly", function (s) { return s.getAll(); }); }
  function queueAdd(item) { return tx("queue", "readwrite", function (s) { return s.add(item); }); }
  function queuePut(item) { return tx("queue", "readwrite", function (s) { return s.put(item); }); }
  function queueDelete(qid) { return tx("queue", "readwrite", function (s) { return s.delete(qid); }); }
  function setAside(item) {
    item.set_aside_at = new Date().toISOString();
    return tx("set_aside", "readwrite", function (s) { return s.put(item); }).then(function () {
      return queueDelete(item.qid);
    });
  }
  function setAsideAll() { return tx("set_aside", "readonly", function (s) { return s.getAll(); }); }

  /** Store a response under `url` in the tile/chip cache. */
  function cachePut(url, response) {
    return caches.open(Cspon.TILE_CACHE).then(function (c) { return c.put(url, response); });
  }

  /** Size in bytes of the cached copy of `url`, or null when it is not cached. */
  function cachedSize(url) {
    return caches.open(Cspon.TILE_CACHE).then(function (c) { return c.match(url); }).then(function (r) {
      return r ? r.blob().then(function (b) { return b.size; }) : null;
    });
  }

  function cacheHas(url) {
    return caches.open(Cspon.TILE_CACHE).then(function (c) { return c.match(url); }).then(function (r) { return !!r; });
  }

  /** Blob of a cached URL, else fetched with the page's credentials; null when neither works. */
  function cachedBlob(url) {
    return caches.open(Cspon.TILE_CACHE).then(function (c) { return c.match(url); }).then(function (hit) {
      if (hit) return hit.blob();
      return Cspon.api(url, { raw: true }).then(function (r) { return r.blob(); });
    }).catch(function () { return null; });
  }

  /** Forget everything downloaded (logout); the queue is kept unless `withQueue`. */
  function wipe(withQueue) {
    var jobs = [tx("kv", "readwrite", function (s) { return s.clear(); })];
    if (withQueue) jobs.push(tx("queue", "readwrite", function (s) { return s.clear(); }));
    if (window.caches) jobs.push(caches.delete(Cspon.TILE_CACHE));
    return Promise.all(jobs);
  }

  return {
    cacheHas: cacheHas,
    cachedSize: cachedSize,
    cachePut: cachePut,
    cachedBlob: cachedBlob,
    get: get,
    put: put,
    queueAdd: queueAdd,
    queueAll: queueAll,
    queueDelete: queueDelete,
    queuePut: queuePut,
    setAside: setAside,
    setAsideAll: setAsideAll,
    wipe: wipe
  };
})();
