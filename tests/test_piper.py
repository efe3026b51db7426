"""In-process Piper: ONNX threads that sleep rather than spin (see parley_tts/piper.py)."""

from __future__ import annotations

from parley_tts import PiperTTS


def test_piper_runs_on_two_onnx_threads_that_do_not_spin() -> None:
    piper = PiperTTS()
    try:
        options = piper._voice.session.get_session_options()
        assert options.intra_op_num_threads == 2
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    finally:
        piper.close()
