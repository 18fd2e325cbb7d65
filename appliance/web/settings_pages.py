"""The settings page: one form, kept whole when refused and across a login that ended meanwhile."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from markupsafe import Markup, escape

from appliance.state import Settings
from appliance.web.owner import StaleForm, held_before
from appliance.web.page_access import owner_page
from appliance.web.parts import UnitParts
from appliance.web.schemas import SettingsChange, parse
from appliance.web.wording import PAGE_ERRORS, Outcome, error_page, page_status, problem
from appliance.words import scripts

# The languages the speech part has phrases for (appliance/words/phrases.py); others would speak English.
# Each in its own script too, as its speakers look for it, and in English for whoever helps them.
LANGUAGES = {"en": "English", "en-gb": "English (UK)", "hi": "हिन्दी (Hindi)", "bn": "বাংলা (Bengali)"}
FLAGS = ("auto_answer", "share_expressions")  # checkboxes: absent from a form means off
PENDING = "pending_settings"  # a settings form sent after the login ended, kept for after the next login
PENDING_STALE = "pending_stale"  # ...or sent from a page older than the latest login: kept to save now
KEPT = {
    False: "Welcome back. Your changes from before you were logged out are filled in below but not "
    'saved yet: check them and press "Save settings".',
    True: "This page was from before your latest login (in another tab or window), so nothing was "
    'saved. Your changes are filled in below: check them and press "Save settings".',
}
VERSION = "version"  # the settings the page was filled from, as a digest (``version``)
CHANGED_ELSEWHERE = (
    "The settings were changed elsewhere (with the button or on another page) after this page was "
    "opened, so nothing was saved. Below are the settings as they are now: make your change again "
    'and press "Save settings".'
)


def posted_settings() -> dict[str, str]:
    """The settings form as sent, less its CSRF token: saved, shown again, or kept over a login
    (with the version of the settings it was filled from)."""
    return {k: v for k, v in request.form.items() if k != "csrf"}


def kept_settings() -> dict[str, str]:
    """The settings form as sent, its own fields only: kept in the session cookie to show again."""
    return {k: v for k, v in posted_settings().items() if k in SettingsChange.model_fields or k == VERSION}


def version(settings: Settings) -> str:
    """A digest of ``settings``: a form filled from older settings would put back what the button or
    another page changed since (sharing turned off in a call, on again from a page left open)."""
    return hashlib.sha256(json.dumps(settings.model_dump(), sort_keys=True).encode()).hexdigest()[:16]


def owners_changes(change: dict[str, Any], current: Settings) -> dict[str, Any]:
    """What the form changes: saving the volume is no answer to whether expressions are shared."""
    return {k: v for k, v in change.items() if getattr(current, k) != v}


def in_its_language(text: str) -> Markup:
    """``text`` (a name, or a sentence naming one: "Paired with রান্নাঘর.") with each run of
    words in a script other than Latin marked with its language (``scripts``): a screen reader
    reads them with that language's voice, where the pages' English one spells them out or skips
    them. ``<bdi>`` keeps a run from changing the text around it."""
    text = str(text)  # Markup too is text here: its tags are escaped, never marked inside
    marked, end = Markup(), 0
    for language, start, stop in scripts.runs(text):
        marked += escape(text[end:start])
        marked += Markup('<bdi lang="{}">{}</bdi>').format(language, text[start:stop])
        end = stop
    return marked + escape(text[end:])


def add_settings_pages(bp: Blueprint, parts: UnitParts) -> None:
    bp.add_app_template_filter(in_its_language)

    @bp.app_errorhandler(StaleForm)
    def stale_form(e: StaleForm) -> ResponseReturnValue:
        """The settings typed in this browser's page from before its latest login are kept and
        shown again to save, as across a login that ended (they were lost); any other form
        without this session's token, the settings form from anywhere else included, is refused."""
        if request.endpoint != "pages.settings_post" or not held_before():
            return error_page(e)
        session[PENDING], session[PENDING_STALE] = kept_settings(), True
        return redirect(url_for("pages.settings"))

    def render_settings(
        outcome: Outcome | None = None, form: dict[str, str] | None = None
    ) -> ResponseReturnValue:
        values: dict[str, Any] = parts.store.settings().model_dump()
        if form is not None:
            values.update({k: v for k, v in form.items() if k in values})
            values.update({flag: flag in form for flag in FLAGS})
        page = render_template(
            "settings.html",
            outcome=outcome,
            s=values,
            # A form shown again (refused, or kept over a login) keeps the version it was filled from.
            version=(form or {}).get(VERSION) or version(parts.store.settings()),
            languages=LANGUAGES,
        )
        return page, page_status(outcome)

    @bp.get("/settings")
    @owner_page
    def settings() -> ResponseReturnValue:
        # Kept until the form is sent: a reload before Save must not lose what the page says it keeps.
        pending = session.get(PENDING)
        if isinstance(pending, dict):
            kept = Outcome(KEPT[session.get(PENDING_STALE) is True], "question")
            return render_settings(kept, {str(k): str(v) for k, v in pending.items()})
        return render_settings()

    @bp.post("/settings")
    @owner_page
    def settings_post() -> ResponseReturnValue:
        session.pop(PENDING, None)  # sent: saved, or shown again as typed
        session.pop(PENDING_STALE, None)
        form = posted_settings()
        shown = form.get(VERSION)
        fields = {k: v for k, v in form.items() if k != VERSION}
        change: dict[str, Any] = {**fields, **{flag: flag in fields for flag in FLAGS}}
        current = parts.store.settings()
        try:
            wanted = owners_changes(parse(SettingsChange, change).model_dump(exclude_none=True), current)
            # Refused only if it would change something: the same form sent twice (a double press
            # of Save) finds its change made, and is not told that nothing was saved.
            if wanted and shown not in (None, version(current)):
                return render_settings(Outcome(CHANGED_ELSEWHERE, "error"))
            saved = parts.change_settings(wanted)
        except PAGE_ERRORS as e:
            return render_settings(problem(e), form)
        said = "Settings saved."
        if saved.volume == 0:
            said += (
                " The volume is 0, so the unit says nothing aloud: not calls, and not the codes you need to "
                "log in. Turn the volume up to hear them."
            )
        flash(said, "info")
        return redirect(url_for("pages.settings"))
