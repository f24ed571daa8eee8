// The live view of one generation: status, progress bar with step and message, preview
// images as they arrive, streamed text as it streams, the final outputs, Cancel (over the
// stream, from any tab), the queue position with its estimated wait, the deadline, and the
// status of its webhook deliveries.
import { h } from "./dom.js";
import { isPreviewUrl, renderOutput } from "./outputs.js";
import { WebhookStatus } from "./webhooks-view.js";

const FINAL = new Set(["completed", "failed", "cancelled"]);
const STATUS_TEXT = {
  queued: "Queued", running: "Running", completed: "Completed", failed: "Failed", cancelled: "Cancelled",
};

export class RunView {
  /**
   * @param {Object} generation A Generation (openapi.yaml) or at least {id, toolId, status}.
   * @param {{onCancel: (id: string) => Promise<void>, loadWebhooks?: (id: string) => Promise<Object>}} actions
   */
  constructor(generation, { onCancel, loadWebhooks }) {
    this.id = generation.id;
    this.status = null;
    this.lastOffset = 0;
    this.statusEl = h("span", { class: "status-badge", "data-status": "queued" });
    this.bar = h("progress", { max: 1, value: 0, class: "progress-bar", "aria-label": "Progress" });
    this.stepEl = h("span", { class: "step" });
    this.messageEl = h("span", { class: "progress-message" });
    this.preview = h("img", { class: "preview", alt: "Preview of the image being generated", hidden: true });
    this.text = h("p", { class: "partial-text", hidden: true, "aria-live": "off" });
    this.outputs = h("div", { class: "outputs" });
    this.errorEl = h("p", { class: "run-error", role: "alert", hidden: true });
    this.queueEl = h("p", { class: "queue-info", hidden: true });
    this.deadlineEl = h("p", { class: "deadline muted", hidden: true });
    this.deadlineAt = null;
    this.deadlineTimer = null;
    this.cancelButton = h("button", { type: "button", class: "cancel", onclick: async () => {
      this.cancelButton.disabled = true;
      this.cancelButton.textContent = "Cancelling…";
      try {
        await onCancel(this.id);
      } catch (err) {
        this.cancelButton.disabled = false;
        this.cancelButton.textContent = "Cancel";
        this.showError(err.message);
      }
    } }, "Cancel");
    this.live = h("p", { class: "sr-only", "aria-live": "polite" });
    this.webhooks = loadWebhooks ? new WebhookStatus(() => loadWebhooks(this.id)) : null;
    this.element = h("section", { class: "run", dataset: { generationId: this.id }, "aria-label": `Run ${this.id}` },
      h("div", { class: "run-head" }, this.statusEl, h("code", { class: "gen-id", title: "Generation id" }, this.id),
        this.cancelButton),
      this.queueEl, this.deadlineEl,
      h("div", { class: "progress-row" }, this.bar, h("span", { class: "percent" })),
      h("p", { class: "progress-detail" }, this.stepEl, " ", this.messageEl),
      h("div", { class: "live-media" }, this.preview, this.text),
      this.errorEl, this.outputs, ...(this.webhooks ? [this.webhooks.element] : []), this.live);
    this.percent = this.element.querySelector(".percent");
    this.applyGeneration(generation);
  }

  /** State from HTTP (initial, or after a resync). */
  applyGeneration(gen) {
    if (gen.progress) this.applyProgress(gen.progress);
    this.applyUpdate({ status: gen.status, outputs: gen.outputs, error: gen.error, deadlineAt: gen.deadlineAt,
      queuePosition: gen.queuePosition, estimatedWaitSeconds: gen.estimatedWaitSeconds });
  }

  /** generationProgress (or a ProgressSnapshot). */
  applyProgress(p) {
    if (FINAL.has(this.status)) return;
    if (typeof p.offset === "number") {
      if (p.offset < this.lastOffset) return;
      this.lastOffset = p.offset;
    }
    if (this.status === "queued" || this.status === null) {
      this.setStatus("running");
      this.showQueue(undefined); // it runs: no longer waiting
    }
    this.bar.value = p.fraction;
    this.bar.setAttribute("aria-valuetext", `${Math.round(p.fraction * 100)} percent`);
    this.percent.textContent = `${Math.round(p.fraction * 100)}%`;
    if (typeof p.step === "number") {
      this.stepEl.textContent = p.totalSteps ? `Step ${p.step} of ${p.totalSteps}` : `Step ${p.step}`;
    }
    if (p.message) this.messageEl.textContent = `— ${p.message}`;
    if (p.preview?.url && isPreviewUrl(p.preview.url)) {
      this.preview.src = p.preview.url;
      this.preview.hidden = false;
      this.preview.dataset.step = String(p.step ?? "");
    }
    // The whole text so far: web/client.js rebuilds it from textDelta + textOffset.
    if (typeof p.partialText === "string") this.applyText(p.partialText);
  }

  /** The streamed text so far. */
  applyText(text) {
    if (FINAL.has(this.status)) return;
    this.text.textContent = text;
    this.text.hidden = false;
  }

  /** generationUpdate (status change, outputs, error). */
  applyUpdate(u) {
    if (FINAL.has(this.status) && !FINAL.has(u.status)) return; // stale
    if (typeof u.offset === "number") this.lastOffset = Math.max(this.lastOffset, u.offset);
    this.setStatus(u.status);
    if (u.status === "completed") {
      this.bar.value = 1;
      this.percent.textContent = "100%";
      this.preview.hidden = true;
      const outputs = u.outputs || [];
      this.stepEl.textContent = "Done";
      this.messageEl.textContent = `— ${outputs.length} output${outputs.length === 1 ? "" : "s"}`;
      this.outputs.replaceChildren(...outputs.map(renderOutput));
      if (outputs.some((o) => o.kind === "text")) this.text.hidden = true;
      if (!outputs.length) this.outputs.replaceChildren(h("p", { class: "muted" }, "No outputs."));
    }
    if ((u.status === "failed" || u.status === "cancelled") && u.error) {
      this.showError(`${u.error.message} (${u.error.code})`);
    }
    if (u.deadlineAt) this.setDeadline(u.deadlineAt);
    this.showQueue(FINAL.has(u.status) ? undefined : u.queuePosition, u.estimatedWaitSeconds);
    if (FINAL.has(u.status)) this.stopDeadline();
  }

  /** `queuePosition` (1 = next) and `estimatedWaitSeconds` of a waiting run; hidden otherwise. */
  showQueue(position, estimate) {
    if (typeof position !== "number") {
      this.queueEl.hidden = true;
      delete this.element.dataset.queuePosition;
      return;
    }
    const where = this.status === "running" ? "in the tool's own queue" : "in the queue";
    const wait = typeof estimate === "number" ? ` · about ${formatSeconds(estimate)} to wait` : "";
    this.queueEl.textContent = position === 1 ? `Next ${where}${wait}` : `Position ${position} ${where}${wait}`;
    this.queueEl.hidden = false;
    this.element.dataset.queuePosition = String(position);
  }

  /** `deadlineAt`: a countdown until the run is cancelled, refreshed every second. */
  setDeadline(deadlineAt) {
    if (FINAL.has(this.status) || this.deadlineAt === deadlineAt) return;
    this.deadlineAt = deadlineAt;
    this.deadlineEl.hidden = false;
    this.element.dataset.deadlineAt = deadlineAt;
    this.tickDeadline();
    clearInterval(this.deadlineTimer);
    this.deadlineTimer = setInterval(() => this.tickDeadline(), 1000);
  }

  tickDeadline() {
    if (this.element.isConnected) this.attached = true;
    else if (this.attached) { this.stopDeadline(); return; } // its window was closed
    const at = new Date(this.deadlineAt);
    const left = Math.max(0, (at.getTime() - Date.now()) / 1000);
    this.deadlineEl.textContent = `Deadline ${at.toLocaleTimeString()} (cancelled in ${formatSeconds(left)} if not done)`;
  }

  stopDeadline() {
    clearInterval(this.deadlineTimer);
    this.deadlineTimer = null;
    if (this.deadlineAt) {
      const exceeded = this.errorEl.textContent.includes("deadline_exceeded");
      this.deadlineEl.textContent = `Deadline ${new Date(this.deadlineAt).toLocaleTimeString()}${exceeded ? " (exceeded)" : ""}`;
    }
  }

  setStatus(status) {
    if (this.status === status) return;
    this.status = status;
    this.statusEl.textContent = STATUS_TEXT[status] || status;
    this.statusEl.dataset.status = status;
    this.element.dataset.status = status;
    this.cancelButton.hidden = FINAL.has(status);
    this.live.textContent = `Generation ${STATUS_TEXT[status] || status}`;
    this.webhooks?.refresh(); // a status change may have queued deliveries
    if (status === "cancelled") this.messageEl.textContent = "— stopped";
  }

  showError(message) {
    this.errorEl.hidden = false;
    this.errorEl.textContent = message;
  }
}

function formatSeconds(seconds) {
  if (seconds < 60) return `${Math.round(seconds)} s`;
  const minutes = Math.floor(seconds / 60);
  return `${minutes} min ${Math.round(seconds % 60)} s`;
}
