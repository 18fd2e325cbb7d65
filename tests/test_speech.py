"""The announcer heard through the speaker's WAV file: speech, tones, order, rate, staleness."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from appliance.audio.wav import WavSpeaker, read_wav
from appliance.speech import SpeechError
from appliance.speech.announcer import MAX_WAITING_STATES, Announcer
from appliance.speech.espeak import Espeak
from appliance.speech.tones import NOTES_HZ, chime
from appliance.vision.card import default_card_path
from appliance.words import WordsError
from appliance.words.phrases import DEFAULT_LABELS, Phrases, clean_name, load_labels

from .test_audio import band_level

RATE = 48000


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if x.size else 0.0


@pytest.fixture(scope="module")
def tts() -> Espeak:
    return Espeak()


@pytest.fixture(scope="module")
def fast_tts() -> Espeak:
    """Quick speech, so queue tests that play in real time stay short."""
    return Espeak(rate_wpm=320)


class Unit:
    """A speaker writing to a WAV file and an announcer speaking through it."""

    def __init__(self, path: Path, tts: Espeak, **rules: object) -> None:
        self.path = path
        self.speaker = WavSpeaker(path)
        self.announcer = Announcer(self.speaker, tts, Phrases("en"), **rules)  # type: ignore[arg-type]

    def finish(self) -> np.ndarray:
        assert self.announcer.wait_idle(20)
        self.announcer.close()
        self.speaker.close()
        return read_wav(self.path)[0]

    def segments(self, audio: np.ndarray) -> list[np.ndarray]:
        """The audio of each announcement, cut where the speaker says it played."""
        out = []
        for p in self.speaker.played:
            start = round(p.start_s * RATE)
            out.append(audio[start : start + round(p.duration_s * RATE)])
        return out


@pytest.fixture
def make_unit(tmp_path: Path, fast_tts: Espeak) -> Iterator[Callable[..., Unit]]:
    made: list[Unit] = []

    def make(**rules: object) -> Unit:
        made.append(Unit(tmp_path / f"speaker{len(made)}.wav", fast_tts, **rules))
        return made[-1]

    yield make
    for unit in made:
        unit.announcer.close()
        unit.speaker.close()


@pytest.mark.parametrize("language", ["en", "hi", "bn"])
def test_each_language_speaks_the_emotion_phrase(tts: Espeak, language: str) -> None:
    text = Phrases(language).emotion("Asha", "happiness")
    pcm, rate = tts.synthesize(text, language)
    seconds = pcm.size / rate
    assert 0.6 < seconds < 5, f"{text!r} took {seconds:.2f} s"
    frames = pcm[: pcm.size // 441 * 441].reshape(-1, 441)  # 20 ms frames at 22050 Hz
    voiced = np.mean([rms(f) > 300 for f in frames])
    assert voiced > 0.4, f"{text!r}: only {voiced:.0%} of the frames carry speech"


def test_a_state_is_heard_in_the_wav_with_silence_around_it(make_unit: Callable[..., Unit]) -> None:
    unit = make_unit()
    time.sleep(0.1)
    unit.announcer.state("connected", peer="Asha")
    audio = unit.finish()
    [speech] = unit.segments(audio)
    start = round(unit.speaker.played[0].start_s * RATE)
    assert 0.5 < speech.size / RATE < 2.5  # "Connected to Asha." at 320 words a minute
    assert rms(speech) > 500
    assert rms(audio[: start - 100]) < 5  # nothing before it: the noise floor is digital silence


def test_different_emotions_sound_different(make_unit: Callable[..., Unit]) -> None:
    unit = make_unit(min_interval_s=0.0)
    unit.announcer.emotion("Asha", "happiness", 0.9)
    assert unit.announcer.wait_idle(10)
    unit.announcer.emotion("Asha", "sadness", 0.9)
    happy, sad = unit.segments(unit.finish())
    n = 2048

    def spectrum(x: np.ndarray) -> np.ndarray:
        tail = x[-n * 8 :].astype(np.float64)  # the emotion word is at the end
        s = np.abs(np.fft.rfft(tail.reshape(8, n) * np.hanning(n), axis=1)).mean(axis=0)
        return s / np.linalg.norm(s)

    assert rms(happy) > 500 and rms(sad) > 500
    assert float(spectrum(happy) @ spectrum(sad)) < 0.95


def test_tones_are_at_their_frequencies(make_unit: Callable[..., Unit]) -> None:
    unit = make_unit(mode="tones", min_interval_s=0.0)
    assert unit.announcer.emotion("Asha", "happiness", 0.9)
    assert unit.announcer.wait_idle(5)
    assert unit.announcer.emotion("Asha", "sadness", 0.9)
    audio = unit.finish()
    for segment, label in zip(unit.segments(audio), ["happiness", "sadness"], strict=True):
        half = segment.size // 2
        first, second = NOTES_HZ[label]
        assert band_level(segment[:half], first) > 4000
        assert band_level(segment[half:], second) > 4000
        others = {f for notes in NOTES_HZ.values() for f in notes} - {first, second}
        assert all(
            band_level(segment, f) < 1500 for f in others if abs(f - first) > 40 and abs(f - second) > 40
        )


def test_every_label_has_its_own_chime() -> None:
    chimes = {label: chime(label) for label in DEFAULT_LABELS}
    assert len({c.tobytes() for c in chimes.values()}) == len(DEFAULT_LABELS)


def test_states_go_before_a_waiting_emotion_and_nothing_is_cut(make_unit: Callable[..., Unit]) -> None:
    unit = make_unit(mode="tones", min_interval_s=0.0, stale_s=10.0)
    unit.announcer.say("Camera lost.")
    time.sleep(0.2)  # it is playing now
    assert unit.announcer.speaking
    unit.announcer.emotion("Asha", "surprise", 0.9)
    unit.announcer.say("Reconnecting.")
    audio = unit.finish()
    kinds = [s.item.kind for s in unit.announcer.spoken]
    assert kinds == ["state", "state", "emotion"]
    first, second, tone = unit.segments(audio)
    surprise = NOTES_HZ["surprise"]
    assert band_level(tone[tone.size // 2 :], surprise[1]) > 4000  # the chime is last...
    assert all(band_level(s, surprise[1]) < 1000 for s in (first, second))  # ...and not mixed into speech
    played = unit.speaker.played
    for a, b in itertools.pairwise(played):
        assert b.start_s >= a.start_s + a.duration_s - 1e-9  # whole, one after the other


def test_a_flood_of_sentences_keeps_the_newest_near(make_unit: Callable[..., Unit]) -> None:
    """Every sentence waited its turn, without end: 500 of them (another unit's messages, a part
    failing and recovering) put the newest, "Call ended.", minutes away."""
    unit = make_unit(mode="speech")
    for i in range(100):
        unit.announcer.say(f"{i}.")
    unit.announcer.say("Call ended.")
    unit.finish()
    said = [s.item.text for s in unit.announcer.spoken]
    assert said[-1] == "Call ended." and len(said) <= MAX_WAITING_STATES + 1


def test_an_emotion_kept_waiting_too_long_by_states_is_dropped_not_said_late(
    make_unit: Callable[..., Unit],
) -> None:
    unit = make_unit(mode="tones", min_interval_s=0.0, stale_s=0.1)
    unit.announcer.say("Pairing code: 1 2 3 4 5 6.")
    time.sleep(0.2)
    unit.announcer.emotion("Asha", "fear", 0.9)
    audio = unit.finish()
    assert [d.label for d in unit.announcer.dropped] == ["fear"]
    assert [s.item.kind for s in unit.announcer.spoken] == ["state"]
    assert band_level(audio, NOTES_HZ["fear"][0]) < 300  # never heard


def test_the_first_expression_of_a_call_waits_for_the_connect_sentences(tmp_path: Path) -> None:
    """At connect the unit says "Connected to Asha." and the sharing sentence (3.5 s in English,
    5.3 s in Bengali at the unit's rate); the other unit's first expression comes about a second
    after connect and, its smoothing sending only changes, never again while it holds. Dropped as
    stale after 2 s behind those sentences, it was never heard, while the screen showed it."""
    unit = Unit(tmp_path / "speaker.wav", Espeak())  # the unit's own rate, not the tests' fast one
    try:
        unit.announcer.say("Connected to Asha.")
        unit.announcer.say(Phrases("en").say("consent_shared", peer="Asha"))
        time.sleep(1.2)
        unit.announcer.emotion("Asha", "happiness", 0.9)
        unit.finish()
        assert [s.item.kind for s in unit.announcer.spoken] == ["state", "state", "emotion"]
        assert unit.announcer.dropped == []
    finally:
        unit.announcer.close()
        unit.speaker.close()


def test_emotions_only_on_change_above_threshold_and_rate_limited(make_unit: Callable[..., Unit]) -> None:
    unit = make_unit(mode="tones", min_interval_s=0.6, min_confidence=0.5)
    a = unit.announcer
    assert not a.emotion("Asha", "anger", 0.3)  # below the threshold
    assert a.emotion("Asha", "happiness", 0.8)
    time.sleep(0.05)
    assert a.wait_idle(5)
    assert not a.emotion("Asha", "happiness", 0.9)  # no change
    assert a.emotion("Asha", "surprise", 0.9)  # waits for the interval...
    assert a.emotion("Asha", "sadness", 0.9)  # ...and the newer one replaces it
    audio = unit.finish()
    said = [(s.item.label, s.started_at) for s in a.spoken]
    assert [label for label, _ in said] == ["happiness", "sadness"]
    assert said[1][1] - said[0][1] >= 0.6 - 0.01
    _, second = unit.segments(audio)
    assert band_level(second[: second.size // 2], NOTES_HZ["sadness"][0]) > 4000
    assert band_level(audio, NOTES_HZ["surprise"][1]) < 300


def test_both_mode_chimes_then_speaks_and_repeat_says_it_again(make_unit: Callable[..., Unit]) -> None:
    unit = make_unit(mode="both", min_interval_s=0.0)
    unit.announcer.emotion("Asha", "happiness", 0.9)
    assert unit.announcer.wait_idle(10)
    unit.announcer.repeat_last()
    audio = unit.finish()
    chime_1, words_1, chime_2, words_2 = unit.segments(audio)
    assert band_level(chime_1[chime_1.size // 2 :], NOTES_HZ["happiness"][1]) > 4000
    assert rms(words_1) > 500 and words_1.size > chime_1.size
    assert np.array_equal(words_1, words_2)  # same phrase, same voice
    assert np.array_equal(chime_1, chime_2)
    assert [s.item.kind for s in unit.announcer.spoken] == ["emotion", "repeat"]


def test_off_mode_says_states_but_no_emotions(make_unit: Callable[..., Unit]) -> None:
    unit = make_unit(mode="off")
    assert not unit.announcer.emotion("Asha", "happiness", 0.9)
    unit.announcer.repeat_last()  # asked for: said even in off mode
    unit.finish()
    [spoken] = unit.announcer.spoken
    assert spoken.item.kind == "repeat"


def test_an_expression_no_longer_known_is_neither_said_nor_repeated(make_unit: Callable[..., Unit]) -> None:
    unit = make_unit(min_interval_s=1.0, stale_s=10.0)
    a = unit.announcer
    assert a.emotion("Asha", "happiness", 0.9)
    assert a.wait_idle(10)
    assert a.emotion("Asha", "sadness", 0.9)  # waits out the interval...
    a.expression_unknown("Asha", "Asha's face is not in view.")  # ...and then she left the camera
    time.sleep(1.2)  # past the interval: the sadness would be said by now
    a.repeat_last()
    assert a.wait_idle(10)
    assert a.emotion("Asha", "happiness", 0.9)  # the expression said last, but news after an absence
    assert a.wait_idle(10)
    a.expression_unknown("Asha")  # sharing resumed, nothing received yet
    a.repeat_last()
    unit.finish()
    said = [s.item.text or a.phrases.emotion(s.item.peer, s.item.label) for s in a.spoken]
    assert said == [
        "Asha looks happy.",
        "Asha's face is not in view.",
        "Asha looks happy.",
        "No expression yet.",
    ]


def test_an_expression_below_the_threshold_is_not_said_but_is_what_a_repeat_says(
    make_unit: Callable[..., Unit],
) -> None:
    """The screen shows every expression the other unit sends; one below min_confidence is not
    said. A repeat (the button: "what the screen shows") said the older one instead."""
    unit = make_unit(min_interval_s=0.0, min_confidence=0.6)
    a = unit.announcer
    assert a.emotion("Asha", "happiness", 0.9)
    assert a.wait_idle(10)
    assert not a.emotion("Asha", "anger", 0.5)
    a.repeat_last()
    unit.finish()
    said = [s.item.text or a.phrases.emotion(s.item.peer, s.item.label) for s in a.spoken]
    assert said == ["Asha looks happy.", "Asha looks angry."]


def test_repeat_before_any_emotion_says_so(make_unit: Callable[..., Unit]) -> None:
    unit = make_unit()
    unit.announcer.repeat_last()
    unit.finish()
    assert [s.item.text for s in unit.announcer.spoken] == ["No expression yet."]


def test_peer_names_are_cleaned_before_they_are_spoken() -> None:
    assert clean_name("--help\x00\n Asha\x1b[31m") == "--help Asha[31m"
    assert clean_name("\x07") == "The other unit"
    assert len(clean_name("x" * 500)) == 48
    longest = "x" * 40 + " (2)"  # a name's 40 characters and the number of a second unit of that name
    assert clean_name(longest) == longest
    assert Phrases("en").say("pairing_code", digits="4821") == "Pairing code: 4 8 2 1."


def test_names_keep_the_joiners_their_spelling_needs_and_only_names_are_cut() -> None:
    rachel = "\u09b0\u200d\u09cd\u09af\u09be\u099a\u09c7\u09b2"  # "Rachel": the ZWJ keeps র whole before ্য
    assert clean_name(rachel) == rachel
    assert clean_name("\u0915\u094d\u200c\u0937") == "\u0915\u094d\u200c\u0937"  # the ZWNJ: क् and ष, not क्ष
    # Direction overrides, zero-width spaces and a BOM still go; joiners alone are no name.
    assert clean_name("\u202eAsha\u200b\ufeff\u2066") == "Asha"
    assert clean_name("\u200d\u200c") == "The other unit"
    said = Phrases("bn").say("paired", peer=rachel)
    assert rachel in said
    ipv6 = "[2001:db8:85a3:1234:8a2e:370:7334:abcd]:8080"  # longer than a name's 40 characters
    assert Phrases("en").say("idle_address", address=ipv6) == f"Ready. Address {ipv6}"
    assert Phrases("en").say("busy", peer="x" * 60) == f"{'x' * 48} is busy."


@pytest.mark.parametrize("language", ["en", "hi", "bn"])
def test_a_name_in_double_brackets_is_said_as_text_not_as_phonemes(tts: Espeak, language: str) -> None:
    """espeak-ng reads what is between [[ and ]] as its phoneme codes, in every voice: a caller
    named "[[k'0l'End@d]]" would be heard as "Kolkata". A joiner between the brackets (a name may
    hold one) is dropped before espeak-ng reads the name, so it cannot hide them."""
    for name in ("[[k'0l'End@d]]", "[[[k'0l'End@d]]", "[\u200d[k'0l'End@d]]", "[\u200c\u200d[k'0l'End@d]]"):
        said = tts.phonemes(Phrases(language).say("ringing", peer=name), language)
        assert "k'0l'End@d" not in said, said
        assert tts.phonemes("0", language) in said, said  # its 0 is read as the digit: read as text


# A name in each script espeak-ng does not switch to by itself, with its language.
NAMES_APART = {
    "te": "రాము",  # Telugu: "Telugu ra, Telugu aa..."
    "or": "ଲୀଳା",  # Odia: "Oriya letter ..." and the code point's digits
    "ur": "روبینہ",  # Arabic letters: "Arabic reh, Arabic waw..."
    "ru": "Олександр",  # Cyrillic: the letters' names
    "el": "Γιώργος",
    "ja": "ハナコ",
    "th": "สมชาย",
    "my": "အောင်",
}


@pytest.mark.parametrize("language", ["en", "hi", "bn"])
def test_a_name_in_a_script_espeak_does_not_switch_to_is_said_in_its_own_voice(
    tts: Espeak, language: str
) -> None:
    """Names in Telugu, Odia, Arabic letters, Cyrillic and others were spelt out, letter by letter
    or by the letters' names, in every voice. Each is said in its language's voice, and the
    sentence runs on without the pause of a sentence's end after the name's part."""
    phrases = Phrases(language)
    for script, name in NAMES_APART.items():
        said = tts.phonemes(phrases.say("ringing", peer=name), phrases.voice)
        assert f"({script}){tts.phonemes(name, script)}({phrases.voice})" in said, (script, said)
    # A question stays one: punctuation goes with the name, not said apart (or dropped).
    asked = tts.synthesize(phrases.say("choose_peer", peer=NAMES_APART["ru"]), phrases.voice)[0]
    assert not np.array_equal(asked, tts.synthesize(f"{NAMES_APART['ru']}.", phrases.voice)[0])
    pcm, rate = tts.synthesize(phrases.say("busy", peer=NAMES_APART["te"]), phrases.voice)  # one sentence
    quiet = np.abs(pcm) <= 200
    runs = [len(list(run)) for silent, run in itertools.groupby(quiet) if silent]
    assert max(runs[1:-1]) / rate < 0.3, "a sentence's end pause after the name"


def test_a_name_that_looks_like_an_option_is_spoken_not_obeyed(tts: Espeak) -> None:
    pcm, rate = tts.synthesize(Phrases("en").say("busy", peer="--version -w /tmp/x"))
    assert pcm.size / rate > 1.0  # it said the words; espeak-ng did not print its version


def test_labels_come_from_the_model_card(tmp_path: Path) -> None:
    shipped = load_labels()
    assert set(shipped) == set(DEFAULT_LABELS)  # the committed card
    card = json.loads(default_card_path().read_text())
    card["labels"] = ["neutral", "happiness", "joy"]
    path = tmp_path / "emotion.json"
    path.write_text(json.dumps(card))
    assert load_labels(path) == ("neutral", "happiness", "joy")
    assert Phrases("en").emotion("Asha", "joy") == "Asha joy."
    assert load_labels(tmp_path / "missing.json") == DEFAULT_LABELS  # logged; the unit still speaks


def test_unknown_language_and_voice_are_clear_errors(tts: Espeak) -> None:
    with pytest.raises(WordsError, match="use one of en, hi, bn"):
        Phrases("xx")
    with pytest.raises(SpeechError, match="espeak-ng --voices"):
        tts.synthesize("hello", "qqq")
