"""The web client in real headless Chromium: Chromium's fake microphone plays a question
synthesized with Piper, the page talks to a runtime over WebRTC, and the agent's answer, the
conversation state, the turn's latencies and the face's moving mouth must show up on the
page."""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import httpx
import numpy as np
import pytest

from parley.pcm import OUTPUT_RATE
from parley_bench.speech import silence, speech
from tests.support.runtime_host import RuntimeHost

CHROMIUM = Path("/usr/bin/chromium")
QUESTION = "What is the capital of France?"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"{CHROMIUM} is missing: `apt-get install chromium` (the CI script installs it)",
    ),
]

# Record every state the page shows, from page load on: the test asserts on the history,
# not on whatever state happens to be showing when it looks.
RECORD_STATES = """
window.__states = [];
document.addEventListener("DOMContentLoaded", () => {
  const el = document.getElementById("state");
  window.__states.push(el.textContent);
  new MutationObserver(() => window.__states.push(el.textContent))
    .observe(el, { childList: true, characterData: true, subtree: true });
});
"""

# The face: every state change and every jawOpen the mouth shows, with the page's time.
RECORD_FACE = """
window.__face = { states: [], jaw: [] };
document.addEventListener("DOMContentLoaded", () => {
  const state = document.getElementById("state");
  const mouth = document.getElementById("mouth");
  const now = () => performance.now();
  new MutationObserver(() => window.__face.states.push([now(), state.textContent]))
    .observe(state, { childList: true, characterData: true, subtree: true });
  new MutationObserver(() => window.__face.jaw.push([now(), Number(mouth.dataset.jawOpen)]))
    .observe(mouth, { attributes: true, attributeFilter: ["data-jaw-open"] });
});
"""

# How long after the answer ends (the state leaves `speaking`) the mouth must be at rest: the
# audio's jitter buffer, the server's hold (100 ms) and ease (150 ms), the page's easing.
FACE_REST_MS = 800

# The first stretch of `speaking` and what the mouth did before it (up to a margin: the first
# pose and the `speaking` state leave the server together), during it, and after it (the
# lowest jawOpen within FACE_REST_MS of its end); null until that window has passed.
FACE_DURING_ANSWER = """() => {
  const { states, jaw } = window.__face;
  const start = states.findIndex(([, s]) => s === "speaking");
  if (start < 0) return null;
  const end = states.slice(start).find(([, s]) => s !== "speaking");
  if (!end || performance.now() < end[0] + REST_MS) return null;
  const from = states[start][0], to = end[0];
  const at = (time) => jaw.filter(([t]) => t <= time).map(([, v]) => v).pop() ?? 0;
  const values = (lo, hi) => jaw.filter(([t]) => t > lo && t <= hi).map(([, v]) => v);
  return {
    before: Math.max(0, ...values(-Infinity, from - 250)),
    during: Math.max(0, ...values(from, to)),
    after: Math.min(at(to), ...values(to, to + REST_MS)),
    samples: jaw.length,
  };
}""".replace("REST_MS", str(FACE_REST_MS))

AGENT_SPOKE = """() => [...document.querySelectorAll("#transcript .agent .text")]
  .some((el) => el.textContent.trim().length > 0)"""

TTFA_SHOWN = """() => [...document.querySelectorAll("#metrics td.ttfa")]
  .some((el) => /^\\d+$/.test(el.textContent.trim()))"""


async def write_question(path: Path) -> None:
    """The fake microphone's input; Chromium loops it, so it ends in a long silence."""
    pcm = np.concatenate([silence(1500), await speech(QUESTION), silence(3000)])
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(OUTPUT_RATE)
        out.writeframes(pcm.astype("<i2").tobytes())


async def sessions_after_hang_up(url: str, wait_s: float = 5.0) -> list[object]:
    """The runtime's sessions once the page's DELETE has landed (or `wait_s` passed)."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        deadline = asyncio.get_running_loop().time() + wait_s
        while True:
            sessions: list[object] = (await http.get("/v1/sessions")).json()["sessions"]
            if not sessions or asyncio.get_running_loop().time() > deadline:
                return sessions
            await asyncio.sleep(0.1)


def chromium_args(wav: Path) -> list[str]:
    return [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
        "--allow-loopback-in-peer-connection",
        "--autoplay-policy=no-user-gesture-required",
    ]


async def test_web_client_converses(
    runtime_host: RuntimeHost, llm_url: str, tmp_path: Path
) -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    wav = tmp_path / "question.wav"
    await write_question(wav)
    app = runtime_host.start(llm_url=llm_url)
    console: list[str] = []
    try:
        async with playwright_api.async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=str(CHROMIUM), args=chromium_args(wav)
            )
            try:
                page = await browser.new_page(viewport={"width": 900, "height": 900})
                page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
                page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
                await page.add_init_script(RECORD_STATES)
                await page.add_init_script(RECORD_FACE)
                await page.goto(f"{app.url}/")
                assert await page.text_content("#talk") == "Talk"

                await page.click("#talk")
                try:
                    # Generous: the first turn of a suite on two busy cores may be slow.
                    await page.wait_for_function(AGENT_SPOKE, timeout=120_000)
                    await page.wait_for_function(TTFA_SHOWN, timeout=30_000)
                except playwright_api.TimeoutError:
                    states = await page.evaluate("window.__states")
                    transcript = await page.text_content("#transcript")
                    async with httpx.AsyncClient() as http:
                        sessions = (await http.get(f"{app.url}/v1/sessions")).text
                    raise AssertionError(
                        f"no agent reply on the page; states {states}; transcript {transcript!r};"
                        f" runtime sessions {sessions}"
                    ) from None
                finally:
                    await page.screenshot(path=str(tmp_path / "browser.png"), full_page=True)
                log = "\n".join(console)

                states = await page.evaluate("window.__states")
                assert "listening" in states, f"states seen: {states}\n{log}"
                assert await page.text_content("#talk") == "Hang up"
                assert await page.is_hidden("#error"), await page.text_content("#error")
                ttfa = await page.text_content("#metrics td.ttfa")
                assert ttfa is not None and int(ttfa) > 0, log
                playing = "() => document.getElementById('remote').srcObject?.getAudioTracks()"
                assert await page.evaluate(f"{playing}.length"), "no remote audio track"

                # The face: still while the user speaks, moving while the agent answers, and
                # back at rest once the answer has been played.
                try:
                    face = await (
                        await page.wait_for_function(FACE_DURING_ANSWER, timeout=60_000)
                    ).json_value()
                except playwright_api.TimeoutError:
                    recorded = await page.evaluate("window.__face")
                    raise AssertionError(f"the answer never ended: {recorded['states']}") from None
                assert face["before"] < 0.01, f"the mouth moved before the agent spoke: {face}"
                assert face["during"] > 0.1, f"the mouth did not move with the answer: {face}"
                assert face["after"] < 0.01, f"the mouth did not come to rest: {face}"

                # Hang up: the page deletes its session and shows the call as ended.
                await page.click("#talk")
                assert await page.text_content("#talk") == "Talk"
                assert await page.text_content("#state") == "ended"
                await page.wait_for_function(
                    "() => !document.getElementById('remote').srcObject", timeout=5_000
                )
            finally:
                await browser.close()
        assert await sessions_after_hang_up(app.url) == []
    except Exception:
        print("browser console:\n" + "\n".join(console))
        raise
    finally:
        runtime_host.stop(app)
