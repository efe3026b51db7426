"""Sentence chunking, history budget and barge-in trimming."""

from parley_runtime.agent import heard_text
from parley_runtime.agent.reply import repeats
from parley_runtime.audio import PlaybackSegment
from parley_runtime.llm import ChatHistory, estimate_tokens
from parley_tts import SentenceChunker
from parley_tts.chunker import ends_mid_phrase, speakable


def chunk(deltas: list[str], first_words: int = 0) -> list[str]:
    chunker = SentenceChunker(first_words=first_words)
    out = [piece for d in deltas for piece in chunker.push(d)]
    return out + chunker.flush()


def as_tokens(text: str) -> list[str]:
    """`text` the way an LLM streams it: each word with the space before it."""
    words = text.split(" ")
    return [words[0], *(" " + word for word in words[1:])]


class TestChunker:
    def test_sentences_split_as_tokens_arrive(self) -> None:
        tokens = [
            "Paris",
            "is",
            "the",
            "capital.",
            "It",
            "has",
            "the",
            "Eiffel",
            "Tower!",
            "Want",
            "more?",
        ]
        deltas = [t + " " for t in tokens]
        assert chunk(deltas) == ["Paris is the capital.", "It has the Eiffel Tower!", "Want more?"]

    def test_first_piece_may_be_a_clause_to_start_speaking_early(self) -> None:
        text = "Well, the moon is far away from us, about three hundred thousand km, roughly."
        pieces = chunk([text])
        assert pieces[0] == "Well, the moon is far away from us,"
        assert " ".join(pieces) == text

    def test_first_clause_does_not_wait_for_a_long_sentence(self) -> None:
        pieces = chunk(as_tokens("I am not sure what to say, but I can try. Ask me again."))
        assert pieces == ["I am not sure what to say,", "but I can try.", "Ask me again."]

    def test_first_piece_ends_after_its_words_when_no_punctuation_comes(self) -> None:
        text = "A baby dog is called a puppy and it sleeps a lot. Puppies love to play."
        pieces = chunk(as_tokens(text), first_words=5)
        assert pieces == [
            "A baby dog is called",
            "a puppy and it sleeps a lot.",
            "Puppies love to play.",
        ]
        assert [ends_mid_phrase(p) for p in pieces] == [True, False, False]

    def test_punctuation_before_the_words_run_out_ends_the_first_piece(self) -> None:
        pieces = chunk(as_tokens("The elephant is huge. It has a trunk."), first_words=5)
        assert pieces == ["The elephant is huge.", "It has a trunk."]
        pieces = chunk(as_tokens("The elephant, of course. It has a trunk."), first_words=5)
        assert pieces == ["The elephant,", "of course. It has a trunk."]
        assert chunk(as_tokens("Well, let me think about it for a while."), first_words=5) == [
            "Well, let me think about",
            "it for a while.",
        ]

    def test_pieces_do_not_depend_on_how_the_stream_was_split(self) -> None:
        text = "Sure, the moon is about three hundred thousand km away. It is bright tonight."
        for first_words in (0, 4):
            whole = chunk([text], first_words)
            assert chunk(as_tokens(text), first_words) == whole
            assert chunk(list(text), first_words) == whole
            assert " ".join(whole) == text

    def test_markdown_is_not_read_aloud(self) -> None:
        assert speakable("**Bold** and `code` and [a link](http://x)") == "Bold and code and a link"

    def test_no_empty_pieces(self) -> None:
        assert chunk(["...", " ", "\n\n", "Hi there.  "]) == ["... Hi there."]


class TestRepeats:
    def test_the_same_sentence_whatever_its_case_spacing_and_punctuation(self) -> None:
        said = ["The milk is called", "it's called  milk!"]
        assert repeats("It's called milk.", said)
        assert not repeats("It's called cream.", said)
        assert not repeats("Milk.", ["It is called milk."])

    def test_punctuation_alone_is_no_sentence(self) -> None:
        assert not repeats("...", ["..."])


class TestHistory:
    def test_keeps_system_prompt_and_recent_turns_under_the_budget(self) -> None:
        history = ChatHistory("be brief", budget_tokens=400, rollover_tokens=300)
        for i in range(50):
            history.add_turn(f"question {i} " + "x" * 80, f"answer {i} " + "y" * 80)
        assert history.tokens() <= 300
        messages = history.messages("latest")
        assert messages[0] == {"role": "system", "content": "be brief"}
        assert messages[-1] == {"role": "user", "content": "latest"}
        assert "answer 49" in messages[-2]["content"]
        assert sum(estimate_tokens(m["content"]) for m in messages) <= 400

    def test_defaults_match_the_design(self) -> None:
        history = ChatHistory("s")
        assert (history.budget_tokens, history.rollover_tokens) == (8192, 7500)


class TestHeardText:
    def test_whole_and_partial_sentences(self) -> None:
        segments = [
            PlaybackSegment("Paris is the capital.", frames=50, played=50),
            PlaybackSegment("It is known for the Eiffel Tower.", frames=70, played=35),
            PlaybackSegment("Never heard.", frames=20, played=0),
        ]
        # half of a seven-word sentence: the three words surely heard
        assert heard_text(segments) == "Paris is the capital. It is known"

    def test_nothing_played(self) -> None:
        assert heard_text([PlaybackSegment("Hello.", frames=10, played=0)]) == ""
