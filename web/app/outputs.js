// Final outputs of a generation, rendered by kind (asyncapi.yaml Output): image, text,
// audio player, video player, file link. URLs are the gateway's signed, short-lived ones.
import { formatBytes, h } from "./dom.js";

// asyncapi.yaml Output.url: a path under /v1/outputs/ with an optional query. Anything else
// (an absolute URL, `javascript:`, `data:`) is refused: a publisher cannot make us follow it.
const OUTPUT_URL = /^\/v1\/outputs\/[A-Za-z0-9_-]{1,64}(\?[A-Za-z0-9_.~%=&-]*)?$/;
// asyncapi.yaml Preview.url: a data: URL of a passive image type.
const PREVIEW_URL = /^data:image\/(png|jpeg|webp|gif|avif);base64,/;

/** Whether `url` is an output URL the contract allows. */
export function isOutputUrl(url) {
  return typeof url === "string" && OUTPUT_URL.test(url);
}

/** Whether `url` is a preview URL the contract allows. */
export function isPreviewUrl(url) {
  return typeof url === "string" && PREVIEW_URL.test(url);
}

function caption(output) {
  const bits = [output.mediaType.split(";")[0]];
  if (output.width && output.height) bits.push(`${output.width}×${output.height}`);
  if (typeof output.durationSeconds === "number") bits.push(`${output.durationSeconds.toFixed(1)} s`);
  if (typeof output.sizeBytes === "number") bits.push(formatBytes(output.sizeBytes));
  return bits.join(" · ");
}

function download(output) {
  return h("a", { href: output.url, download: output.filename || output.id, class: "download" },
    `Download${output.filename ? ` ${output.filename}` : ""}`);
}

/** One output as a figure. */
export function renderOutput(output) {
  if (!isOutputUrl(output.url)) {
    console.warn("refused an output URL outside the contract", output.id);
    return h("figure", { class: "output output-refused", dataset: { kind: output.kind, outputId: output.id } },
      h("p", { class: "notice" }, "This output's URL is not a gateway output URL; it was not opened."));
  }
  let body;
  switch (output.kind) {
    case "image":
      body = h("a", { href: output.url, target: "_blank", rel: "noopener", class: "image-link" },
        h("img", { src: output.url, alt: output.filename ? `Generated image ${output.filename}` : "Generated image",
          width: output.width, height: output.height, loading: "lazy", class: "output-image" }));
      break;
    case "text": {
      const text = h("pre", { class: "output-text", tabindex: "0" }, output.text ?? "");
      if (output.text === undefined) {
        fetch(output.url).then((r) => r.text()).then((t) => { text.textContent = t; }).catch(() => {
          text.textContent = "(could not load the text)";
        });
      }
      body = text;
      break;
    }
    case "audio":
      body = h("audio", { controls: true, preload: "metadata", src: output.url, class: "output-audio" },
        "Your browser cannot play this audio.");
      break;
    case "video":
      body = h("video", { controls: true, preload: "metadata", src: output.url, class: "output-video",
        width: output.width, height: output.height }, "Your browser cannot play this video.");
      break;
    default:
      body = h("p", {}, h("a", { href: output.url, download: output.filename || output.id, class: "output-file" },
        output.filename || output.id));
  }
  return h("figure", { class: `output output-${output.kind}`, dataset: { kind: output.kind, outputId: output.id } },
    body, h("figcaption", {}, h("span", { class: "kind" }, output.kind), ` ${caption(output)} `, download(output)));
}
