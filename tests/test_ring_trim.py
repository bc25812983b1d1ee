"""Issue 23: the connection item stores only as much of the VAD's prefix ring as can still
matter (``vad.trim_ring``). Inside an utterance, until its silence nears the window, that is
the ring's last frame: the item written by every speech append then carries the held audio
and no second copy of the last 300 ms. Through ``ingest`` and the item's own encoding
(``AudioState.audio_attributes`` / ``from_connection``): any cut of the audio gives the events
and the utterance audio, prefix padding included, of one uninterrupted feed of the VAD."""

from __future__ import annotations

import random

import pytest

from kiddolingo import ingest, pcm_codec
from kiddolingo import vad as vadlib
from kiddolingo.chunk_keys import chunk_key, utterance_prefix
from tests.test_vad import RATE, ms, pcm, silence, tone, white

SID = "sess_ring_trim_0001"


def _stored(state: ingest.AudioState) -> dict:
    """The audio attributes of the connection item as a write of ``state`` stores them."""
    sets, _removes = state.audio_attributes(ingest.AudioState())
    item = {"seq": state.next_seq, **sets}
    if state.utterance is not None:
        item["utt"] = state.utterance.to_item()
    return item


def _run(audio: bytes, sizes: list[int], cfg: vadlib.VadConfig):
    """``audio`` cut into ``sizes`` (bytes), one ``ingest`` per append, the state read back
    from the item between appends: the events, each committed utterance's audio, the states."""
    state = ingest.AudioState(vad=vadlib.VadState.initial(cfg))
    objects: dict[str, bytes] = {}
    events, utterances, states = [], [], []
    at, seq = 0, 1
    while at < len(audio):
        piece = audio[at : at + sizes[(seq - 1) % len(sizes)]]
        at += len(piece)
        result = ingest.ingest(
            state,
            [(seq, piece)],
            session_id=SID,
            sample_rate=RATE,
            vad_cfg=cfg,
            max_utterance_ms=60_000,
        )
        objects.update(result.writes)
        events += [
            (e["type"], e.get("audio_start_ms", e.get("audio_end_ms")))
            for e in result.events
            if e["type"].startswith("input_audio_buffer.speech_")
        ]
        for u in result.committed:
            utterances.append(b"".join(objects[k] for k in u.keys) + u.tail)
        state = ingest.AudioState.from_connection(_stored(result.state))
        states.append(result.state)
        seq += 1
    return events, utterances, states


def _reference(audio: bytes, cfg: vadlib.VadConfig):
    """One feed of the whole audio: the VAD's events and its utterances, cut at its offsets."""
    step = vadlib.feed(cfg, vadlib.VadState.initial(cfg), audio)
    names = {"speech_started": "input_audio_buffer.speech_started"}
    names["speech_stopped"] = "input_audio_buffer.speech_stopped"
    events, utterances, start = [], [], 0
    for ev, offset in zip(step.events, step.event_offsets, strict=True):
        if ev.kind in names:
            events.append((names[ev.kind], ev.audio_ms))
        if ev.kind == "speech_started":
            start = offset
        elif ev.kind == "speech_stopped":
            utterances.append(step.utterance_audio[start:offset])
    return events, utterances


def _speech_then_speech_at_the_window(cfg: vadlib.VadConfig, late_ms: int) -> bytes:
    """Room noise, a phrase with a pause, its closing silence exactly to the window, and
    speech that starts right after ``speech_stopped``: its prefix is the end of that silence,
    which an over-eager trim would have dropped."""
    noise = white(600, dbfs=-55.0, seed=4)
    window = cfg.silence_duration_ms
    return pcm(
        noise,
        tone(700),
        white(300, dbfs=-55.0, seed=5),
        tone(500, f0=300.0),
        white(window + late_ms, dbfs=-55.0, seed=6),
        tone(600, f0=220.0),
        white(window + 400, dbfs=-55.0, seed=7),
    )


def _cuts(seed: int) -> list[list[int]]:
    rnd = random.Random(seed)
    odd = [rnd.randrange(ms(20), ms(700)) | 1 for _ in range(40)]  # odd byte counts too
    return [[ms(100)], [ms(500)], [ms(20)], [ms(300), ms(700), ms(100), ms(40)], odd]


@pytest.mark.parametrize(
    "td",
    [
        {},
        {"silence_duration_ms": 500},
        {"silence_duration_ms": 340, "prefix_padding_ms": 300},
        {"silence_duration_ms": 800, "prefix_padding_ms": 600},
    ],
)
@pytest.mark.parametrize("late_ms", [0, 20, 40])
def test_any_cut_gives_the_events_and_audio_of_one_feed(td: dict, late_ms: int) -> None:
    cfg = vadlib.VadConfig.from_turn_detection(td, RATE)
    audio = _speech_then_speech_at_the_window(cfg, late_ms)
    want_events, want_audio = _reference(audio, cfg)
    assert (
        len(want_audio) == 2
        and [k for k, _ in want_events].count("input_audio_buffer.speech_started") == 2
    )
    for sizes in _cuts(len(td)):
        events, utterances, _states = _run(audio, sizes, cfg)
        assert events == want_events, sizes[:4]
        assert utterances == want_audio, sizes[:4]  # byte for byte, prefix padding included


def test_an_append_in_speech_stores_one_frame_of_the_ring() -> None:
    cfg = vadlib.VadConfig.from_turn_detection({}, RATE)
    audio = pcm(white(600, dbfs=-55.0), tone(1500), silence(100))
    _events, _utts, states = _run(audio, [ms(100)], cfg)
    in_speech = [s for s in states if s.vad is not None and s.vad.in_utterance]
    assert len(in_speech) >= 8
    for state in in_speech:
        assert len(state.vad.ring) == cfg.frame_bytes
        vad_item, _shared = state.vad_item()
        assert vad_item is not None and len(vad_item) < 1024  # was the ~15 KB ring, packed
    # Between utterances the ring is the next candidate's prefix padding, and only that (the
    # walk's own frame on top of it is the frame being walked).
    quiet = states[5].vad  # 600 ms of room noise, no candidate
    assert not quiet.in_utterance and quiet.candidate_start < 0
    assert len(quiet.ring) == cfg.prefix_bytes


def test_the_ring_is_kept_whole_as_the_window_nears() -> None:
    cfg = vadlib.VadConfig.from_turn_detection({}, RATE)
    audio = pcm(white(600, dbfs=-55.0), tone(600), white(cfg.silence_duration_ms - 100, -55.0))
    _events, _utts, states = _run(audio, [ms(100)], cfg)
    last = states[-1].vad
    assert last.in_utterance and last.silence_ms > cfg.silence_duration_ms - 320
    assert len(last.ring) == cfg.prefix_bytes + cfg.frame_bytes
    # and the stored item gives it back exactly
    back = ingest.AudioState.from_connection(_stored(states[-1]))
    assert back.vad == last and pcm_codec.unpack(pcm_codec.pack(last.ring)) == last.ring


def test_the_utterance_stores_its_keys_folder_once() -> None:
    keys = tuple(chunk_key(SID, "u0000000500", seq, bytes([seq]) * 64) for seq in range(7, 40, 3))
    utt = ingest.Utterance(id="u0000000500", item_id="item_x", start_ms=500, keys=keys, nbytes=9)
    item = utt.to_item()
    assert item["kp"] == utterance_prefix(SID, "u0000000500")
    assert all("/" not in k for k in item["keys"])
    assert ingest.Utterance.from_item(item) == utt
    # one key, none, and the full keys an item written before this change holds
    for few in (keys[:1], ()):
        one = ingest.Utterance(id="u1", item_id="i", start_ms=0, keys=few)
        assert "kp" not in one.to_item() and ingest.Utterance.from_item(one.to_item()) == one
    old = {"id": "u0000000500", "item": "item_x", "start": 500, "keys": list(keys), "n": 9}
    assert ingest.Utterance.from_item(old) == utt
    assert sum(map(len, item["keys"])) + len(item["kp"]) < sum(map(len, keys)) / 2
