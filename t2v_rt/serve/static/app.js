// t2v-rt's browser page: streams made with POST /api/streams, played live, changed with
// PATCH while they play, closed with DELETE. Plain JS, no build step.
//
// Transports (docs/serving.md, "The browser page"): "fmp4" is H.264 in fragmented MP4 read
// with fetch() into Media Source Extensions, kept at the live edge; "mjpeg" is a
// multipart/x-mixed-replace JPEG stream in an <img>, for browsers whose MSE cannot play H.264.
"use strict";

const H264 = 'video/mp4; codecs="avc1.42E01E"';
const LIVE_JUMP_S = 0.5;      // further behind than this: jump to the live edge
const LIVE_TARGET_S = 0.05;   // further behind than this: play 10 % faster until caught up

const $ = (sel, root = document) => root.querySelector(sel);

function mseH264() {
  return !!(window.MediaSource && MediaSource.isTypeSupported(H264));
}

function chooseTransport(choice) {
  if (choice === "mjpeg") return "mjpeg";
  return mseH264() ? "fmp4" : "mjpeg";       // "auto", or fmp4 where MSE cannot play it
}

async function errorText(resp) {
  try {
    const body = await resp.json();
    if (body && body.error) return body.error;
  } catch (e) { /* not JSON */ }
  return `${resp.status} ${resp.statusText}`;
}

function showError(el, text) {
  el.textContent = text || "";
}

// The codec string of an fMP4 init segment: "avc1.PPCCLL" from its avcC box.
function avcCodec(bytes) {
  for (let i = 4; i + 8 < bytes.length; i++) {
    if (bytes[i] === 0x61 && bytes[i + 1] === 0x76 && bytes[i + 2] === 0x63 && bytes[i + 3] === 0x43) {
      const hex = (b) => b.toString(16).padStart(2, "0");
      return `avc1.${hex(bytes[i + 5])}${hex(bytes[i + 6])}${hex(bytes[i + 7])}`;
    }
  }
  return null;
}

// Where the init segment (ftyp + moov) ends in ``bytes``, or -1 if not all here yet.
function initEnd(bytes) {
  let at = 0;
  while (at + 8 <= bytes.length) {
    const size = ((bytes[at] << 24) >>> 0) + (bytes[at + 1] << 16) + (bytes[at + 2] << 8) + bytes[at + 3];
    const type = String.fromCharCode(bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]);
    if (size < 8) return -1;
    if (at + size > bytes.length) return -1;
    at += size;
    if (type === "moov") return at;
  }
  return -1;
}

function concat(a, b) {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

class Tile {
  constructor(info, transport, page) {
    this.info = info;
    this.id = info.id;
    this.transport = transport;
    this.page = page;
    this.closed = false;
    this.aborter = new AbortController();
    this.frames = 0;            // frames presented (MSE: requestVideoFrameCallback)
    this.bytes = 0;
    this.el = $("#tile-template").content.firstElementChild.cloneNode(true);
    this.el.dataset.id = info.id;
    this.el.dataset.transport = transport;
    this.screen = $(".screen", this.el);
    this.status = $(".status", this.el);
    this.error = $(".tile-error", this.el);
    const input = $(".tile-prompt", this.el);
    input.value = info.prompt;
    $(".change", this.el).addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.change(input.value);
    });
    $(".remove", this.el).addEventListener("click", () => this.remove());
    this.url = `api/streams/${encodeURIComponent(info.id)}/video?format=${transport}`;
    if (transport === "fmp4") this.playMse(); else this.playMjpeg();
    this.timer = setInterval(() => this.report(), 1000);
    this.lastFrames = 0;
    this.lastBytes = 0;
  }

  get media() { return this.video || this.img; }

  playMjpeg() {
    const img = this.img = document.createElement("img");
    img.alt = this.info.prompt;
    img.width = img.height = this.info.size;
    img.addEventListener("error", () => {
      if (!this.closed) showError(this.error, "the video stream ended");
    });
    img.src = this.url;
    this.screen.append(img);
  }

  playMse() {
    const video = this.video = document.createElement("video");
    video.muted = true;
    video.autoplay = true;
    video.playsInline = true;
    video.disablePictureInPicture = true;
    this.screen.append(video);
    const source = this.source = new MediaSource();
    video.src = URL.createObjectURL(source);
    source.addEventListener("sourceopen", () => this.readMse(), { once: true });
    const count = () => {
      if (this.closed) return;
      this.frames++;
      video.requestVideoFrameCallback(count);
    };
    if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(count);
    video.addEventListener("error", () => {
      if (!this.closed) showError(this.error, `video error: ${video.error && video.error.message}`);
    });
  }

  async readMse() {
    let resp;
    try {
      resp = await fetch(this.url, { signal: this.aborter.signal, cache: "no-store" });
    } catch (e) {
      if (!this.closed) showError(this.error, `cannot read the video: ${e.message}`);
      return;
    }
    if (!resp.ok) {
      showError(this.error, await errorText(resp));
      return;
    }
    const reader = resp.body.getReader();
    let head = new Uint8Array(0);
    const pending = [];
    let buffer = null;
    let appended = 0;
    const appendNext = () => {
      if (!buffer || buffer.updating || !pending.length || this.source.readyState !== "open") return;
      const chunk = pending.length === 1 ? pending.pop()
        : pending.splice(0).reduce((a, b) => concat(a, b));
      try {
        buffer.appendBuffer(chunk);
      } catch (e) {
        if (e.name === "QuotaExceededError") { pending.unshift(chunk); this.trim(true); return; }
        throw e;
      }
      appended++;
    };
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        this.bytes += value.length;
        if (!buffer) {
          head = concat(head, value);
          const end = initEnd(head);
          if (end < 0) continue;
          const codec = avcCodec(head.subarray(0, end)) || "avc1.42E01E";
          buffer = this.buffer = this.source.addSourceBuffer(`video/mp4; codecs="${codec}"`);
          buffer.mode = "segments";
          buffer.addEventListener("updateend", () => {
            this.chase();
            if (appended % 150 === 0) this.trim(false);
            appendNext();
          });
          pending.push(head);
        } else {
          pending.push(value);
        }
        appendNext();
      }
      const finish = () => {
        if (this.source.readyState === "open" && !(buffer && buffer.updating) && !pending.length) {
          this.source.endOfStream();
        } else if (this.source.readyState === "open") {
          setTimeout(finish, 50);
        }
      };
      finish();
    } catch (e) {
      if (!this.closed) showError(this.error, `the video stream broke: ${e.message}`);
    }
  }

  // Keep the <video> at the live edge: a live stream shows the newest frame, not a buffer.
  chase() {
    const v = this.video;
    const b = v.buffered;
    if (!b.length) return;
    const end = b.end(b.length - 1);
    const behind = end - v.currentTime;
    if (behind > LIVE_JUMP_S || v.currentTime < b.start(b.length - 1)) {
      v.currentTime = Math.max(b.start(b.length - 1), end - 0.04);
    } else {
      v.playbackRate = behind > LIVE_TARGET_S ? 1.1 : 1.0;
    }
    if (v.paused && v.readyState >= 2) v.play().catch(() => {});
    this.behind = behind;
  }

  // Drop what was played long ago (MSE buffers are bounded).
  trim(now) {
    const v = this.video;
    if (!this.buffer || this.buffer.updating || v.currentTime < 10) return;
    try { this.buffer.remove(0, v.currentTime - 5); } catch (e) { if (now) throw e; }
  }

  report() {
    const fps = this.frames - this.lastFrames;
    const kbps = ((this.bytes - this.lastBytes) * 8) / 1000;
    this.lastFrames = this.frames;
    this.lastBytes = this.bytes;
    const parts = [this.transport === "fmp4" ? "H.264 / MSE" : "MJPEG",
      `${this.info.size}×${this.info.size}`, `stream ${this.id}`];
    if (this.video) {
      parts.push(`${fps} fps shown`, `${kbps.toFixed(0)} kbit/s`);
      if (this.behind !== undefined) parts.push(`${Math.round(this.behind * 1000)} ms behind live`);
    }
    this.status.textContent = parts.join(" · ");
  }

  async change(prompt) {
    showError(this.error, "");
    const morph = parseFloat($("#morph").value);
    const body = { prompt };
    if (Number.isFinite(morph)) body.morph_seconds = morph;
    const resp = await fetch(`api/streams/${encodeURIComponent(this.id)}`, {
      method: "PATCH", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
    });
    if (!resp.ok) {
      showError(this.error, await errorText(resp));
      return false;
    }
    this.info = await resp.json();
    if (this.img) this.img.alt = this.info.prompt;
    return true;
  }

  async remove() {
    this.closed = true;
    this.el.remove();
    this.page.tiles = this.page.tiles.filter((t) => t !== this);
    // DELETE first: hanging up first would close the stream (its last reader left) and the
    // DELETE would find it gone
    await fetch(`api/streams/${encodeURIComponent(this.id)}`, { method: "DELETE", keepalive: true })
      .catch(() => {});
    this.stop();
  }

  stop() {
    this.closed = true;
    clearInterval(this.timer);
    this.aborter.abort();
    if (this.img) this.img.removeAttribute("src");
    if (this.video) {
      this.video.removeAttribute("src");
      this.video.load();
    }
  }
}

const page = {
  tiles: [],

  async add(prompt, options = {}) {
    const err = $("#error");
    showError(err, "");
    const size = parseInt(options.size || $("#size").value, 10);
    const seed = parseInt(options.seed ?? $("#seed").value, 10) || 0;
    const transport = chooseTransport(options.transport || $("#transport").value);
    const resp = await fetch("api/streams", {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ prompt, size, seed }),
    });
    if (!resp.ok) {
      let text = await errorText(resp);
      const retry = resp.headers.get("Retry-After");
      if (retry) text += ` (try again in ${retry} s)`;
      showError(err, text);
      return null;
    }
    const tile = new Tile(await resp.json(), transport, this);
    this.tiles.push(tile);
    $("#tiles").append(tile.el);
    return tile;
  },

  // For tests and measurements: the mean colour of tile i's bright pixels (those clearly
  // above a black background) as drawn now, their count and centroid, and frames shown.
  sample(i, side = 64) {
    const tile = this.tiles[i];
    const el = tile && tile.media;
    if (!el) return null;
    const c = this.canvas || (this.canvas = document.createElement("canvas"));
    c.width = c.height = side;
    const ctx = c.getContext("2d", { willReadFrequently: true });
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, side, side);
    try { ctx.drawImage(el, 0, 0, side, side); } catch (e) { return null; }
    const px = ctx.getImageData(0, 0, side, side).data;
    let r = 0, g = 0, b = 0, n = 0, x = 0, y = 0;
    for (let k = 0; k < px.length; k += 4) {
      if (Math.max(px[k], px[k + 1], px[k + 2]) <= 80) continue;
      r += px[k]; g += px[k + 1]; b += px[k + 2];
      const p = k / 4;
      x += p % side; y += Math.floor(p / side);
      n++;
    }
    const m = (v) => (n ? v / n : 0);
    return { r: m(r), g: m(g), b: m(b), n, x: m(x) / side, y: m(y) / side,
      frames: tile.frames, time: tile.video ? tile.video.currentTime : null,
      behind: tile.behind ?? null };
  },
};
window.t2v = page;

$("#new-stream").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const prompt = $("#prompt").value.trim();
  if (prompt) page.add(prompt);
});
$("#transport").title = mseH264() ? "auto: H.264 through Media Source Extensions"
  : "auto: MJPEG (this browser's MSE cannot play H.264)";
window.addEventListener("pagehide", () => page.tiles.forEach((t) => t.stop()));
