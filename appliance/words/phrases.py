"""Sentence templates per language, and the emotion words for the model card's labels.

Text from the other unit (its name) is only ever a field in a template: it is cleaned of control
characters and cut to a display name's length, and reaches espeak-ng on stdin, never as an option.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from string import Formatter
from typing import Any

from appliance.call import MISSED, NOT_ANSWERED, NOT_KNOWN, UNAVAILABLE, UNREACHABLE
from appliance.vision import VisionError
from appliance.vision.card import load_card
from appliance.words import WordsError
from appliance.words.scripts import JOINERS

log = logging.getLogger(__name__)

# The model card's label order, used when the card cannot be read (same names as the card).
DEFAULT_LABELS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")
MAX_NAME = 48  # a name's 40 characters and the number that tells two of one name apart: "Mum (2)"
NAME_FIELDS = ("peer", "name")  # the template fields that hold a name another unit chose
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
# Why a call ended (call.state's reason) or failed (its cause), where that is said rather than
# "Call ended." or "The call failed.".
ENDED_BECAUSE = {NOT_ANSWERED: "not_answered", MISSED: "missed_call"}
FAILED_BECAUSE = {UNREACHABLE: "call_unreachable", NOT_KNOWN: "call_not_known"}
RELAY_FAULTS = {"refused": "relay_refused", "replaced": "relay_replaced"}  # the relay client's states

EN = {
    "ready": "{name} is ready.",
    "calling": "Calling {peer}.",
    "ringing": "{peer} is calling. Press the button to answer.",
    "ringing_auto": "{peer} is calling.",
    "guest_ringing": "{peer} is calling from a browser. Press the button to answer.",
    "guest_calling": "{peer} is calling from a browser.",
    "ringing_page": "{peer} is calling. Answer on the web page.",
    "guest_ringing_page": "{peer} is calling from a browser. Answer on the web page.",
    "connected": "Connected to {peer}.",
    "ended": "Call ended.",
    "not_answered": "{peer} did not answer.",
    "missed_call": "Missed call from {peer}.",
    "failed": "The call failed.",
    "call_unreachable": "{peer} cannot be reached right now.",
    "call_not_known": "{peer} does not know this unit any more. Pair again.",
    "action_failed": "That did not work.",
    "busy": "{peer} is busy.",
    "reconnecting": "Reconnecting.",
    "lost": "Connection lost.",
    "emotion": "{peer} {emotion}.",
    "no_emotion": "No expression yet.",
    "sharing_paused": "{peer} paused sharing expressions.",
    "sharing_resumed": "{peer} is sharing expressions again.",
    "remote_unavailable": "{peer}'s expressions cannot be described right now.",
    "remote_available": "{peer}'s expressions can be described again.",
    "remote_no_face_said": "{peer}'s face is not in view.",
    "camera_ready": "Camera ready.",
    "camera_lost": "Camera lost.",
    "camera_recovered": "Camera back.",
    "backend_edgetpu": "Using the Coral.",
    "backend_cpu": "Coral not found, using the processor.",
    "backend_coral_failed": "The Coral is not working, using the processor.",
    "backend_processor": "Using the processor.",
    "vision_unavailable": "Expressions are not available.",
    "no_face": "Your face is not visible.",
    "face_back": "Your face is visible again.",
    "pairing_code": "Pairing code: {digits}.",
    "owner_code": "Owner code: {digits}.",
    "owner_button": "Or press the button once to let that web page in.",
    "owner_let_in": "A web page can now change this unit's settings.",
    "owner_contested": "Two web pages asked at once, so neither was let in. Type the code instead.",
    "pairing_locked": "Too many wrong codes: pairing is locked for {duration}.",
    "owner_locked": "Too many wrong codes: logging in to this unit is locked for {duration}.",
    "code_lasts": "It works for {duration}.",
    "one_minute": "1 minute",
    "minutes": "{n} minutes",
    "seconds": "{n} seconds",
    "one_second": "1 second",
    "address": "This unit's address is {host}, port {port}.",
    "dot": "dot",
    "idle_address": "Ready. Address {address}",
    "paired": "Paired with {peer}.",
    "unpaired": "No longer paired with {peer}.",
    "choose_peer": "{peer}?",
    "no_peers": "No paired unit. Pair one from the web page.",
    "remote_no_face": "No face",
    "idle": "Ready",
    "starting": "Starting",
    "unknown_peer": "The other unit",
    "consent_shared": "{peer} hears your expressions.",
    "consent_private": "Your expressions are not shared.",
    "sharing_on": "Your expressions are shared again.",
    "sharing_off": "Your expressions are no longer shared.",
    "sharing_on_guest": "Your expressions will be shared in calls with units. A guest never receives them.",
    "sharing_on_unavailable": "Sharing is on, but your expressions cannot be recognised right now.",
    "sharing_question": (
        "Your expressions are not shared until you choose. To share them, press the button twice "
        "during a call, or use the settings page."
    ),
    "sharing_question_page": (
        "Your expressions are not shared until you choose. To share them, use the settings page."
    ),
    "forget_hold": "To forget everything, hold the button down again: {count} more to go.",
    "forgetting": "Forgetting everything: paired units, settings, identity and recordings.",
    "forgotten": "Everything is forgotten. This unit starts as new.",
    "restarted": "The unit stopped working and was restarted.",
    "card_read_only": (
        "The unit's memory card can no longer be written. The unit works, but changes are lost when it"
        " is switched off. Ask someone who helps you to replace the card."
    ),
    "cannot_start": "The unit cannot start. Someone who helps you with it can read why in its log.",
    "state_repaired": (
        "The memory card had damaged this unit's settings. The unit kept what it could read. If a unit"
        " you call is missing, pair with it again. Guests need new invites. Ask someone who helps you to"
        " check the memory card."
    ),
    "state_lost": (
        "The memory card had damaged this unit's settings, and no paired unit could be read: pair again"
        " with the units you call. Guests need new invites. Ask someone who helps you to check the"
        " memory card."
    ),
    "units_kept": "Paired units kept: {names}.",
    "key_changed": (
        "This unit's key has changed, perhaps because the memory card damaged it. Guests need their"
        " invite links sent again. Ask someone who helps you to check the memory card."
    ),
    "pair_again": "The units you call will not know this unit until you pair with them again: {names}.",
    "relay_unreachable": "Calls outside the home are not possible right now.",
    "relay_refused": (
        "The relay refused this unit's account, so calls outside the home are not possible. Ask whoever"
        " runs the relay."
    ),
    "relay_replaced": (
        "Another unit signed in with this unit's relay account, so calls from outside the home go to"
        " that unit. This unit stays off the relay until it restarts. Ask whoever set up your units."
    ),
    "relay_back": "Calls outside the home work again.",
    "speaker_unavailable": "The speaker is not working.",
    "speaker_back": "The speaker works again.",
    "display_unavailable": "The screen is not working.",
    "microphone_unavailable": "The microphone is not working.",
    "microphone_back": "The microphone works again.",
    # What the owner can still do: the status page calls, answers and hangs up, as auto-answer does.
    "button_unavailable": (
        "The button is not working. Calls can still be made, answered and ended on the web page."
    ),
    "still_calling": "Still calling {peer}. Hold the button to stop calling.",
    "still_ringing_there": "Still calling {peer}.",
    "answering": "Answering.",
    "tried_to_call": "While you were busy, {peer} tried to call.",
    "choose_peer_number": "{peer}, number {n}?",
    "cancelled": "Cancelled.",
    "still_closing": "The last call is still closing. Press again in a moment.",
    # "Forget everything" on a read-only card: only the copy in memory was erased (appliance/card.py).
    "forgotten_card_kept": (
        "This unit starts as new for now, but nothing can be written on its memory card, so everything"
        " comes back when the unit is switched on again. Ask someone who helps you to replace the card."
    ),
    # The setup hotspot (image-build/files/network/emocall-hotspot), said through `emocall say`.
    "hotspot_help": (
        "No network. Join the Wi-Fi network {ssid}, password {password}, then open {host} port {port}"
        " to choose your network."
    ),
    "network_back": "The network is back.",
    "no_address": "This unit has no address on a network right now.",
    "network_joined": "Joined the network {ssid}.",
    "network_failed": "Could not join {ssid}. Check the password. The setup network comes back.",
}
HI = {
    "ready": "{name} तैयार है।",
    "calling": "{peer} को कॉल कर रहे हैं।",
    "ringing": "{peer} का कॉल आ रहा है। जवाब देने के लिए बटन दबाइए।",
    "ringing_auto": "{peer} का कॉल आ रहा है।",
    "guest_ringing": "{peer} का कॉल ब्राउज़र से आ रहा है। जवाब देने के लिए बटन दबाइए।",
    "guest_calling": "{peer} का कॉल ब्राउज़र से आ रहा है।",
    "ringing_page": "{peer} का कॉल आ रहा है। जवाब वेब पेज से दीजिए।",
    "guest_ringing_page": "{peer} का कॉल ब्राउज़र से आ रहा है। जवाब वेब पेज से दीजिए।",
    "connected": "{peer} से जुड़ गए।",
    "ended": "कॉल समाप्त।",
    "not_answered": "{peer} ने जवाब नहीं दिया।",
    "missed_call": "{peer} का कॉल छूट गया।",
    "failed": "कॉल नहीं लग सका।",
    # The verb agrees with संपर्क and यूनिट (feminine), never with the person named.
    "call_unreachable": "{peer} से अभी संपर्क नहीं हो पा रहा।",
    "call_not_known": "{peer} की यूनिट अब इस यूनिट को नहीं पहचानती। फिर से जोड़िए।",
    "action_failed": "यह काम नहीं हो सका।",
    "busy": "{peer} व्यस्त हैं।",
    "reconnecting": "कॉल फिर से जुड़ रहा है।",
    "lost": "कनेक्शन टूट गया।",
    "emotion": "{peer} के चेहरे पर {emotion} है।",
    "no_emotion": "अभी कोई भाव नहीं।",
    "sharing_paused": "{peer} ने भाव भेजना रोक दिया है।",
    "sharing_resumed": "{peer} ने फिर से भाव भेजना शुरू किया है।",
    "remote_unavailable": "{peer} के भाव अभी बताए नहीं जा सकते।",
    "remote_available": "{peer} के भाव फिर से बताए जा सकते हैं।",
    "remote_no_face_said": "{peer} का चेहरा नहीं दिख रहा।",
    "camera_ready": "कैमरा तैयार।",
    "camera_lost": "कैमरा नहीं मिल रहा।",
    "camera_recovered": "कैमरा वापस आ गया।",
    "backend_edgetpu": "कोरल का उपयोग हो रहा है।",
    "backend_cpu": "कोरल नहीं मिला, प्रोसेसर का उपयोग हो रहा है।",
    "backend_coral_failed": "कोरल काम नहीं कर रहा, प्रोसेसर का उपयोग हो रहा है।",
    "backend_processor": "प्रोसेसर का उपयोग हो रहा है।",
    "vision_unavailable": "भाव पहचान उपलब्ध नहीं है।",
    "no_face": "आपका चेहरा नहीं दिख रहा।",
    "face_back": "आपका चेहरा फिर से दिख रहा है।",
    "pairing_code": "जोड़ने का कोड: {digits}।",
    "owner_code": "मालिक का कोड: {digits}।",
    "owner_button": "या उस वेब पेज को अनुमति देने के लिए बटन एक बार दबाइए।",
    "owner_let_in": "अब एक वेब पेज इस यूनिट की सेटिंग्स बदल सकता है।",
    "owner_contested": "दो वेब पेजों ने एक साथ पूछा, इसलिए किसी को अनुमति नहीं मिली। इसके बजाय कोड लिखिए।",
    "pairing_locked": "कई बार गलत कोड डाला गया: {duration} तक जोड़ना बंद रहेगा।",
    "owner_locked": "कई बार गलत कोड डाला गया: {duration} तक इस यूनिट में लॉग इन बंद रहेगा।",
    "code_lasts": "यह कोड {duration} तक चलेगा।",
    "one_minute": "1 मिनट",
    "minutes": "{n} मिनट",
    "seconds": "{n} सेकंड",
    "one_second": "1 सेकंड",
    "address": "इस यूनिट का पता है {host}, पोर्ट {port}।",
    "dot": "डॉट",
    "idle_address": "तैयार। पता {address}",
    "paired": "{peer} से जोड़ दिया गया।",
    "unpaired": "{peer} से जोड़ी हटा दी गई।",
    "choose_peer": "{peer}?",
    "no_peers": "कोई जुड़ी हुई यूनिट नहीं है। वेब पेज से एक यूनिट जोड़िए।",
    "remote_no_face": "चेहरा नहीं दिख रहा",
    "idle": "तैयार",
    "starting": "शुरू हो रही है",
    "unknown_peer": "दूसरी यूनिट",
    "consent_shared": "आपके भाव {peer} को भेजे जा रहे हैं।",
    "consent_private": "आपके भाव नहीं भेजे जा रहे।",
    "sharing_on": "आपके भाव फिर से भेजे जा रहे हैं।",
    "sharing_off": "अब आपके भाव नहीं भेजे जा रहे।",
    "sharing_on_guest": "यूनिटों के साथ कॉल में आपके भाव भेजे जाएंगे। मेहमान को वे कभी नहीं भेजे जाते।",
    "sharing_on_unavailable": "भाव भेजना चालू है, पर अभी आपके भाव पहचाने नहीं जा सकते।",
    "sharing_question": (
        "जब तक आप न चुनें, आपके भाव नहीं भेजे जाते। भेजने के लिए कॉल के दौरान बटन दो बार दबाइए, "
        "या सेटिंग्स पेज का उपयोग कीजिए।"
    ),
    "sharing_question_page": ("जब तक आप न चुनें, आपके भाव नहीं भेजे जाते। भेजने के लिए सेटिंग्स पेज का उपयोग कीजिए।"),
    "forget_hold": "सब कुछ मिटाने के लिए बटन को फिर से दबाकर रखिए: {count} बार और।",
    "forgetting": "सब कुछ मिटाया जा रहा है: जुड़ी हुई यूनिटें, सेटिंग्स, पहचान और रिकॉर्डिंग।",
    "forgotten": "सब कुछ मिटा दिया गया। यह यूनिट नए सिरे से शुरू हो रही है।",
    "restarted": "यूनिट रुक गई थी और फिर से शुरू की गई।",
    "card_read_only": (
        "यूनिट के मेमोरी कार्ड पर अब कुछ लिखा नहीं जा सकता। यूनिट काम कर रही है, पर बंद होने पर बदलाव"
        " खो जाएंगे। अपनी मदद करने वाले व्यक्ति से कार्ड बदलने को कहें।"
    ),
    "cannot_start": "यूनिट शुरू नहीं हो पा रही। आपकी मदद करने वाला व्यक्ति इसके लॉग में कारण देख सकता है।",
    "state_repaired": (
        "मेमोरी कार्ड पर इस यूनिट की सेटिंग्स खराब हो गई थीं। यूनिट ने जितना पढ़ा जा सका, उतना रख लिया है।"
        " अगर जिस यूनिट को आप कॉल करते हैं वह नहीं मिल रही, तो उसे फिर से जोड़िए। मेहमानों को नए निमंत्रण"
        " भेजने होंगे। अपनी मदद करने वाले व्यक्ति से मेमोरी कार्ड जाँचने को कहें।"
    ),
    "state_lost": (
        "मेमोरी कार्ड पर इस यूनिट की सेटिंग्स खराब हो गई थीं और कोई जुड़ी हुई यूनिट पढ़ी नहीं जा सकी: जिन"
        " यूनिटों को आप कॉल करते हैं, उन्हें फिर से जोड़िए। मेहमानों को नए निमंत्रण भेजने होंगे। अपनी मदद"
        " करने वाले व्यक्ति से मेमोरी कार्ड जाँचने को कहें।"
    ),
    "units_kept": "रखी गई जुड़ी यूनिटें: {names}।",
    "key_changed": (
        "इस यूनिट की कुंजी बदल गई है, शायद मेमोरी कार्ड ने उसे खराब कर दिया था। मेहमानों को उनके निमंत्रण लिंक"
        " फिर से भेजने होंगे। अपनी मदद करने वाले व्यक्ति से मेमोरी कार्ड जाँचने को कहें।"
    ),
    "pair_again": (
        "जिन यूनिटों को आप कॉल करते हैं, वे इस यूनिट को तब तक नहीं पहचानेंगी जब तक आप उन्हें फिर से नहीं जोड़ लेते: {names}।"
    ),
    "relay_unreachable": "घर के बाहर अभी कॉल नहीं हो सकते।",
    "relay_refused": (
        "रिले ने इस यूनिट का खाता अस्वीकार कर दिया, इसलिए घर के बाहर कॉल नहीं हो सकते। रिले चलाने वाले से पूछिए।"
    ),
    "relay_replaced": (
        "किसी दूसरी यूनिट ने इस यूनिट के रिले खाते से साइन इन किया है, इसलिए घर के बाहर से कॉल उस यूनिट पर जाएँगे।"
        " यह यूनिट फिर से शुरू होने तक रिले से दूर रहेगी। जिन्होंने आपकी यूनिटें लगाई हैं, उनसे पूछिए।"
    ),
    "relay_back": "घर के बाहर फिर से कॉल हो सकते हैं।",
    "speaker_unavailable": "स्पीकर काम नहीं कर रहा।",
    "speaker_back": "स्पीकर फिर से काम कर रहा है।",
    "display_unavailable": "स्क्रीन काम नहीं कर रही।",
    "microphone_unavailable": "माइक्रोफ़ोन काम नहीं कर रहा।",
    "microphone_back": "माइक्रोफ़ोन फिर से काम कर रहा है।",
    "button_unavailable": "बटन काम नहीं कर रहा। कॉल करना, जवाब देना और कॉल खत्म करना अब भी वेब पेज से हो सकता है।",
    "still_calling": "{peer} को अब भी कॉल कर रहे हैं। कॉल रोकने के लिए बटन दबाकर रखिए।",
    "still_ringing_there": "{peer} को अब भी कॉल कर रहे हैं।",
    "answering": "कॉल उठा रहे हैं।",
    "tried_to_call": "जब आप व्यस्त थे, {peer} ने कॉल करने की कोशिश की।",
    "choose_peer_number": "{peer}, नंबर {n}?",
    "cancelled": "रद्द कर दिया गया।",
    "still_closing": "पिछली कॉल अभी बंद हो रही है। थोड़ी देर में फिर से दबाइए।",
    "forgotten_card_kept": (
        "यूनिट अभी नए सिरे से शुरू हो रही है, पर इसके मेमोरी कार्ड पर कुछ लिखा नहीं जा सकता, इसलिए यूनिट"
        " फिर से चालू होने पर सब कुछ वापस आ जाएगा। अपनी मदद करने वाले व्यक्ति से कार्ड बदलने को कहें।"
    ),
    "hotspot_help": (
        "नेटवर्क नहीं है। वाई-फ़ाई नेटवर्क {ssid} से जुड़िए, पासवर्ड {password}। फिर अपना नेटवर्क चुनने के लिए"
        " {host} पोर्ट {port} खोलिए।"
    ),
    "network_back": "नेटवर्क वापस आ गया।",
    "no_address": "इस यूनिट का अभी किसी नेटवर्क पर कोई पता नहीं है।",
    # The unit (feminine, as everywhere) is the subject: "जुड़ गया" alone leaves it unsaid.
    "network_joined": "यूनिट नेटवर्क {ssid} से जुड़ गई।",
    "network_failed": "यूनिट {ssid} से नहीं जुड़ पाई। पासवर्ड जाँचिए। सेटअप नेटवर्क फिर से चालू हो रहा है।",
}
BN = {
    "ready": "{name} প্রস্তুত।",
    "calling": "{peer}-কে কল করা হচ্ছে।",
    "ringing": "{peer} কল করছেন। উত্তর দিতে বোতাম টিপুন।",
    "ringing_auto": "{peer} কল করছেন।",
    "guest_ringing": "{peer} ব্রাউজার থেকে কল করছেন। উত্তর দিতে বোতাম টিপুন।",
    "guest_calling": "{peer} ব্রাউজার থেকে কল করছেন।",
    "ringing_page": "{peer} কল করছেন। ওয়েব পেজ থেকে উত্তর দিন।",
    "guest_ringing_page": "{peer} ব্রাউজার থেকে কল করছেন। ওয়েব পেজ থেকে উত্তর দিন।",
    "connected": "সংযুক্ত হয়েছে: {peer}।",
    "ended": "কল শেষ।",
    "not_answered": "{peer} উত্তর দেননি।",
    "missed_call": "{peer} কল করেছিলেন, কলটি ধরা হয়নি।",
    "failed": "কল করা যায়নি।",
    "call_unreachable": "এখন {peer}-কে পাওয়া যাচ্ছে না।",
    "call_not_known": "এই ইউনিট আর যুক্ত নেই: {peer}। আবার যুক্ত করুন।",
    "action_failed": "এটি করা যায়নি।",
    "busy": "{peer} ব্যস্ত।",
    "reconnecting": "আবার সংযোগ করা হচ্ছে।",
    "lost": "সংযোগ বিচ্ছিন্ন।",
    "emotion": "{peer}-কে {emotion} দেখাচ্ছে।",
    "no_emotion": "এখনো কোনো অভিব্যক্তি নেই।",
    "sharing_paused": "{peer} অভিব্যক্তি পাঠানো বন্ধ রেখেছেন।",
    "sharing_resumed": "{peer} আবার অভিব্যক্তি পাঠাচ্ছেন।",
    "remote_unavailable": "{peer}-কে দেখে এখন অভিব্যক্তি বোঝা যাচ্ছে না।",
    "remote_available": "{peer}-কে দেখে আবার অভিব্যক্তি বোঝা যাচ্ছে।",
    # No possessive after a name: its ending (-র or -এর) depends on how the name ends.
    "remote_no_face_said": "{peer}-কে দেখা যাচ্ছে না।",
    "camera_ready": "ক্যামেরা প্রস্তুত।",
    "camera_lost": "ক্যামেরা পাওয়া যাচ্ছে না।",
    "camera_recovered": "ক্যামেরা ফিরে এসেছে।",
    "backend_edgetpu": "কোরাল ব্যবহার করা হচ্ছে।",
    "backend_cpu": "কোরাল পাওয়া যায়নি, প্রসেসর ব্যবহার করা হচ্ছে।",
    "backend_coral_failed": "কোরাল কাজ করছে না, প্রসেসর ব্যবহার করা হচ্ছে।",
    "backend_processor": "প্রসেসর ব্যবহার করা হচ্ছে।",
    "vision_unavailable": "অভিব্যক্তি চেনা যাচ্ছে না।",
    "no_face": "আপনার মুখ দেখা যাচ্ছে না।",
    "face_back": "আপনার মুখ আবার দেখা যাচ্ছে।",
    "pairing_code": "যুক্ত করার কোড: {digits}।",
    "owner_code": "মালিকের কোড: {digits}।",
    "owner_button": "অথবা সেই ওয়েব পেজকে ঢুকতে দিতে বোতাম একবার টিপুন।",
    "owner_let_in": "এখন একটি ওয়েব পেজ এই ইউনিটের সেটিংস বদলাতে পারে।",
    "owner_contested": "দুটি ওয়েব পেজ একসাথে চেয়েছে, তাই কাউকে ঢুকতে দেওয়া হয়নি। তার বদলে কোড লিখুন।",
    "pairing_locked": "অনেকগুলো ভুল কোড: {duration} ধরে যুক্ত করা বন্ধ থাকবে।",
    "owner_locked": "অনেকগুলো ভুল কোড: {duration} ধরে এই ইউনিটে লগ ইন বন্ধ থাকবে।",
    "code_lasts": "এই কোড {duration} ধরে কাজ করবে।",
    "one_minute": "1 মিনিট",
    "minutes": "{n} মিনিট",
    "seconds": "{n} সেকেন্ড",
    "one_second": "1 সেকেন্ড",
    "address": "এই ইউনিটের ঠিকানা {host}, পোর্ট {port}।",
    "dot": "ডট",
    "idle_address": "প্রস্তুত। ঠিকানা {address}",
    "paired": "যুক্ত করা হয়েছে: {peer}।",
    "unpaired": "আর যুক্ত নেই: {peer}।",
    "choose_peer": "{peer}?",
    "no_peers": "কোনো যুক্ত ইউনিট নেই। ওয়েব পেজ থেকে একটি ইউনিট যুক্ত করুন।",
    "remote_no_face": "মুখ দেখা যাচ্ছে না",
    "idle": "প্রস্তুত",
    "starting": "চালু হচ্ছে",
    "unknown_peer": "অন্য ইউনিট",
    "consent_shared": "{peer} আপনার অভিব্যক্তি শুনছেন।",
    "consent_private": "আপনার অভিব্যক্তি পাঠানো হচ্ছে না।",
    "sharing_on": "আপনার অভিব্যক্তি আবার পাঠানো হচ্ছে।",
    "sharing_off": "আপনার অভিব্যক্তি আর পাঠানো হচ্ছে না।",
    "sharing_on_guest": "ইউনিটের সাথে কলে আপনার অভিব্যক্তি পাঠানো হবে। অতিথিকে তা কখনো পাঠানো হয় না।",
    "sharing_on_unavailable": "অভিব্যক্তি পাঠানো চালু আছে, কিন্তু এখন আপনার অভিব্যক্তি চেনা যাচ্ছে না।",
    "sharing_question": (
        "আপনি না বেছে নেওয়া পর্যন্ত আপনার অভিব্যক্তি পাঠানো হবে না। পাঠাতে চাইলে কলের সময় বোতাম দুবার "
        "টিপুন, অথবা সেটিংস পেজ ব্যবহার করুন।"
    ),
    "sharing_question_page": (
        "আপনি না বেছে নেওয়া পর্যন্ত আপনার অভিব্যক্তি পাঠানো হবে না। পাঠাতে চাইলে সেটিংস পেজ ব্যবহার করুন।"
    ),
    "forget_hold": "সব কিছু মুছে ফেলতে বোতামটি আবার চেপে ধরে রাখুন: আরও {count} বার।",
    "forgetting": "সব কিছু মুছে ফেলা হচ্ছে: যুক্ত ইউনিট, সেটিংস, পরিচয় আর রেকর্ডিং।",
    "forgotten": "সব কিছু মুছে ফেলা হয়েছে। ইউনিটটি নতুন করে শুরু হচ্ছে।",
    "restarted": "ইউনিটটি থেমে গিয়েছিল, আবার চালু করা হয়েছে।",
    "card_read_only": (
        "ইউনিটের মেমোরি কার্ডে আর কিছু লেখা যাচ্ছে না। ইউনিটটি কাজ করছে, কিন্তু বন্ধ হলে পরিবর্তনগুলো"
        " হারিয়ে যাবে। যিনি আপনাকে সাহায্য করেন, তাঁকে কার্ডটি বদলে দিতে বলুন।"
    ),
    "cannot_start": "ইউনিটটি চালু হতে পারছে না। যিনি আপনাকে এটি নিয়ে সাহায্য করেন, তিনি এর লগে কারণ দেখতে পারবেন।",
    "state_repaired": (
        "মেমোরি কার্ডে এই ইউনিটের সেটিংস নষ্ট হয়ে গিয়েছিল। ইউনিটটি যতটা পড়া গেছে, ততটা রেখে দিয়েছে। আপনি"
        " যে ইউনিটকে কল করেন সেটি না পেলে, সেটিকে আবার যুক্ত করুন। অতিথিদের নতুন আমন্ত্রণ পাঠাতে হবে। যিনি"
        " আপনাকে সাহায্য করেন, তাঁকে মেমোরি কার্ডটি পরীক্ষা করতে বলুন।"
    ),
    "state_lost": (
        "মেমোরি কার্ডে এই ইউনিটের সেটিংস নষ্ট হয়ে গিয়েছিল, কোনো যুক্ত ইউনিট পড়া যায়নি: যে ইউনিটগুলোকে"
        " আপনি কল করেন, সেগুলোকে আবার যুক্ত করুন। অতিথিদের নতুন আমন্ত্রণ পাঠাতে হবে। যিনি আপনাকে সাহায্য"
        " করেন, তাঁকে মেমোরি কার্ডটি পরীক্ষা করতে বলুন।"
    ),
    "units_kept": "যে যুক্ত ইউনিটগুলো রাখা হয়েছে: {names}।",
    "key_changed": (
        "এই ইউনিটের চাবি বদলে গেছে, হয়তো মেমোরি কার্ড সেটি নষ্ট করে দিয়েছিল। অতিথিদের আমন্ত্রণের লিংক আবার"
        " পাঠাতে হবে। যিনি আপনাকে সাহায্য করেন, তাঁকে মেমোরি কার্ডটি পরীক্ষা করতে বলুন।"
    ),
    "pair_again": ("আপনি যে ইউনিটগুলোকে কল করেন, আবার যুক্ত না করা পর্যন্ত সেগুলো এই ইউনিটকে চিনবে না: {names}।"),
    "relay_unreachable": "বাড়ির বাইরে এখন কল করা যাচ্ছে না।",
    "relay_refused": (
        "রিলে এই ইউনিটের অ্যাকাউন্ট গ্রহণ করেনি, তাই বাড়ির বাইরে কল করা যাচ্ছে না। যিনি রিলে চালান তাঁকে জিজ্ঞেস করুন।"
    ),
    "relay_replaced": (
        "অন্য একটি ইউনিট এই ইউনিটের রিলে অ্যাকাউন্টে সাইন ইন করেছে, তাই বাড়ির বাইরে থেকে কল সেই ইউনিটে যাবে।"
        " আবার চালু না হওয়া পর্যন্ত এই ইউনিট রিলে থেকে দূরে থাকবে। যিনি আপনার ইউনিটগুলো বসিয়েছেন তাঁকে জিজ্ঞেস করুন।"
    ),
    "relay_back": "বাড়ির বাইরে আবার কল করা যাচ্ছে।",
    "speaker_unavailable": "স্পিকার কাজ করছে না।",
    "speaker_back": "স্পিকার আবার কাজ করছে।",
    "display_unavailable": "স্ক্রিন কাজ করছে না।",
    "microphone_unavailable": "মাইক্রোফোন কাজ করছে না।",
    "microphone_back": "মাইক্রোফোন আবার কাজ করছে।",
    "button_unavailable": "বোতাম কাজ করছে না। কল করা, উত্তর দেওয়া আর কল শেষ করা এখনো ওয়েব পেজ থেকে করা যায়।",
    "still_calling": "{peer}-কে এখনো কল করা হচ্ছে। কল থামাতে বোতাম চেপে ধরে রাখুন।",
    "still_ringing_there": "{peer}-কে এখনো কল করা হচ্ছে।",
    "answering": "কল ধরা হচ্ছে।",
    "tried_to_call": "আপনি ব্যস্ত থাকার সময় {peer} কল করার চেষ্টা করেছিলেন।",
    "choose_peer_number": "{peer}, নম্বর {n}?",
    "cancelled": "বাতিল করা হয়েছে।",
    "still_closing": "আগের কলটি এখনো বন্ধ হচ্ছে। একটু পরে আবার চাপুন।",
    "forgotten_card_kept": (
        "ইউনিটটি আপাতত নতুন করে শুরু হচ্ছে, কিন্তু এর মেমোরি কার্ডে কিছু লেখা যাচ্ছে না, তাই ইউনিটটি আবার"
        " চালু হলে সব কিছু ফিরে আসবে। যিনি আপনাকে সাহায্য করেন, তাঁকে কার্ডটি বদলে দিতে বলুন।"
    ),
    "hotspot_help": (
        "নেটওয়ার্ক নেই। এই ওয়াই-ফাই নেটওয়ার্কে যুক্ত হন: {ssid}। পাসওয়ার্ড {password}। তারপর নিজের নেটওয়ার্ক"
        " বেছে নিতে {host} পোর্ট {port} খুলুন।"
    ),
    "network_back": "নেটওয়ার্ক ফিরে এসেছে।",
    "no_address": "এই ইউনিটের এখন কোনো নেটওয়ার্কে ঠিকানা নেই।",
    "network_joined": "নেটওয়ার্কে যুক্ত হয়েছে: {ssid}।",
    "network_failed": "যুক্ত হওয়া যায়নি: {ssid}। পাসওয়ার্ড দেখে নিন। সেটআপ নেটওয়ার্ক আবার চালু হচ্ছে।",
}
TEMPLATES = {"en": EN, "hi": HI, "bn": BN}
# Each language's script (ISO 15924), for the display's font and its shaping.
SCRIPTS = {"en": "Latn", "hi": "Deva", "bn": "Beng"}
# How a sentence ends: Hindi and Bengali use the danda, which their voices read as a full stop.
FULL_STOP = {"en": ".", "hi": "।", "bn": "।"}

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
        "neutral": "शांति",
        "happiness": "खुशी",
        "surprise": "हैरानी",
        "sadness": "उदासी",
        "anger": "गुस्सा",
        "disgust": "घिन का भाव",
        "fear": "डर",
        "contempt": "तिरस्कार का भाव",
    },
    "bn": {
        "neutral": "শান্ত",
        "happiness": "খুশি",
        "surprise": "অবাক",
        "sadness": "বিষণ্ণ",
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
        "disgust": "घिन",
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


def printable(text: str) -> str:
    """``text`` without control and format characters (direction overrides, zero-width spaces),
    its spaces collapsed. The zero-width joiner and non-joiner stay: Bengali and Hindi spellings
    need them: in Bengali "Rachel" is র, ZWJ, ্যাচেল, where the joiner keeps র a full letter
    before the ya-phala instead of a reph over it."""
    kept = (c for c in text if c in JOINERS or not unicodedata.category(c).startswith("C"))
    return " ".join("".join(kept).split())


def clean_name(name: str, fallback: str = EN["unknown_peer"]) -> str:
    """A peer-supplied name made safe to speak and show: printable characters only, bounded length.

    An empty name becomes ``fallback``, the language's words for "the other unit".
    """
    # A joiner at either end joins nothing: a name of joiners alone is no name.
    return printable(name)[:MAX_NAME].strip("".join(JOINERS) + " ") or fallback


def call_key(data: Mapping[str, Any]) -> str | None:
    """The phrase key of a ``call.state`` event's ``data``; None for idle, which is not worth
    saying. Speech and the display both follow it."""
    state = str(data.get("state", ""))
    guest = bool(data.get("guest"))
    if state == "ringing":
        if data.get("auto_answer"):  # it answers by itself: "press the button" would be wrong
            return "guest_calling" if guest else "ringing_auto"
        if not data.get("button"):  # none, or it could not be opened: the web page answers
            return "guest_ringing_page" if guest else "ringing_page"
        return "guest_ringing" if guest else "ringing"
    if state == "ended" and data.get("reason") in ENDED_BECAUSE:
        return ENDED_BECAUSE[str(data["reason"])]
    if state == "failed" and data.get("cause") in FAILED_BECAUSE:
        return FAILED_BECAUSE[str(data["cause"])]
    return CALL_STATES.get(state)


def relay_key(data: Mapping[str, Any]) -> str:
    """The phrase key of a ``relay.unreachable`` event's ``data``. A refused account, or one another
    unit took, does not come back by waiting: the owner is told why, not "not possible right now".
    Speech and the display both follow it."""
    return RELAY_FAULTS.get(str(data.get("state", "")), "relay_unreachable")


def repair_key(data: Mapping[str, Any]) -> str:
    """The phrase key of a ``unit.state_repaired`` event's ``data``: whether a paired unit was read
    back from the damaged database. Speech and the display both follow it."""
    return "state_repaired" if data.get("peers") else "state_lost"


def sharing_key(data: Mapping[str, Any]) -> str:
    """The phrase key of a ``remote.sharing`` event's ``data``: paused by the other person, their
    expressions not describable, shared again, or describable again (the end of an outage: a camera
    back, a guest's face analysed again; not a choice of theirs). Speech and the display both
    follow it."""
    if not data.get("paused"):
        return "remote_available" if data.get("reason") == UNAVAILABLE else "sharing_resumed"
    return "remote_unavailable" if data.get("reason") == UNAVAILABLE else "sharing_paused"


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
        # Only a name is cut to a name's length: an address or a duration is said whole.
        clean = {k: self._field(k, v) for k, v in fields.items()}
        if "digits" in clean:
            clean["digits"] = " ".join(str(clean["digits"]))  # "1 2 3 4": read digit by digit
        if "host" in clean:
            # "192 dot 168 dot 1 dot 20": with its dots the Hindi voice reads a decimal number.
            clean["host"] = f" {self._templates['dot']} ".join(str(clean["host"]).strip("[]").split("."))
        return self._templates[key].format(**clean)

    def duration(self, seconds: float) -> str:
        """How long, as said: whole minutes from one minute up, seconds below."""
        if seconds < 60:
            n = max(1, round(seconds))
            return self._templates["one_second" if n == 1 else "seconds"].format(n=n)
        minutes = round(seconds / 60)
        return self._templates["one_minute" if minutes == 1 else "minutes"].format(n=minutes)

    def code(self, purpose: str, code: str, seconds: float = 0) -> str:
        """A pairing or owner code read digit by digit, with how long it still works when known."""
        said = self.say("owner_code" if purpose == "owner" else "pairing_code", digits=code)
        if seconds > 0:
            said += " " + self.say("code_lasts", duration=self.duration(seconds))
        return said

    def locked(self, purpose: str, seconds: float) -> str:
        """Pairing or owner log-in locked after too many wrong codes, and for how long."""
        key = "owner_locked" if purpose == "owner" else "pairing_locked"
        return self.say(key, duration=self.duration(seconds))

    def address(self, address: str) -> str:
        """``host:port`` as a sentence, the host's dots said as a word ("192 dot 168 dot 1 dot 20").
        Loopback (a unit without a network, or one set to listen there) is no address another
        unit could use."""
        host, _, port = address.rpartition(":")
        if host.startswith("127."):
            return self.say("no_address")
        return self.say("address", host=host, port=port)

    def emotion(self, peer: str, label: str) -> str:
        if self.short:
            return f"{self._name(peer)}: {self.word(label)}{FULL_STOP[self.language]}"
        phrase = EMOTION_PHRASES[self.language].get(label, label)
        return self.say("emotion", peer=peer, emotion=phrase)

    def characters(self) -> str:
        """Every character the language's sentences and words are written with, and the digits of
        codes and addresses: what a font must have to show them."""
        literal = (text for template in self._templates.values() for text, *_ in Formatter().parse(template))
        words = (*EMOTION_WORDS[self.language].values(), *EMOTION_PHRASES[self.language].values())
        return "".join(sorted(set("".join((*literal, *words, FULL_STOP[self.language], "0123456789.:")))))

    def _name(self, name: str) -> str:
        return clean_name(name, self._templates["unknown_peer"])

    def _field(self, key: str, value: object) -> object:
        if not isinstance(value, str):
            return value
        return self._name(value) if key in NAME_FIELDS else printable(value)

    def word(self, label: str) -> str:
        """The emotion alone, for the large-type display."""
        return EMOTION_WORDS[self.language].get(label, label.capitalize())


def for_settings(settings: Mapping[str, Any], labels: Sequence[str] = DEFAULT_LABELS) -> Phrases:
    """The phrases the owner's settings ask for (``voice_language``, ``verbosity``)."""
    short = settings.get("verbosity") == "short"
    return Phrases.for_voice(str(settings.get("voice_language", "en")), labels, short=short)
