// The guest's side of a call to an emocall unit, in the browser: no library, no build step.
//
// The invite is the link's fragment (never sent to any server). The page signs in anonymously on
// the relay's guest host over XMPP-over-WebSocket (RFC 7395), asks it for STUN/TURN servers
// (XEP-0215), and sends its WebRTC offer to the unit as a relay request (the iq
// <request xmlns="urn:emocall:relay:1"> the units use between them; appliance/guests/calls.py
// answers it), and asks the unit while it rings whether it still has the call, to stop ringing a
// unit that went off the relay or restarted.
// In the call it speaks the units' data channel protocol ("emotion", negotiated id 0):
// a heartbeat each second, the unit counted lost after five silent seconds (or after the unit's own
// timeout, if longer), "bye" to hang up (also while ringing, and when the page is closed); after a
// loss it offers again (resume), as a calling unit does, for as long as the unit waits for it (its
// [call] settings, in its answer). Without a camera (refused, missing, in use) the call has sound
// only and still receives the unit's video; without a microphone there is no call.
'use strict';
(() => {
  const RELAY_NS = 'urn:emocall:relay:1';
  const FRAMING_NS = 'urn:ietf:params:xml:ns:xmpp-framing';
  const HEARTBEAT_MS = 1000;
  const LOST_MS = 5000;
  // The unit rings for ring_seconds (30 s by default, 120 s at most), then answers or declines.
  const ANSWER_MS = 130000;
  const STEP_MS = 15000;
  const RETRY_MS = 4000; // one re-offer's round trip after a loss
  // While it rings, the unit is asked this often whether it still has the call (CALL_PATH; the
  // first time RING_CHECK_MS after the offer), and again CHECK_AGAIN_MS after a check that failed
  // (no answer in CHECK_MS, nor from the relay to a ping after it; the relay's error that the unit
  // is not connected; the unit's "not known" or "over"): a unit switched off, cut off or restarted
  // mid-ring, or a decline lost on the way, left the page ringing ANSWER_MS.
  const RING_CHECK_MS = 10000;
  const SIGNAL_PATH = '/api/guest/signal';
  const CALL_PATH = '/api/guest/call';
  const CHECK_MS = 5000;
  const CHECK_AGAIN_MS = 3000;
  const RECONNECT_MS = 30000; // a unit's [call] reconnect_seconds by default (an answer that lacks it)
  // The unit decides whether an invite has expired, by its clock; the page says so before Call
  // only when it ended longer ago than a phone's clock can be wrong by (set by hand, in another
  // time zone): a phone a few hours ahead turned away a good invite, with no Call button.
  const CLOCK_SLACK_MS = 24 * 3600 * 1000;
  const $ = (id) => document.getElementById(id);

  // The invite ------------------------------------------------------------------------------------

  function readInvite(token) {
    const [payload] = token.split('.');
    try {
      const text = atob(payload.replace(/-/g, '+').replace(/_/g, '/'));
      const bytes = Uint8Array.from(text, (c) => c.charCodeAt(0));
      const invite = JSON.parse(new TextDecoder().decode(bytes));
      if (typeof invite.jid !== 'string' || !invite.jid.includes('@') || typeof invite.name !== 'string') {
        return null;
      }
      return invite;
    } catch (e) {
      return null;
    }
  }

  // XMPP over WebSocket, only what a guest needs --------------------------------------------------

  const escapeXml = (s) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;');

  class Xmpp {
    constructor(url, domain) {
      this.url = url;
      this.domain = domain;
      this.waiting = [];
      this.iqs = new Map();
      this.count = 0;
      this.onclose = () => {};
    }

    async connect() {
      this.ws = new WebSocket(this.url, 'xmpp');
      this.ws.onmessage = (event) => this.receive(event.data);
      this.ws.onclose = () => {
        for (const w of this.waiting) w.reject(new Error('the relay closed the connection'));
        this.waiting = [];
        // A request waiting for its answer (the call ringing) fails now, not when its time is up.
        for (const settle of this.iqs.values()) settle(null);
        this.iqs.clear();
        this.onclose();
      };
      await new Promise((resolve, reject) => {
        // A relay whose packets are dropped would leave "Connecting..." up until the system gives
        // up on the connection (minutes): every other step has STEP_MS too.
        const late = setTimeout(() => {
          this.ws.close();
          reject(new Error('the relay does not answer'));
        }, STEP_MS);
        this.ws.onopen = () => { clearTimeout(late); resolve(); };
        this.ws.onerror = () => { clearTimeout(late); reject(new Error('the relay cannot be reached')); };
      });
      await this.openStream();
      this.send('<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="ANONYMOUS"/>');
      const said = await this.next((el) => el.localName === 'success' || el.localName === 'failure');
      if (said.localName !== 'success') throw new Error('the relay refused a guest sign-in');
      await this.openStream();
      const bound = await this.iq('set', null, '<bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"/>', STEP_MS);
      this.jid = bound.getElementsByTagName('jid')[0].textContent;
    }

    async openStream() {
      this.send(`<open xmlns="${FRAMING_NS}" to="${escapeXml(this.domain)}" version="1.0"/>`);
      await this.next((el) => el.localName === 'open');
      return this.next((el) => el.localName === 'features');
    }

    send(xml) {
      this.ws.send(xml);
    }

    receive(text) {
      const el = new DOMParser().parseFromString(text, 'text/xml').documentElement;
      if (el.localName === 'iq' && ['result', 'error'].includes(el.getAttribute('type'))) {
        const pending = this.iqs.get(el.getAttribute('id'));
        if (pending) {
          this.iqs.delete(el.getAttribute('id'));
          pending(el);
        }
        return;
      }
      if (el.localName === 'iq') { // nobody asks a guest anything: say so (a ping gets its answer)
        const ping = el.getElementsByTagNameNS('urn:xmpp:ping', 'ping').length > 0;
        const to = escapeXml(el.getAttribute('from') || this.domain);
        const id = escapeXml(el.getAttribute('id') || '');
        this.send(ping ? `<iq xmlns="jabber:client" type="result" to="${to}" id="${id}"/>` : `<iq xmlns="jabber:client" type="error" to="${to}" id="${id}">` +
          '<error type="cancel"><service-unavailable xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"/></error></iq>');
        return;
      }
      const index = this.waiting.findIndex((w) => w.match(el));
      if (index >= 0) this.waiting.splice(index, 1)[0].resolve(el);
    }

    next(match, ms = STEP_MS) {
      return new Promise((resolve, reject) => {
        const waiter = { match, resolve, reject };
        this.waiting.push(waiter);
        setTimeout(() => {
          const index = this.waiting.indexOf(waiter);
          if (index >= 0) {
            this.waiting.splice(index, 1);
            reject(new Error('the relay did not answer'));
          }
        }, ms);
      });
    }

    iq(type, to, child, ms) {
      const id = `g${++this.count}`;
      const target = to ? ` to="${escapeXml(to)}"` : '';
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          this.iqs.delete(id);
          reject(new Error('no answer in time'));
        }, ms);
        this.iqs.set(id, (el) => {
          clearTimeout(timer);
          if (!el) reject(new Error('the relay closed the connection'));
          else if (el.getAttribute('type') === 'result') resolve(el);
          else reject(Object.assign(new Error('refused'), { stanza: el }));
        });
        this.send(`<iq xmlns="jabber:client" type="${type}" id="${id}"${target}>${child}</iq>`);
      });
    }

    async iceServers(ms) {
      const answer = await this.iq('get', this.domain, '<services xmlns="urn:xmpp:extdisco:2"/>', ms);
      const servers = [];
      for (const s of answer.getElementsByTagName('service')) {
        const type = s.getAttribute('type');
        const address = `${s.getAttribute('host')}:${s.getAttribute('port')}`;
        if (type === 'stun') servers.push({ urls: `stun:${address}` });
        // TURN over TLS ("turns", port 5349) for networks that let out little but TLS.
        if (type === 'turn' || type === 'turns') {
          servers.push({
            urls: `${type}:${address}?transport=${s.getAttribute('transport') || 'udp'}`,
            username: s.getAttribute('username'),
            credential: s.getAttribute('password'),
          });
        }
      }
      return servers;
    }

    // A request to the unit, carried as the units carry theirs; the unit's HTTP-like answer.
    async request(to, path, body, ms) {
      const bytes = new TextEncoder().encode(JSON.stringify(body));
      const exchange = {
        path, status: 0, headers: { 'Content-Type': 'application/json' },
        body: btoa(String.fromCharCode(...bytes)),
      };
      const child = `<request xmlns="${RELAY_NS}">${escapeXml(JSON.stringify(exchange))}</request>`;
      const answer = await this.iq('set', to, child, ms);
      const data = JSON.parse(answer.getElementsByTagNameNS(RELAY_NS, 'response')[0].textContent);
      const text = new TextDecoder().decode(Uint8Array.from(atob(data.body), (c) => c.charCodeAt(0)));
      return { status: data.status, body: JSON.parse(text) };
    }

    close() {
      if (!this.ws || this.ws.readyState === WebSocket.CLOSED) return;
      if (this.ws.readyState === WebSocket.OPEN) this.send(`<close xmlns="${FRAMING_NS}"/>`);
      this.ws.close(); // also while still connecting: a call given up then signs in no further
    }
  }

  // The page --------------------------------------------------------------------------------------

  const token = location.hash.slice(1);
  const invite = readInvite(token);
  const owner = invite && typeof invite.owner === 'string' ? invite.owner : 'the unit';
  let call = null;
  let offers = 0; // this page's offers so far, each one's number: the unit answers re-offers in order
  const received = {}; // data channel messages from the unit, by type (for tests: never "emotion")

  // A name in a script other than Latin, marked with its language: a screen reader reads it with
  // that language's voice (the page's English one spells it out or skips it), as the unit's own
  // pages do (appliance/web/settings_pages.py, in_its_language; the table is
  // appliance/words/scripts.py's SCRIPTS). <bdi> keeps the text around it.
  const SCRIPTS = [
    ['hi', /[\u0900-\u097F]/], ['bn', /[\u0980-\u09FF]/], ['pa', /[\u0A00-\u0A7F]/],
    ['gu', /[\u0A80-\u0AFF]/], ['or', /[\u0B00-\u0B7F]/], ['ta', /[\u0B80-\u0BFF]/],
    ['te', /[\u0C00-\u0C7F]/], ['kn', /[\u0C80-\u0CFF]/], ['ml', /[\u0D00-\u0D7F]/],
    ['si', /[\u0D80-\u0DFF]/], ['ur', /[\u0600-\u06FF\u0750-\u077F]/], ['he', /[\u0590-\u05FF]/],
    ['ru', /[\u0400-\u04FF]/], ['el', /[\u0370-\u03FF]/], ['hy', /[\u0530-\u058F]/],
    ['ka', /[\u10A0-\u10FF]/], ['th', /[\u0E00-\u0E7F]/], ['my', /[\u1000-\u109F]/],
    ['ko', /[\u1100-\u11FF\uAC00-\uD7AF]/], ['ja', /[\u3040-\u30FF]/],
  ];
  function scriptOf(name) { // by its first letter in one of them
    const first = [...name].map((c) => SCRIPTS.find(([, letters]) => letters.test(c))).find(Boolean);
    return first ? first[0] : '';
  }
  const marked = [owner, invite && typeof invite.name === 'string' ? invite.name : '']
    .map((name) => [name, scriptOf(name)])
    .filter(([name, lang]) => name && lang);

  // The text, each marked name in it as a <bdi lang>; one change to the element (a live region).
  function put(el, text) {
    const parts = [];
    let rest = text;
    for (;;) {
      const found = marked
        .map(([name, lang]) => [rest.indexOf(name), name, lang])
        .filter(([at]) => at >= 0)
        .sort((a, b) => a[0] - b[0] || b[1].length - a[1].length)[0]; // the first; of two there, the longer
      if (!found) break;
      const [at, name, lang] = found;
      const bdi = document.createElement('bdi');
      bdi.lang = lang;
      bdi.textContent = name;
      parts.push(rest.slice(0, at), bdi);
      rest = rest.slice(at + name.length);
    }
    el.replaceChildren(...parts, rest);
  }

  function say(text) {
    put($('status'), text);
  }

  // No call can be made: the sentence alone is left, with the focus (the button that had it, "Cancel
  // the call" when the unit refused the invite, is hidden now, and focus would fall to the page).
  function refuse(text) {
    put($('problem'), text);
    $('problem').hidden = false;
    $('before').hidden = true;
    $('call-area').hidden = true;
    say('');
    document.title = `${text} – emocall`;
    $('problem').focus();
  }

  function ready(text) {
    const cancelling = document.activeElement === $('cancel');
    $('before').hidden = false;
    $('call-area').hidden = true;
    $('call').disabled = false;
    $('describe').disabled = false;
    $('cancel').hidden = true;
    if (cancelling) $('call').focus(); // not to the top of the page with the button that hid
    say(text);
  }

  // Shown as an alert; the Call button stays, for when the guest has put it right.
  function warn(text) {
    ready('');
    put($('problem'), text);
    $('problem').hidden = false;
  }

  // The microphone and, when it can be had, the camera. A camera that is refused, missing or in use
  // leaves a call with sound only; a microphone that is throws an Error that says what to do.
  async function openMedia() {
    try {
      return { media: await navigator.mediaDevices.getUserMedia({ audio: true, video: true }), video: true };
    } catch (e) {
      // Asked again for sound alone: the browser says which device failed only this way.
    }
    try {
      return { media: await navigator.mediaDevices.getUserMedia({ audio: true }), video: false };
    } catch (e) {
      const again = `then press "Call ${owner}" again`;
      const why = {
        NotAllowedError: `This page may not use your microphone. Allow the microphone for this page in your browser (usually a button beside the address), ${again}.`,
        NotFoundError: `No microphone was found. Connect one, ${again}.`,
        NotReadableError: `Your microphone is in use by another program or cannot be opened. Close that program, ${again}.`,
      };
      // Never the browser's own message: it is for programmers, in English, and no help to a guest.
      const other = `Your microphone could not be opened. Check that it is connected, ${again}.`;
      throw Object.assign(new Error(why[e.name] || other), { media: true });
    }
  }

  const randomId = () => Array.from(crypto.getRandomValues(new Uint8Array(16)),
    (b) => b.toString(16).padStart(2, '0')).join('');

  async function startCall() {
    $('call').disabled = true;
    // The choice goes with the call's offer: changed while it rings, the unit would not hear it.
    $('describe').disabled = true;
    $('cancel').hidden = false;
    $('cancel').focus(); // the Call button is disabled: the one thing to press now
    $('problem').hidden = true;
    call = {
      id: randomId(), describe: $('describe').checked, pc: null, xmpp: null, media: null, timers: [],
      reconnectMs: RECONNECT_MS, unitTimeoutMs: LOST_MS, heard: performance.now(),
    };
    const mine = call;
    try {
      say(`Connecting to ${owner}…`);
      const { media, video } = await openMedia();
      mine.media = media;
      if (call !== mine) { stop(mine); return; } // cancelled while the browser asked
      $('mute').setAttribute('aria-pressed', 'false'); // a new call starts with the microphone on
      $('sound-only').hidden = video;
      const calling = `Calling ${owner}. Waiting for an answer…`;
      say(video ? calling : `Your camera cannot be used, so this call has sound only. ${calling}`);
      mine.ringing = true;
      let reply;
      try {
        reply = await Promise.race([negotiate(mine, false), unitGone(mine)]);
      } finally {
        mine.ringing = false;
      }
      if (call !== mine) return;
      if (reply.status === 403) {
        stop(mine);
        refuse(reply.body.error || 'This invite does not work any more. Ask for a new link.');
        return;
      }
      if (reply.body.kind !== 'answer') {
        stop(mine);
        const why = { busy: `${owner} is in another call. Try again later.`, declined: `${owner} did not answer.` };
        ready(why[reply.body.kind] || `The call to ${owner} did not work: ${reply.body.error || 'try again'}.`);
        return;
      }
      await mine.pc.setRemoteDescription({ type: 'answer', sdp: reply.body.sdp });
      // Bounded as the unit's [call] settings are.
      mine.reconnectMs = unitsTime(reply.body.reconnect_seconds, 300, RECONNECT_MS);
      mine.unitTimeoutMs = unitsTime(reply.body.peer_timeout_seconds, 60, LOST_MS);
      say(`Connecting the call to ${owner}…`);
      mine.timers.push(setTimeout(() => {
        // Not while it offers again: its connection failed before it opened, and lost() ends it.
        if (!mine.opened && !mine.recovering) end(mine, `The call to ${owner} could not connect.`);
      }, STEP_MS));
    } catch (e) {
      if (call !== mine) return; // cancelled: the page already says so
      // Failed here after the offer went out (the relay's connection dropped while it rang, or the
      // unit went off the relay): the unit would ring on for nobody, answer the next try "busy"
      // and use up a one-time invite.
      // A unit that said it does not know the call gets the bye all the same: its answer may have
      // overtaken the offer, which then does not ring.
      if (e.gone) byeWhenBack(mine);
      else if (mine.offered) sendBye(mine);
      stop(mine);
      const offline = e.stanza ? GONE[e.why || 'gone'] : '';
      if (e.media) warn(e.message);
      else ready(offline || `The call to ${owner} did not work: ${e.message}. Try again.`);
    }
  }

  // Why a ring ended with no answer from the unit (unitGone's ``why``; a refused offer's is 'gone').
  const GONE = {
    gone: `${owner}'s unit cannot be reached now: it may be switched off. Try again later.`,
    forgot: `${owner}'s unit stopped ringing: it may have restarted. Press Call to call again.`,
    over: `${owner} did not answer.`,
    offline: 'Your internet connection stopped while the call rang. Check it, then press Call again.',
  };

  const unitAddress = () => `${invite.jid}/emocall`; // the unit's connection to the relay
  const relayConnection = () => new Xmpp(`wss://${location.host}/guest-xmpp`, `guests.${invite.jid.split('@')[1]}`);

  // The relay's STUN/TURN servers, kept for the next offers: the relay gives one address a few
  // credentials and then one every few minutes (relay/guests.pfw), and an offer that asked each
  // time (re-offers come seconds apart on a bad network) was refused its TURN. Coturn checks
  // credentials at each new allocation only, so a call outlives them. Kept while all of these hold:
  // - half their life and REUSE_MS at most have passed (performance.now(): a wall clock set by hand
  //   does not move it), and their end has not (Date.now(), which runs on while a phone sleeps);
  //   their end is the TURN REST username's first field, in the relay's seconds, so a phone clock
  //   ahead keeps them for less, and one ahead by their life not at all;
  // - they served fewer than OFFERS_KEPT offers: one credential holds 12 allocations at once
  //   (coturn's user-quota), an offer makes up to 3 (TURN over UDP, TCP and TLS), and those of an
  //   offer on a network the phone has left are not released until they time out (10 minutes).
  // Refused more (too many asks from this address), the page goes on with those it kept while
  // they have not ended.
  const REUSE_MS = 10 * 60 * 1000;
  const OFFERS_KEPT = 3;
  const kept = { servers: null, at: 0, forMs: 0, end: 0, offers: 0 };

  async function relayServers(xmpp, ms) {
    const usable = () => kept.servers && Date.now() < kept.end;
    if (usable() && performance.now() - kept.at < kept.forMs && kept.offers < OFFERS_KEPT) {
      kept.offers += 1;
      return kept.servers;
    }
    let servers;
    try {
      servers = await xmpp.iceServers(ms);
    } catch (e) {
      if (!e.stanza || e.stanza.getElementsByTagName('resource-constraint').length === 0) throw e;
      if (usable()) return kept.servers;
      // The limit on credentials (its text, in relay/guests.pfw, names them), not the one on all
      // requests, which lets the next ones through within a second.
      const text = e.stanza.getElementsByTagName('text');
      if (text.length > 0 && text[0].textContent.includes('TURN credentials')) {
        throw new Error('the relay takes no more calls from your network for a few minutes');
      }
      throw e;
    }
    const end = Math.min(...servers.filter((s) => s.username).map((s) => parseInt(s.username, 10) * 1000));
    // Not TURN REST credentials (NaN): no end known, none kept. STUN alone (Infinity): REUSE_MS.
    const forMs = Number.isNaN(end) ? 0 : Math.min(REUSE_MS, (end - Date.now()) / 2);
    Object.assign(kept, { servers, at: performance.now(), forMs, end: Number.isNaN(end) ? 0 : end, offers: 1 });
    return servers;
  }

  // A new peer connection and its offer to the unit (resume: after a loss, for the same call).
  async function negotiate(mine, resume) {
    if (!mine.xmpp || !mine.xmpp.up) {
      if (mine.xmpp) mine.xmpp.close();
      const xmpp = relayConnection();
      // This connection's own close, even one that comes after a newer connection replaced it.
      xmpp.onclose = () => { xmpp.up = false; };
      mine.xmpp = xmpp;
      await xmpp.connect();
      xmpp.up = true;
    } else if (resume) {
      // The relay's connection may have died with the call's (a phone that moved to another
      // network), unknown to the browser: a re-offer finds out first, in a re-offer's wait (the
      // first re-offer spent STEP_MS of the unit's patience), and lost() opens a new one. An error
      // answer (the relay's limit on requests) is an answer: the connection works.
      await mine.xmpp.iq('get', mine.xmpp.domain, '<ping xmlns="urn:xmpp:ping"/>', RETRY_MS).catch((e) => {
        if (!e.stanza) throw e;
      });
    }
    const iceServers = await relayServers(mine.xmpp, resume ? RETRY_MS : STEP_MS);
    if (call !== mine) throw new Error('cancelled'); // before a peer connection gathers for nothing
    if (mine.pc) mine.pc.close();
    const pc = new RTCPeerConnection({ iceServers });
    mine.pc = pc;
    for (const track of mine.media.getTracks()) pc.addTrack(track, mine.media);
    // Sound only: the unit's video is still wanted.
    if (mine.media.getVideoTracks().length === 0) pc.addTransceiver('video', { direction: 'recvonly' });
    const channel = pc.createDataChannel('emotion', { negotiated: true, id: 0 });
    mine.channel = channel;
    channel.onopen = () => connected(mine, channel);
    channel.onmessage = (event) => heard(mine, event.data);
    pc.ontrack = (event) => { $('remote').srcObject = event.streams[0] || new MediaStream([event.track]); };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === 'failed' && mine.pc === pc) lost(mine);
    };
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    if (call !== mine) { // no offer for a call already given up
      pc.close();
      throw new Error('cancelled');
    }
    offers += 1;
    mine.offered = true;
    mine.offeredAt = performance.now();
    const signal = { kind: 'offer', sdp: pc.localDescription.sdp, resume, number: offers };
    const body = { invite: token, call: mine.id, describe: mine.describe, signal };
    return mine.xmpp.request(unitAddress(), SIGNAL_PATH, body, resume ? RETRY_MS : ANSWER_MS);
  }

  // Throws (as a refused offer does) once the unit is gone while it rings: two checks in a row
  // failed, each answered by the relay's error that the unit is not connected, not at all (a unit
  // whose network went leaves its server a connection that looks open for minutes), or by the unit
  // that the call is not known (it restarted: 'forgot') or over (its decline lost on the way:
  // 'over'). A check not answered at all is followed by a ping to the relay itself, which answers
  // at once: without its answer the phone's own link stalled ('offline'), not the unit's. One
  // failure is not enough: a unit's connection to the relay that drops and comes back in a second
  // or two still delivers its answer. The first check goes RING_CHECK_MS after the offer, which the
  // relay may carry more slowly than the check. The error's ``why`` is the last failure's. Never
  // resolves.
  function unitGone(mine) {
    const ringCheck = async () => { // 'there', 'forgot', 'over', 'gone' or 'offline'
      try {
        const reply = await mine.xmpp.request(unitAddress(), CALL_PATH, { invite: token, call: mine.id }, CHECK_MS);
        if (reply.status !== 200) return 'there';
        return reply.body.known === false ? 'forgot' : reply.body.over === true ? 'over' : 'there';
      } catch (e) {
        // Any other error of the relay's (a unit of an earlier release cannot be asked: "bad
        // request") leaves it to the offer's answer.
        if (e.stanza) return notConnected(e.stanza) ? 'gone' : 'there';
      }
      if (!mine.xmpp.up) return 'offline'; // the page's own link closed: no ping, and the caller stops
      try {
        await mine.xmpp.iq('get', mine.xmpp.domain, '<ping xmlns="urn:xmpp:ping"/>', CHECK_MS);
        return 'gone';
      } catch (e) {
        return e.stanza ? 'gone' : 'offline'; // any answer at all: the phone's link works
      }
    };
    return new Promise((resolve, reject) => {
      let failed = 0;
      const check = async () => {
        if (call !== mine || !mine.ringing) return;
        const since = mine.offered ? performance.now() - mine.offeredAt : 0;
        if (since < RING_CHECK_MS) { // not while the offer is still being made, nor just after
          mine.timers.push(setTimeout(check, RING_CHECK_MS - since));
          return;
        }
        const answer = await ringCheck();
        if (call !== mine || !mine.ringing) return;
        if (answer === 'there') failed = 0;
        // The page's own connection closed: the offer fails with why, not the unit.
        else if (!mine.xmpp.up) return;
        else if (++failed >= 2) {
          reject(Object.assign(new Error('the unit is gone'), { stanza: true, gone: true, why: answer }));
          return;
        }
        mine.timers.push(setTimeout(check, failed ? CHECK_AGAIN_MS : RING_CHECK_MS));
      };
      mine.timers.push(setTimeout(check, RING_CHECK_MS));
    });
  }

  // Whether the relay's error stanza says the unit is not connected (Prosody's answer for a unit's
  // address with nobody signed in on it).
  function notConnected(stanza) {
    const error = stanza.getElementsByTagName('error')[0];
    const condition = error && error.firstElementChild ? error.firstElementChild.localName : '';
    return condition === 'service-unavailable' || condition === 'recipient-unavailable';
  }

  function gathered(pc) {
    return new Promise((resolve) => {
      if (pc.iceGatheringState === 'complete') { resolve(); return; }
      pc.addEventListener('icegatheringstatechange', () => {
        if (pc.iceGatheringState === 'complete') resolve();
      });
      setTimeout(resolve, 5000); // what was gathered by then is enough (the relay's TURN is quick)
    });
  }

  function connected(mine, channel) {
    if (call !== mine || mine.channel !== channel) return;
    const again = mine.recovering;
    mine.open = mine.opened = true;
    mine.recovering = false;
    // performance.now(), not Date.now(): a phone's wall clock that steps (network time) must not
    // make a live call look lost, nor a lost one look alive.
    mine.heard = performance.now();
    let seq = 0;
    clearInterval(mine.beat);
    mine.beat = setInterval(() => {
      if (channel.readyState === 'open') channel.send(JSON.stringify({ type: 'heartbeat', seq: seq++ }));
      // At least the unit's own patience, which outlasts two of its heartbeats (its configuration
      // checks that): a unit set to send one every 5 s would be counted lost between them.
      if (performance.now() - mine.heard > Math.max(LOST_MS, mine.unitTimeoutMs) && mine.open) lost(mine);
    }, HEARTBEAT_MS);
    keepAwake(mine);
    $('before').hidden = true;
    $('call-area').hidden = false;
    put($('call-heading'), `In a call with ${owner}`);
    say(again ? `Reconnected. In a call with ${owner}.` : `In a call with ${owner}.`);
    if (!again) $('hangup').focus();
  }

  // A phone that locks its screen in a call suspends the page (iOS) and the call drops: the screen
  // stays on while a call is up, where the browser can (the Screen Wake Lock API). The browser lets
  // go of it when the page is hidden; it is asked for again when the page is shown.
  async function keepAwake(mine) {
    if (!('wakeLock' in navigator) || (mine.awake && !mine.awake.released)) return;
    try {
      const lock = await navigator.wakeLock.request('screen');
      if (call === mine) mine.awake = lock;
      else lock.release().catch(() => {});
    } catch (e) {
      // Refused (a battery saver, a page not in front): the call goes on, as without it.
    }
  }

  // A time the unit's answer gives, in ms, within its configuration's bounds (``maxSeconds``);
  // ``fallback`` when the answer lacks it (a unit of an earlier release).
  function unitsTime(seconds, maxSeconds, fallback) {
    return Number.isFinite(seconds) ? Math.min(Math.max(seconds, 0), maxSeconds) * 1000 : fallback;
  }

  // What ``promise`` gives, or null once ``ms`` have passed first.
  const within = (promise, ms) => Promise.race([promise, pause(ms).then(() => null)]);

  // The unit went quiet: offer again, as a unit does after a loss, for as long as the unit waits for
  // a re-offer, counted as the unit counts it: from when it last heard this page, plus its own
  // silence before a loss ([call] peer_timeout_seconds). The page waited its own 30 s from its own
  // 5 s, so it said the call was lost while a unit set to wait longer waited on, or went on trying
  // long after a unit set to wait less had told its owner. A re-offer still on its way then (a relay
  // connection that cannot open takes STEP_MS) is not waited for, and a bye goes after it: one that
  // reached the unit just in time would otherwise keep it waiting for a page that has gone.
  async function lost(mine) {
    if (call !== mine || mine.recovering) return;
    mine.open = false;
    mine.recovering = true;
    say(`The connection to ${owner} dropped. Reconnecting…`);
    const deadline = Math.max(performance.now(), mine.heard + mine.unitTimeoutMs) + mine.reconnectMs;
    while (call === mine && performance.now() < deadline) {
      try {
        const reply = await within(negotiate(mine, true), deadline - performance.now());
        if (call !== mine) return;
        if (reply === null) break;
        if (reply.body.kind === 'answer') {
          await mine.pc.setRemoteDescription({ type: 'answer', sdp: reply.body.sdp });
          const opened = performance.now() + STEP_MS;
          while (call === mine && mine.recovering && performance.now() < opened) await pause(250);
          if (!mine.recovering) return;
        } else if (reply.body.kind === 'lost') {
          // The unit stopped waiting for this page's re-offers: it did not hang up.
          end(mine, `The connection to ${owner} was lost. The call ended.`);
          return;
        } else if (reply.status === 403 || reply.body.kind === 'bye') {
          end(mine, `${owner} hung up. The call ended.`);
          return;
        }
      } catch (e) {
        // The relay's connection may be dead without the browser knowing (a phone moved from
        // Wi-Fi to mobile data, a new address): the next try opens a new one.
        if (mine.xmpp) {
          mine.xmpp.close();
          mine.xmpp.up = false;
        }
        await pause(1000);
      }
    }
    if (call !== mine) return;
    sendBye(mine);
    end(mine, `The connection to ${owner} was lost. The call ended.`, 200);
  }

  const pause = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });

  function heard(mine, data) {
    mine.heard = performance.now();
    let message = null;
    try { message = JSON.parse(data); } catch (e) { return; }
    if (message && typeof message.type === 'string') received[message.type] = (received[message.type] || 0) + 1;
    if (message && message.type === 'bye') end(mine, `${owner} hung up. The call ended.`);
  }

  function stop(mine) {
    for (const timer of mine.timers) clearTimeout(timer);
    clearInterval(mine.beat);
    if (mine.awake) mine.awake.release().catch(() => {});
    if (mine.pc) mine.pc.close();
    if (mine.media) for (const track of mine.media.getTracks()) track.stop();
    if (mine.xmpp) mine.xmpp.close();
    if (call === mine) call = null;
  }

  // ``lingerMs``: the connections close that much later (a bye still leaving on them); the page is
  // done with the call at once, so nothing still on its way (an answer, a "declined") changes it.
  function end(mine, text, lingerMs = 0) {
    if (call !== mine) return;
    call = null;
    setTimeout(() => stop(mine), lingerMs);
    $('remote').srcObject = null;
    ready(text);
    $('call').focus();
  }

  // As a unit hangs up: a bye on the data channel for speed and one through the relay, which arrives
  // even when the channel's message is lost as the connection closes (and stops the unit ringing);
  // with the call's relay connection gone, on one of its own (a page being closed may not get that far).
  // With its last offer's number: an offer it overtook on the way (the relay carries each request
  // on a thread of its own) is then not rung for a page that has gone.
  const byeBody = (mine) => ({
    invite: token, call: mine.id, describe: mine.describe, signal: { kind: 'bye', number: offers },
  });

  // The unit went off the relay while it rang: back, it would ring on for nobody (and its owner
  // could answer a page that has gone). The bye goes again every RING_CHECK_MS, on a connection of
  // its own, until the unit answers it, for as long as a ring lasts.
  async function byeWhenBack(mine) {
    const body = byeBody(mine);
    const until = performance.now() + ANSWER_MS;
    while (performance.now() < until) {
      try {
        await sendSignal(body, CHECK_MS);
        return;
      } catch (e) {
        // Not back yet (or the relay cannot be reached from here either): again later.
      }
      await pause(RING_CHECK_MS);
    }
  }

  // ``body`` to the unit on the call's connection ``xmpp``, or without one on a connection of its
  // own (closed after).
  async function sendSignal(body, ms, xmpp = null) {
    const connection = xmpp || relayConnection();
    try {
      if (!xmpp) await connection.connect();
      return await connection.request(unitAddress(), SIGNAL_PATH, body, ms);
    } finally {
      if (!xmpp) connection.close();
    }
  }

  function sendBye(mine) {
    if (mine.channel && mine.channel.readyState === 'open') mine.channel.send(JSON.stringify({ type: 'bye' }));
    if (!mine.offered) return; // nothing rings there
    sendSignal(byeBody(mine), STEP_MS, mine.xmpp && mine.xmpp.up ? mine.xmpp : null).catch(() => {});
  }

  function hangUp(text) {
    const mine = call;
    if (!mine) return;
    sendBye(mine);
    end(mine, text || (mine.opened ? 'You hung up. The call ended.' : 'You cancelled the call.'), 200);
  }

  function mute() {
    if (!call || !call.media) return;
    const muted = $('mute').getAttribute('aria-pressed') !== 'true';
    for (const track of call.media.getAudioTracks()) track.enabled = !muted;
    $('mute').setAttribute('aria-pressed', String(muted));
    say(muted ? 'Your microphone is off.' : 'Your microphone is on.');
  }

  // For tests and the curious: what the browser receives from the unit.
  window.emocallGuest = {
    state: () => (call && call.open ? 'connected' : call ? 'calling' : 'idle'),
    received: () => ({ ...received }),
    async stats() {
      const result = { framesDecoded: 0, audioEnergy: 0, audioLevel: 0, local: '', remote: '', relayProtocol: '' };
      if (!call || !call.pc) return result;
      const report = await call.pc.getStats();
      report.forEach((r) => {
        // The transport names the pair media flows on; a pair's "nominated" flag can lag behind it.
        const pair = r.type === 'transport' && report.get(r.selectedCandidatePairId);
        if (pair) {
          const local = report.get(pair.localCandidateId);
          // No optional chaining ("?."): Safari before 13.1 cannot parse the page with it.
          const remote = report.get(pair.remoteCandidateId);
          result.local = (local && local.candidateType) || '';
          result.relayProtocol = (local && local.relayProtocol) || ''; // how the page reaches TURN: udp, tcp or tls
          result.remote = (remote && remote.candidateType) || '';
        }
        if (r.type !== 'inbound-rtp') return;
        if (r.kind === 'video') result.framesDecoded += r.framesDecoded || 0;
        if (r.kind === 'audio') {
          result.audioEnergy += r.totalAudioEnergy || 0;
          result.audioLevel = Math.max(result.audioLevel, r.audioLevel || 0);
        }
      });
      return result;
    },
  };

  // A closed tab or a page left hangs up at once: the unit would otherwise wait out a lost call. A
  // page kept in the back/forward cache comes back without that call.
  window.addEventListener('pagehide', () => hangUp('The call ended when you left this page.'));
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible' && call && call.open) keepAwake(call);
  });
  // A new link opened in the same tab changes the fragment alone, and the page would stay on the old
  // invite (an expired one's sentence, with no Call button): it is read again, unless in a call.
  window.addEventListener('hashchange', () => {
    if (!call) location.reload();
  });

  document.addEventListener('DOMContentLoaded', () => {
    $('call').addEventListener('click', startCall);
    $('hangup').addEventListener('click', () => hangUp());
    $('cancel').addEventListener('click', () => hangUp());
    $('mute').addEventListener('click', mute);
    if (!invite) {
      refuse('This link is not a valid invite. Check that it was copied whole, or ask for a new link.');
      return;
    }
    if (invite.exp * 1000 + CLOCK_SLACK_MS <= Date.now()) {
      refuse(`This invite has expired. Ask ${owner} for a new link.`);
      return;
    }
    // A messaging app's own browser may have no WebRTC or camera access: its errors were shown raw,
    // with "Try again", which could never help.
    const media = navigator.mediaDevices && navigator.mediaDevices.getUserMedia;
    if (!(window.isSecureContext && media && window.RTCPeerConnection && window.WebSocket)) {
      refuse('This browser cannot make video calls. Open the link in Chrome, Firefox or Safari.');
      return;
    }
    for (const el of document.querySelectorAll('.owner-name')) put(el, owner);
    put($('example'), `${invite.name} looks happy`); // as the unit says it of the guest
    put($('heading'), `Call ${owner}`);
    document.title = `Call ${owner} – emocall`;
    put($('call'), `Call ${owner}`);
    ready(`Hello ${invite.name}. Press "Call ${owner}" when you are ready.`);
  });
})();
