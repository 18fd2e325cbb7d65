"""The pairing page: units found on the network, pairing by address, the code, unpairing."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue

from appliance.state import as_heard
from appliance.web.page_access import form_values, owner_page
from appliance.web.parts import UnitParts
from appliance.web.schemas import PairCode, PairRequest, parse, typed_address
from appliance.web.wording import PAGE_ERRORS, Outcome, duration, page_status, problem

ASKED_AT = "pairing_address"  # the address of the unit asked for a code, to ask it again


def add_pairing_pages(bp: Blueprint, parts: UnitParts, code_seconds: float) -> None:
    def render_pair(
        outcome: Outcome | None = None, form: dict[str, str] | None = None
    ) -> ResponseReturnValue:
        seen = parts.discovery.units() if parts.discovery else []
        peers = parts.store.peers()
        paired = {p.unit_id for p in peers}
        page = render_template(
            "pair.html",
            outcome=outcome,
            form=form or {},
            waiting_for=parts.pairing.waiting_for(),
            asked_at=session.get(ASKED_AT, ""),
            seen=[u for u in seen if u.unit_id not in paired],
            peers=as_heard(peers),
        )
        return page, page_status(outcome)

    @bp.get("/pair")
    @owner_page
    def pair() -> ResponseReturnValue:
        return render_pair()

    @bp.post("/pair/request")
    @owner_page
    def pair_request() -> ResponseReturnValue:
        form = form_values("address")
        address = typed_address(form["address"])
        try:
            name = parts.pairing.request(parse(PairRequest, {"address": address}).address)
        except PAGE_ERRORS as e:
            return render_pair(problem(e, field_name="address", address=address), form)
        session[ASKED_AT] = address  # for "say the code again": asking again gets the same code
        flash(
            f"{name} is showing and saying a code. It works for {duration(code_seconds)}. Type it below.",
            "info",
        )
        return redirect(url_for("pages.pair"))

    @bp.post("/pair/code")
    @owner_page
    def pair_code() -> ResponseReturnValue:
        form = form_values("code")
        peer = parts.pairing.waiting_for() or ""
        try:
            paired = parts.pairing.complete(parse(PairCode, form).code)
        except PAGE_ERRORS as e:
            # The code may have expired with the request, and the section that asked again with it:
            # the address stays in "Pair by address", to ask for a new code without typing it again.
            kept = {**form, "address": session.get(ASKED_AT, "")}
            return render_pair(problem(e, peer=peer, field_name="code", code_seconds=code_seconds), kept)
        flash(f"Paired with {paired.name}.", "info")
        return redirect(url_for("pages.pair"))

    @bp.post("/unpair")
    @owner_page
    def unpair() -> ResponseReturnValue:
        unit_id = request.form.get("unit_id", "")
        peer = next((p for p in as_heard(parts.store.peers()) if p.unit_id == unit_id), None)
        if peer is None and (name := parts.pairing.just_unpaired(unit_id)):
            flash(f"Unpaired {name}.", "info")  # the same form posted twice: the first one did it
            return redirect(url_for("pages.pair"))
        if peer is None:
            return render_pair(
                Outcome("That unit is not paired with this one: nothing was changed.", "error")
            )
        if request.form.get("confirm") != "yes":
            question = Outcome(
                f"Are you sure? {peer.name} and this unit will not be able to call each other until you "
                f"pair them again, which needs a new code from {peer.name}.",
                "question",
            )
            return render_template("unpair.html", outcome=question, peer=peer)
        try:
            told = parts.pairing.unpair(peer.unit_id)
        except PAGE_ERRORS as e:
            return render_pair(problem(e))
        flash(
            f"Unpaired {peer.name}."
            if told
            else f"Unpaired here. {peer.name} was not reachable and still lists this unit.",
            "info",
        )
        return redirect(url_for("pages.pair"))
