"""What espeak-ng actually says for every sentence, in every language, with any caller's name.

Every template goes through ``espeak-ng -x`` (prepared as the announcer prepares it) with a male, a
female and a Latin-script sample name; the assertions are on the phonemes: no English fallback
words in Hindi or Bengali, no letter spelled out, and no vowel dropped after a Bengali letter with
a dot below (ড়, ঢ়, য়), which Unicode normalisation always stores as a base letter plus nukta.
"""

from __future__ import annotations

import re
import string
import subprocess
import unicodedata

import pytest

from appliance.speech.espeak import Espeak, for_espeak
from appliance.words.phrases import (
    DEFAULT_LABELS,
    EMOTION_PHRASES,
    EMOTION_WORDS,
    EN,
    FULL_STOP,
    TEMPLATES,
    Phrases,
)

LATIN = "Asha"
# A male and a female name in each script; the Bengali female name has য় before a vowel sign.
NAMES = {"en": ("Rahul", "Priya", LATIN), "hi": ("राहुल", "प्रिया", LATIN), "bn": ("রাহুল", "প্রিয়া", LATIN)}
NAME_FIELDS = ("peer", "name")
# Values for the other fields templates take (codes, counts, addresses...).
SAMPLES = {"digits": "4821", "seconds": 30, "count": 2, "n": 3}


@pytest.fixture(scope="module")
def tts() -> Espeak:
    return Espeak()


def fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def sentences(language: str) -> list[tuple[str, str, str]]:
    """(key, name, text) for every template and emotion, once per sample name where a name goes in."""
    phrases = Phrases(language)
    dot = TEMPLATES[language].get("dot", "")
    samples = {**SAMPLES, "host": f" {dot} ".join(("192", "168", "1", "20"))}
    out = []
    for key, template in TEMPLATES[language].items():
        if key == "emotion":
            continue
        names = NAMES[language] if fields(template) & set(NAME_FIELDS) else ("",)
        for name in names:
            values = {f: name if f in NAME_FIELDS else samples.get(f, "7") for f in fields(template)}
            out.append((key, name, phrases.say(key, **values)))
    for label in DEFAULT_LABELS:
        out += [(f"emotion:{label}", name, phrases.emotion(name, label)) for name in NAMES[language]]
    # The form every stored or received text may take: normalisation decomposes ড়, ঢ়, য় again.
    return [(key, name, unicodedata.normalize("NFC", text)) for key, name, text in out]


# One Devanagari or Bengali consonant, or a conjunct of two, with no vowel sign: a letter's name.
CONJUNCT = re.compile(r"[\u0915-\u0939\u0995-\u09b9](?:[\u094d\u09cd][\u0915-\u0939\u0995-\u09b9])?")


def spelled_letters(text: str, voice: str) -> list[str]:
    """Letters espeak-ng says by name: its trace looks up each one alone (``x``, ``_a``, ``ক্ষ``)."""
    prepared = for_espeak(text)
    trace = subprocess.run(
        ["espeak-ng", "-q", "-X", "-v", voice],
        input=prepared.encode("utf-8"),
        capture_output=True,
        timeout=10,
        check=True,
    ).stdout.decode("utf-8", "replace")
    words = {w.strip(".,:;?!।").lower() for w in prepared.split()}  # a one-letter word is a word
    found = [w.removeprefix("_") for w in re.findall(r"Found: '([^']+)'", trace)]
    # Numbers are looked up as 1, 9X (ninety), 0C (hundred)...: said as numbers, not spelled.
    letters = [w for w in found if (len(w) == 1 and w.isalpha()) or CONJUNCT.fullmatch(w)]
    return [w for w in letters if w not in words]


def test_every_english_sentence_has_a_complete_counterpart() -> None:
    for language, templates in TEMPLATES.items():
        assert templates.keys() == EN.keys(), language
        for key, template in EN.items():
            assert fields(templates[key]) == fields(template), (language, key)
            assert templates[key].strip(), (language, key)
        assert set(EMOTION_PHRASES[language]) >= set(DEFAULT_LABELS), language
        assert set(EMOTION_WORDS[language]) >= set(DEFAULT_LABELS), language


@pytest.mark.parametrize("language", ["en", "hi", "bn"])
def test_every_sentence_is_said_in_its_language_with_any_name(tts: Espeak, language: str) -> None:
    for key, name, text in sentences(language):
        phonemes = tts.phonemes(text, language)
        assert phonemes, (key, text)
        # A Latin-script name is the only thing allowed to switch the voice to English, once each.
        switches = phonemes.count("(en)")
        assert switches == (text.count(LATIN) if language != "en" else 0), (key, name, text, phonemes)
        assert not spelled_letters(text, language), (key, text)


def test_bengali_letters_with_a_dot_below_keep_their_vowel(tts: Espeak) -> None:
    stored = unicodedata.normalize("NFC", "পাওয়া হয়েছে প্রিয়া জোড়া")
    assert "\u09bc" in stored  # what normalisation makes of them: base letter + nukta
    assert "\u09bc" not in for_espeak(stored)
    said = tts.phonemes(stored, "bn").split()
    # "pao", "hoche", "pri", "jor" without the mapping: the vowel after the letter is lost.
    assert said == ["p'ao:,a", "h'OetS#,e", "pr'ia", "J'or.a"], said
    for _, name, text in sentences("bn"):
        words = tts.phonemes(text, "bn")
        if name == "প্রিয়া":
            assert "pr'ia" in words, text


@pytest.mark.parametrize("language", ["en", "hi"])
def test_a_bengali_name_keeps_its_vowel_in_every_language(tts: Espeak, language: str) -> None:
    """A Bengali name is said in the Bengali voice whatever the unit's language: ড়, ঢ়, য় are
    mapped for every voice, or প্রিয়া is said "pri" in an English or Hindi sentence."""
    said = Phrases(language).say("ringing", peer=unicodedata.normalize("NFC", "প্রিয়া"))
    assert "(bn)pr'ia(" in tts.phonemes(said, language), tts.phonemes(said, language)


# Names spelled with a joiner: "Rachel" in Bengali (র, ZWJ, ্যাচেল: র stays a full letter), क्‍षमा
# (a half क), and a ZWNJ that keeps a virama visible (ক্‌ষ).
JOINED = (
    "\u09b0\u200d\u09cd\u09af\u09be\u099a\u09c7\u09b2",
    "\u0915\u094d\u200d\u0937\u092e\u093e",
    "\u0995\u09cd\u200c\u09b7",
)


@pytest.mark.parametrize("language", ["en", "hi", "bn"])
def test_a_joiner_in_a_name_is_not_said(tts: Espeak, language: str) -> None:
    """A joiner shapes the name on the screen only: espeak-ng said "Bengali" for one in the English
    and Hindi voices, and cut the name in two in every voice."""
    for name in JOINED:
        said = Phrases(language).say("ringing", peer=name)
        plain = said.replace("\u200d", "").replace("\u200c", "")
        assert tts.phonemes(said, language) == tts.phonemes(plain, language), name


def test_hindi_never_guesses_the_callers_gender() -> None:
    hi = Phrases("hi")
    for label in DEFAULT_LABELS:
        said = hi.emotion("प्रिया", label)
        assert said.startswith("प्रिया के चेहरे पर ") and said.endswith(" है।"), said
        assert not re.search(r"रहे|रही|दिख|लग", said), said
    assert EMOTION_PHRASES["hi"]["disgust"] == "घिन का भाव" and EMOTION_WORDS["hi"]["disgust"] == "घिन"
    assert hi.say("sharing_resumed", peer="प्रिया").startswith("प्रिया ने ")
    assert hi.say("owner_code", digits="12").startswith("मालिक का कोड")
    assert "कॉल फिर से जुड़ रहा है" in hi.say("reconnecting")
    assert hi.say("failed") == "कॉल नहीं लग सका।"  # masculine, as in "का कॉल आ रहा है"
    # The caller is never the subject of a verb that agrees with it ("कर रहे हैं", "सुन रहे हैं").
    assert hi.say("guest_ringing", peer="प्रिया") == "प्रिया का कॉल ब्राउज़र से आ रहा है। जवाब देने के लिए बटन दबाइए।"
    assert hi.say("guest_calling", peer="प्रिया") == "प्रिया का कॉल ब्राउज़र से आ रहा है।"
    assert hi.say("consent_shared", peer="प्रिया") == "आपके भाव प्रिया को भेजे जा रहे हैं।"
    # Verbs agree with कॉल, संपर्क, यूनिट (feminine) and भाव, never with the person named.
    assert hi.say("missed_call", peer="प्रिया") == "प्रिया का कॉल छूट गया।"
    assert hi.say("call_unreachable", peer="प्रिया") == "प्रिया से अभी संपर्क नहीं हो पा रहा।"
    assert hi.say("call_not_known", peer="प्रिया").startswith("प्रिया की यूनिट अब इस यूनिट को नहीं पहचानती।")
    assert hi.say("remote_unavailable", peer="प्रिया") == "प्रिया के भाव अभी बताए नहीं जा सकते।"


def test_hindi_grammar() -> None:
    """कॉल is masculine (as in "का कॉल आ रहा है"), an agent with ने takes the oblique plural, and a
    lockout says that wrong codes were typed, not "many wrong codes"."""
    hi = Phrases("hi")
    assert hi.say("relay_unreachable") == "घर के बाहर अभी कॉल नहीं हो सकते।"
    assert hi.say("relay_back") == "घर के बाहर फिर से कॉल हो सकते हैं।"
    assert hi.say("owner_contested").startswith("दो वेब पेजों ने एक साथ पूछा")
    assert hi.say("unpaired", peer="प्रिया") == "प्रिया से जोड़ी हटा दी गई।"
    assert hi.say("sharing_paused", peer="प्रिया") == "प्रिया ने भाव भेजना रोक दिया है।"
    assert hi.locked("pairing", 300) == "कई बार गलत कोड डाला गया: 5 मिनट तक जोड़ना बंद रहेगा।"
    assert hi.locked("owner", 60) == "कई बार गलत कोड डाला गया: 1 मिनट तक इस यूनिट में लॉग इन बंद रहेगा।"


def test_forgetting_everything_asks_for_another_long_press() -> None:
    """Forgetting everything takes separate long presses (appliance/controls/privacy.py): "keep
    holding" described a gesture that does nothing."""
    assert Phrases("en").say("forget_hold", count=2) == (
        "To forget everything, hold the button down again: 2 more to go."
    )
    assert Phrases("hi").say("forget_hold", count=2) == "सब कुछ मिटाने के लिए बटन को फिर से दबाकर रखिए: 2 बार और।"
    assert "আবার চেপে ধরে" in Phrases("bn").say("forget_hold", count=2)


def test_hindi_button_request_keeps_its_last_vowel(tts: Espeak) -> None:
    said = tts.phonemes(Phrases("hi").say("ringing", peer="राहुल"), "hi")
    assert said.split()[-1] == "d@b'a:I;,e:", said  # दबाइए; दबाएँ came out as "dabaay"


def test_bengali_wording() -> None:
    bn = Phrases("bn")
    everything = " ".join(text for _, _, text in sentences("bn"))
    assert "-এর" not in everything and "এখনও" not in everything and "জোড়া লাগানো" not in everything
    assert EMOTION_PHRASES["bn"]["sadness"] == EMOTION_WORDS["bn"]["sadness"] == "বিষণ্ণ"
    assert bn.word("sadness") == "বিষণ্ণ"


@pytest.mark.parametrize("language", ["en", "hi", "bn"])
def test_no_peers_says_how_to_pair_in_every_language(language: str) -> None:
    assert len(re.findall(r"[.।]", Phrases(language).say("no_peers"))) == 2


@pytest.mark.parametrize("language", ["hi", "bn"])
def test_a_missing_name_is_said_in_the_language(tts: Espeak, language: str) -> None:
    phrases = Phrases(language)
    said = phrases.say("connected", peer="\x07")
    assert TEMPLATES[language]["unknown_peer"] in said and "The other unit" not in said
    assert "(en)" not in tts.phonemes(said, language)
    short = Phrases(language, short=True).emotion("", "happiness")
    assert short == f"{TEMPLATES[language]['unknown_peer']}: {EMOTION_WORDS[language]['happiness']}।"


def test_short_mode_ends_with_the_languages_full_stop() -> None:
    for language, stop in FULL_STOP.items():
        assert Phrases(language, short=True).emotion("Asha", "fear").endswith(stop)
    assert Phrases("en", short=True).emotion("Asha", "fear") == "Asha: Afraid."
