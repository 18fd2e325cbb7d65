"""The speaker heard through its WAV file: call audio passes, announcements mix in, call audio ducks."""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from appliance import platform
from appliance.audio import AudioError, Speaker, resample
from appliance.audio.alsa import AplaySpeaker
from appliance.audio.select import open_speaker
from appliance.audio.wav import WavSpeaker, read_wav
from appliance.config import SpeechConfig
from appliance.events import EventBus
from appliance.timing import backoff

RATE = 48000


def sine(freq: float, seconds: float, amplitude: float = 8000, rate: int = RATE) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (np.sin(2 * np.pi * freq * t) * amplitude).astype(np.int16)


def band_level(x: np.ndarray, freq: float, rate: int = RATE) -> float:
    """Amplitude of ``freq`` in ``x`` (peak of the windowed spectrum near it)."""
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(x.size))) / (x.size / 4)
    freqs = np.fft.rfftfreq(x.size, 1 / rate)
    near = np.abs(freqs - freq) < 20
    return float(spectrum[near].max())


def test_call_audio_is_ducked_while_an_announcement_plays(tmp_path: Path) -> None:
    speaker = WavSpeaker(tmp_path / "out.wav", duck_gain=0.25)
    speaker.write_call(sine(300, 0.5))  # the backlog limit keeps at most 0.5 s
    time.sleep(0.15)
    seconds = speaker.play(sine(1000, 0.2), RATE)
    time.sleep(0.1)
    speaker.close()
    assert seconds == pytest.approx(0.2)
    audio, rate = read_wav(tmp_path / "out.wav")
    assert rate == RATE
    [played] = speaker.played
    start, end = round(played.start_s * RATE), round((played.start_s + played.duration_s) * RATE)
    before = audio[start - 4800 : start - 480]  # call only, full level (the 0.1 s before)
    during = audio[start + 1920 : end - 480]  # past the ramp
    assert band_level(before, 300) == pytest.approx(8000, rel=0.1)
    assert band_level(during, 300) == pytest.approx(2000, rel=0.15)
    assert band_level(during, 1000) == pytest.approx(8000, rel=0.1)
    assert band_level(before, 1000) < 200


def test_the_owners_volume_scales_everything_played(tmp_path: Path) -> None:
    """Volume 50 is an eighth of full scale (cubic, as PipeWire's percentages), for the call and the
    announcement alike; 0 is silence."""
    speaker = WavSpeaker(tmp_path / "out.wav")
    speaker.set_volume(50)
    speaker.write_call(sine(300, 0.5))
    speaker.play(sine(1000, 0.2), RATE)
    speaker.set_volume(0)
    speaker.play(sine(1000, 0.2), RATE)
    speaker.close()
    audio, _ = read_wav(tmp_path / "out.wav")
    half, silent = speaker.played
    start = round(half.start_s * RATE)
    during = audio[start + 1920 : start + round(half.duration_s * RATE) - 480]
    assert band_level(during, 1000) == pytest.approx(8000 / 8, rel=0.1)
    assert band_level(during, 300) == pytest.approx(8000 * 0.25 / 8, rel=0.15)  # ducked, then scaled
    start = round(silent.start_s * RATE)
    assert not audio[start + 480 : start + round(silent.duration_s * RATE)].any()


def test_output_runs_in_real_time_and_announcements_never_overlap(tmp_path: Path) -> None:
    speaker = WavSpeaker(tmp_path / "out.wav")
    start = time.monotonic()
    for freq in (500, 700):
        speaker.play(sine(freq, 0.15), RATE)
    elapsed = time.monotonic() - start
    speaker.close()
    audio, _ = read_wav(tmp_path / "out.wav")
    assert elapsed == pytest.approx(0.3, abs=0.06)
    first, second = speaker.played
    assert second.start_s >= first.start_s + first.duration_s - 1e-9
    assert audio.size / RATE == pytest.approx(time.monotonic() - start, abs=0.15)


def test_announcement_at_another_rate_is_resampled(tmp_path: Path) -> None:
    speaker = WavSpeaker(tmp_path / "out.wav")
    assert speaker.play(sine(440, 0.2, rate=22050), 22050) == pytest.approx(0.2, abs=0.001)
    speaker.close()
    audio, _ = read_wav(tmp_path / "out.wav")
    [played] = speaker.played
    start = round(played.start_s * RATE)
    assert band_level(audio[start : start + round(0.2 * RATE)], 440) == pytest.approx(8000, rel=0.1)


def test_resample_keeps_duration_and_pitch() -> None:
    out = resample(sine(440, 1.0, rate=16000), 16000, RATE)
    assert out.size == RATE
    assert band_level(out, 440) == pytest.approx(8000, rel=0.05)


def test_closed_speaker_refuses_to_play(tmp_path: Path) -> None:
    speaker = WavSpeaker(tmp_path / "out.wav")
    speaker.close()
    with pytest.raises(AudioError, match="closed"):
        speaker.play(sine(440, 0.1), RATE)


def test_unwritable_wav_path_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(AudioError, match="cannot write the speaker's WAV file"):
        WavSpeaker(tmp_path / "file" / "out.wav")


def test_a_sound_device_that_cannot_play_is_said_and_never_a_file(tmp_path: Path) -> None:
    if not shutil.which("aplay") or platform.sound_cards():
        pytest.skip("needs aplay and no sound card")
    events = EventBus()
    speaker = open_speaker(SpeechConfig(output="alsa", device="default"), tmp_path, events)
    try:
        with pytest.raises(AudioError):
            speaker.play(sine(1000, 0.1), RATE)
        [down] = events.recent("audio.unavailable")
        assert re.search(r"aplay stopped: .*check the sound card", down.data["reason"]), down.data
    finally:
        speaker.close()
    assert list(tmp_path.iterdir()) == []


def plays_once_back(speaker: Speaker, events: EventBus) -> None:
    """The speaker, down once, is said to be back (within 10 s) and plays an announcement."""
    deadline = time.monotonic() + 10
    while not events.recent("audio.recovered") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert speaker.play(sine(1000, 0.1), RATE) == pytest.approx(0.1)
    assert [e.topic for e in events.recent("audio.")] == ["audio.unavailable", "audio.recovered"]


def test_a_speaker_that_cannot_play_at_start_is_tried_again_and_plays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The audio server not up yet when the unit starts: the unit stayed silent (no speaker) until it
    was restarted, though the same outage later is retried. Now it is retried from the start."""
    log = stand_in_aplay(tmp_path, monkeypatch, FIRST_FAILS_APLAY)
    events = EventBus()
    speaker = open_speaker(SpeechConfig(output="alsa", device="null"), tmp_path, events)
    try:
        assert isinstance(speaker, AplaySpeaker)
        plays_once_back(speaker, events)
    finally:
        speaker.close()
    assert "Connection refused" in events.recent("audio.unavailable")[0].data["reason"]
    assert starts(log) == 2


def test_a_speaker_plugged_in_after_the_unit_started_plays_without_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no sound card when the unit started (a USB speaker plugged in later, or found late at
    boot), the unit stayed silent until it was restarted. Now it says the speaker is down, and plays
    once the kernel lists a card."""
    cards = tmp_path / "cards"  # the kernel's /proc/asound/cards, as it reads without a card
    cards.write_text("--- no soundcards ---\n")
    monkeypatch.setattr(platform, "ASOUND_CARDS", cards)
    log = stand_in_aplay(tmp_path, monkeypatch, RECORDING_APLAY)
    events = EventBus()
    speaker = open_speaker(SpeechConfig(), tmp_path, events)  # output = "auto", the image's
    try:
        with pytest.raises(AudioError, match="no sound card"):
            speaker.play(sine(1000, 0.1), RATE)
        assert starts(log) == 0
        cards.write_text(" 0 [Device         ]: USB-Audio - USB Audio Device\n")
        plays_once_back(speaker, events)
    finally:
        speaker.close()
    assert "no sound card: plug in the speaker" in events.recent("audio.unavailable")[0].data["reason"]
    assert starts(log) == 1
    heard = np.frombuffer((tmp_path / "heard.raw").read_bytes(), "<i2")
    # The announcement (0.1 s at amplitude 8000: 3,200 samples above 4,000) went to the new card.
    assert np.count_nonzero(np.abs(heard) > 4000) > 2000


def test_the_wav_file_starts_again_when_it_reaches_its_limit(tmp_path: Path) -> None:
    speaker = WavSpeaker(tmp_path / "out.wav", max_seconds=0.2)
    time.sleep(0.15)
    speaker.play(sine(1000, 0.1), RATE)  # lands across the limit
    time.sleep(0.1)
    speaker.close()
    audio, _ = read_wav(tmp_path / "out.wav")
    assert audio.size <= round(0.2 * RATE)


def aplay_children() -> list[int]:
    """The aplay processes this test process started (found in /proc, as an operator would)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended while we looked
            continue
        comm, fields = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :].split()
        if comm == "aplay" and int(fields[1]) == os.getpid():
            pids.append(int(stat.parent.name))
    return pids


def play_within(speaker: Speaker, seconds: float) -> float:
    """Announce until one plays: those made while the output is down are dropped with an AudioError."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return speaker.play(sine(1000, 0.1), RATE)
        except AudioError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_the_speaker_starts_aplay_again_when_it_dies_and_says_so(tmp_path: Path) -> None:
    """PipeWire restarting or a USB sound card replugged ends aplay; later announcements still play."""
    if not shutil.which("aplay"):
        pytest.skip("aplay is not installed (alsa-utils)")
    events = EventBus()
    speaker = open_speaker(SpeechConfig(output="alsa", device="null"), tmp_path, events)
    try:
        assert isinstance(speaker, AplaySpeaker)
        assert speaker.play(sine(1000, 0.1), RATE) == pytest.approx(0.1)
        [first] = aplay_children()
        os.kill(first, signal.SIGKILL)
        assert play_within(speaker, 5) == pytest.approx(0.1)
        [second] = aplay_children()
        assert second != first
        assert len(speaker.played) == 2
        # Said to work again once it has played a while (a card that fails again at once is not).
        deadline = time.monotonic() + 5
        while not events.recent("audio.recovered") and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        speaker.close()
    assert [e.topic for e in events.recent("audio.")] == ["audio.unavailable", "audio.recovered"]
    assert "aplay stopped" in events.recent("audio.unavailable")[0].data["reason"]


# Stand-ins for aplay (on PATH before the real one): each logs its process id when it starts.
STUCK_APLAY = """echo $$ >>"$APLAY_STARTS"
while :; do echo "underrun!!! (at least 12.345 ms long)" >&2; done  # reads nothing, as when stuck"""
FLAPPING_APLAY = """echo $$ >>"$APLAY_STARTS"
timeout 0.6 cat >/dev/null  # opens, plays half a second, then the card fails
echo "aplay: pcm_write:2178: write error: Input/output error" >&2
exit 1"""
RECORDING_APLAY = 'echo $$ >>"$APLAY_STARTS"\nexec cat >>"$APLAY_HEARD"'
FIRST_FAILS_APLAY = """echo $$ >>"$APLAY_STARTS"
if [ "$(wc -l <"$APLAY_STARTS")" -eq 1 ]; then
  echo "ALSA lib pcm_pipewire.c: Connection refused" >&2  # the audio server not up yet
  exit 1
fi
exec cat >/dev/null"""


def stand_in_aplay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> Path:
    """``body`` as the aplay the speaker starts; returns the file of the process ids it started."""
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "aplay").write_text(f"#!/bin/bash\n{body}\n")
    (folder / "aplay").chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}:{os.environ['PATH']}")
    monkeypatch.setenv("APLAY_STARTS", str(tmp_path / "starts"))
    monkeypatch.setenv("APLAY_HEARD", str(tmp_path / "heard.raw"))
    return tmp_path / "starts"


def starts(log: Path) -> int:
    return len(log.read_text().split()) if log.exists() else 0


def test_an_aplay_that_stops_taking_audio_is_started_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aplay writes a line at every underrun, even with -q; once nobody read them, months of
    underruns filled its stderr and it stopped reading its input: alive, mute, never restarted.
    Its stderr is read now, and an aplay (or audio server) that takes nothing for 2 s is replaced."""
    log = stand_in_aplay(tmp_path, monkeypatch, STUCK_APLAY)
    events = EventBus()
    speaker = AplaySpeaker("null", events=events)
    try:
        with pytest.raises(AudioError):
            speaker.play(sine(1000, 0.1), RATE)
        deadline = time.monotonic() + 10
        while starts(log) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        speaker.close()
    assert starts(log) >= 2
    [down] = events.recent("audio.unavailable")
    assert "aplay stopped taking audio (underrun!!!" in down.data["reason"]


def test_a_card_that_fails_again_at_once_is_one_outage_retried_ever_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A card that opens and fails half a second later was "back" at every opening: retried every
    1.6 s for ever, and "The speaker works again." said each time. Now it is one outage, said once,
    its retries 1, 2, 4, 8 s apart."""
    log = stand_in_aplay(tmp_path, monkeypatch, FLAPPING_APLAY)
    events = EventBus()
    speaker = AplaySpeaker("null", events=events)
    time.sleep(9)  # at 1.6 s apart it had started 6 times by now
    speaker.close()
    assert [e.topic for e in events.recent("audio.")] == ["audio.unavailable"]
    assert "write error: Input/output error" in events.recent("audio.unavailable")[0].data["reason"]
    assert starts(log) <= 4  # 0 s, then about 1.6, 4.2, 8.8 s (the next near 17 s)


def test_call_audio_sent_while_the_output_is_down_is_not_played_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other person's voice sent while the output was down was played once it came back,
    maybe after the call had ended."""
    log = stand_in_aplay(tmp_path, monkeypatch, RECORDING_APLAY)
    speaker = AplaySpeaker("null")
    try:
        [first] = (int(p) for p in log.read_text().split())
        os.kill(first, signal.SIGKILL)
        with pytest.raises(AudioError):  # the output is found down
            speaker.play(sine(1000, 0.1), RATE)
        speaker.write_call(np.full(RATE // 2, 7000, np.int16))  # sent while it is down
        assert play_within(speaker, 5) == pytest.approx(0.1)
        time.sleep(0.7)  # what was waiting would have played by now, after the announcement
    finally:
        speaker.close()
    heard = np.frombuffer((tmp_path / "heard.raw").read_bytes(), "<i2")
    assert np.count_nonzero(heard == 7000) == 0


def test_a_wav_header_that_cannot_be_written_starts_a_new_file(tmp_path: Path) -> None:
    """A WAV over 4 GiB cannot be closed (struct.error, not OSError): the speaker carries on anyway."""
    speaker = WavSpeaker(tmp_path / "out.wav", max_seconds=0.5)
    wav = speaker._wav
    while wav._datawritten < 2**32:  # as if 4 GiB had been written; again if the mixer's write raced
        wav._datawritten += 2**32
    time.sleep(0.6)  # past the limit: the file is closed to start again, and that fails
    assert play_within(speaker, 5) == pytest.approx(0.1)
    speaker.close()
    audio, _ = read_wav(tmp_path / "out.wav")  # the new file, with the announcement in it
    assert np.abs(audio).max() > 4000


def test_the_reopen_wait_stays_at_its_maximum_however_long_a_part_is_gone() -> None:
    """A speaker gone for 8 hours reached attempt 1024: 2**1024 does not fit a float, the mixer's
    thread died of the OverflowError, and the unit stayed silent after the speaker came back."""
    assert [backoff(n) for n in (0, 1, 5, 1024, 10**6)] == [1.0, 2.0, 30.0, 30.0, 30.0]
    assert [backoff(n, first=3.0) for n in (0, 2, 9)] == [3.0, 12.0, 30.0]  # the camera's
    assert backoff(5, first=45.0) == 45.0  # a first wait set above the maximum is kept


def test_call_audio_late_after_a_burst_catches_up(tmp_path: Path) -> None:
    """The network stalls 0.3 s, then delivers what it held at once: the backlog stayed, and the
    other person's voice was 0.3 s later for the rest of the call. It is dropped back to a few
    tens of ms within about a second."""
    chunk = sine(300, 0.02)
    speaker = WavSpeaker(tmp_path / "out.wav")
    start = time.monotonic()

    def steady(seconds: float) -> None:
        for _ in range(round(seconds / 0.02)):
            speaker.write_call(chunk)
            time.sleep(0.02)

    steady(0.5)
    for _ in range(15):  # 0.3 s late, all at once
        speaker.write_call(chunk)
    steady(2.5)
    written_at = time.monotonic() - start
    speaker.write_call(sine(1000, 0.02))  # a marker, to find in the output
    steady(0.5)
    speaker.close()
    audio, rate = read_wav(tmp_path / "out.wav")
    blocks = audio[: audio.size // 480 * 480].reshape(-1, 480)
    heard = next(i for i, b in enumerate(blocks) if band_level(b, 1000) > 4 * band_level(b, 300)) * 480 / rate
    assert heard - written_at < 0.15, heard - written_at


def test_call_audio_stays_ducked_between_sentences_said_in_a_row(tmp_path: Path) -> None:
    """Each sentence is its own play: in the 25-80 ms espeak-ng takes to make the next one, the
    other person's voice came back to full level and was ducked again, a swell between sentences."""
    speaker = WavSpeaker(tmp_path / "out.wav", duck_gain=0.25)
    speaker.write_call(sine(300, 0.5))
    time.sleep(0.05)
    speaker.play(sine(1000, 0.1), RATE)
    time.sleep(0.06)  # the next sentence being made
    speaker.play(sine(1000, 0.1), RATE)
    speaker.write_call(sine(300, 0.4))  # the other person still talking
    time.sleep(0.35)  # and nothing more to say
    speaker.close()
    audio, _ = read_wav(tmp_path / "out.wav")
    first, second = speaker.played
    gap = audio[round((first.start_s + first.duration_s) * RATE) : round(second.start_s * RATE)]
    assert gap.size >= 0.04 * RATE and band_level(gap, 300) == pytest.approx(2000, rel=0.15)
    after = round((second.start_s + second.duration_s + 0.2) * RATE)
    assert band_level(audio[after : after + 4800], 300) == pytest.approx(8000, rel=0.1)  # back after it
