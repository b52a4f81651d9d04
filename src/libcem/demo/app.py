"""The demo page: the Denoise, Generate and Training tabs on one Gradio page, and a server for it.

    from libcem.demo.app import build_app, launch
    launch(build_app(model="runs/fr"), port=7860)

Importing this module without Gradio installed raises LibcemError saying what to install.
Gradio's usage analytics are off unless the environment turns them on: nothing leaves the
machine unless a public link is asked for (share=True).
"""

from __future__ import annotations

import os
from pathlib import Path

from libcem.errors import LibcemError

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
try:
    import gradio as gr
except ImportError:
    raise LibcemError("the demo needs Gradio: pip install 'libcem[demo]'") from None

from libcem.demo import (  # after the check above: they import gradio too
    denoise_tab,
    generate_tab,
    training_tab,
)
from libcem.demo.photos import MAX_MEGAPIXELS
from libcem.device import default_device

INTRO = ("# libcem\nDenoise a photo with the patch-graph EM denoiser (no training needed), generate images "
         "from text with a trained prior, and watch a run train.")
MAX_UPLOAD = "300mb"  # a 16-megapixel 16-bit RGBA TIFF is 128 MB


def build_app(model: str | Path | None = None, run: str | Path | None = None, *, device: str | None = None,
              max_megapixels: float = MAX_MEGAPIXELS, lock_paths: bool = False) -> gr.Blocks:
    """The page. model: a run or prior folder for the Generate tab (loaded now: a bad one raises
    LibcemError); run: the run folder the Training tab follows (default: model). lock_paths: visitors
    cannot change the model and run folders (for a public link)."""
    device = str(device or default_device())
    run = run if run is not None else model
    with gr.Blocks(title="libcem demo", delete_cache=(3600, 3600)) as app:
        gr.Markdown(INTRO)
        with gr.Tabs():
            with gr.Tab("Denoise", id="denoise", elem_id="tab-denoise"):
                denoise_tab.build(device, max_megapixels)
            with gr.Tab("Generate", id="generate", elem_id="tab-generate"):
                generate_tab.build(model, device, lock_paths, run)
            with gr.Tab("Training", id="training", elem_id="tab-training"):
                training_tab.build(app, run, lock_paths)
    return app


def launch(app: gr.Blocks, *, host: str = "127.0.0.1", port: int | None = None, share: bool = False,
           block: bool = True) -> str:
    """Serve the page; prints and returns its address (the public one with share=True).

    block=False returns at once with the server running in the background (in a notebook).
    """
    app.queue(default_concurrency_limit=1)  # one job per event at a time; others wait in line
    _, local, public = app.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=True,
                                  quiet=True, show_error=True, max_file_size=MAX_UPLOAD,
                                  footer_links=["gradio"])
    address = public or local
    print(f"libcem demo: open {address}" + (f" (on this machine: {local})" if public else ""), flush=True)
    if block:
        print("Ctrl+C stops it", flush=True)
        app.block_thread()
    return address
