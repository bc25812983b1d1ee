"""Providers for transcription, chat, speech and moderation behind small ports.

Importing this package is cheap and never imports ``openai``: the audio-chunk path imports the
shared package and must not pay for the SDK (its cold-start budget, README "Performance").
Only :func:`build_providers` loads the OpenAI-compatible implementation, on first use, and
caches it for the life of the process.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING

from ..coldstart import long_lived
from . import errors
from .base import SPEECH_SAMPLE_RATE, ChatModel, Moderator, Providers, SpeechSynth, Transcriber

# Every provider error, as ``errors.__all__`` lists them (the one list of them).
from .errors import *  # noqa: F403
from .moderation import CHILD_SAFETY_THRESHOLDS, ModerationVerdict, evaluate_moderation

if TYPE_CHECKING:
    from ..settings import Settings

__all__ = [
    *errors.__all__,
    "CHILD_SAFETY_THRESHOLDS",
    "SPEECH_SAMPLE_RATE",
    "ChatModel",
    "ModerationVerdict",
    "Moderator",
    "Providers",
    "SpeechSynth",
    "Transcriber",
    "build_providers",
    "evaluate_moderation",
    "preload_providers",
    "reset_providers",
    "stir_openssl_after_restore",
]

_lock = threading.Lock()
_cache: dict[Settings, Providers] = {}


def build_providers(settings: Settings | None = None) -> Providers:
    """The OpenAI-compatible providers for ``settings`` (default: the process settings),
    built once per process and settings. Building imports ``openai`` but makes no request;
    API keys kept in SSM or Secrets Manager are fetched on the first call that needs them."""
    if settings is None:
        from ..settings import get_settings

        settings = get_settings()
    with _lock:
        providers = _cache.get(settings)
        if providers is None:
            # The SDK (openai, httpx, pydantic: ~1 s of imports) stays for the container's life.
            with long_lived():
                from .openai_compat import build_openai_providers

                providers = _cache[settings] = build_openai_providers(settings)
        return providers


def preload_providers(settings: Settings) -> Providers:
    """Build the providers and run the SDK once through every request a turn makes, against
    canned answers in memory (no network): for the INIT of a snapshot (SnapStart), where the
    time is not a child's. Besides its imports, the SDK builds its request transforms and
    response models on first use (~250 ms on a chat request here): the snapshot keeps them."""
    providers = build_providers(settings)
    with long_lived():
        from ._warmup import warm_up_sdk

        try:
            warm_up_sdk(providers.chat, settings)
        except Exception:
            # Only the first turn's speed depends on it: the snapshot is still good to publish.
            logging.getLogger(__name__).warning("the SDK warm-up failed", exc_info=True)
    stir_openssl_after_restore()
    return providers


def stir_openssl_after_restore() -> bool:
    """Have Lambda stir fresh randomness from the OS into OpenSSL's generator each time a
    container is restored from the snapshot. False where SnapStart's runtime hooks are not
    available (outside Lambda's runtime).

    The INIT builds TLS contexts, and OpenSSL seeds its generator then (a context draws keys
    from it). Every container restored from one snapshot starts with that same generator
    state, so until OpenSSL reseeds on its own, their TLS handshakes could draw the same
    numbers. (``secrets`` and ``uuid4`` read the OS, which is fresh after a restore.) The hooks
    are the runtime's own ``snapshot_restore_py``, not bundled with the layer: a second copy
    would keep hooks the runtime never calls."""
    try:
        from snapshot_restore_py import register_after_restore
    except ImportError:
        return False
    register_after_restore(_stir_openssl)
    return True


def _stir_openssl() -> None:
    import ssl

    ssl.RAND_add(os.urandom(64), 64.0)


def reset_providers() -> None:
    """Forget the cached providers (tests, or after the settings changed)."""
    with _lock:
        _cache.clear()
