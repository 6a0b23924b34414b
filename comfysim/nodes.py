"""What each node class does on the simulated GPU: same inputs and outputs as ComfyUI, pictures from render."""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Protocol

from PIL import Image

from comfysim import render
from comfysim.storage import Storage


class NodeContext(Protocol):
    storage: Storage
    prompt: dict[str, Any]
    extra_pnginfo: dict[str, Any]
    step_seconds: float
    previews: bool
    noise: float

    async def sleep(self, seconds: float) -> None: ...
    async def progress(self, value: int, total: int, preview: tuple[str, Image.Image] | None = None) -> None: ...
    async def load_checkpoint(self, name: str) -> None: ...


@dataclass
class Latent:
    width: int
    height: int
    batch: int
    key: str
    pixels: list[Image.Image] | None = None  # set by VAEEncode (img2img)
    source: "Latent | None" = None  # what a sampler started from
    denoise: float = 1.0


NodeResult = tuple[tuple[Any, ...], dict[str, Any]]  # (outputs, ui)
NodeFunction = Callable[..., Awaitable[NodeResult]]


async def slow_progress(ctx: NodeContext, steps: int, step_seconds: float, width: int, height: int,
                        batch_size: int, seed: int, fail_at_step: int) -> NodeResult:
    for step in range(steps):
        if step == fail_at_step:
            raise RuntimeError(f"SlowProgress: deliberate failure at step {step} of {steps}")
        await ctx.sleep(step_seconds)
        await ctx.progress(step + 1, steps)
    images = [render.generated(f"slow|{seed}|{i}", width, height) for i in range(batch_size)]
    return (images,), {}


async def empty_image(ctx: NodeContext, width: int, height: int, batch_size: int, color: int) -> NodeResult:
    return ([render.solid(color, width, height) for _ in range(batch_size)],), {}


async def image_invert(ctx: NodeContext, image: list[Image.Image]) -> NodeResult:
    return ([render.invert(i) for i in image],), {}


async def image_blur(ctx: NodeContext, image: list[Image.Image], blur_radius: int, sigma: float) -> NodeResult:
    return ([render.blur(i, sigma) for i in image],), {}


async def image_sharpen(ctx: NodeContext, image: list[Image.Image], sharpen_radius: int, sigma: float,
                        alpha: float) -> NodeResult:
    return ([render.sharpen(i, sharpen_radius, alpha) for i in image],), {}


def _png_text(ctx: NodeContext) -> dict[str, str]:
    text = {"prompt": json.dumps(ctx.prompt)}
    text.update({key: json.dumps(value) for key, value in ctx.extra_pnginfo.items()})
    return text


async def image_scale(ctx: NodeContext, image: list[Image.Image], upscale_method: str, width: int, height: int,
                      crop: str) -> NodeResult:
    return ([render.scale(i, width, height, crop == "center") for i in image],), {}


async def save_image(ctx: NodeContext, images: list[Image.Image], filename_prefix: str) -> NodeResult:
    return (), {"images": ctx.storage.save_images(images, filename_prefix, _png_text(ctx))}


async def preview_image(ctx: NodeContext, images: list[Image.Image]) -> NodeResult:
    return (), {"images": ctx.storage.save_images(images, ctx.storage.temp_prefix, _png_text(ctx), kind="temp")}


async def save_image_websocket(ctx: NodeContext, images: list[Image.Image]) -> NodeResult:
    for step, image in enumerate(images):
        await ctx.progress(step, len(images), ("PNG", image))
    return (), {}


async def load_image(ctx: NodeContext, image: str) -> NodeResult:
    picture = render.load(ctx.storage.read_input(image))
    return ([picture], [None]), {}


async def checkpoint_loader(ctx: NodeContext, ckpt_name: str) -> NodeResult:
    await ctx.load_checkpoint(ckpt_name)
    return (ckpt_name, ckpt_name, ckpt_name), {}


async def clip_text_encode(ctx: NodeContext, text: str, clip: str) -> NodeResult:
    return ({"text": text, "model": clip},), {}


async def empty_latent(ctx: NodeContext, width: int, height: int, batch_size: int) -> NodeResult:
    return (Latent(width, height, batch_size, f"empty|{width}x{height}x{batch_size}"),), {}


async def _sample(ctx: NodeContext, latent: Latent, key: str, steps: int, denoise: float) -> Latent:
    result = Latent(latent.width, latent.height, latent.batch, f"{key}|{latent.key}", source=latent, denoise=denoise)
    final = _decode(result)[0] if ctx.previews else None
    # Steps keep a fixed pace from the first one, as on a GPU: a busy host CPU delays a step, not the whole run.
    clock = asyncio.get_running_loop().time
    begun = clock()
    for step in range(1, steps + 1):
        await ctx.sleep(max(0.0, begun + step * ctx.step_seconds - clock()))
        preview = ("JPEG", render.step_preview(final, result.key, step / steps)) if final is not None else None
        await ctx.progress(step, steps, preview)
    return result


async def ksampler(ctx: NodeContext, model: str, seed: int, steps: int, cfg: float, sampler_name: str,
                   scheduler: str, positive: dict[str, str], negative: dict[str, str], latent_image: Latent,
                   denoise: float) -> NodeResult:
    key = json.dumps([model, positive["text"], negative["text"], seed, steps, cfg, sampler_name, scheduler, denoise])
    return (await _sample(ctx, latent_image, key, steps, denoise),), {}


async def ksampler_advanced(ctx: NodeContext, model: str, add_noise: str, noise_seed: int, steps: int, cfg: float,
                            sampler_name: str, scheduler: str, positive: dict[str, str], negative: dict[str, str],
                            latent_image: Latent, start_at_step: int, end_at_step: int,
                            return_with_leftover_noise: str) -> NodeResult:
    first, last = min(start_at_step, steps), min(end_at_step, steps)
    key = json.dumps([model, positive["text"], negative["text"], noise_seed, steps, cfg, sampler_name, scheduler,
                      first, last, add_noise])
    denoise = (last - first) / steps if steps else 0.0
    return (await _sample(ctx, latent_image, key, max(0, last - first), denoise),), {}


def _decode(latent: Latent, noise: float = 0.0) -> list[Image.Image]:
    if latent.pixels is not None:
        return latent.pixels
    images = [render.with_noise(render.generated(f"{latent.key}|{i}", latent.width, latent.height),
                                f"{latent.key}|{i}", noise) for i in range(latent.batch)]
    source = latent.source
    if source is not None and source.pixels is not None and latent.denoise < 1.0:
        images = [render.blend(image, source.pixels[i % len(source.pixels)], latent.denoise)
                  for i, image in enumerate(images)]
    return images


async def vae_decode(ctx: NodeContext, samples: Latent, vae: str) -> NodeResult:
    return (_decode(samples, ctx.noise),), {}


async def repeat_latent_batch(ctx: NodeContext, samples: Latent, amount: int) -> NodeResult:
    pixels = None if samples.pixels is None else samples.pixels * amount
    return (Latent(samples.width, samples.height, samples.batch * amount, f"{samples.key}|x{amount}", pixels),), {}


async def vae_encode(ctx: NodeContext, pixels: list[Image.Image], vae: str) -> NodeResult:
    width, height = pixels[0].size
    return (Latent(width, height, len(pixels), f"encoded|{render.fingerprint(pixels)}", pixels=pixels),), {}


NODE_FUNCTIONS: dict[str, NodeFunction] = {
    "SlowProgress": slow_progress,
    "EmptyImage": empty_image,
    "ImageInvert": image_invert,
    "ImageBlur": image_blur,
    "ImageSharpen": image_sharpen,
    "ImageScale": image_scale,
    "RepeatLatentBatch": repeat_latent_batch,
    "SaveImage": save_image,
    "PreviewImage": preview_image,
    "SaveImageWebsocket": save_image_websocket,
    "LoadImage": load_image,
    "CheckpointLoaderSimple": checkpoint_loader,
    "CLIPTextEncode": clip_text_encode,
    "EmptyLatentImage": empty_latent,
    "KSampler": ksampler,
    "KSamplerAdvanced": ksampler_advanced,
    "VAEDecode": vae_decode,
    "VAEEncode": vae_encode,
}
