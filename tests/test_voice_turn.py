"""Issue 2: a child's utterance comes back as the tutor's spoken answer, through the real
handlers, S3/DynamoDB under moto, and the real openai SDK over HTTP to the fake server."""

from __future__ import annotations

import base64
import json

from infra.fake_openai import synth_pcm
from kiddolingo.conversation import load_history
from kiddolingo.speech_text import SentenceSplitter, strip_for_speech
from tests.support.events import connect_event, disconnect_event, message_event
from tests.support.speech import chunks, speak

CONN = "conn-A="
REPLY = "¡Hola, Ana! 😊 (Hello, Ana!) ¿Te gustan los gatos? 🐱 (Do you like cats?)"
#: What the voice model says of it (and so what the child sees and the history keeps).
SPOKEN = "¡Hola, Ana! (Hello, Ana!) 😊 ¿Te gustan los gatos? (Do you like cats?) 🐱"


def send(stack, conn: str, body: dict) -> None:
    stack.invoke("$default", message_event(json.dumps(body), connection_id=conn))


def start(stack, conn: str = CONN, session_id: str | None = None) -> str:
    query = {"session_id": session_id} if session_id else None
    out = stack.invoke("$connect", connect_event(query=query, connection_id=conn))
    assert out["statusCode"] == 200, out
    send(
        stack,
        conn,
        {
            "type": "session.update",
            "session": {
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": 24000},
                        "turn_detection": None,
                    }
                },
                "tutor": {"target_language": "Spanish", "learner_age": 7},
            },
        },
    )
    return stack.connection_item(conn)["sid"]


def speak_turn(stack, conn: str, pcm: bytes) -> None:
    for n, chunk in enumerate(chunks(pcm), start=1):
        body = {
            "type": "input_audio_buffer.append",
            "event_id": f"audio#{n}",
            "audio": base64.b64encode(chunk).decode(),
        }
        assert len(json.dumps(body)) < 32 * 1024
        send(stack, conn, body)
    send(stack, conn, {"type": "input_audio_buffer.commit"})


def sentences(text: str) -> list[str]:
    splitter = SentenceSplitter()
    return splitter.feed(text) + splitter.flush()


def test_a_spoken_turn_end_to_end(stack, fake_openai) -> None:
    pcm = speak("Hola, me llamo Ana.")
    fake_openai.script_transcripts("Hola, me llamo Ana.")
    fake_openai.script_replies(REPLY)

    sid = start(stack)
    speak_turn(stack, CONN, pcm)

    events = stack.recorder.events(CONN)
    types = [e["type"] for e in events]
    n_sent = len(sentences(REPLY))
    head = [
        "session.created",
        "session.updated",
        "input_audio_buffer.committed",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
    ]
    assert types[:5] == head
    tail = ["response.output_audio.done", "response.output_audio_transcript.done", "response.done"]
    assert types[-3:] == tail
    body = types[5:-3]
    assert set(body) == {"response.output_audio_transcript.delta", "response.output_audio.delta"}
    # the voice model's transcript comes word by word, each word ahead of its audio
    assert body.count("response.output_audio_transcript.delta") > n_sent
    assert body[0] == "response.output_audio_transcript.delta"
    shown = "".join(e["delta"] for e in events if e["type"].endswith("transcript.delta"))
    assert shown == SPOKEN

    # the transcription got a real WAV of exactly the audio we sent
    (req,) = fake_openai.requests("audio/transcriptions")
    assert req.wav is not None and req.wav[:4] == b"RIFF" and req.wav.endswith(pcm)
    assert events[3]["transcript"] == "Hola, me llamo Ana."

    # the audio deltas decode to the synthesized PCM of each sentence, emojis never spoken
    audio = b"".join(
        base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta"
    )
    assert audio == b"".join(synth_pcm(strip_for_speech(s)) for s in sentences(REPLY))
    # one Realtime socket for the turn, an out-of-band response per sentence
    responses = fake_openai.realtime_responses()
    assert [r.text for r in responses] == [strip_for_speech(s) for s in sentences(REPLY)]
    assert len({r.session_id for r in responses}) == 1
    assert all(r.request["conversation"] == "none" and r.completed for r in responses)
    assert all("😊" not in r.text and "🐱" not in r.text for r in responses)

    # one response id and item id throughout; done says completed with the full transcript
    done = events[-1]["response"]
    assert done["status"] == "completed"
    # what the child heard and saw: the voice model's words, each sentence's emojis after it
    assert done["output"][0]["content"][0]["transcript"] == SPOKEN
    assert events[-2]["transcript"] == SPOKEN
    assert {e.get("response_id") for e in events[5:-3]} == {done["id"]}

    # history holds the child's words and the tutor's answer; the turn's audio is gone
    hist = load_history(stack.session_item(sid)["hist"])
    assert [(h["role"], h["text"]) for h in hist] == [
        ("user", "Hola, me llamo Ana."),
        ("assistant", SPOKEN),
    ]
    assert stack.audio_keys() == []
    assert max(stack.recorder.sizes) < 32 * 1024

    # the chat request carried the tutor prompt in the target language
    (chat,) = fake_openai.requests("chat/completions")
    assert "Spanish" in chat.messages[0]["content"]
    assert chat.messages[-1] == {"role": "user", "content": "Hola, me llamo Ana."}


def test_resume_carries_the_history_into_the_next_turn(stack, fake_openai) -> None:
    pcm = speak("Hola")
    fake_openai.script_transcripts("Hola", "Me gustan los perros")
    fake_openai.script_replies("¡Hola! 😊 (Hello!)", "¡Qué bien! (Great!)")
    sid = start(stack)
    speak_turn(stack, CONN, pcm)
    stack.invoke("$disconnect", disconnect_event(connection_id=CONN))
    assert stack.connection_item(CONN) is None
    assert stack.session_item(sid) is not None

    assert start(stack, conn="conn-B=", session_id=sid) == sid
    speak_turn(stack, "conn-B=", pcm)
    second = fake_openai.requests("chat/completions")[-1].messages
    assert [m["content"] for m in second[1:]] == [
        "Hola",
        "¡Hola! (Hello!) 😊",
        "Me gustan los perros",
    ]
    # the resumed connection was greeted with the same session
    created = stack.recorder.events("conn-B=")[0]
    assert created["type"] == "session.created" and created["session"]["id"] == sid


def test_resuming_an_unknown_session_is_refused(stack) -> None:
    out = stack.invoke(
        "$connect", connect_event(query={"session_id": "sess_nope"}, connection_id=CONN)
    )
    assert out["statusCode"] == 404
