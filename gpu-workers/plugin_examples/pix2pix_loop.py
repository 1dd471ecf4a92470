"""An example plugin adapter: InstructPix2Pix run by its own denoising loop, not by a diffusers pipeline class.

It stands for "a model served from its own repository's code": it loads the model's parts itself (here the
sub-folders of a save_pretrained InstructPix2Pix checkpoint, as a research repo loads its checkpoint), encodes,
denoises with three-way guidance and decodes in plain torch, batches its rows, and calls ``step(i)`` after every
step so the worker heartbeats and can cancel it.

    python -m atelier_gpu.worker --model timbrooks/instruct-pix2pix \\
        --adapter plugin_examples.pix2pix_loop:InstructPix2PixLoop --batch-size 4

(run from gpu-workers/, or with it on PYTHONPATH).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from atelier_gpu.plugins import EditPlugin, EditRequest


class InstructPix2PixLoop(EditPlugin):
    api_version = 1
    name = "instruct-pix2pix-loop"
    # the model card's guidance (text 7.5, image 1.5); steps as the built-in instruct-pix2pix adapter
    defaults = {"num_inference_steps": 50, "guidance_scale": 7.5, "image_guidance_scale": 1.5}
    supports = frozenset({"num_inference_steps", "guidance_scale", "negative_prompt"})
    max_images = 1
    max_batch = 8
    multiple = 8  # the VAE downsamples 8x

    def load(self, model: str, device: str, dtype: Any) -> None:
        import torch
        from diffusers import AutoencoderKL, EulerAncestralDiscreteScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        self.torch = torch
        self.device, self.dtype = device, dtype
        self.tokenizer = CLIPTokenizer.from_pretrained(model, subfolder="tokenizer")
        self.text_encoder = CLIPTextModel.from_pretrained(model, subfolder="text_encoder", dtype=dtype).to(device)
        self.vae = AutoencoderKL.from_pretrained(model, subfolder="vae", dtype=dtype).to(device)
        self.unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet", dtype=dtype).to(device)
        self.scheduler_config = EulerAncestralDiscreteScheduler.load_config(model, subfolder="scheduler")
        self.scheduler_cls = EulerAncestralDiscreteScheduler

    def _embed(self, texts: list[str]) -> Any:
        ids = self.tokenizer(texts, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids.to(self.device)
        return self.text_encoder(ids)[0]

    def edit(self, requests: list[EditRequest], step: Callable[[int], None]) -> list[np.ndarray]:
        torch = self.torch
        with torch.inference_mode():
            r0 = requests[0]  # rows of a batch share settings and input size
            n = len(requests)
            text = self._embed([r.prompt for r in requests])
            negative = self._embed([r0.negative_prompt or ""] * n)
            embeds = torch.cat([text, negative, negative])
            pixels = torch.stack([
                torch.from_numpy(np.asarray(r.images[0].convert("RGB"), dtype=np.float32) / 127.5 - 1.0)
                .permute(2, 0, 1) for r in requests]).to(self.device, self.dtype)
            image_latents = self.vae.encode(pixels).latent_dist.mode()
            image_latents = torch.cat([image_latents, image_latents, torch.zeros_like(image_latents)])
            scheduler = self.scheduler_cls.from_config(self.scheduler_config)  # per call: the scheduler has state
            scheduler.set_timesteps(r0.num_inference_steps, device=self.device)
            # one generator per row, seeded by the row: a row's output does not depend on its batch
            gens = [torch.Generator("cpu").manual_seed(r.seed) for r in requests]
            shape = (self.vae.config.latent_channels, *image_latents.shape[-2:])
            latents = torch.stack([torch.randn(shape, generator=g) for g in gens]).to(self.device, self.dtype)
            latents = latents * scheduler.init_noise_sigma
            g_text, g_image = r0.guidance_scale, r0.image_guidance_scale
            for i, t in enumerate(scheduler.timesteps):
                model_in = scheduler.scale_model_input(torch.cat([latents] * 3), t)
                noise = self.unet(torch.cat([model_in, image_latents], dim=1), t, encoder_hidden_states=embeds).sample
                n_text, n_image, n_uncond = noise.chunk(3)
                noise = n_uncond + g_text * (n_text - n_image) + g_image * (n_image - n_uncond)
                # the ancestral step's fresh noise, too, comes from each row's own generator
                latents = scheduler.step(noise, t, latents, generator=gens if n > 1 else gens[0]).prev_sample
                step(i + 1)  # heartbeats; raises when every row of the batch is cancelled
            images = self.vae.decode(latents / self.vae.config.scaling_factor).sample
            images = (images / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().cpu().numpy()
        return [images[k] for k in range(n)]

