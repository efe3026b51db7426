// Parley web client: one WebRTC session with the runtime (non-trickle ICE), the agent's
// audio in an <audio> element, and the `events` data channel rendered as state, transcript,
// per-turn latencies, errors and a face whose mouth follows `visemes` events. Server text
// only ever goes through textContent.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const talk = $("talk");
  const stateEl = $("state");
  const connectionEl = $("connection");
  const errorEl = $("error");
  const transcript = $("transcript");
  const transcriptEmpty = $("transcript-empty");
  const metricsBody = $("metrics").tBodies[0];
  const remote = $("remote");
  const mouth = $("mouth");

  const STATES = ["idle", "listening", "thinking", "speaking", "interrupted", "ended"];
  const ICE_GATHER_TIMEOUT_MS = 3000;

  let call = null; // {pc, mic, id, closed, statsTimer}

  // -- view -------------------------------------------------------------------------------

  function setState(state) {
    const name = STATES.includes(state) ? state : "idle";
    stateEl.textContent = name;
    stateEl.className = `state state-${name}`;
  }

  function setConnection(text) {
    connectionEl.textContent = text;
  }

  function showError(message) {
    errorEl.textContent = message;
    errorEl.hidden = !message;
  }

  function setButton(live) {
    talk.textContent = live ? "Hang up" : "Talk";
    talk.classList.toggle("live", live);
  }

  // The live user line (partial transcripts replace it) and the current turn's agent line
  // (cumulative `response` text replaces it). A speculative reply can send its first
  // `response` before the user's final transcript, so that line is put in front of it.
  let userLine = null;
  let agentLine = null;
  let turnHasUser = false;

  function newLine(role) {
    const li = document.createElement("li");
    li.className = role === "user" ? "user" : "agent";
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = role === "user" ? "You" : "Agent";
    const text = document.createElement("span");
    text.className = "text";
    li.append(who, text);
    transcriptEmpty.hidden = true;
    return li;
  }

  function lineText(li, text) {
    li.querySelector(".text").textContent = text;
    li.scrollIntoView({ block: "nearest" });
  }

  function onTranscript(event) {
    if (event.role !== "user") {
      onResponse(event);
      return;
    }
    if (!userLine) {
      userLine = newLine("user");
      if (event.final && agentLine && !turnHasUser) transcript.insertBefore(userLine, agentLine);
      else transcript.append(userLine);
    }
    userLine.classList.toggle("partial", !event.final);
    lineText(userLine, event.text);
    if (event.final) {
      userLine = null;
      turnHasUser = true;
    }
  }

  function onResponse(event) {
    if (!agentLine) {
      agentLine = newLine("agent");
      transcript.append(agentLine);
    }
    agentLine.classList.toggle("partial", !event.final);
    lineText(agentLine, event.text);
    if (event.final) endTurn();
  }

  function endTurn() {
    if (agentLine) agentLine.classList.remove("partial");
    agentLine = null;
    turnHasUser = false;
  }

  const ms = (value) => (typeof value === "number" ? String(Math.round(value)) : "—");

  function onMetrics(m) {
    const row = document.createElement("tr");
    const cells = [
      String(m.turn),
      ms(m.ttfa_ms),
      ms(m.asr_ms),
      ms(m.llm_first_sentence_ms),
      ms(m.tts_first_chunk_ms),
      ms(m.endpoint_ms),
      m.speculative ? "yes" : "no",
    ];
    cells.forEach((text, i) => {
      const cell = document.createElement(i === 0 ? "th" : "td");
      if (i === 0) cell.scope = "row";
      if (i === 1) cell.className = "ttfa";
      cell.textContent = text;
      row.append(cell);
    });
    metricsBody.append(row);
  }

  // -- face -------------------------------------------------------------------------------
  // `visemes` events carry ARKit blendshape weights computed from the agent audio as it
  // leaves the server, with `t` on the server's audio clock. The data channel is faster than
  // the audio (which waits in the jitter buffer), so each pose is shown when its audio plays:
  // the earliest arrival fixes the offset between `t` and this clock, and the jitter buffer's
  // delay (from getStats) is added. The mouth eases toward the pose due now and relaxes to
  // neutral when no pose has come for FACE_RELAX_MS, so a lost stream never freezes it open.

  const SHAPES = ["jawOpen", "mouthClose", "mouthFunnel", "mouthPucker"];
  const FACE_RELAX_MS = 300;
  const FACE_FOLLOW_MS = 35; // time constant of the easing toward the target pose
  const MAX_AUDIO_DELAY_MS = 300;
  const MAX_PENDING_POSES = 30;
  const MOUTH = { cx: 60, cy: 84, halfWidth: 16, maxOpen: 24 };

  const neutralPose = () => Object.fromEntries(SHAPES.map((name) => [name, 0]));
  const face = {
    shown: neutralPose(),
    target: neutralPose(),
    pending: [], // [{due, shapes}] in arrival order
    offsetMs: null, // min over events of (arrival - t), on performance.now()'s clock
    audioDelayMs: 0,
    lastPoseAt: -Infinity,
    lastFrameAt: null,
    frame: 0,
  };

  const clamp01 = (value) => (typeof value === "number" && value > 0 ? Math.min(value, 1) : 0);

  function mouthPath(pose) {
    const rounded = Math.max(pose.mouthFunnel, pose.mouthPucker);
    const half = MOUTH.halfWidth * (1 - 0.3 * pose.mouthFunnel - 0.45 * pose.mouthPucker);
    const open =
      MOUTH.maxOpen * Math.max(0, pose.jawOpen - pose.mouthClose) + 3 * pose.mouthPucker;
    const up = open * 0.45; // the jaw moves the lower lip more than the upper
    const down = open * 0.85;
    const spread = half * (0.55 + 0.4 * (1 - rounded)); // 0.55: close to an ellipse
    const { cx, cy } = MOUTH;
    const n = (value) => value.toFixed(2);
    return (
      `M ${n(cx - half)} ${cy} C ${n(cx - spread)} ${n(cy - up)} ${n(cx + spread)} ${n(cy - up)}` +
      ` ${n(cx + half)} ${cy} C ${n(cx + spread)} ${n(cy + down)} ${n(cx - spread)}` +
      ` ${n(cy + down)} ${n(cx - half)} ${cy} Z`
    );
  }

  function drawFace() {
    mouth.setAttribute("d", mouthPath(face.shown));
    mouth.dataset.jawOpen = face.shown.jawOpen.toFixed(3);
  }

  function onVisemes(event) {
    if (typeof event.t !== "number" || !event.shapes || typeof event.shapes !== "object") return;
    const arrival = performance.now();
    const audioMs = event.t * 1000;
    if (face.offsetMs === null || arrival - audioMs < face.offsetMs) {
      face.offsetMs = arrival - audioMs;
    }
    const shapes = neutralPose();
    for (const name of SHAPES) shapes[name] = clamp01(event.shapes[name]);
    face.pending.push({ due: face.offsetMs + audioMs + face.audioDelayMs, shapes });
    if (face.pending.length > MAX_PENDING_POSES) face.pending.shift(); // a hidden tab draws none
    animateFace();
  }

  function faceStep(now) {
    face.frame = 0;
    while (face.pending.length && face.pending[0].due <= now) {
      face.target = face.pending.shift().shapes;
      face.lastPoseAt = now;
    }
    if (now - face.lastPoseAt > FACE_RELAX_MS) face.target = neutralPose();
    const dt = face.lastFrameAt === null ? 16 : Math.min(now - face.lastFrameAt, 100);
    face.lastFrameAt = now;
    const follow = 1 - Math.exp(-dt / FACE_FOLLOW_MS);
    let moving = face.pending.length > 0;
    for (const name of SHAPES) {
      const gap = face.target[name] - face.shown[name];
      const next = face.shown[name] + gap * follow;
      face.shown[name] = Math.abs(gap) < 0.001 ? face.target[name] : next;
      if (face.shown[name] !== face.target[name] || face.target[name] !== 0) moving = true;
    }
    drawFace();
    if (moving) animateFace();
    else face.lastFrameAt = null; // at rest: no frames until the next pose
  }

  function animateFace() {
    if (!face.frame) face.frame = requestAnimationFrame(faceStep);
  }

  function resetFace() {
    face.pending = [];
    face.offsetMs = null;
    face.audioDelayMs = 0;
    face.lastPoseAt = -Infinity;
    face.target = neutralPose();
    animateFace();
  }

  // The agent audio's jitter-buffer delay over the last interval, from the inbound RTP stats.
  async function measureAudioDelay(pc, previous) {
    const stats = await pc.getStats();
    stats.forEach((report) => {
      if (report.type !== "inbound-rtp" || report.kind !== "audio") return;
      const count = report.jitterBufferEmittedCount || 0;
      const delay = report.jitterBufferDelay || 0;
      if (count > previous.count) {
        const ms = (1000 * (delay - previous.delay)) / (count - previous.count);
        face.audioDelayMs = Math.min(Math.max(ms, 0), MAX_AUDIO_DELAY_MS);
      }
      previous.count = count;
      previous.delay = delay;
    });
  }

  function onEvent(message) {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      console.warn("parley: ignoring a non-JSON event", message.data);
      return;
    }
    switch (event.type) {
      case "state":
        setState(event.state);
        if (event.state === "interrupted" || event.state === "listening") endTurn();
        if (event.state === "ended" && call) stop(true); // the server closed the session
        break;
      case "transcript":
        onTranscript(event);
        break;
      case "response":
        onResponse(event);
        break;
      case "metrics":
        onMetrics(event);
        break;
      case "visemes":
        onVisemes(event);
        break;
      case "error":
        showError(`${event.code || "error"}: ${event.message || "unknown error"}`);
        break;
      default:
        break;
    }
  }

  // -- call -------------------------------------------------------------------------------

  function iceGatheringDone(pc) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, ICE_GATHER_TIMEOUT_MS);
      function done() {
        clearTimeout(timer);
        pc.removeEventListener("icegatheringstatechange", check);
        resolve();
      }
      function check() {
        if (pc.iceGatheringState === "complete") done();
      }
      pc.addEventListener("icegatheringstatechange", check);
    });
  }

  async function errorText(response) {
    let detail = "";
    try {
      const body = await response.json();
      detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    } catch {
      detail = response.statusText;
    }
    if (response.status === 503) {
      const retry = response.headers.get("Retry-After");
      return `Server busy: ${detail}.${retry ? ` Try again in ${retry} s.` : ""}`;
    }
    return `Could not start a session (${response.status}): ${detail}`;
  }

  async function start() {
    showError("");
    setButton(true);
    setConnection("Asking for the microphone…");
    const current = { pc: null, mic: null, id: null, closed: false, statsTimer: 0 };
    call = current;
    resetFace();
    try {
      current.mic = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      });
      if (current.closed) return release(current);
      const pc = new RTCPeerConnection({ iceServers: [] });
      current.pc = pc;
      const track = current.mic.getAudioTracks()[0];
      pc.addTransceiver(track, { direction: "sendrecv", streams: [current.mic] });
      // The events channel must exist before the offer, so the SDP carries an SCTP section.
      const channel = pc.createDataChannel("events");
      channel.onmessage = onEvent;
      pc.ontrack = (event) => {
        remote.srcObject = event.streams[0] || new MediaStream([event.track]);
        remote.play().catch((err) => console.warn("parley: autoplay blocked", err));
      };
      pc.onicecandidate = (event) => {
        if (event.candidate) console.debug("parley: local candidate", event.candidate.candidate);
      };
      pc.oniceconnectionstatechange = () => console.info("parley: ice", pc.iceConnectionState);
      const jitter = { count: 0, delay: 0 };
      current.statsTimer = setInterval(() => {
        measureAudioDelay(pc, jitter).catch((err) => console.debug("parley: stats", err));
      }, 1000);
      pc.onconnectionstatechange = () => {
        const s = pc.connectionState;
        if (current.closed) return;
        setConnection(s === "connected" ? "Connected" : `Connection ${s}`);
        if (s === "failed") {
          showError("The audio connection failed. Check the network and try again.");
          stop();
        }
      };

      setConnection("Connecting…");
      await pc.setLocalDescription(await pc.createOffer());
      await iceGatheringDone(pc); // non-trickle: the offer carries every candidate
      if (current.closed) return release(current);
      const response = await fetch("/v1/sessions", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ sdp: pc.localDescription.sdp, type: "offer" }),
      });
      if (response.status !== 201) throw new Error(await errorText(response));
      const answer = await response.json();
      current.id = answer.id;
      current.secret = answer.secret;
      if (current.closed) return release(current);
      await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
    } catch (err) {
      if (current.closed) return release(current);
      console.error("parley: start failed", err);
      const denied = err && err.name === "NotAllowedError";
      showError(denied ? "Microphone access was denied." : (err && err.message) || String(err));
      stop();
    }
  }

  // Free everything a call holds; safe to call more than once.
  function release(current, remoteEnded = false) {
    if (current.id && !remoteEnded) {
      fetch(`/v1/sessions/${encodeURIComponent(current.id)}`, {
        method: "DELETE",
        headers: { Authorization: `Bearer ${current.secret}` },
      }).catch(
        (err) => console.warn("parley: hang-up request failed", err),
      );
    }
    current.id = null;
    clearInterval(current.statsTimer);
    if (current.pc) current.pc.close();
    if (current.mic) current.mic.getTracks().forEach((t) => t.stop());
  }

  function stop(remoteEnded = false) {
    const current = call;
    call = null;
    setButton(false);
    setConnection(remoteEnded ? "The session ended" : "Not connected");
    endTurn();
    if (userLine && userLine.classList.contains("partial")) userLine.remove();
    userLine = null;
    remote.srcObject = null;
    resetFace();
    if (!current) return;
    current.closed = true;
    setState(current.id ? "ended" : "idle");
    release(current, remoteEnded);
  }

  talk.addEventListener("click", () => (call ? stop() : start()));
  window.addEventListener("pagehide", () => {
    // Free the server's slot right away rather than waiting for its idle reaper.
    if (call && call.id) {
      fetch(`/v1/sessions/${encodeURIComponent(call.id)}`, {
        method: "DELETE",
        keepalive: true,
        headers: { Authorization: `Bearer ${call.secret}` },
      });
    }
  });
})();
