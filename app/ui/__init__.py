"""The web UI: one Gradio app with a tab per task, each shown to the roles that may use it.

    from app.ui import mount_ui
    mount_ui(api, state)          # in create_app: Gradio at "/", sign-in against the users table

`build_ui(state)` assembles the tabs listed by `tab_specs()` (one module per tab: chat.py now; review, versions,
rounds and dashboard later, each with `build(state, demo)`), a header naming the signed-in user with a sign-out link,
and, on page load, shows each tab only to its roles. Hiding is for tidiness: every handler of a restricted tab must
still call `auth.require_role`. `mount_ui` mounts it on a FastAPI app with Gradio's sign-in form (`auth.password_check`)
and the page style below; use it rather than `gr.mount_gradio_app` directly, which would drop both.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr
from fastapi import FastAPI

from app.state import AppState
from app.ui import auth
from app.ui.sign_in import ClientAddress, ShowRefusal
from storage.errors import ApprenticeError

CSS = """
#chatbot .edit-textarea { width: 100% !important; min-height: 6em; }
#chatbot .message.thought .edit-textarea { display: none; }  /* the version line under a reply is not editable */
#chatbot .message-content span.md { white-space: pre-wrap; }
#whoami { text-align: right; }
#conversations { max-height: 560px; overflow-y: auto; }
"""

SIGN_IN_MESSAGE = (
    "Sign in with your Apprentice account. First start: the account admin and its password are in the log of "
    "`apprentice serve` (printed once), or the password is the one APPRENTICE_ADMIN_PASSWORD set. "
    "Admins add accounts in the Users tab or with `apprentice users add NAME`."
)


@dataclass(frozen=True)
class TabSpec:
    label: str
    roles: tuple[str, ...]  # who sees the tab
    build: Callable[[AppState, gr.Blocks], None]  # lays out the tab's contents inside an open gr.Tab


def tab_specs() -> list[TabSpec]:
    from app.ui import chat, dashboard, data_tab, review, rounds, users_tab, versions  # they import this package

    admin, reviewers = ("admin",), ("admin", "reviewer")
    return [
        TabSpec("Chat", auth.ALL_ROLES, chat.build),
        TabSpec("Review", reviewers, review.build),
        TabSpec("Versions", reviewers, versions.build),  # reviewers compare; making live is the admins'
        TabSpec("Rounds", admin, rounds.build),
        TabSpec("Dashboard", admin, dashboard.build),
        TabSpec("Data", admin, data_tab.build),
        TabSpec("Users", admin, users_tab.build),
    ]


def tab_visibility(role: str, specs: list[TabSpec]) -> list[bool]:
    return [role in spec.roles for spec in specs]


def build_ui(state: AppState) -> gr.Blocks:
    """The whole UI as one Blocks (not mounted; see `mount_ui`)."""
    specs = tab_specs()
    with gr.Blocks(title="Apprentice") as demo:
        with gr.Row():
            gr.Markdown("## Apprentice")
            whoami = gr.HTML(elem_id="whoami")
        tabs = []
        with gr.Tabs():
            for spec in specs:
                slug = spec.label.lower().replace(" ", "-")
                with gr.Tab(spec.label, id=slug, elem_id=f"tab-{slug}", visible=spec.roles == auth.ALL_ROLES) as tab:
                    spec.build(state, demo)
                tabs.append(tab)

        def on_load(request: gr.Request) -> list:
            try:
                user = auth.signed_in(state, request)
            except ApprenticeError as e:
                return [html.escape(str(e)), *(gr.update(visible=False) for _ in specs)]
            who = f'Signed in as <b>{html.escape(user.name)}</b> ({user.role}) · <a href="logout">Sign out</a>'
            return [who, *(gr.update(visible=shown) for shown in tab_visibility(user.role, specs))]

        demo.load(on_load, None, [whoami, *tabs], api_visibility="private")
    # Gradio writes the public endpoints' names and signatures into every page, the anonymous sign-in page too: the
    # UI's handlers are for the UI only (the browser calls them by index), so none is public.
    for fn in demo.fns.values():
        fn.api_visibility = "private"
    demo.queue(default_concurrency_limit=16)
    return demo


def mount_ui(api: FastAPI, state: AppState, path: str = "/") -> FastAPI:
    """Mount the UI on `api` at `path`, behind sign-in with the database's users. Mount it after the API routes:
    a mount at "/" answers every path that no earlier route claimed."""
    api.add_middleware(ClientAddress)  # the sign-in limits count per client address too
    api.add_middleware(ShowRefusal, path=path)  # the sign-in page shows why an attempt was refused
    return gr.mount_gradio_app(
        api,
        build_ui(state),
        path=path,
        auth=auth.password_check(state),
        auth_message=SIGN_IN_MESSAGE,
        css=CSS,
        footer_links=["settings"],
        run_history=False,
        ssr_mode=False,
        show_error=False,
    )
