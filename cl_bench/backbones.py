"""Pinned backbones: timm tags (never bare names), local files, and the suite's own small ViT.

Weights resolve in this order: ``--pretrained_file``, the repository's own file (suite-made
backbones), the Hugging Face cache, a download. Every run records the tag and the sha256 of the
file it loaded; an offline machine without the weights gets one line naming the tag and the fix.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import struct
import textwrap
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from cl_bench.errors import WeightsUnavailableError
from cl_bench.registry import BACKBONES, BackboneEntry
from cl_bench.weights import MINI_VIT_WEIGHTS, WEIGHTS_DIR  # noqa: F401  (re-exported)

__all__ = ["BackboneInfo", "Backbone", "resolve_weights", "check_weights_file", "build_backbone", "load_vit",
           "file_sha256", "MINI_VIT_WEIGHTS"]

#: Bounded network waits for the Hugging Face hub (seconds): an offline run must fail fast, never hang.
HUB_ETAG_TIMEOUT_S = 10.0
HUB_DOWNLOAD_TIMEOUT_S = 30.0


for _tag, _summary in (
    ("vit_base_patch16_224.augreg_in21k", "ViT-B/16 AugReg IN-21k (CL-LoRA CIFAR-100; PILOT/EASE 'IN21K')"),
    ("vit_base_patch16_224.augreg_in21k_ft_in1k", "ViT-B/16 AugReg IN-21k fine-tuned on IN-1k (CL-LoRA ImageNet-R; PILOT 'IN1K')"),
    ("vit_base_patch16_224.orig_in21k", "ViT-B/16 of the original ViT paper, IN-21k (official L2P)"),
    ("vit_base_patch16_224.augreg2_in21k_ft_in1k", "ViT-B/16 AugReg2 IN-21k fine-tuned on IN-1k (official SD-LoRA: timm's bare name)"),
):
    BACKBONES.register(_tag, BackboneEntry(name=_tag, timm_name=_tag, input_size=224, summary=_summary))

BACKBONES.register(
    "vit_mini_patch4_28.fmnist_letters",
    BackboneEntry(
        name="vit_mini_patch4_28.fmnist_letters",
        timm_name="vit_mini_patch4_28",
        weights_file=MINI_VIT_WEIGHTS,
        sha256="be874901f4d6d373669b848abac9f3b3df92a1116bd5f84be5ed7b559c646873",
        input_size=28,
        depth=6,
        embed_dim=128,
        summary="the suite's 6-block ViT (width 128, patch 4, 28 px), pretrained on Fashion-MNIST and letter glyphs by sweeps/pretrain.py",
    ),
)


@dataclass(frozen=True)
class BackboneInfo:
    """What a run records about its backbone."""

    tag: str
    pretrained: bool
    sha256: str | None
    source: str

    def as_dict(self) -> dict[str, Any]:
        return {"tag": self.tag, "pretrained": self.pretrained, "sha256": self.sha256, "source": self.source}


@dataclass
class Backbone:
    vit: Any  # timm VisionTransformer, frozen, CLS token after the final norm as output
    info: BackboneInfo

    def __post_init__(self) -> None:
        # The pretrained tensors, taken before any strategy injects adapters or prompts into the
        # ViT: checkpoints store everything else (the backbone is re-created from its tag).
        self.tensor_ids = frozenset(id(t) for t in [*self.vit.parameters(), *self.vit.buffers()])

    @property
    def embed_dim(self) -> int:
        return self.vit.embed_dim

    @property
    def depth(self) -> int:
        return len(self.vit.blocks)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


_HUB_PROBE_TIMEOUT_S = 3.0


def _hub_unreachable() -> str | None:
    """Why the Hugging Face hub cannot be reached now, or None; one bounded TCP connect."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = endpoint.hostname or "", endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=_HUB_PROBE_TIMEOUT_S):
            return None
    except OSError as error:
        return f"{host} unreachable: {error.strerror or type(error).__name__}"


@contextmanager
def bounded_hub_download():
    """The hub's read timeout bounded for one download, then put back; a value the user set in
    ``HF_HUB_DOWNLOAD_TIMEOUT`` wins. ``huggingface_hub`` reads that variable once, at its import,
    so the scoped setting is its module constant, not the environment."""
    from huggingface_hub import constants

    previous = constants.HF_HUB_DOWNLOAD_TIMEOUT
    if not os.environ.get("HF_HUB_DOWNLOAD_TIMEOUT"):
        constants.HF_HUB_DOWNLOAD_TIMEOUT = HUB_DOWNLOAD_TIMEOUT_S
    try:
        yield
    finally:
        constants.HF_HUB_DOWNLOAD_TIMEOUT = previous


def _hub_weights(entry: BackboneEntry) -> tuple[Path, str]:
    """The hub file of a timm tag, from the cache or downloaded with bounded timeouts."""
    import timm
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(entry.timm_name)
    repo = cfg.hf_hub_id if cfg is not None else None
    if not repo:
        raise WeightsUnavailableError(f"timm has no hub weights for '{entry.name}'; pass --pretrained_file=PATH", key="backbone")
    filename = cfg.hf_hub_filename or "model.safetensors"
    cached = try_to_load_from_cache(repo, filename)
    if isinstance(cached, str):
        return Path(cached), "hub cache"
    try:
        reason = _hub_unreachable()  # probed first: the hub client retries with sleeps when offline
        if reason is None:
            with bounded_hub_download():
                return Path(hf_hub_download(repo, filename, etag_timeout=HUB_ETAG_TIMEOUT_S)), "hub download"
    except Exception as error:
        first_line = (str(error).splitlines() or [""])[0]
        reason = textwrap.shorten(f"{type(error).__name__}: {first_line}", 200, placeholder=" ...")
    raise WeightsUnavailableError(
        f"pretrained weights for '{entry.name}' are not in the Hugging Face cache and could not be downloaded ({reason}); "
        f"on a machine with network, download https://huggingface.co/{repo}/resolve/main/{filename} "
        "and pass --pretrained_file=PATH (or copy the hub cache), or run with --pretrained=false",
        key="backbone",
    )


def resolve_weights(entry: BackboneEntry, run_config) -> tuple[Path | None, str]:
    """The weights file to load and where it came from; ``(None, 'random init')`` without pretraining."""
    if not run_config.pretrained:
        return None, "random init"
    if run_config.pretrained_file:
        return Path(run_config.pretrained_file).expanduser(), "file"
    if entry.weights_file is not None:
        if not entry.weights_file.is_file():
            raise WeightsUnavailableError(
                f"the weights of '{entry.name}' are missing at {entry.weights_file}; restore them from git "
                "or rebuild them with `python sweeps/pretrain.py`",
                key="backbone",
            )
        return entry.weights_file, "repository"
    return _hub_weights(entry)


def _shape_model(entry: BackboneEntry):
    """The backbone's architecture on the meta device: shapes only, no memory, no weights."""
    import timm
    import torch

    import cl_bench.models.vit_mini  # noqa: F401  (registers the suite's own ViT with timm)

    with torch.device("meta"):
        return timm.create_model(entry.timm_name, pretrained=False, **dict(entry.timm_kwargs, num_classes=0, global_pool="token"))


_SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
                       "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


def _safetensors_shapes(path: Path) -> dict[str, Any]:
    """Meta tensors of a .safetensors file from its JSON header; the byte ranges must cover the file exactly."""
    import torch

    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError("shorter than a safetensors header")
        n = struct.unpack("<Q", head)[0]
        if n > min(size - 8, 100 << 20):
            raise ValueError("no safetensors header (random bytes or another format)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ValueError("its safetensors header is not JSON") from None
    if not isinstance(header, dict):
        raise ValueError("its safetensors header is not a mapping")
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    try:
        end = max((v["data_offsets"][1] for v in tensors.values()), default=0)
        shapes = {k: torch.empty(v["shape"], dtype=getattr(torch, _SAFETENSORS_DTYPES[v["dtype"]]), device="meta")
                  for k, v in tensors.items()}
    except (KeyError, TypeError, IndexError, ValueError):
        raise ValueError("its safetensors header is malformed") from None
    if 8 + n + end != size:
        raise ValueError(f"truncated: the header describes {8 + n + end} bytes, the file has {size}")
    return shapes


def _torch_shapes(path: Path) -> dict[str, Any]:
    """Meta tensors of a ``torch.save`` file (zip format: the archive index only, no tensor data read)."""
    import torch

    try:
        state = torch.load(path, map_location="meta", weights_only=True, mmap=True)
    except RuntimeError as error:
        if "mmap can only be used" not in str(error):
            raise
        state = torch.load(path, map_location="meta", weights_only=True)  # the legacy format reads everything
    for wrapper in ("state_dict", "model", "module"):  # common checkpoint wrappers timm unwraps too
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError("it holds no state dict of tensors")
    return state


def _npz_architecture(path: Path) -> tuple[int, int]:
    """(depth, width) of an original Google ViT .npz, read from the zip index and one array header."""
    import numpy as np

    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        kernel = next((n for n in names if n.endswith("embedding/kernel.npy")), None)
        if kernel is None:
            raise ValueError("no embedding/kernel array: not a ViT checkpoint")
        with archive.open(kernel) as member:
            version = np.lib.format.read_magic(member)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape = read_header(member)[0]
    depth = len({m.group(1) for n in names if (m := re.search(r"encoderblock_(\d+)/", n))})
    return depth, shape[-1]


def _first_problem(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    detail = lines[1] if len(lines) > 1 else (lines[0] if lines else type(error).__name__)
    return textwrap.shorten(detail, 300, placeholder=" ...")


def check_weights_file(entry: BackboneEntry, path: Path) -> None:
    """Refuse a weights file that is unreadable, truncated or of another architecture, reading only
    its header or index (never the tensors), so the check is cheap and runs before a run writes anything."""
    fix = f"pass a {entry.name} weights file with --pretrained_file, or --pretrained=false"
    try:
        if path.suffix == ".npz":
            depth, width = _npz_architecture(path)
            if (depth, width) != (entry.depth, entry.embed_dim):
                raise WeightsUnavailableError(
                    f"{path} holds a ViT of depth {depth} and width {width}, not the {entry.depth} and {entry.embed_dim} "
                    f"of backbone '{entry.name}'; {fix}", key="pretrained_file")
            return
        state = _safetensors_shapes(path) if path.suffix == ".safetensors" else _torch_shapes(path)
    except WeightsUnavailableError:
        raise
    except Exception as error:  # any parser's complaint about bytes that are not weights
        first = (str(error).strip().splitlines() or [""])[0].split(". ")[0]
        reason = textwrap.shorten(f"{type(error).__name__}: {first}", 160, placeholder=" ...")
        raise WeightsUnavailableError(f"{path} is not a readable weights file ({reason}); {fix}", key="pretrained_file") from None
    model = _shape_model(entry)
    from timm.models.vision_transformer import checkpoint_filter_fn

    try:  # the key remapping timm applies when it loads the file (other layouts, resized embeddings)
        state = checkpoint_filter_fn(state, model)
    except Exception:  # the filter could not work on shapes alone: compare the keys as they are
        pass
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise WeightsUnavailableError(
            f"{path} does not fit backbone '{entry.name}' ({_first_problem(error)}); {fix}", key="pretrained_file"
        ) from None


def _create_vit(entry: BackboneEntry, path: Path | None, source: str):
    """A frozen timm ViT whose output is the CLS token after the final LayerNorm, and its sha256."""
    import timm

    import cl_bench.models.vit_mini  # noqa: F401  (registers the suite's own ViT with timm)

    kwargs = dict(entry.timm_kwargs, num_classes=0, global_pool="token")
    sha256 = None
    if path is None:
        vit = timm.create_model(entry.timm_name, pretrained=False, **kwargs)
    else:
        sha256 = file_sha256(path)
        if entry.sha256 and source == "repository" and sha256 != entry.sha256:
            raise WeightsUnavailableError(
                f"{path} has sha256 {sha256[:12]}..., not the pinned {entry.sha256[:12]}...; restore it from git",
                key="backbone",
            )
        try:
            if path.suffix == ".npz":  # the original Google checkpoints
                vit = timm.create_model(entry.timm_name, pretrained=False, **kwargs)
                vit.load_pretrained(str(path))
            else:
                vit = timm.create_model(
                    entry.timm_name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **kwargs
                )
        except Exception as error:  # bytes the header check could not see (damaged tensor data)
            raise WeightsUnavailableError(
                f"{path} could not be loaded into backbone '{entry.name}' ({_first_problem(error)})", key="pretrained_file"
            ) from None
    return vit.requires_grad_(False), sha256


def build_backbone(config) -> Backbone:
    """The run's backbone, as its config names it."""
    entry = BACKBONES[config.run.backbone]
    path, source = resolve_weights(entry, config.run)
    vit, sha256 = _create_vit(entry, path, source)
    return Backbone(vit=vit, info=BackboneInfo(tag=entry.name, pretrained=path is not None, sha256=sha256, source=source if path is None else f"{source}: {path}"))


def load_vit(tag: str, *, pretrained: bool = True, pretrained_file: str = ""):
    """A frozen ViT from a backbone tag (for strategies built from a tag instead of a model)."""
    from types import SimpleNamespace

    entry = BACKBONES[tag]
    path, source = resolve_weights(entry, SimpleNamespace(pretrained=pretrained, pretrained_file=pretrained_file))
    return _create_vit(entry, path, source)[0]
