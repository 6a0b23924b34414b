"""API-format graphs the tests post: the standard SD1.5 txt2img and img2img, and the SlowProgress test node."""
from __future__ import annotations

from typing import Any


def txt2img(text: str = "a red fox", seed: int = 42, steps: int = 4, width: int = 64, height: int = 64,
            batch_size: int = 1, prefix: str = "test") -> dict[str, Any]:
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": width, "height": height, "batch_size": batch_size}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": text, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "3": {"class_type": "KSampler", "inputs": {
            "seed": seed, "steps": steps, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
            "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": prefix}},
    }


def img2img(image: str, text: str = "a red fox", seed: int = 7, steps: int = 3, denoise: float = 0.6) -> dict[str, Any]:
    graph = txt2img(text, seed, steps)
    graph["10"] = {"class_type": "LoadImage", "inputs": {"image": image}}
    graph["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
    graph["3"]["inputs"].update(latent_image=["11", 0], denoise=denoise)
    del graph["5"]
    return graph


def slow(steps: int = 5, step_seconds: float = 0.05, seed: int = 1, fail_at_step: int = -1,
         prefix: str = "slow") -> dict[str, Any]:
    return {
        "1": {"class_type": "SlowProgress", "inputs": {"steps": steps, "step_seconds": step_seconds, "width": 64,
                                                       "height": 64, "batch_size": 1, "seed": seed,
                                                       "fail_at_step": fail_at_step}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }
