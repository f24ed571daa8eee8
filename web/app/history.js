// The user's generations (GET /v1/generations, newest first), kept live from the stream:
// a new generation appears at the top, status and progress update in place.
import { h, relativeTime } from "./dom.js";

const FINAL = new Set(["completed", "failed", "cancelled"]);

export class HistoryPanel {
  /**
   * @param {import("./api.js").Api} api
   * @param {(gen: Object) => void} onOpen Open a generation in a tool window.
   */
  constructor(api, onOpen) {
    this.api = api;
    this.onOpen = onOpen;
    this.rows = new Map(); // id -> {element, gen, ...}
    this.cursor = null;
    this.list = h("ol", { class: "history-list", "aria-live": "polite", "aria-relevant": "additions" });
    this.more = h("button", { type: "button", class: "link", hidden: true, onclick: () => this.loadMore() }, "Load older");
    this.empty = h("p", { class: "muted empty" }, "Nothing yet. Run a tool and it shows up here.");
    this.element = h("section", { class: "history", "aria-labelledby": "history-title" },
      h("h2", { id: "history-title" }, "History"), this.empty, this.list, this.more);
  }

  /** Reload from HTTP (sign-in, or the server said continuity was lost). */
  async reload() {
    const page = await this.api.generations(null);
    this.rows.clear();
    this.list.replaceChildren();
    for (const gen of page.items) this.upsert(gen, false);
    this.cursor = page.nextCursor || null;
    this.more.hidden = !this.cursor;
    this.empty.hidden = this.rows.size > 0;
  }

  async loadMore() {
    if (!this.cursor) return;
    const page = await this.api.generations(this.cursor);
    for (const gen of page.items) this.upsert(gen, false);
    this.cursor = page.nextCursor || null;
    this.more.hidden = !this.cursor;
  }

  /** Insert or update a generation (`atTop`: a new one from the stream). */
  upsert(gen, atTop = true) {
    let row = this.rows.get(gen.id);
    if (!row) {
      row = this.createRow(gen);
      this.rows.set(gen.id, row);
      if (atTop) this.list.prepend(row.element);
      else this.list.append(row.element);
      this.empty.hidden = true;
    }
    Object.assign(row.gen, gen);
    this.render(row);
    return row;
  }

  createRow(gen) {
    const status = h("span", { class: "status-badge" });
    const bar = h("progress", { max: 1, value: 0, class: "mini-progress", "aria-label": `Progress of ${gen.id}` });
    const thumb = h("span", { class: "thumb" });
    const meta = h("span", { class: "meta muted" });
    const open = h("button", { type: "button", class: "link open", onclick: () => this.onOpen({ ...row.gen }) },
      "Open", h("span", { class: "sr-only" }, ` ${gen.id}`));
    const element = h("li", { class: "history-item", dataset: { generationId: gen.id } },
      thumb, h("div", { class: "history-main" },
        h("div", {}, h("strong", { class: "tool" }, gen.toolId || "?"), " ", status),
        bar, meta), open);
    const row = { element, status, bar, thumb, meta, gen: { ...gen } };
    return row;
  }

  render(row) {
    const { gen } = row;
    row.status.textContent = gen.status;
    row.status.dataset.status = gen.status;
    row.element.dataset.status = gen.status;
    row.bar.hidden = FINAL.has(gen.status);
    if (gen.progress) row.bar.value = gen.progress.fraction;
    row.meta.textContent = [gen.createdAt ? relativeTime(gen.createdAt) : "", gen.error ? gen.error.code : ""]
      .filter(Boolean).join(" · ");
    const image = (gen.outputs || []).find((o) => o.kind === "image");
    if (image && !row.thumb.firstChild) {
      row.thumb.append(h("img", { src: image.url, alt: "", width: 48, height: 48 }));
    }
  }

  /** A generationUpdate from the stream. */
  onUpdate(event) {
    const known = this.rows.get(event.generationId);
    const gen = { id: event.generationId, status: event.status };
    if (event.toolId) gen.toolId = event.toolId;
    if (event.outputs) gen.outputs = event.outputs;
    if (event.error) gen.error = event.error;
    if (!known) gen.createdAt = event.timestamp;
    if (FINAL.has(event.status)) gen.progress = undefined;
    this.upsert(gen, true);
  }

  /** A generationProgress from the stream. */
  onProgress(event) {
    const row = this.rows.get(event.generationId);
    if (!row || FINAL.has(row.gen.status)) return;
    row.gen.progress = { fraction: event.fraction, step: event.step, totalSteps: event.totalSteps };
    if (row.gen.status === "queued") row.gen.status = "running";
    this.render(row);
  }
}
