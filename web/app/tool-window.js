// A tool window: pick a tool, fill its generated form, Run; the run below updates live.
// Several windows can be open at once; each shows its latest run (earlier runs stay in
// the history panel).
import { h, uid } from "./dom.js";
import { schemaForm } from "./form.js";
import { RunView } from "./run-view.js";

export class ToolWindow {
  /**
   * @param {Object} ctx
   * @param {Array<Object>} ctx.tools GET /v1/tools `tools`.
   * @param {(toolId: string, inputs: Object, cancelAfterSeconds?: number) => Promise<Object>} ctx.run
   *   createGeneration (with the optional deadline of the window's Deadline field).
   * @param {(view: RunView) => void} ctx.track Route live events of this view's generation to it.
   * @param {(id: string) => Promise<void>} ctx.cancel
   * @param {(id: string) => Promise<Object>} ctx.webhooks GET /v1/generations/{id}/webhooks (the run's deliveries).
   * @param {(w: ToolWindow) => void} ctx.onClose
   * @param {string} [toolId] Initially selected tool.
   * @param {Object} [generation] Open on an existing generation (from the history panel).
   */
  constructor(ctx, toolId, generation) {
    this.ctx = ctx;
    this.view = null;
    const selectId = uid("tool");
    this.select = h("select", { id: selectId, class: "tool-select", onchange: () => this.showForm() },
      ...ctx.tools.map((t) => h("option", { value: t.id }, t.title)));
    if (toolId) this.select.value = toolId;
    this.title = h("h2", { class: "window-title" }, "New run");
    this.description = h("p", { class: "tool-description muted" });
    this.formSlot = h("div", { class: "form-slot" });
    const deadlineId = uid("deadline");
    this.deadline = h("input", { id: deadlineId, type: "number", min: "1", step: "any", class: "deadline-input",
      placeholder: "none", "aria-describedby": `${deadlineId}-help` });
    this.runSlot = h("div", { class: "run-slot", "aria-live": "off" });
    this.element = h("article", { class: "tool-window", "aria-label": "Tool window" },
      h("header", { class: "window-head" }, this.title,
        h("button", { type: "button", class: "icon close-window", "aria-label": "Close this window",
          title: "Close window", onclick: () => this.close() }, "×")),
      h("div", { class: "window-body" },
        h("div", { class: "field" }, h("label", { for: selectId }, "Tool"), this.select),
        this.description,
        h("div", { class: "field" }, h("label", { for: deadlineId }, "Deadline (seconds, optional)"), this.deadline,
          h("small", { id: `${deadlineId}-help`, class: "muted" },
            "The run is cancelled if it has not ended this many seconds after it was created.")),
        this.formSlot, this.runSlot));
    this.showForm();
    if (generation) this.showGeneration(generation, { prefill: true });
  }

  get tool() {
    return this.ctx.tools.find((t) => t.id === this.select.value);
  }

  showForm(values = {}) {
    const tool = this.tool;
    if (!tool) {
      this.formSlot.replaceChildren(h("p", { class: "muted" }, "No tools are configured on this gateway."));
      return;
    }
    this.title.textContent = tool.title;
    this.description.textContent = tool.description || tool.inputSchema?.description || "";
    this.form = schemaForm(tool.inputSchema, { onSubmit: (inputs) => this.submit(inputs), values });
    this.formSlot.replaceChildren(this.form.element);
  }

  async submit(inputs) {
    this.form.setBusy(true);
    try {
      const raw = this.deadline.value.trim();
      const generation = await this.ctx.run(this.tool.id, inputs, raw ? Number(raw) : undefined);
      this.showGeneration(generation);
      this.view.element.scrollIntoView({ block: "nearest", behavior: "smooth" });
    } catch (err) {
      const unmatched = this.form.showErrors(err.errors?.length ? err.errors : [{ message: err.message }]);
      if (!unmatched.length && !err.errors?.length) this.form.showErrors([{ message: err.message }]);
    } finally {
      this.form.setBusy(false);
    }
  }

  /** Show a run; opened from the history, the form is prefilled with its inputs ("run again"). */
  showGeneration(generation, { prefill = false } = {}) {
    if (prefill && generation.toolId && this.ctx.tools.some((t) => t.id === generation.toolId)) {
      this.select.value = generation.toolId;
      this.showForm(generation.inputs || {});
    }
    this.view = new RunView(generation, { onCancel: (id) => this.ctx.cancel(id), loadWebhooks: this.ctx.webhooks });
    this.runSlot.replaceChildren(this.view.element);
    this.ctx.track(this.view);
  }

  focus() {
    this.select.focus();
  }

  close() {
    this.element.remove();
    this.ctx.onClose(this);
  }
}
