"""Problems a user can fix become a message on the page (a Gradio error toast), never a stack trace."""

from __future__ import annotations

import functools
from collections.abc import Callable

import gradio as gr

from libcem.errors import LibcemError


def shown(fn: Callable) -> Callable:
    """Wrap an event handler so that a LibcemError reaches the page as its one-line message."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except LibcemError as err:
            raise gr.Error(str(err), print_exception=False) from None

    return wrapper
