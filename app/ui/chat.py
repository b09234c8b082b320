"""The Chat tab: talk to the live model, reopen past conversations, rate replies and correct them in place.

`build(state, demo)` lays the tab out inside an open `gr.Tab` and wires Gradio's events to app/ui/chat_handlers.py:

- Enter or the send button: stream a reply (the textbox's stop button cancels it; what was written is kept);
- Chatbot retry / undo / trash: answer again / take back the last turn / start a new chat (old ones stay listed);
- thumbs up/down on a reply: stored feedback, with an optional reason afterwards;
- the pencil on a reply: the edited text is stored as a correction (a pending demonstration) and shown in place;
  the pencil on a user turn: the turn is replaced and answered again;
- "Suggest a better answer": the same correction through a form, prefilled with the chosen reply.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from app.state import AppState
from app.ui.chat_handlers import ChatHandlers


@dataclass
class ChatComponents:
    conversation: gr.State  # the open conversation's id, None for a new chat
    feedback: gr.State  # the id of the last feedback given, for its optional reason
    conversations: gr.Radio
    new_chat: gr.Button
    chatbot: gr.Chatbot
    message: gr.Textbox
    status: gr.Markdown
    reason_row: gr.Row
    reason: gr.Textbox
    send_reason: gr.Button
    target: gr.Dropdown
    correction: gr.Textbox
    skill: gr.Textbox
    suggest: gr.Button


def layout() -> ChatComponents:
    conversation, feedback = gr.State(None), gr.State(None)
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=220):
            new_chat = gr.Button("New chat", elem_id="new-chat", size="sm")
            listed = gr.Radio(label="Your conversations", choices=[], elem_id="conversations")
        with gr.Column(scale=4):
            chatbot = gr.Chatbot(
                label="Apprentice",
                elem_id="chatbot",
                height=480,
                editable="all",
                sanitize_html=True,
                render_markdown=False,
                latex_delimiters=[],
                allow_tags=False,
                buttons=["copy", "copy_all"],
                placeholder="Ask anything. Every reply names the model version that wrote it; "
                "use the pencil to correct a reply in place.",
            )
            message = gr.Textbox(
                show_label=False,
                placeholder="Message Apprentice (Enter sends, Shift+Enter for a new line)",
                elem_id="message",
                lines=1,
                max_lines=8,
                submit_btn=True,
                stop_btn=False,
                autofocus=True,
            )
            status = gr.Markdown(elem_id="chat-status")
            with gr.Row(visible=False, elem_id="reason-row") as reason_row:
                reason = gr.Textbox(label="What made it good or bad? (optional)", elem_id="reason", scale=4)
                send_reason = gr.Button("Save reason", elem_id="send-reason", scale=1)
            with gr.Accordion("Suggest a better answer", open=False, elem_id="suggest"):
                target = gr.Dropdown(label="Reply to correct", choices=[], elem_id="suggest-target")
                correction = gr.Textbox(label="Better answer", lines=4, elem_id="suggest-text")
                skill = gr.Textbox(
                    label="Skill tag (optional, also used for in-place edits)",
                    placeholder="e.g. geography",
                    elem_id="suggest-skill",
                )
                suggest = gr.Button("Submit for review", variant="primary", elem_id="suggest-submit")
    return ChatComponents(
        conversation, feedback, listed, new_chat, chatbot, message, status, reason_row, reason, send_reason, target,
        correction, skill, suggest,
    )  # fmt: skip


def build(state: AppState, demo: gr.Blocks) -> None:
    """Lay out the chat tab and wire its events (called inside `with gr.Tab(...)`)."""
    h = ChatHandlers(state)
    c = h.c = layout()
    shown = [c.chatbot, c.target, c.correction]
    everything = [c.conversation, c.conversations, *shown, c.message, c.status]

    # The chat shows its own progress (no spinners over every output); programs use the OpenAI API, not these events.
    quiet = {"show_progress": "hidden", "api_visibility": "private"}
    demo.load(h.on_load, None, [c.conversations, c.status], **quiet)
    c.new_chat.click(h.new_chat, None, everything, **quiet)
    c.chatbot.clear(h.new_chat, None, everything, **quiet)
    c.conversations.input(h.open, [c.conversations], [c.conversation, *shown, c.status], **quiet)

    turn = {"outputs": everything, "concurrency_limit": None, **quiet}  # the engine batches and queues requests
    sent = c.message.submit(h.send, [c.message, c.conversation], **turn)
    retried = c.chatbot.retry(h.retry, [c.conversation], **turn)
    edited = c.chatbot.edit(h.edit, [c.conversation, c.skill], **turn)
    for event in (sent, retried, edited):
        event.then(h.settle, [c.conversation], [c.conversations, *shown, c.message, c.status], **quiet)
    c.message.stop(None, None, None, cancels=[sent, retried, edited], api_visibility="private")

    c.chatbot.undo(h.undo, [c.conversation], [*shown, c.message, c.status], **quiet)
    c.chatbot.like(h.like, [c.conversation], [c.feedback, c.reason_row, c.reason, c.status, *shown], **quiet)
    c.send_reason.click(h.save_reason, [c.feedback, c.reason], [c.reason_row, c.status], **quiet)
    c.reason.submit(h.save_reason, [c.feedback, c.reason], [c.reason_row, c.status], **quiet)
    c.chatbot.select(h.select, [c.conversation], [c.target, c.correction], **quiet)
    c.target.input(h.pick, [c.conversation, c.target], [c.correction], **quiet)
    c.suggest.click(h.suggest, [c.conversation, c.target, c.correction, c.skill], [*shown, c.status], **quiet)
