"""`libcem demo`: one web page to look at what libcem does, built with Gradio (`pip install 'libcem[demo]'`).

- `photos`: the Denoise tab's image logic (load and check a photo, add noise, denoise with progress,
  strength, PSNR, zoom, the result in the input's format); numpy and torch only.
- `runs`: what the Training tab reads from a run folder.
- `denoise_tab`, `generate_tab`, `training_tab`: the three tabs (Gradio).
- `app`: `build_app(model, run)` puts the tabs on one page; `launch(app)` serves it.

Nothing here imports Gradio but the tab modules and `app`, so the logic is usable without it.
"""
