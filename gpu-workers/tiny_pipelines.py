"""Tiny random-weight pipelines, built entirely locally (configs in code, tokenizers built from in-memory
vocabularies; nothing from the Hub), saved with save_pretrained so tests and the CPU benchmark load them through
the same loading function as production (loading.load_pipeline).

    python -m tiny_pipelines instruct-pix2pix /tmp/tiny-pix2pix
"""

from __future__ import annotations

import os
import string
import sys
from pathlib import Path


def _clip_tokenizer():
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in string.ascii_lowercase + string.digits + string.punctuation:
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _t5_tokenizer():
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    for ch in string.ascii_lowercase + string.digits + string.punctuation:
        pieces.append((ch, -3.0))
        pieces.append(("\u2581" + ch, -3.5))
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)


def _byte_level_alphabet() -> list[str]:
    """The 256 characters a byte-level BPE (GPT-2, Qwen) maps bytes to: printable bytes map to themselves, the
    others to code points from 256 up, so every string has a token sequence even without merges."""
    kept = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    shifted = 0
    alphabet = []
    for b in range(256):
        if b in kept:
            alphabet.append(chr(b))
        else:
            alphabet.append(chr(256 + shifted))
            shifted += 1
    return alphabet


QWEN_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                       "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<think>", "</think>"]

# the shape of Qwen's chat template (enough for apply_chat_template(..., add_generation_prompt, enable_thinking))
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)


def qwen2_tokenizer():
    """A byte-level Qwen2 tokenizer with Qwen's special tokens and no merges (one token per byte)."""
    from transformers import Qwen2Tokenizer

    vocab: dict[str, int] = {}
    for ch in _byte_level_alphabet():
        vocab.setdefault(ch, len(vocab))
    for token in QWEN_SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    tok = Qwen2Tokenizer(vocab=vocab, merges=[], unk_token="<|endoftext|>", eos_token="<|im_end|>",
                         pad_token="<|endoftext|>", additional_special_tokens=QWEN_SPECIAL_TOKENS[1:])
    tok.chat_template = QWEN_CHAT_TEMPLATE
    return tok


def _clip_text_encoder(vocab_size: int, hidden: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=hidden, intermediate_size=2 * hidden,
        num_attention_heads=2, num_hidden_layers=2, vocab_size=vocab_size, max_position_embeddings=77,
        projection_dim=hidden, hidden_act="gelu",
    )
    return CLIPTextModel(cfg)


def build_tiny_pix2pix(path: str | os.PathLike) -> str:
    import torch
    from diffusers import (
        AutoencoderKL, EulerAncestralDiscreteScheduler, StableDiffusionInstructPix2PixPipeline,
        UNet2DConditionModel,
    )

    torch.manual_seed(0)
    tok = _clip_tokenizer()
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=8, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, attention_head_dim=4, norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), norm_num_groups=8, sample_size=32,
    )
    text_encoder = _clip_text_encoder(len(tok), 16)
    scheduler = EulerAncestralDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    pipe = StableDiffusionInstructPix2PixPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tok, unet=unet, scheduler=scheduler, safety_checker=None,
        feature_extractor=None, image_encoder=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(str(path))
    return str(path)


def build_tiny_sdxl_pix2pix(path: str | os.PathLike) -> str:
    import torch
    from diffusers import (
        AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLInstructPix2PixPipeline, UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(0)
    tok = _clip_tokenizer()
    hidden = 16
    # SDXL's UNet: cross-attention over both encoders' hidden states (16 + 16), and the "text_time" embedding of
    # the pooled projection (16) plus six size ids x 8 (original size, crop, target size)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=8, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=2 * hidden, attention_head_dim=4, norm_num_groups=8, use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + hidden,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), norm_num_groups=8, sample_size=32,
    )
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=hidden, intermediate_size=2 * hidden,
        num_attention_heads=2, num_hidden_layers=2, vocab_size=len(tok), max_position_embeddings=77,
        projection_dim=hidden, hidden_act="gelu",
    ))
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       timestep_spacing="leading", steps_offset=1)
    pipe = StableDiffusionXLInstructPix2PixPipeline(
        vae=vae, text_encoder=_clip_text_encoder(len(tok), hidden), text_encoder_2=text_encoder_2, tokenizer=tok,
        tokenizer_2=tok, unet=unet, scheduler=scheduler, add_watermarker=False,
    )
    pipe.save_pretrained(str(path))
    return str(path)


def build_tiny_flux_kontext(path: str | os.PathLike) -> str:
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxKontextPipeline, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    tok = _clip_tokenizer()
    tok2 = _t5_tokenizer()
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=(4, 4, 8),
        guidance_embeds=True,
    )
    text_encoder = _clip_text_encoder(len(tok), 32)
    text_encoder_2 = T5EncoderModel(T5Config(
        vocab_size=len(tok2), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    ))
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=1, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), norm_num_groups=4, sample_size=32,
        use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    pipe = FluxKontextPipeline(
        scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=tok, text_encoder_2=text_encoder_2,
        tokenizer_2=tok2, transformer=transformer, image_encoder=None, feature_extractor=None,
    )
    pipe.save_pretrained(str(path))
    return str(path)


def _qwen2_vl_processor(tok):
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    # the vision tower sees at most 112x112 (64 patches of 14 px): keeps the CPU runs short
    image_processor = Qwen2VLImageProcessor(min_pixels=28 * 28 * 4, max_pixels=56 * 56 * 4)
    return Qwen2VLProcessor(image_processor=image_processor, tokenizer=tok, video_processor=Qwen2VLVideoProcessor(),
                            chat_template=tok.chat_template)


def _qwen2_5_vl(tok, hidden: int):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    vocab = tok.get_vocab()
    return Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048, bos_token_id=None,
            eos_token_id=vocab["<|im_end|>"],
            # multimodal RoPE: sections of the head dim (16 / 2) for time, height, width
            rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1000000.0}),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, fullatt_block_indexes=[1],
                           window_size=56),
        image_token_id=vocab["<|image_pad|>"], video_token_id=vocab["<|video_pad|>"],
        vision_start_token_id=vocab["<|vision_start|>"], vision_end_token_id=vocab["<|vision_end|>"],
    ))


def _tiny_qwen_edit(pipeline_cls_name: str):
    import diffusers
    import torch
    from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageTransformer2DModel

    torch.manual_seed(0)
    tok = qwen2_tokenizer()
    hidden = 32
    # The pipelines resize condition images to ~1 MP whatever the output size: a VAE that downsamples 16x (not 8x)
    # keeps its mid-block attention over 64x64 positions, so a CPU run takes seconds, not minutes.
    vae = AutoencoderKLQwenImage(base_dim=4, z_dim=4, dim_mult=[1, 1, 1, 1, 1], num_res_blocks=1,
                                 temperal_downsample=[False, False, False, False], latents_mean=[0.0] * 4,
                                 latents_std=[1.0] * 4)
    transformer = QwenImageTransformer2DModel(patch_size=2, in_channels=16, out_channels=4, num_layers=2,
                                              attention_head_dim=16, num_attention_heads=2, joint_attention_dim=hidden,
                                              axes_dims_rope=(4, 6, 6))
    scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=0.9,
                                                base_image_seq_len=256, max_image_seq_len=8192)
    return getattr(diffusers, pipeline_cls_name)(scheduler=scheduler, vae=vae, text_encoder=_qwen2_5_vl(tok, hidden),
                                                 tokenizer=tok, processor=_qwen2_vl_processor(tok),
                                                 transformer=transformer)


def build_tiny_qwen(path: str | os.PathLike) -> str:
    _tiny_qwen_edit("QwenImageEditPipeline").save_pretrained(str(path))
    return str(path)


def build_tiny_qwen_plus(path: str | os.PathLike) -> str:
    _tiny_qwen_edit("QwenImageEditPlusPipeline").save_pretrained(str(path))
    return str(path)


def build_tiny_longcat(path: str | os.PathLike) -> str:
    import torch
    from diffusers import (
        AutoencoderKL, FlowMatchEulerDiscreteScheduler, LongCatImageEditPipeline, LongCatImageTransformer2DModel,
    )

    torch.manual_seed(0)
    tok = qwen2_tokenizer()
    hidden = 32
    latent_channels = 16  # the pipeline packs 16 latent channels, whatever the VAE says
    # 8x like the real VAE (LongCat's sizes are multiples of 16), but no mid-block attention: LongCat sizes its
    # condition image at ~1 MP, and attention over 128x128 positions would take minutes on a CPU
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=latent_channels, block_out_channels=(4, 4, 4, 4),
        layers_per_block=1, down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        norm_num_groups=2, sample_size=32, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0,
        scaling_factor=1.0, mid_block_add_attention=False,
    )
    transformer = LongCatImageTransformer2DModel(
        patch_size=1, in_channels=latent_channels * 4, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=hidden, pooled_projection_dim=hidden, axes_dims_rope=[4, 6, 6],
    )
    scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096)
    pipe = LongCatImageEditPipeline(scheduler=scheduler, vae=vae, text_encoder=_qwen2_5_vl(tok, hidden),
                                    tokenizer=tok, text_processor=_qwen2_vl_processor(tok), transformer=transformer)
    pipe.save_pretrained(str(path))
    return str(path)


def _tiny_flux2_vae(latent_channels: int):
    from diffusers import AutoencoderKLFlux2

    return AutoencoderKLFlux2(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), block_out_channels=(8, 16), layers_per_block=1,
        latent_channels=latent_channels, norm_num_groups=4, sample_size=32,
    )


def _flux2_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                           base_image_seq_len=256, max_image_seq_len=4096)


# renders the text parts of FLUX.2's system + user messages (content given as lists of typed parts)
PIXTRAL_CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'text' %}{{ c['text'] }}{% elif c['type'] == 'image' %}[IMG]{% endif %}{% endfor %}"
    "{% endif %}{% endfor %}"
)


def build_tiny_flux2(path: str | os.PathLike) -> str:
    """FLUX.2-dev's shape: a Mistral-3 text encoder (31 tiny layers: the pipeline stacks hidden states 10, 20, 30)
    behind a Pixtral processor, with a byte-level tokenizer holding Pixtral's image tokens."""
    import torch
    from diffusers import Flux2Pipeline, Flux2Transformer2DModel
    from transformers import (
        Mistral3Config, Mistral3ForConditionalGeneration, PixtralImageProcessor, PixtralProcessor, Qwen2Tokenizer,
    )

    torch.manual_seed(0)
    special = ["<pad>", "<s>", "</s>", "[IMG]", "[IMG_BREAK]", "[IMG_END]"]
    vocab: dict[str, int] = {}
    for ch in _byte_level_alphabet():
        vocab.setdefault(ch, len(vocab))
    for token in special:
        vocab[token] = len(vocab)
    tok = Qwen2Tokenizer(vocab=vocab, merges=[], unk_token="<pad>", eos_token="</s>", bos_token="<s>",
                         pad_token="<pad>", additional_special_tokens=special[3:])
    tok.chat_template = PIXTRAL_CHAT_TEMPLATE
    processor = PixtralProcessor(image_processor=PixtralImageProcessor(size={"longest_edge": 64}, patch_size=16),
                                 tokenizer=tok, patch_size=16, spatial_merge_size=1,
                                 chat_template=PIXTRAL_CHAT_TEMPLATE)
    hidden = 16
    text_encoder = Mistral3ForConditionalGeneration(Mistral3Config(
        text_config=dict(model_type="mistral", vocab_size=len(tok), hidden_size=hidden, intermediate_size=32,
                         num_hidden_layers=31, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                         max_position_embeddings=1024),
        vision_config=dict(model_type="pixtral", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2, image_size=64, patch_size=16, head_dim=8),
        image_token_index=vocab["[IMG]"], spatial_merge_size=1,
    ))
    latent_channels = 4
    transformer = Flux2Transformer2DModel(
        patch_size=1, in_channels=latent_channels * 4, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=3 * hidden, timestep_guidance_channels=32,
        axes_dims_rope=(4, 4, 4, 4), guidance_embeds=True,  # FLUX.2-dev is guidance-distilled
    )
    Flux2Pipeline(scheduler=_flux2_scheduler(), vae=_tiny_flux2_vae(latent_channels), text_encoder=text_encoder,
                  tokenizer=processor, transformer=transformer).save_pretrained(str(path))
    return str(path)


def _tiny_flux2_klein(pipeline_cls_name: str, is_distilled: bool):
    import diffusers
    import torch
    from diffusers import Flux2Transformer2DModel
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    tok = qwen2_tokenizer()
    hidden = 16
    # the pipeline stacks hidden states 9, 18 and 27 of the text encoder, so it needs 28 layers (tiny ones)
    text_encoder = Qwen3ForCausalLM(Qwen3Config(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=32, num_hidden_layers=28, num_attention_heads=2,
        num_key_value_heads=1, head_dim=8, max_position_embeddings=1024, tie_word_embeddings=True,
    ))
    latent_channels = 4
    vae = _tiny_flux2_vae(latent_channels)
    transformer = Flux2Transformer2DModel(
        patch_size=1, in_channels=latent_channels * 4, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=3 * hidden, timestep_guidance_channels=32,
        axes_dims_rope=(4, 4, 4, 4), guidance_embeds=False,
    )
    return getattr(diffusers, pipeline_cls_name)(scheduler=_flux2_scheduler(), vae=vae, text_encoder=text_encoder,
                                                 tokenizer=tok, transformer=transformer, is_distilled=is_distilled)


def build_tiny_flux2_klein(path: str | os.PathLike, is_distilled: bool = True) -> str:
    _tiny_flux2_klein("Flux2KleinPipeline", is_distilled).save_pretrained(str(path))
    return str(path)


def build_tiny_flux2_klein_base(path: str | os.PathLike) -> str:
    return build_tiny_flux2_klein(path, is_distilled=False)


def build_tiny_flux2_klein_kv(path: str | os.PathLike) -> str:
    _tiny_flux2_klein("Flux2KleinKVPipeline", True).save_pretrained(str(path))
    return str(path)



def _tiny_wan_vae(**kw):
    """A Wan-style video VAE (3D convs, 8x spatial / 4x temporal) with 3-channel stages: seconds at 1 MP on a CPU."""
    from diffusers import AutoencoderKLWan

    cfg = dict(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True])
    cfg.update(kw)
    return AutoencoderKLWan(**cfg)


def build_tiny_chronoedit(path: str | os.PathLike) -> str:
    """ChronoEdit's shape: UMT5 text encoder, CLIP vision image encoder, Wan VAE, a 2-layer ChronoEdit transformer."""
    import torch
    from diffusers import ChronoEditPipeline, ChronoEditTransformer3DModel, FlowMatchEulerDiscreteScheduler
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

    torch.manual_seed(0)
    tok = _t5_tokenizer()
    text_encoder = UMT5EncoderModel(UMT5Config(
        vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    ))
    image_encoder = CLIPVisionModel(CLIPVisionConfig(
        hidden_size=4, projection_dim=4, num_hidden_layers=2, num_attention_heads=2, image_size=32,
        intermediate_size=16, patch_size=4,
    ))
    # in_channels: 16 noise + 4 mask + 16 condition latents; image_dim: the CLIP vision hidden size
    transformer = ChronoEditTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=36, out_channels=16,
        text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32, image_dim=4,
    )
    pipe = ChronoEditPipeline(
        tokenizer=tok, text_encoder=text_encoder, image_encoder=image_encoder,
        image_processor=CLIPImageProcessor(crop_size=32, size=32), transformer=transformer, vae=_tiny_wan_vae(),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0),
    )
    pipe.save_pretrained(str(path))
    return str(path)



# Qwen-VL's chat template shape for messages whose content is a string or a list of typed parts (Qwen3-VL style)
QWEN_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}{% else %}{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}"
    "{% elif c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def qwen3_vl_tokenizer():
    tok = qwen2_tokenizer()
    tok.chat_template = QWEN_VL_CHAT_TEMPLATE
    return tok


def _qwen3_vl(tok, hidden: int, patch_size: int = 16):
    """A 2-layer Qwen3-VL (text hidden `hidden`, 2-block vision tower) with the byte-level tokenizer's ids."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    vocab = tok.get_vocab()
    return Qwen3VLForConditionalGeneration(Qwen3VLConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, head_dim=8, max_position_embeddings=4096,
                         rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                          "mrope_section": [1, 1, 2]}),
        vision_config=dict(depth=2, hidden_size=16, intermediate_size=16, num_heads=2, out_hidden_size=hidden,
                           patch_size=patch_size, spatial_merge_size=2, temporal_patch_size=2,
                           num_position_embeddings=64, deepstack_visual_indexes=[0]),
        image_token_id=vocab["<|image_pad|>"], video_token_id=vocab["<|video_pad|>"],
        vision_start_token_id=vocab["<|vision_start|>"], vision_end_token_id=vocab["<|vision_end|>"],
    )).eval()


def _qwen3_vl_processor(tok, patch_size: int = 16, max_pixels: int = 64 * 64):
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    # the vision tower sees at most max_pixels: keeps CPU runs short whatever the image size
    image_processor = Qwen2VLImageProcessor(patch_size=patch_size, merge_size=2, temporal_patch_size=2,
                                            min_pixels=(2 * patch_size) ** 2, max_pixels=max_pixels)
    return Qwen3VLProcessor(image_processor=image_processor, tokenizer=tok,
                            video_processor=Qwen3VLVideoProcessor(patch_size=patch_size, merge_size=2,
                                                                  temporal_patch_size=2),
                            chat_template=tok.chat_template)


def build_tiny_qwen_image_21(path: str | os.PathLike) -> str:
    """Qwen-Image 2.1's shape: Qwen3-VL encoder, a 16x VAE (five stages), a 2-layer QwenImage21 transformer.
    One merged vision token covers 32 px (patch 16, merge 2), the pipeline's 2x2 group of 16x latents."""
    import torch
    from diffusers import (
        AutoencoderKLQwenImage21, FlowMatchEulerDiscreteScheduler, QwenImage21Pipeline, QwenImage21Transformer2DModel,
    )

    torch.manual_seed(0)
    tok = qwen3_vl_tokenizer()
    hidden, z_dim = 16, 8  # z_dim != 4: an RGBA condition image must not look like latents to prepare_latents
    transformer = QwenImage21Transformer2DModel(
        patch_size=1, in_channels=z_dim, out_channels=z_dim, num_layers=2, attention_head_dim=16,
        num_attention_heads=2, context_in_dim=hidden, mlp_ratio=2, axes_dims_rope=(4, 6, 6),
    )
    vae = AutoencoderKLQwenImage21(base_dim=4, decoder_base_dim=4, z_dim=z_dim, dim_mult=[1, 1, 1, 1, 1],
                                   num_res_blocks=1, attn_scales=[], temperal_downsample=[False, True, True, True],
                                   latents_mean=[0.0] * z_dim, latents_std=[1.0] * z_dim)
    pipe = QwenImage21Pipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae,
                               text_encoder=_qwen3_vl(tok, hidden), processor=_qwen3_vl_processor(tok),
                               transformer=transformer)
    pipe.save_pretrained(str(path))
    return str(path)



def _tiny_dreamlite(pipeline_cls_name: str):
    import diffusers
    import torch
    from diffusers import AutoencoderTiny, DreamLiteUNetModel, FlowMatchEulerDiscreteScheduler

    torch.manual_seed(0)
    tok = qwen3_vl_tokenizer()
    hidden = 16  # the UNet's cross-attention dim is the text encoder's hidden size
    unet = DreamLiteUNetModel(
        sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DreamLiteCrossAttnNoSelfAttnDownBlock2D", "DreamLiteCrossAttnDownBlock2D"),
        up_block_types=("DreamLiteCrossAttnUpBlock2D", "DreamLiteUpBlock2D"), block_out_channels=(16, 32),
        cross_attention_dim=hidden, attention_head_dim=8, layers_per_block=1, norm_num_groups=8,
        transformer_layers_per_block=1,
    )
    # four stages, 8x like the real one (vae_scale_factor 8): the UNet's attention runs over few latent positions
    vae = AutoencoderTiny(in_channels=3, out_channels=3, encoder_block_out_channels=(4, 4, 4, 4),
                          decoder_block_out_channels=(4, 4, 4, 4), num_encoder_blocks=(1, 1, 1, 1),
                          num_decoder_blocks=(1, 1, 1, 1), latent_channels=4)
    return getattr(diffusers, pipeline_cls_name)(
        text_encoder=_qwen3_vl(tok, hidden, patch_size=14), tokenizer=tok,
        processor=_qwen3_vl_processor(tok, patch_size=14, max_pixels=56 * 56), vae=vae, unet=unet,
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000),
    )


def build_tiny_dreamlite(path: str | os.PathLike) -> str:
    _tiny_dreamlite("DreamLitePipeline").save_pretrained(str(path))
    return str(path)


def build_tiny_dreamlite_mobile(path: str | os.PathLike) -> str:
    _tiny_dreamlite("DreamLiteMobilePipeline").save_pretrained(str(path))
    return str(path)



def _tiny_joyimage(pipeline_cls_name: str, transformer_cls_name: str):
    import diffusers
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler

    torch.manual_seed(0)
    tok = qwen3_vl_tokenizer()
    hidden = 16
    transformer = getattr(diffusers, transformer_cls_name)(
        patch_size=[1, 2, 2], in_channels=16, hidden_size=32, num_attention_heads=2, text_dim=hidden, num_layers=1,
        rope_dim_list=[4, 6, 6], theta=256,
    )
    # JoyImage always works at its 1 MP buckets: a 16x VAE (five stages, scale_factor_spatial=16, which the
    # pipeline reads) keeps the transformer at ~1k tokens per image instead of ~4k
    vae = _tiny_wan_vae(dim_mult=[1, 1, 1, 1, 1], temperal_downsample=[False, True, True, False],
                        scale_factor_spatial=16)
    return getattr(diffusers, pipeline_cls_name)(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=_qwen3_vl(tok, hidden), tokenizer=tok,
        transformer=transformer, processor=_qwen3_vl_processor(tok),
    )


def build_tiny_joyimage_edit(path: str | os.PathLike) -> str:
    _tiny_joyimage("JoyImageEditPipeline", "JoyImageEditTransformer3DModel").save_pretrained(str(path))
    return str(path)


def build_tiny_joyimage_edit_plus(path: str | os.PathLike) -> str:
    _tiny_joyimage("JoyImageEditPlusPipeline", "JoyImageEditPlusTransformer3DModel").save_pretrained(str(path))
    return str(path)



def _llama_tokenizer():
    """A Llama (SentencePiece-style BPE with byte fallback) tokenizer: "\u2581", letters, digits, punctuation and
    the 256 <0xNN> byte tokens, no merges; built in memory."""
    from transformers import LlamaTokenizer

    vocab: dict[str, int] = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for piece in ["\u2581", *string.ascii_letters, *string.digits, *string.punctuation]:
        vocab.setdefault(piece, len(vocab))
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    return LlamaTokenizer(vocab=vocab, merges=[])


def build_tiny_omnigen(path: str | os.PathLike) -> str:
    """OmniGen's shape: a 1-layer Phi-3-style transformer that reads text tokens and image latents as one sequence."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, OmniGenPipeline, OmniGenTransformer2DModel

    torch.manual_seed(0)
    tok = _llama_tokenizer()
    head_dim = 8
    transformer = OmniGenTransformer2DModel(
        in_channels=4, patch_size=2, hidden_size=16, num_attention_heads=2, num_key_value_heads=2,
        intermediate_size=32, num_layers=1, pad_token_id=0, vocab_size=len(tok), max_position_embeddings=4096,
        original_max_position_embeddings=4096, pos_embed_max_size=64,
        # Phi-3's "su" RoPE scaling: one factor per rotary frequency (head_dim / 2)
        rope_scaling={"short_factor": [1.0] * (head_dim // 2), "long_factor": [1.0] * (head_dim // 2)},
    )
    vae = AutoencoderKL(
        sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4, 4, 4, 4), layers_per_block=1,
        latent_channels=4, norm_num_groups=1, down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
    )
    OmniGenPipeline(transformer=transformer.eval(), scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae.eval(),
                    tokenizer=tok).save_pretrained(str(path))
    return str(path)



def build_tiny_z_image_omni(path: str | os.PathLike) -> str:
    """Z-Image Omni's shape: Qwen3 text encoder, SigLIP-2 vision tower for condition images, a 2-layer Z-Image DiT."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ZImageOmniPipeline, ZImageTransformer2DModel
    from transformers import Qwen3Config, Qwen3Model, Siglip2ImageProcessor, Siglip2VisionConfig, Siglip2VisionModel

    torch.manual_seed(0)
    tok = qwen2_tokenizer()
    hidden, siglip_hidden = 16, 16
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=32, n_layers=2, n_refiner_layers=1,
        n_heads=2, n_kv_heads=2, norm_eps=1e-5, qk_norm=True, cap_feat_dim=hidden, siglip_feat_dim=siglip_hidden,
        rope_theta=256.0, t_scale=1000.0, axes_dims=[8, 4, 4], axes_lens=[256, 32, 32],
    )
    with torch.no_grad():  # torch.empty-initialised pad tokens: fixed values, not whatever memory held
        for name in ("x_pad_token", "cap_pad_token", "siglip_pad_token"):
            if hasattr(transformer, name):
                getattr(transformer, name).copy_(torch.ones_like(getattr(transformer, name)))
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[4, 4, 4, 4], layers_per_block=1,
        latent_channels=16, norm_num_groups=4, sample_size=32, scaling_factor=0.3611, shift_factor=0.1159,
    )
    text_encoder = Qwen3Model(Qwen3Config(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, head_dim=8, max_position_embeddings=1024,
    ))
    siglip = Siglip2VisionModel(Siglip2VisionConfig(
        hidden_size=siglip_hidden, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        patch_size=16, num_patches=16,
    ))
    pipe = ZImageOmniPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder, tokenizer=tok,
        transformer=transformer, siglip=siglip,
        siglip_processor=Siglip2ImageProcessor(patch_size=16, max_num_patches=16),
    )
    pipe.save_pretrained(str(path))
    return str(path)



def build_tiny_bria_fibo_edit(path: str | os.PathLike) -> str:
    """FIBO-Edit's shape: SmolLM3 text encoder, Wan 2.2-style VAE (patchified, residual, 16x), a 1+1-layer FIBO DiT."""
    import torch
    from diffusers import BriaFiboEditPipeline, BriaFiboTransformer2DModel, FlowMatchEulerDiscreteScheduler
    from transformers import SmolLM3Config, SmolLM3ForCausalLM

    torch.manual_seed(0)
    tok = qwen2_tokenizer()
    hidden = 32
    transformer = BriaFiboTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=2 * hidden, text_encoder_dim=hidden, pooled_projection_dim=None, axes_dims_rope=[0, 4, 4],
    )
    vae = _tiny_wan_vae(base_dim=8, decoder_base_dim=8, in_channels=12, out_channels=12, patch_size=2,
                        is_residual=True, scale_factor_spatial=16, scale_factor_temporal=4,
                        latents_mean=[0.0] * 16, latents_std=[1.0] * 16)
    text_encoder = SmolLM3ForCausalLM(SmolLM3Config(
        # the pipeline starts empty prompts with SmolLM3's <|begin_of_text|> id, hard-coded as 128000
        vocab_size=128256, hidden_size=hidden, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=4096, pad_token_id=tok.pad_token_id,
    ))
    BriaFiboEditPipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae,
                         text_encoder=text_encoder, tokenizer=tok).save_pretrained(str(path))
    return str(path)


def build_tiny_kandinsky5_i2i(path: str | os.PathLike) -> str:
    import torch
    from diffusers import (
        AutoencoderKL, FlowMatchEulerDiscreteScheduler, Kandinsky5I2IPipeline, Kandinsky5Transformer3DModel,
    )

    torch.manual_seed(0)
    tok = qwen2_tokenizer()
    clip_tok = _clip_tokenizer()
    hidden = 32
    # The pipeline renders only its ~1 MP resolutions and hard-codes an 8x VAE: four narrow VAE blocks keep a
    # 1024x1024 decode to seconds on a CPU; 16 latent channels as the FLUX.1 VAE it ships with.
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=4,
        sample_size=64,
    )
    # visual_cond: the noisy latents, the source image's latents and a ones channel (2 x 16 + 1), as the I2I model
    transformer = Kandinsky5Transformer3DModel(
        in_visual_dim=16, in_text_dim=hidden, in_text_dim2=16, time_dim=32, out_visual_dim=16, patch_size=(1, 2, 2),
        model_dim=32, ff_dim=64, num_text_blocks=1, num_visual_blocks=2, axes_dims=(4, 6, 6), visual_cond=True,
    )
    pipe = Kandinsky5I2IPipeline(
        transformer=transformer, vae=vae, text_encoder=_qwen2_5_vl(tok, hidden), tokenizer=_qwen2_vl_processor(tok),
        text_encoder_2=_clip_text_encoder(len(clip_tok), 16), tokenizer_2=clip_tok,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0),
    )
    pipe.save_pretrained(str(path))
    return str(path)


BUILDERS = {
    "instruct-pix2pix": build_tiny_pix2pix, "sdxl-instruct-pix2pix": build_tiny_sdxl_pix2pix,
    "flux-kontext": build_tiny_flux_kontext,
    "flux2-klein": build_tiny_flux2_klein, "flux2-klein-base": build_tiny_flux2_klein_base,
    "flux2-klein-kv": build_tiny_flux2_klein_kv, "qwen": build_tiny_qwen, "qwen-plus": build_tiny_qwen_plus,
    "longcat": build_tiny_longcat, "longcat-turbo": build_tiny_longcat, "flux2": build_tiny_flux2,
    "chronoedit": build_tiny_chronoedit, "qwen-image-2.1": build_tiny_qwen_image_21,
    "dreamlite": build_tiny_dreamlite, "dreamlite-mobile": build_tiny_dreamlite_mobile,
    "joyimage-edit": build_tiny_joyimage_edit, "joyimage-edit-plus": build_tiny_joyimage_edit_plus,
    "omnigen": build_tiny_omnigen, "z-image-omni": build_tiny_z_image_omni,
    "bria-fibo-edit": build_tiny_bria_fibo_edit, "bria-fibo-edit-turbo": build_tiny_bria_fibo_edit,
    "kandinsky5-i2i": build_tiny_kandinsky5_i2i,
}


def build_tiny(model_type: str, path: str | os.PathLike) -> str:
    if model_type not in BUILDERS:
        raise ValueError(f"no tiny builder for {model_type}; have {', '.join(BUILDERS)}")
    Path(path).mkdir(parents=True, exist_ok=True)
    return BUILDERS[model_type](path)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(f"usage: python -m tiny_pipelines {{{'|'.join(BUILDERS)}}} OUT_DIR", file=sys.stderr)
        sys.exit(2)
    print(build_tiny(sys.argv[1], sys.argv[2]))
