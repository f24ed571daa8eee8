"""The ``demo`` tool: a believable generation with no network and no keys.

One run takes ``durationSeconds`` spread evenly over ``steps``. Every step publishes
progress (fraction, step, totalSteps, message), a preview JPEG that sharpens step by step
(when ``image`` is requested) and the text streamed word by word as ``partial_text`` (the
whole text so far, when ``text`` is requested). The outputs are a real PNG of
``width`` x ``height``, the text (``text/plain; charset=utf-8``, also inline) and a short
WAV tone sequence (``audio/wav``). Everything is derived from ``prompt`` and ``seed`` only,
so a given pair always gives the same bytes.

The waiting is the tool's simulated work (``asyncio.sleep``); cancelling the task stops it
at once — there is no upstream to tell.
"""

from __future__ import annotations

import asyncio
import colorsys
import dataclasses
import hashlib
import io
import math
import random
import wave
from array import array
from typing import Any

from PIL import Image, ImageDraw, ImageFilter

from livegate.tools.base import RunContext, StoredOutput, ToolSpec
from livegate.tools.settings import SettingsReader, validate_inputs

__all__ = ["DemoTool", "compose_text", "preview_jpeg", "render_scene", "synth_wav"]

OUTPUT_KINDS = ("image", "text", "audio")
TEXT_MEDIA_TYPE = "text/plain; charset=utf-8"
SAMPLE_RATE = 22050
PENTATONIC = (261.63, 293.66, 329.63, 392.00, 440.00, 523.25, 587.33, 659.25)
PHASES = ("Sketching the composition", "Blocking in colour", "Refining details", "Finishing")


def _rng(prompt: str, seed: int | None, salt: str) -> random.Random:
    digest = hashlib.sha256(f"{salt}\x00{prompt}\x00{seed}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _colour(rng: random.Random, lightness: float, saturation: float = 0.6) -> tuple[int, int, int]:
    r, g, b = colorsys.hls_to_rgb(rng.random(), lightness, saturation)
    return int(r * 255), int(g * 255), int(b * 255)


def render_scene(prompt: str, seed: int | None, width: int, height: int) -> Image.Image:
    """A deterministic little landscape: sky gradient, a sun, hills and a tower.

    Coordinates are fractions of the canvas, so a thumbnail and the full image agree.
    """
    rng = _rng(prompt, seed, "scene")
    top, bottom = _colour(rng, 0.25), _colour(rng, 0.7)
    mask = Image.linear_gradient("L").resize((width, height))
    image = Image.composite(Image.new("RGB", (width, height), bottom), Image.new("RGB", (width, height), top), mask)
    draw = ImageDraw.Draw(image)
    radius = min(width, height) * (0.06 + 0.08 * rng.random())
    cx, cy = width * (0.15 + 0.7 * rng.random()), height * (0.15 + 0.3 * rng.random())
    draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=_colour(rng, 0.8, 0.9))
    for layer in range(3):
        base = height * (0.55 + 0.12 * layer)
        points = [(0.0, float(height))]
        for i in range(9):
            points.append((width * i / 8, base - height * 0.12 * rng.random()))
        points.append((float(width), float(height)))
        draw.polygon(points, fill=_colour(rng, 0.35 - 0.08 * layer, 0.4))
    tower_x = width * (0.2 + 0.6 * rng.random())
    tower_w, tower_top = width * 0.04, height * (0.3 + 0.2 * rng.random())
    draw.rectangle((tower_x, tower_top, tower_x + tower_w, height * 0.8), fill=(235, 235, 225))
    draw.rectangle(
        (tower_x - tower_w * 0.3, tower_top - height * 0.04, tower_x + tower_w * 1.3, tower_top),
        fill=_colour(rng, 0.75, 1.0),
    )
    return image


def preview_jpeg(scene: Image.Image, step: int, steps: int) -> bytes:
    """``scene`` as it looks after ``step`` of ``steps``: coarse blocks that sharpen."""
    remaining = 1.0 - step / steps
    block = max(1, round(2 ** (5 * remaining)))
    width, height = scene.size
    coarse = scene.resize((max(1, width // block), max(1, height // block)), Image.Resampling.BILINEAR)
    frame = coarse.resize((width, height), Image.Resampling.NEAREST)
    if remaining > 0:
        frame = frame.filter(ImageFilter.GaussianBlur(radius=3 * remaining))
    buffer = io.BytesIO()
    frame.save(buffer, format="JPEG", quality=70)
    return buffer.getvalue()


def compose_text(prompt: str, seed: int | None) -> str:
    """A short, deterministic caption for ``prompt``."""
    rng = _rng(prompt, seed, "text")
    opening = rng.choice(["Picture", "Imagine", "Here is", "Behold", "Consider"])
    mood = rng.choice(["calm and luminous", "moody and quiet", "bright and windswept", "soft as memory"])
    light = rng.choice(["the last light", "a low amber glow", "silver haze", "long violet shadows"])
    detail = rng.choice(["gulls wheel overhead", "the tide breathes below", "a path winds out of frame"])
    close = rng.choice(["Nothing here is real, and that is the point.", "A demo, rendered from nothing."])
    return f"{opening} {prompt}, {mood}. {light.capitalize()} settles over the scene while {detail}. {close}"


def synth_wav(prompt: str, seed: int | None, seconds: float = 1.5) -> bytes:
    """A mono 16-bit WAV: six notes of a pentatonic scale chosen by ``prompt``/``seed``."""
    rng = _rng(prompt, seed, "audio")
    notes = [rng.choice(PENTATONIC) for _ in range(6)]
    per_note = int(SAMPLE_RATE * seconds / len(notes))
    fade = int(SAMPLE_RATE * 0.01)  # 10 ms ramps: no clicks between notes
    samples = array("h")
    for frequency in notes:
        step = 2 * math.pi * frequency / SAMPLE_RATE
        for i in range(per_note):
            envelope = min(1.0, i / fade, (per_note - i) / fade)
            samples.append(int(9000 * envelope * math.sin(step * i)))
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(samples.tobytes())
    return buffer.getvalue()


def _png(prompt: str, seed: int | None, width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    render_scene(prompt, seed, width, height).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


class DemoTool:
    """Settings: ``duration_seconds`` and ``steps`` set the defaults of the inputs of the
    same meaning."""

    def __init__(self, spec: ToolSpec) -> None:
        self.spec = spec
        reader = SettingsReader(spec.id, spec.kind, spec.settings)
        self._duration = reader.number("duration_seconds", 3, minimum=0)
        self._steps = reader.number("steps", 8, minimum=1, integer=True)
        reader.finish()
        if self._duration > 30 or self._steps > 50:
            raise reader.error("duration_seconds/steps", "exceed the input limits (30 s, 50 steps)")

    @property
    def input_schema(self) -> dict[str, Any]:
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": self.spec.title,
            "description": "A simulated generation: image, text and audio made locally.",
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "prompt": {
                    "type": "string",
                    "title": "Prompt",
                    "description": "What to depict; also seeds the colours, caption and melody.",
                    "default": "a lighthouse at dusk",
                    "minLength": 1,
                    "maxLength": 500,
                },
                "steps": {
                    "type": "integer",
                    "title": "Steps",
                    "description": "How many progress updates (and preview frames) to send.",
                    "minimum": 1,
                    "maximum": 50,
                    "default": self._steps,
                },
                "durationSeconds": {
                    "type": "number",
                    "title": "Duration (s)",
                    "description": "Total wall time of the run, spread over the steps.",
                    "minimum": 0,
                    "maximum": 30,
                    "default": self._duration,
                },
                "outputs": {
                    "type": "array",
                    "title": "Outputs",
                    "description": "Which outputs to produce.",
                    "items": {"type": "string", "enum": list(OUTPUT_KINDS)},
                    "uniqueItems": True,
                    "minItems": 1,
                    "default": list(OUTPUT_KINDS),
                },
                "width": {
                    "type": "integer",
                    "title": "Width",
                    "description": "Image width in pixels.",
                    "minimum": 64,
                    "maximum": 1024,
                    "default": 512,
                },
                "height": {
                    "type": "integer",
                    "title": "Height",
                    "description": "Image height in pixels.",
                    "minimum": 64,
                    "maximum": 1024,
                    "default": 512,
                },
                "seed": {
                    "type": "integer",
                    "title": "Seed",
                    "description": "Same prompt and seed, same result. Omit to derive it from the prompt.",
                    "minimum": 0,
                    "maximum": 2**32 - 1,
                },
            },
        }

    async def run(self, ctx: RunContext) -> list[StoredOutput]:
        inputs = validate_inputs(self.input_schema, ctx.inputs)
        prompt: str = inputs["prompt"]
        seed: int | None = inputs.get("seed")
        steps: int = inputs["steps"]
        wanted = set(inputs["outputs"])
        width, height = inputs["width"], inputs["height"]
        scale = 160 / max(width, height)
        thumbnail = render_scene(prompt, seed, max(1, round(width * scale)), max(1, round(height * scale)))
        words = compose_text(prompt, seed).split(" ")
        loop = asyncio.get_running_loop()
        start = loop.time()
        for step in range(1, steps + 1):
            delay = start + inputs["durationSeconds"] * step / steps - loop.time()
            await asyncio.sleep(max(0.0, delay))
            fraction = step / steps
            phase = PHASES[min(len(PHASES) - 1, int(fraction * len(PHASES) - 1e-9))]
            shown = math.ceil(len(words) * fraction)
            await ctx.progress(
                fraction,
                step=step,
                total_steps=steps,
                message=f"{phase} ({step}/{steps})",
                preview=preview_jpeg(thumbnail, step, steps) if "image" in wanted else None,
                preview_media_type="image/jpeg" if "image" in wanted else None,
                partial_text=" ".join(words[:shown]) if "text" in wanted else None,
            )
        outputs: list[StoredOutput] = []
        if "image" in wanted:
            png = await asyncio.to_thread(_png, prompt, seed, width, height)
            outputs.append(
                await ctx.store_output(
                    png, kind="image", media_type="image/png", filename="demo.png", width=width, height=height
                )
            )
        if "text" in wanted:
            text = " ".join(words)
            stored = await ctx.store_output(
                text.encode(), kind="text", media_type=TEXT_MEDIA_TYPE, filename="demo.txt"
            )
            outputs.append(dataclasses.replace(stored, text=text))
        if "audio" in wanted:
            wav = await asyncio.to_thread(synth_wav, prompt, seed)
            seconds = (len(wav) - 44) / 2 / SAMPLE_RATE
            outputs.append(
                await ctx.store_output(
                    wav, kind="audio", media_type="audio/wav", filename="demo.wav", duration_seconds=seconds
                )
            )
        return outputs

    async def reattach(self, ctx: RunContext) -> list[StoredOutput] | None:
        # The work lived in the process that stopped, but a demo run is deterministic
        # (its inputs and seed give the same frames and outputs): run it again.
        return await self.run(ctx)

    async def aclose(self) -> None:
        return None
