// The webhook deliveries of one run (openapi.yaml listGenerationWebhooks): one line per event
// and endpoint, pending / delivered / failed, with the last error of a failed one. Read over
// HTTP when the run changes status, then again while a delivery is pending (bounded).
import { h } from "./dom.js";

const STATUS_TEXT = { pending: "Pending", delivered: "Delivered", failed: "Failed" };
const POLL_MS = 2000;
const MAX_POLLS = 30; // a minute of following retries; a reload or a status change reads again

/** @typedef {import("../generated/http-types.js").WebhookDeliveryList} WebhookDeliveryList */

export class WebhookStatus {
  /** @param {() => Promise<WebhookDeliveryList>} load */
  constructor(load) {
    this.load = load;
    this.polls = 0;
    this.timer = null;
    this.list = h("ul", { class: "webhook-list" });
    this.element = h("div", { class: "webhooks", hidden: true, "aria-label": "Webhook deliveries" },
      h("span", { class: "webhooks-title" }, "Webhooks"), this.list);
  }

  /** Read the deliveries now (and follow pending ones for a while). */
  async refresh({ restart = true } = {}) {
    if (restart) this.polls = 0;
    clearTimeout(this.timer);
    let deliveries;
    try {
      ({ deliveries } = await this.load());
    } catch {
      return; // not shown rather than wrong; the next status change reads again
    }
    this.render(deliveries);
    if (deliveries.some((d) => d.status === "pending") && this.polls < MAX_POLLS && this.element.isConnected) {
      this.polls += 1;
      this.timer = setTimeout(() => this.refresh({ restart: false }), POLL_MS);
    }
  }

  render(deliveries) {
    this.element.hidden = deliveries.length === 0;
    this.element.dataset.status = deliveries.some((d) => d.status === "failed") ? "failed"
      : deliveries.some((d) => d.status === "pending") ? "pending" : "delivered";
    this.list.replaceChildren(...deliveries.map((d) => {
      const attempts = `${d.attempts} attempt${d.attempts === 1 ? "" : "s"}`;
      const detail = d.status === "failed" && d.lastError ? ` — ${d.lastError}` : "";
      return h("li", { class: "webhook", dataset: { status: d.status, endpoint: d.endpoint, event: d.event } },
        h("span", { class: "webhook-badge", "data-status": d.status }, STATUS_TEXT[d.status] || d.status),
        ` ${d.endpoint} · ${d.event} (${attempts})${detail}`);
    }));
  }
}
