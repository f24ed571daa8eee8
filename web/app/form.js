// A form generated from a tool's input JSON Schema (GET /v1/tools -> inputSchema).
//
// Supported: string (enum -> select, long -> textarea), integer/number (min/max/step),
// boolean (checkbox), array of enum strings (checkbox group); anything else is a JSON field.
// Constraints become HTML constraints, so the browser explains a wrong value before any
// request; the server's 422 `errors[].path` are shown next to the matching field.
import { h, uid } from "./dom.js";

function label(name, schema) {
  return schema.title || name.replace(/([A-Z])/g, " $1").replace(/^./, (c) => c.toUpperCase());
}

function isLongText(name, schema) {
  return (schema.maxLength ?? Infinity) > 120 || /prompt|text|description|message/i.test(name);
}

/** One field: {element, read(): value|undefined, focus(), showError(message)}. */
function field(name, schema, required, value) {
  if (value !== undefined) schema = { ...schema, default: value };
  const id = uid(`f-${name}`);
  const helpId = `${id}-help`;
  const errorId = `${id}-error`;
  const described = [schema.description ? helpId : null, errorId].filter(Boolean).join(" ");
  const help = schema.description ? h("p", { class: "help", id: helpId }, schema.description) : null;
  const error = h("p", { class: "field-error", id: errorId, role: "alert", hidden: true });
  const title = [label(name, schema), required ? h("span", { class: "req", "aria-hidden": "true" }, " *") : null];
  let control;
  let read;
  const type = Array.isArray(schema.type) ? schema.type.find((t) => t !== "null") : schema.type;

  if (type === "array" && schema.items?.enum) {
    const defaults = new Set(schema.default || []);
    const boxes = schema.items.enum.map((value) => {
      const boxId = uid(`f-${name}-${value}`);
      const box = h("input", { type: "checkbox", id: boxId, value, checked: defaults.has(value), name });
      return { box, el: h("label", { class: "check", for: boxId }, box, ` ${value}`) };
    });
    control = h("fieldset", { class: "group", "aria-describedby": described },
      h("legend", {}, title), ...boxes.map((b) => b.el));
    read = () => {
      const chosen = boxes.filter((b) => b.box.checked).map((b) => b.box.value);
      if (schema.minItems && chosen.length < schema.minItems) throw new Error(`Choose at least ${schema.minItems}.`);
      return chosen;
    };
    const element = h("div", { class: "field", dataset: { field: name } }, control, help, error);
    return { name, element, read, focus: () => boxes[0]?.box.focus(), error };
  }

  if (type === "boolean") {
    const box = h("input", { type: "checkbox", id, name, checked: schema.default === true, "aria-describedby": described });
    const element = h("div", { class: "field field-check", dataset: { field: name } },
      h("label", { for: id }, box, " ", title), help, error);
    return { name, element, read: () => box.checked, focus: () => box.focus(), error };
  }

  if (schema.enum) {
    control = h("select", { id, name, required, "aria-describedby": described },
      required ? null : h("option", { value: "" }, "—"),
      ...schema.enum.map((v) => h("option", { value: String(v), selected: v === schema.default }, String(v))));
    read = () => (control.value === "" ? undefined : schema.enum.find((v) => String(v) === control.value));
  } else if (type === "integer" || type === "number") {
    control = h("input", {
      type: "number", id, name, required, inputmode: type === "integer" ? "numeric" : "decimal",
      min: schema.minimum, max: schema.maximum, step: type === "integer" ? "1" : "any",
      value: schema.default ?? "", "aria-describedby": described,
    });
    read = () => {
      if (control.value.trim() === "") return undefined;
      const value = Number(control.value);
      if (!Number.isFinite(value)) throw new Error("Enter a number.");
      return value;
    };
  } else if (type === "string") {
    const attrs = {
      id, name, required, minlength: schema.minLength, maxlength: schema.maxLength,
      pattern: schema.pattern, "aria-describedby": described, placeholder: schema.examples?.[0],
    };
    control = isLongText(name, schema) ? h("textarea", { ...attrs, rows: 3 }) : h("input", { ...attrs, type: "text" });
    control.value = schema.default ?? "";
    read = () => (control.value === "" ? undefined : control.value);
  } else {
    control = h("textarea", { id, name, rows: 3, class: "mono", "aria-describedby": described, required });
    control.value = schema.default === undefined ? "" : JSON.stringify(schema.default, null, 2);
    read = () => {
      if (control.value.trim() === "") return undefined;
      try {
        return JSON.parse(control.value);
      } catch {
        throw new Error("Enter valid JSON.");
      }
    };
  }
  const narrow = control.tagName === "SELECT" || control.type === "number";
  const element = h("div", { class: narrow ? "field narrow" : "field", dataset: { field: name } },
    h("label", { for: id }, title), control, help, error);
  return { name, element, read, focus: () => control.focus(), error, control };
}

/**
 * Build the form for `schema` (prefilled with `values`, else the schema defaults);
 * `onSubmit(inputs)` runs when the user presses Run.
 * @returns {{element: HTMLFormElement, showErrors(items: Array<{path?: string, message: string}>): string[], setBusy(b: boolean): void}}
 */
export function schemaForm(schema, { onSubmit, submitLabel = "Run", values = {} }) {
  const props = schema?.properties || {};
  const required = new Set(schema?.required || []);
  const fields = Object.entries(props).map(([name, s]) => field(name, s, required.has(name), values[name]));
  const submit = h("button", { type: "submit", class: "primary" }, submitLabel);
  const formError = h("p", { class: "form-error", role: "alert", hidden: true });

  const clear = () => {
    for (const f of fields) { f.error.hidden = true; f.error.textContent = ""; f.control?.removeAttribute("aria-invalid"); }
    formError.hidden = true;
  };
  const showErrors = (items) => {
    const unmatched = [];
    for (const item of items) {
      const name = (item.path || "").replace(/^\$\.inputs\.?/, "").split(/[.[]/)[0];
      const f = fields.find((x) => x.name === name);
      if (f) {
        f.error.hidden = false;
        f.error.textContent = item.message;
        f.control?.setAttribute("aria-invalid", "true");
      } else unmatched.push(item.message);
    }
    if (unmatched.length) { formError.hidden = false; formError.textContent = unmatched.join(" "); }
    const first = fields.find((f) => !f.error.hidden);
    first?.focus();
    return unmatched;
  };

  const form = h("form", { class: "tool-form", novalidate: false }, ...fields.map((f) => f.element), formError,
    h("div", { class: "actions" }, submit));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    clear();
    const inputs = {};
    const problems = [];
    for (const f of fields) {
      try {
        const value = f.read();
        if (value !== undefined) inputs[f.name] = value;
      } catch (err) {
        problems.push({ path: `$.inputs.${f.name}`, message: err.message });
      }
    }
    if (problems.length) { showErrors(problems); return; }
    onSubmit(inputs);
  });
  return {
    element: form,
    showErrors,
    setBusy(busy) { submit.disabled = busy; submit.textContent = busy ? "Starting…" : submitLabel; },
  };
}
