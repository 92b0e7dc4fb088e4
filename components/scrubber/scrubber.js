// Eve's scrubber (components.scrubber): a bank of frames, slider position x sample, swapped in the browser.
//
// Streamlit calls the default export again whenever Python sends new data (the bank grows while a
// fragment draws it); the HTML stays, so one Scrubber lives on the root element across calls.
// 1. `update` decodes the frames of positions not seen before (WebP data URLs into <img>s).
// 2. A requestAnimationFrame loop draws the slider's position, or the nearest decoded one, onto one
//    canvas per sample: at most one swap per displayed frame, counted in `stats.swaps`.
// 3. Releasing the slider, a step button, or pausing Play sends the position to Python
//    (`setTriggerValue("released", index)`): only then does the server run.
// `window.eveScrubber` is the last-updated scrubber's stats (the browser tests and benchmarks read it).

function decode(url) {
  const img = new Image();
  img.src = url;
  return img.decode().then(() => img);
}

function fmt(v) {
  return Math.abs(v) >= 100 ? v.toFixed(1) : v.toPrecision(3);
}

class Scrubber {
  constructor(root) {
    const q = (s) => root.querySelector(s);
    this.root = root;
    this.el = {
      range: q(".range"), strip: q(".strip"), grid: q(".grid"), feature: q(".feature"), current: q(".current"),
      note: q(".note"), status: q(".status"), lo: q(".lo"), hi: q(".hi"), play: q(".play"),
      speed: q(".speed select"), back: q(".back"), fwd: q(".fwd"),
    };
    this.bank = null;
    this.labels = [];
    this.images = new Map(); // position -> [HTMLImageElement] (n of them)
    this.measured = new Map(); // position -> [number] or null
    this.loading = new Set();
    this.want = 0; // the slider's position
    this.shown = -1; // the position on screen
    this.drawnHead = null;
    this.dragging = false;
    this.playing = false;
    this.playPos = 0;
    this.direction = 1;
    this.lastTime = null;
    this.pyIndex = null; // the page's position, as Python last sent it
    this.sent = []; // positions released and not yet echoed back by Python
    this.trigger = null;
    this.stats = { swaps: 0, shown: -1, want: 0, ready: 0, k: 0, n: 0, ticks: 0, playing: false, released: 0, updates: 0 };

    const { range } = this.el;
    range.addEventListener("input", () => {
      if (this.playing) this.pause(false);
      this.want = Number(range.value);
    });
    range.addEventListener("pointerdown", () => (this.dragging = true));
    this.onUp = () => (this.dragging = false);
    window.addEventListener("pointerup", this.onUp);
    window.addEventListener("pointercancel", this.onUp);
    range.addEventListener("change", () => this.release(Number(range.value)));
    this.el.back.addEventListener("click", () => this.step(-1));
    this.el.fwd.addEventListener("click", () => this.step(1));
    this.el.play.addEventListener("click", () => (this.playing ? this.pause(true) : this.play()));
    this.tick = this.tick.bind(this);
    this.frame = requestAnimationFrame(this.tick);
  }

  update(data) {
    this.stats.updates += 1;
    if (data.bank !== this.bank) this.reset(data);
    if (data.index !== this.pyIndex) {
      this.pyIndex = data.index;
      const k = this.sent.indexOf(data.index);
      if (k >= 0) this.sent.splice(0, k + 1);
      else if (!this.dragging && !this.playing) this.moveTo(data.index);
    }
    const bank = this.bank;
    for (const [key, urls] of Object.entries(data.frames)) {
      const i = Number(key);
      if (this.images.has(i) || this.loading.has(i)) continue;
      this.loading.add(i);
      Promise.all(urls.map(decode)).then((imgs) => {
        if (this.bank !== bank) return;
        this.images.set(i, imgs);
        this.measured.set(i, data.measured[key]);
        this.loading.delete(i);
        this.paintStrip();
      });
    }
  }

  reset(data) {
    this.bank = data.bank;
    this.labels = data.labels;
    this.images.clear();
    this.measured.clear();
    this.loading.clear();
    this.shown = -1;
    this.pyIndex = null;
    this.sent = [];
    const k = data.labels.length;
    const { range, grid, strip, speed } = this.el;
    range.max = String(k - 1);
    range.setAttribute("aria-label", `${data.feature} = a`);
    this.el.feature.textContent = data.feature;
    this.el.lo.textContent = data.labels[0];
    this.el.hi.textContent = data.labels[k - 1];
    this.root.style.setProperty("--cols", String(data.n <= 8 ? 4 : Math.ceil(data.n / 2)));
    grid.replaceChildren();
    this.tiles = [];
    for (let j = 0; j < data.n; j++) {
      const figure = document.createElement("figure");
      const canvas = document.createElement("canvas");
      const caption = document.createElement("figcaption");
      caption.textContent = `sample ${j + 1}`;
      figure.append(canvas, caption);
      grid.append(figure);
      this.tiles.push({ canvas, ctx: canvas.getContext("2d"), caption });
    }
    strip.replaceChildren(...data.labels.map(() => document.createElement("span")));
    if (!speed.options.length) {
      for (const s of data.speeds) speed.append(new Option(`${s} values/s`, String(s), s === 10, s === 10));
    }
    this.stats.k = k;
    this.stats.n = data.n;
    this.paintStrip();
  }

  moveTo(i) {
    this.want = i;
    this.el.range.value = String(i);
  }

  step(delta) {
    if (this.playing) this.pause(false);
    const i = Math.min(Math.max(this.want + delta, 0), this.labels.length - 1);
    this.moveTo(i);
    this.release(i);
  }

  release(i) {
    if (i !== this.pyIndex) this.sent.push(i); // the page's value moves: wait for Python's echo
    this.stats.released += 1;
    if (this.trigger) this.trigger("released", i);
  }

  play() {
    const last = this.labels.length - 1;
    this.playPos = this.want >= last ? 0 : this.want;
    this.direction = 1;
    this.lastTime = null;
    this.playing = this.stats.playing = true;
    this.el.play.textContent = "❚❚ Pause";
    this.el.play.classList.add("playing");
  }

  pause(send) {
    this.playing = this.stats.playing = false;
    this.el.play.textContent = "▶ Play";
    this.el.play.classList.remove("playing");
    if (send) this.release(this.want);
  }

  nearestReady(i) {
    if (this.images.has(i)) return i;
    for (let d = 1; d < this.labels.length; d++) {
      if (this.images.has(i - d)) return i - d;
      if (this.images.has(i + d)) return i + d;
    }
    return -1;
  }

  tick(time) {
    this.stats.ticks += 1;
    if (this.playing) {
      const last = this.labels.length - 1;
      if (this.lastTime !== null && last > 0) {
        this.playPos += (this.direction * Number(this.el.speed.value) * (time - this.lastTime)) / 1000;
        if (this.playPos >= last) [this.playPos, this.direction] = [2 * last - this.playPos, -1];
        if (this.playPos <= 0) [this.playPos, this.direction] = [-this.playPos, 1];
      }
      this.lastTime = time;
      this.moveTo(Math.round(this.playPos));
    }
    const target = this.nearestReady(this.want);
    if (target >= 0 && target !== this.shown) this.draw(target);
    const head = `${this.want}:${this.shown}:${this.images.size}:${this.pyIndex}:${this.playing}:${this.sent.length}`;
    if (head !== this.drawnHead) this.paintHead(head);
    this.frame = requestAnimationFrame(this.tick);
  }

  draw(i) {
    const images = this.images.get(i);
    const measured = this.measured.get(i);
    this.tiles.forEach((tile, j) => {
      const img = images[j];
      if (tile.canvas.width !== img.naturalWidth) {
        tile.canvas.width = img.naturalWidth;
        tile.canvas.height = img.naturalHeight;
      }
      tile.ctx.drawImage(img, 0, 0);
      tile.caption.textContent = measured ? `measured ${fmt(measured[j])}` : `sample ${j + 1}`;
    });
    this.shown = this.stats.shown = i;
    this.stats.swaps += 1;
    this.root.dataset.shown = String(i);
    this.paintStrip();
  }

  paintHead(head) {
    this.drawnHead = head;
    const { labels, want, shown } = this;
    this.stats.want = want;
    this.el.current.textContent = labels[want] ?? "";
    const notes = [];
    if (shown >= 0 && shown !== want) notes.push(`showing ${labels[shown]}, the nearest value drawn so far`);
    if (this.sent.length) notes.push("updating the panels below…");
    else if (this.pyIndex !== null && want !== this.pyIndex) {
      const until = this.playing ? "you pause" : "you let go";
      notes.push(`the panels below show ${labels[this.pyIndex]} until ${until}`);
    }
    this.el.note.textContent = notes.join(" · ");
    const k = labels.length;
    const ready = this.images.size;
    this.stats.ready = ready;
    this.root.dataset.ready = String(ready);
    this.root.classList.toggle("full", k > 0 && ready === k); // the strip has said all it had to
    this.el.status.textContent =
      ready < k ? `${ready} of ${k} values drawn, nearest first…` : `all ${k} values drawn: drag freely`;
  }

  paintStrip() {
    const cells = this.el.strip.children;
    for (let i = 0; i < cells.length; i++) {
      cells[i].className = (this.images.has(i) ? "ready" : "") + (i === this.shown ? " shown" : "");
    }
  }

  stop() {
    cancelAnimationFrame(this.frame);
    window.removeEventListener("pointerup", this.onUp);
    window.removeEventListener("pointercancel", this.onUp);
  }
}

export default function (component) {
  const { data, parentElement, setTriggerValue } = component;
  const root = parentElement.querySelector(".eve-scrubber");
  if (!root || !data) return undefined;
  root.scrubber ??= new Scrubber(root);
  const scrubber = root.scrubber;
  scrubber.trigger = setTriggerValue;
  scrubber.update(data);
  window.eveScrubber = scrubber.stats;
  return () => scrubber.stop();
}
