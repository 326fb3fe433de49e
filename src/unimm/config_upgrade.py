"""``unimm config upgrade OLD.toml``: an old-style config (flat ``[image]`` / ``[objective]`` sections,
layer settings under ``[model]``) -> today's config by part, with the same meaning.

A key is written when the old file set it, or when the old default differs from today's default of the
part kind it lands in, so the upgraded file trains the same model.
"""

from __future__ import annotations

from typing import Any

from unimm.settings import registry

# the old sections' defaults (config.py before the config-by-part redesign, 2026-11)
OLD_DEFAULTS: dict[str, dict[str, Any]] = {
    "model": {"layers": "dense", "experts": 8, "top_k": 2, "shared_experts": 0, "expert_hidden_dim": None,
              "capacity_factor": None, "moe_aux_weight": 0.01, "moe_z_weight": 1e-3},
    "image": {"understand": "shared", "generate": "latent", "latent": "pixels", "patch_size": 4, "vae_channels": 4,
              "vae_downsample": 2, "vae_hidden": 64, "vae_steps": 1500, "vae_kl": 1e-4, "tokenizer": None,
              "vq_codebook": 256, "vq_dim": 16, "vq_hidden": 64, "vq_downsample": 4, "vq_steps": 2000,
              "vq_l2_normalize": False, "code_features": True, "vocab": "shared", "vit_patch": 4, "vit_dim": 128,
              "vit_depth": 2, "vit_heads": 4, "vit_pretrain_steps": 0, "connector": "mlp", "connector_queries": 16,
              "gen_queries": 16, "decoder_dim": 128, "decoder_depth": 4, "decoder_heads": 4,
              "decoder_conditioning": "cross", "decoder_train": "joint", "decoder_pretrain_steps": 0,
              "mar_order": "random", "head_dim": 256, "head_depth": 3},
    "objective": {"image": "flow", "denoiser": "diffusion", "denoise_batch": 4, "text": "ar", "text_mask_alpha": 1.0,
                  "image_weight": 5.0, "text_weight": 1.0, "prediction": "epsilon", "timesteps": 1000,
                  "beta_schedule": "cosine", "cond_drop": 0.1, "understand_fraction": 0.5,
                  "understand_max_noise": 0.0, "vqa_fraction": 0.3},
    "sample": {"max_new_tokens": 16},
}  # fmt: skip
WRITER_KIND = {"diffusion": "latent", "flow": "latent", "ar": "ar-codes", "masked": "masked-codes", "mar": "mar",
               "connector": "connector"}  # fmt: skip
LAYER_KEYS = {"layers": "kind", "experts": "experts", "top_k": "top_k", "shared_experts": "shared_experts",
              "expert_hidden_dim": "expert_hidden_dim", "capacity_factor": "capacity_factor",
              "moe_aux_weight": "aux_weight", "moe_z_weight": "z_weight"}  # fmt: skip


def is_old_style(raw: dict) -> bool:
    model = raw.get("model", {})
    return "image" in raw or "objective" in raw or (isinstance(model, dict) and any(k in model for k in LAYER_KEYS))


def upgrade(raw: dict) -> dict:
    """Old-style config dict -> today's (unknown old keys are kept where they were, so validation names them)."""
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    given = {s: set(raw.get(s, {})) for s in OLD_DEFAULTS}
    old = {s: {**d, **raw.pop(s, {})} if s in ("image", "objective") else {**d, **raw.get(s, {})}
           for s, d in OLD_DEFAULTS.items()}  # fmt: skip
    model, sample = raw.setdefault("model", {}), raw.setdefault("sample", {})
    im, ob = old["image"], old["objective"]
    out: dict[str, dict] = {}

    def part(name: str, kind: str, values: dict[str, tuple[str, str, Any]]) -> None:
        """values: new key -> (old section, old key, value); kept if set in the old file or not today's default."""
        fields = registry(name).validate({"kind": kind}, name).model_dump()
        sec = {"kind": kind}
        for key, (osec, okey, value) in values.items():
            if key in fields and (okey in given[osec] or value != fields[key]):
                sec[key] = value
        out[name] = sec

    kind = model.pop("layers", "dense")
    moved = {new: ("model", old_key, old["model"][old_key]) for old_key, new in LAYER_KEYS.items() if new != "kind"}
    part("layers", kind, moved)
    for old_key in LAYER_KEYS:
        model.pop(old_key, None)

    writer = WRITER_KIND.get(ob["image"], ob["image"])
    if writer in ("ar-codes", "masked-codes"):
        keys = ("codebook", "dim", "hidden", "downsample", "steps", "l2_normalize")
        part("codec", "vq", {k: ("image", f"vq_{k}", im[f"vq_{k}"]) for k in keys})
        if im["tokenizer"] is not None:
            out["codec"]["tokenizer"] = im["tokenizer"]
    elif im["latent"] == "vae":
        keys = ("channels", "downsample", "hidden", "steps", "kl")
        values = {k: ("image", f"vae_{k}", im[f"vae_{k}"]) for k in keys}
        part("codec", "vae", {"patch_size": ("image", "patch_size", im["patch_size"]), **values})
    else:
        part("codec", "pixels", {"patch_size": ("image", "patch_size", im["patch_size"])})

    part("writer", writer, {
        "weight": ("objective", "image_weight", ob["image_weight"]),
        "read_noise": ("objective", "understand_max_noise", ob["understand_max_noise"]),
        "vocab": ("image", "vocab", im["vocab"]), "code_features": ("image", "code_features", im["code_features"]),
        "order": ("image", "mar_order", im["mar_order"]), "head_dim": ("image", "head_dim", im["head_dim"]),
        "head_depth": ("image", "head_depth", im["head_depth"]),
        "denoise_batch": ("objective", "denoise_batch", ob["denoise_batch"]),
        "queries": ("image", "gen_queries", im["gen_queries"]),
        "dim": ("image", "decoder_dim", im["decoder_dim"]),
        "depth": ("image", "decoder_depth", im["decoder_depth"]),
        "heads": ("image", "decoder_heads", im["decoder_heads"]),
        "conditioning": ("image", "decoder_conditioning", im["decoder_conditioning"]),
        "train": ("image", "decoder_train", im["decoder_train"]),
        "pretrain_steps": ("image", "decoder_pretrain_steps", im["decoder_pretrain_steps"]),
    })  # fmt: skip

    if writer in ("latent", "mar", "connector"):
        source = ob["image"] if writer == "latent" else ob["denoiser"]
        denoiser = "flow" if source == "flow" else "ddpm"
        part("denoiser", denoiser, {k: ("objective", k, ob[k]) for k in ("prediction", "timesteps", "beta_schedule")})

    if im["understand"] == "vit":
        keys = ("patch", "dim", "depth", "heads", "pretrain_steps")
        part("reader", "vit", {k: ("image", f"vit_{k}", im[f"vit_{k}"]) for k in keys})
        connector = {"kind": im["connector"]}
        if im["connector"] in ("resampler", "qformer"):
            connector.update(queries=im["connector_queries"], heads=im["vit_heads"])
        out["reader"]["connector"] = connector
    else:
        out["reader"] = {"kind": im["understand"]}

    part("text", ob["text"], {
        "weight": ("objective", "text_weight", ob["text_weight"]),
        "mask_alpha": ("objective", "text_mask_alpha", ob["text_mask_alpha"]),
        "answer_len": ("sample", "max_new_tokens", old["sample"]["max_new_tokens"]),
    })  # fmt: skip

    data = raw.setdefault("data", {})
    for k in ("understand_fraction", "vqa_fraction", "cond_drop"):
        if k in given["objective"] or ob[k] != OLD_DEFAULTS["objective"][k]:
            data[k] = ob[k]
    if "sampler" in sample and sample["sampler"] is None:
        sample.pop("sampler")
    order = ["name", "model", "layers", "codec", "writer", "denoiser", "reader", "text", "data", "train", "sample"]
    merged = {**raw, **out}
    return {k: merged[k] for k in order if k in merged} | {k: v for k, v in merged.items() if k not in order}
