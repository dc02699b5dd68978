/* Field photos on the phone, before they are queued: downscaled to a long edge of 2048 px and re-encoded as
 * JPEG with the original EXIF kept (the canvas drops it, so the original APP1 segment -- GPS, direction,
 * DateTimeOriginal -- is put back into the new file, its orientation set to 1 because the pixels are drawn
 * upright), and a SHA-256 of the original file to drop the same photo picked twice. */
"use strict";

var CsponPhotos = (function () {
  var MAX_EDGE = 2048, QUALITY = 0.82;

  function u16(v, o, little) { return v.getUint16(o, little); }

  /** The APP1 "Exif" segment (marker and length included) of a JPEG, or null. */
  function exifSegment(bytes) {
    var v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    if (bytes.length < 4 || u16(v, 0) !== 0xFFD8) return null;
    var o = 2;
    while (o + 4 <= bytes.length) {
      if (bytes[o] !== 0xFF) return null;
      var marker = bytes[o + 1];
      if (marker === 0xDA || marker === 0xD9) return null;  // start of scan / end: no more headers
      var len = u16(v, o + 2);
      if (marker === 0xE1 && len > 8 && bytes[o + 4] === 0x45 && bytes[o + 5] === 0x78 && bytes[o + 6] === 0x69 &&
          bytes[o + 7] === 0x66 && bytes[o + 8] === 0 && bytes[o + 9] === 0) {
        return bytes.slice(o, o + 2 + len);
      }
      o += 2 + len;
    }
    return null;
  }

  /** Set the EXIF Orientation (IFD0 tag 0x0112) of an APP1 segment copy to 1 (pixels are already upright). */
  function uprightExif(seg) {
    var t = 10;  // FF E1 len(2) "Exif\0\0" -> TIFF header
    var v = new DataView(seg.buffer, seg.byteOffset, seg.byteLength);
    if (seg.length < t + 8) return seg;
    var little = seg[t] === 0x49;
    var ifd = t + v.getUint32(t + 4, little);
    if (ifd + 2 > seg.length) return seg;
    var n = v.getUint16(ifd, little);
    for (var i = 0; i < n; i++) {
      var e = ifd + 2 + i * 12;
      if (e + 12 > seg.length) break;
      if (v.getUint16(e, little) === 0x0112) v.setUint16(e + 8, 1, little);
    }
    return seg;
  }

  /** A JPEG blob with `seg` (an APP1 segment) right after SOI, replacing a JFIF APP0 there. */
  function withExif(jpegBytes, seg) {
    var v = new DataView(jpegBytes.buffer, jpegBytes.byteOffset, jpegBytes.byteLength);
    var rest = 2;
    if (jpegBytes[2] === 0xFF && jpegBytes[3] === 0xE0) rest = 4 + u16(v, 4);
    return new Blob([jpegBytes.slice(0, 2), seg, jpegBytes.slice(rest)], { type: "image/jpeg" });
  }

  function hex(buf) {
    return Array.prototype.map.call(new Uint8Array(buf), function (b) { return (b < 16 ? "0" : "") + b.toString(16); }).join("");
  }

  /** SHA-256 (hex) of a blob; "" where the browser has no Web Crypto (plain-HTTP pages). */
  function sha256(buf) {
    if (!window.crypto || !crypto.subtle) return Promise.resolve("");
    return crypto.subtle.digest("SHA-256", buf).then(hex, function () { return ""; });
  }

  /**
   * Prepare one picked file for the queue.
   * @param {File} file the photo as picked (JPEG or PNG)
   * @param {{original: boolean}} opts original = send the file as it is (counties that keep originals)
   * @returns {Promise<{blob: Blob, name: string, type: string, size: number, original_size: number,
   *   width: number, height: number, hash: string, exif: boolean}>}
   */
  function prepare(file, opts) {
    return file.arrayBuffer().then(function (buf) {
      var bytes = new Uint8Array(buf);
      return sha256(buf).then(function (hash) {
        var seg = file.type === "image/jpeg" || (bytes[0] === 0xFF && bytes[1] === 0xD8) ? exifSegment(bytes) : null;
        var base = { name: file.name, original_size: file.size, hash: hash, exif: !!seg };
        return createImageBitmap(file, { imageOrientation: "from-image" }).then(function (bmp) {
          var w = bmp.width, h = bmp.height, scale = Math.min(1, MAX_EDGE / Math.max(w, h));
          var jpeg = file.type === "image/jpeg";
          if ((opts && opts.original) || (jpeg && scale === 1 && file.size <= 1.5e6)) {
            bmp.close();
            return Object.assign(base, { blob: file, type: file.type, size: file.size, width: w, height: h });
          }
          var cw = Math.round(w * scale), ch = Math.round(h * scale);
          var canvas = document.createElement("canvas");
          canvas.width = cw; canvas.height = ch;
          var ctx = canvas.getContext("2d");
          ctx.imageSmoothingQuality = "high";
          ctx.drawImage(bmp, 0, 0, cw, ch);
          bmp.close();
          return new Promise(function (resolve, reject) {
            canvas.toBlob(function (b) { if (b) resolve(b); else reject(new Error("JPEG encoding failed")); }, "image/jpeg", QUALITY);
          }).then(function (small) {
            if (!seg) return small;
            return small.arrayBuffer().then(function (sb) { return withExif(new Uint8Array(sb), uprightExif(seg.slice())); });
          }).then(function (blob) {
            var name = file.name.replace(/\.[^.]*$/, "") + ".jpg";
            return Object.assign(base, { blob: blob, name: name, type: "image/jpeg", size: blob.size, width: cw, height: ch });
          });
        });
      });
    });
  }

  return { prepare: prepare, exifSegment: exifSegment, MAX_EDGE: MAX_EDGE };
})();
