"""The node classes the simulator knows, with ComfyUI's input definitions (as /object_info shows them)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAX_RESOLUTION = 16384
MAX_SEED = 0xFFFFFFFFFFFFFFFF

SAMPLERS = [
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "dpm_2",
    "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m",
    "dpmpp_2m_sde", "dpmpp_3m_sde", "ddpm", "lcm", "ipndm", "deis", "res_multistep", "gradient_estimation",
    "ddim", "uni_pc", "uni_pc_bh2",
]
SCHEDULERS = ["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
              "linear_quadratic", "kl_optimal"]


@dataclass(frozen=True)
class NodeSpec:
    name: str
    required: dict[str, list[Any]]
    outputs: tuple[str, ...]
    category: str
    display_name: str
    output_node: bool = False
    output_names: tuple[str, ...] = ()
    description: str = ""
    python_module: str = "nodes"
    # Inputs whose values a node checks itself (ComfyUI's VALIDATE_INPUTS): no list check for them.
    self_validated: tuple[str, ...] = ()
    hidden: dict[str, str] = field(default_factory=dict)

    def object_info(self, combos: dict[str, list[str]]) -> dict[str, Any]:
        required = {}
        for name, spec in self.required.items():
            required[name] = [combos[name], *spec[1:]] if spec[0] == "COMBO" else spec
        info: dict[str, Any] = {"input": {"required": required}}
        if self.hidden:
            info["input"]["hidden"] = self.hidden
        info["input_order"] = {"required": list(self.required)}
        if self.hidden:
            info["input_order"]["hidden"] = list(self.hidden)
        info.update({
            "output": list(self.outputs),
            "output_is_list": [False] * len(self.outputs),
            "output_name": list(self.output_names or self.outputs),
            "name": self.name,
            "display_name": self.display_name,
            "description": self.description,
            "python_module": self.python_module,
            "category": self.category,
            "output_node": self.output_node,
        })
        return info


def _int(default: int, lo: int, hi: int, **extra: Any) -> list[Any]:
    return ["INT", {"default": default, "min": lo, "max": hi, **extra}]


def _float(default: float, lo: float, hi: float, **extra: Any) -> list[Any]:
    return ["FLOAT", {"default": default, "min": lo, "max": hi, **extra}]


_IMAGE_IN = ["IMAGE", {"tooltip": "The images to save."}]
_SAVE_HIDDEN = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
_SIZE = _int(512, 1, MAX_RESOLUTION, step=1)
_LATENT_SIZE = _int(512, 16, MAX_RESOLUTION, step=8)

NODES: dict[str, NodeSpec] = {spec.name: spec for spec in [
    NodeSpec("SlowProgress", {
        "steps": _int(5, 0, 10000), "step_seconds": _float(0.2, 0.0, 60.0, step=0.01),
        "width": _int(64, 1, 4096), "height": _int(64, 1, 4096), "batch_size": _int(1, 1, 64),
        "seed": _int(0, 0, MAX_SEED), "fail_at_step": _int(-1, -1, 10000),
    }, ("IMAGE",), "testing", "Slow Progress (test harness)", python_module="custom_nodes.slow_progress"),
    NodeSpec("EmptyImage", {
        "width": _SIZE, "height": _SIZE, "batch_size": _int(1, 1, 4096),
        "color": ["INT", {"default": 0, "min": 0, "max": 0xFFFFFF, "step": 1, "display": "color"}],
    }, ("IMAGE",), "image", "EmptyImage"),
    NodeSpec("ImageInvert", {"image": ["IMAGE"]}, ("IMAGE",), "image", "Invert Image"),
    NodeSpec("ImageBlur", {
        "image": ["IMAGE"], "blur_radius": _int(1, 1, 31, step=1), "sigma": _float(1.0, 0.1, 10.0, step=0.1),
    }, ("IMAGE",), "image/postprocessing", "Image Blur", python_module="comfy_extras.nodes_post_processing"),
    NodeSpec("SaveImage", {
        "images": _IMAGE_IN,
        "filename_prefix": ["STRING", {"default": "ComfyUI", "tooltip": "The prefix for the file to save."}],
    }, (), "image", "Save Image", output_node=True, hidden=_SAVE_HIDDEN,
        description="Saves the input images to your ComfyUI output directory."),
    NodeSpec("PreviewImage", {"images": ["IMAGE"]}, (), "image", "Preview Image", output_node=True,
             hidden=_SAVE_HIDDEN, description="Saves the input images to your ComfyUI output directory."),
    NodeSpec("SaveImageWebsocket", {"images": ["IMAGE"]}, (), "api node/image", "SaveImageWebsocket",
             output_node=True, python_module="custom_nodes.websocket_image_save"),
    NodeSpec("LoadImage", {"image": ["COMBO", {"image_upload": True}]}, ("IMAGE", "MASK"), "image",
             "Load Image", self_validated=("image",)),
    NodeSpec("CheckpointLoaderSimple", {
        "ckpt_name": ["COMBO", {"tooltip": "The name of the checkpoint (model) to load."}],
    }, ("MODEL", "CLIP", "VAE"), "loaders", "Load Checkpoint",
        description="Loads a diffusion model checkpoint, diffusion models are used to denoise latents."),
    NodeSpec("CLIPTextEncode", {
        "text": ["STRING", {"multiline": True, "dynamicPrompts": True, "tooltip": "The text to be encoded."}],
        "clip": ["CLIP", {"tooltip": "The CLIP model used for encoding the text."}],
    }, ("CONDITIONING",), "conditioning", "CLIP Text Encode (Prompt)"),
    NodeSpec("EmptyLatentImage", {
        "width": _LATENT_SIZE, "height": _LATENT_SIZE, "batch_size": _int(1, 1, 4096),
    }, ("LATENT",), "latent", "Empty Latent Image"),
    NodeSpec("KSampler", {
        "model": ["MODEL"], "seed": _int(0, 0, MAX_SEED, control_after_generate=True),
        "steps": _int(20, 1, 10000), "cfg": _float(8.0, 0.0, 100.0, step=0.1, round=0.01),
        "sampler_name": ["COMBO"], "scheduler": ["COMBO"], "positive": ["CONDITIONING"],
        "negative": ["CONDITIONING"], "latent_image": ["LATENT"], "denoise": _float(1.0, 0.0, 1.0, step=0.01),
    }, ("LATENT",), "sampling", "KSampler"),
    NodeSpec("KSamplerAdvanced", {
        "model": ["MODEL"], "add_noise": [["enable", "disable"]], "noise_seed": _int(0, 0, MAX_SEED),
        "steps": _int(20, 1, 10000), "cfg": _float(8.0, 0.0, 100.0, step=0.1, round=0.01),
        "sampler_name": ["COMBO"], "scheduler": ["COMBO"], "positive": ["CONDITIONING"],
        "negative": ["CONDITIONING"], "latent_image": ["LATENT"], "start_at_step": _int(0, 0, 10000),
        "end_at_step": _int(10000, 0, 10000), "return_with_leftover_noise": [["disable", "enable"]],
    }, ("LATENT",), "sampling", "KSampler (Advanced)"),
    NodeSpec("ImageScale", {
        "image": ["IMAGE"], "upscale_method": [["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]],
        "width": _int(512, 0, MAX_RESOLUTION, step=1), "height": _int(512, 0, MAX_RESOLUTION, step=1),
        "crop": [["disabled", "center"]],
    }, ("IMAGE",), "image/upscaling", "Upscale Image"),
    NodeSpec("RepeatLatentBatch", {"samples": ["LATENT"], "amount": _int(1, 1, 64)}, ("LATENT",), "latent/batch",
             "Repeat Latent Batch"),
    NodeSpec("VAEDecode", {"samples": ["LATENT"], "vae": ["VAE"]}, ("IMAGE",), "latent", "VAE Decode"),
    NodeSpec("VAEEncode", {"pixels": ["IMAGE"], "vae": ["VAE"]}, ("LATENT",), "latent", "VAE Encode"),
]}

# Node classes a ComfyUI offers only where they are installed (the simulator's `custom_nodes` setting), so that GPUs
# can differ in what they run. ImageSharpen is ComfyUI's own (comfy_extras/nodes_post_processing.py).
OPTIONAL_NODES: dict[str, NodeSpec] = {spec.name: spec for spec in [
    NodeSpec("ImageSharpen", {
        "image": ["IMAGE"], "sharpen_radius": _int(1, 1, 31, step=1), "sigma": _float(1.0, 0.1, 10.0, step=0.01),
        "alpha": _float(1.0, 0.0, 5.0, step=0.01),
    }, ("IMAGE",), "image/postprocessing", "Image Sharpen", python_module="comfy_extras.nodes_post_processing"),
]}
NODES.update(OPTIONAL_NODES)  # every class the executor knows; a server offers OPTIONAL_NODES only when installed


def offered_nodes(custom_nodes: tuple[str, ...]) -> dict[str, NodeSpec]:
    """The node classes of a ComfyUI with these optional classes installed."""
    return {name: spec for name, spec in NODES.items() if name not in OPTIONAL_NODES or name in custom_nodes}

SAMPLER_CLASSES = ("KSampler", "KSamplerAdvanced")


def combo_lists(checkpoints: list[str], input_files: list[str]) -> dict[str, list[str]]:
    """The value lists of COMBO inputs, which depend on the models and files present."""
    return {"ckpt_name": checkpoints, "sampler_name": SAMPLERS, "scheduler": SCHEDULERS, "image": input_files}
