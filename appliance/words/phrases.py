"""Sentence templates per language, and the emotion words for the model card's labels.

Text from the other unit (its name) is only ever a field in a template: it is cleaned of control
characters and cut to a display name's length, and reaches espeak-ng on stdin, never as an option.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from appliance.vision import VisionError
from appliance.vision.card import load_card
from appliance.words import WordsError

log = logging.getLogger(__name__)

# The model card's label order, used when the card cannot be read (same names as the card).
DEFAULT_LABELS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")
MAX_NAME = 40
# call.state -> phrase key; idle is not worth saying (ended already was).
CALL_STATES = {
    "calling": "calling",
    "ringing": "ringing",
    "connected": "connected",
    "ended": "ended",
    "failed": "failed",
    "busy": "busy",
    "reconnecting": "reconnecting",
    "lost": "lost",
}

EN = {
    "ready": "{name} is ready.",
    "calling": "Calling {peer}.",
    "ringing": "{peer} is calling. Press the button to answer.",
    "connected": "Connected to {peer}.",
    "ended": "Call ended.",
    "failed": "The call failed.",
    "busy": "{peer} is busy.",
    "reconnecting": "Reconnecting.",
    "lost": "Connection lost.",
    "emotion": "{peer} {emotion}.",
    "no_emotion": "No expression yet.",
    "sharing_paused": "{peer} paused sharing expressions.",
    "sharing_resumed": "{peer} is sharing expressions again.",
    "camera_ready": "Camera ready.",
    "camera_lost": "Camera lost.",
    "camera_recovered": "Camera back.",
    "backend_edgetpu": "Using the Coral.",
    "backend_cpu": "Coral not found, using the processor.",
    "vision_unavailable": "Expressions are not available.",
    "no_face": "Your face is not visible.",
    "face_back": "Your face is visible again.",
    "pairing_code": "Pairing code: {digits}.",
    "owner_code": "Owner code: {digits}.",
    "pairing_locked": "Pairing is locked for {seconds} seconds.",
    "paired": "Paired with {peer}.",
    "choose_peer": "{peer}?",
    "no_peers": "No paired unit. Pair one from the web page.",
    "remote_no_face": "No face",
    "idle": "Ready",
}
HI = {
    "ready": "{name} तैयार है।",
    "calling": "{peer} को कॉल कर रहे हैं।",
    "ringing": "{peer} का कॉल आ रहा है। जवाब देने के लिए बटन दबाएँ।",
    "connected": "{peer} से जुड़ गए।",
    "ended": "कॉल समाप्त।",
    "failed": "कॉल नहीं लग सकी।",
    "busy": "{peer} व्यस्त हैं।",
    "reconnecting": "फिर से जोड़ रहे हैं।",
    "lost": "कनेक्शन टूट गया।",
    "emotion": "{peer} {emotion}।",
    "no_emotion": "अभी कोई भाव नहीं।",
    "sharing_paused": "{peer} ने भाव भेजना रोका है।",
    "sharing_resumed": "{peer} फिर से भाव भेज रहे हैं।",
    "camera_ready": "कैमरा तैयार।",
    "camera_lost": "कैमरा नहीं मिल रहा।",
    "camera_recovered": "कैमरा वापस आ गया।",
    "backend_edgetpu": "कोरल का उपयोग हो रहा है।",
    "backend_cpu": "कोरल नहीं मिला, प्रोसेसर का उपयोग हो रहा है।",
    "vision_unavailable": "भाव पहचान उपलब्ध नहीं है।",
    "no_face": "आपका चेहरा नहीं दिख रहा।",
    "face_back": "आपका चेहरा फिर से दिख रहा है।",
    "pairing_code": "जोड़ने का कोड: {digits}।",
    "owner_code": "मालिक कोड: {digits}।",
    "pairing_locked": "जोड़ना {seconds} सेकंड के लिए बंद है।",
    "paired": "{peer} से जोड़ दिया गया।",
    "choose_peer": "{peer}?",
    "no_peers": "कोई जुड़ी हुई यूनिट नहीं है।",
    "remote_no_face": "चेहरा नहीं दिख रहा",
    "idle": "तैयार",
}
BN = {
    "ready": "{name} প্রস্তুত।",
    "calling": "{peer}-কে কল করা হচ্ছে।",
    "ringing": "{peer} কল করছেন। উত্তর দিতে বোতাম টিপুন।",
    "connected": "{peer}-এর সাথে সংযুক্ত।",
    "ended": "কল শেষ।",
    "failed": "কল করা যায়নি।",
    "busy": "{peer} ব্যস্ত।",
    "reconnecting": "আবার সংযোগ করা হচ্ছে।",
    "lost": "সংযোগ বিচ্ছিন্ন।",
    "emotion": "{peer}-কে {emotion} দেখাচ্ছে।",
    "no_emotion": "এখনও কোনো অভিব্যক্তি নেই।",
    "sharing_paused": "{peer} অভিব্যক্তি পাঠানো বন্ধ রেখেছেন।",
    "sharing_resumed": "{peer} আবার অভিব্যক্তি পাঠাচ্ছেন।",
    "camera_ready": "ক্যামেরা প্রস্তুত।",
    "camera_lost": "ক্যামেরা পাওয়া যাচ্ছে না।",
    "camera_recovered": "ক্যামেরা ফিরে এসেছে।",
    "backend_edgetpu": "কোরাল ব্যবহার করা হচ্ছে।",
    "backend_cpu": "কোরাল পাওয়া যায়নি, প্রসেসর ব্যবহার করা হচ্ছে।",
    "vision_unavailable": "অভিব্যক্তি চেনা যাচ্ছে না।",
    "no_face": "আপনার মুখ দেখা যাচ্ছে না।",
    "face_back": "আপনার মুখ আবার দেখা যাচ্ছে।",
    "pairing_code": "জোড়া লাগানোর কোড: {digits}।",
    "owner_code": "মালিকের কোড: {digits}।",
    "pairing_locked": "{seconds} সেকেন্ডের জন্য জোড়া লাগানো বন্ধ।",
    "paired": "{peer}-এর সাথে জোড়া লাগানো হয়েছে।",
    "choose_peer": "{peer}?",
    "no_peers": "কোনো জোড়া লাগানো ইউনিট নেই।",
    "remote_no_face": "মুখ দেখা যাচ্ছে না",
    "idle": "প্রস্তুত",
}
TEMPLATES = {"en": EN, "hi": HI, "bn": BN}

# How each label is said after the name (spoken) and shown alone (display), per language.
EMOTION_PHRASES = {
    "en": {
        "neutral": "looks calm",
        "happiness": "looks happy",
        "surprise": "looks surprised",
        "sadness": "seems sad",
        "anger": "looks angry",
        "disgust": "looks disgusted",
        "fear": "looks afraid",
        "contempt": "looks scornful",
    },
    "hi": {
        "neutral": "शांत दिख रहे हैं",
        "happiness": "खुश दिख रहे हैं",
        "surprise": "हैरान दिख रहे हैं",
        "sadness": "उदास लग रहे हैं",
        "anger": "गुस्से में लग रहे हैं",
        "disgust": "घृणा से भरे दिख रहे हैं",
        "fear": "डरे हुए लग रहे हैं",
        "contempt": "तिरस्कार भरे दिख रहे हैं",
    },
    "bn": {
        "neutral": "শান্ত",
        "happiness": "খুশি",
        "surprise": "অবাক",
        "sadness": "দুঃখিত",
        "anger": "রাগান্বিত",
        "disgust": "বিরক্ত",
        "fear": "ভীত",
        "contempt": "অবজ্ঞাপূর্ণ",
    },
}
EMOTION_WORDS = {
    "en": {
        "neutral": "Calm",
        "happiness": "Happy",
        "surprise": "Surprised",
        "sadness": "Sad",
        "anger": "Angry",
        "disgust": "Disgusted",
        "fear": "Afraid",
        "contempt": "Scornful",
    },
    "hi": {
        "neutral": "शांत",
        "happiness": "खुश",
        "surprise": "हैरान",
        "sadness": "उदास",
        "anger": "गुस्सा",
        "disgust": "घृणा",
        "fear": "डर",
        "contempt": "तिरस्कार",
    },
    "bn": EMOTION_PHRASES["bn"],
}


def load_labels(card: Path | None = None) -> tuple[str, ...]:
    """The emotion labels in the model card's order (the vision part's card, ``[vision] model_card``).

    Without a readable card the unit still speaks, with the default names, and says why in the log.
    """
    try:
        return load_card(card).labels
    except VisionError as e:
        log.warning("%s: using the default emotion labels", e)
        return DEFAULT_LABELS


def clean_name(name: str) -> str:
    """A peer-supplied name made safe to speak and show: printable characters only, bounded length."""
    printable = "".join(c for c in name if not unicodedata.category(c).startswith("C"))
    return " ".join(printable.split())[:MAX_NAME] or "The other unit"


class Phrases:
    """The sentences of one language and the espeak-ng voice that says them.

    ``short`` phrases an expression as "Asha: happy" instead of "Asha looks happy".
    An unknown key or label is a programming error, not user input.
    """

    def __init__(
        self, language: str, labels: Sequence[str] = DEFAULT_LABELS, *, voice: str = "", short: bool = False
    ) -> None:
        if language not in TEMPLATES:
            raise WordsError(f"language {language!r} has no phrases: use one of {', '.join(TEMPLATES)}")
        self.language = language
        self.voice = voice or language
        self.labels = tuple(labels)
        self.short = short
        self._templates = TEMPLATES[language]

    @classmethod
    def for_voice(cls, voice: str, labels: Sequence[str] = DEFAULT_LABELS, *, short: bool = False) -> Phrases:
        """Phrases for an espeak-ng voice such as ``en-gb`` or ``hi``; English for a language we lack."""
        language = voice.split("-", 1)[0]
        if language not in TEMPLATES:
            log.warning("no phrases in %s: speaking English (add them to appliance/words/phrases.py)", voice)
            return cls("en", labels, short=short)
        return cls(language, labels, voice=voice, short=short)

    def say(self, key: str, **fields: object) -> str:
        clean = {k: clean_name(v) if isinstance(v, str) else v for k, v in fields.items()}
        if "digits" in clean:
            clean["digits"] = " ".join(str(clean["digits"]))  # "1 2 3 4": read digit by digit
        return self._templates[key].format(**clean)

    def emotion(self, peer: str, label: str) -> str:
        if self.short:
            return f"{clean_name(peer)}: {self.word(label)}."
        phrase = EMOTION_PHRASES[self.language].get(label, label)
        return self.say("emotion", peer=peer, emotion=phrase)

    def word(self, label: str) -> str:
        """The emotion alone, for the large-type display."""
        return EMOTION_WORDS[self.language].get(label, label.capitalize())


def for_settings(settings: Mapping[str, Any], labels: Sequence[str] = DEFAULT_LABELS) -> Phrases:
    """The phrases the owner's settings ask for (``voice_language``, ``verbosity``)."""
    short = settings.get("verbosity") == "short"
    return Phrases.for_voice(str(settings.get("voice_language", "en")), labels, short=short)
