"""The Generate tab: a trained prior turns a prompt into a gallery of images.

Image i is drawn from a generator seeded by (seed, i) (see `Pipeline`), so the same seed gives the
same images. Example prompts come from the model's training captions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import numpy as np

from libcem.demo.messages import shown
from libcem.errors import LibcemError
from libcem.generative.diffusion.guidance import interval_words
from libcem.generative.pipeline import Pipeline
from libcem.imaging import to_uint8

MAX_IMAGES = 36
SHOWN_SIDE = 128  # small images are enlarged (nearest neighbour) to about this side in the gallery
BATCH = 8  # images sampled at once; the progress bar moves once per batch


@dataclass
class Models:
    """Pipelines loaded so far, by folder, on one device (shared by every visitor)."""

    device: str
    loaded: dict[str, Pipeline] = field(default_factory=dict)

    def get(self, path: str | Path | None, reload: bool = False) -> Pipeline:
        """The pipeline of a run or prior folder, loaded once (again with reload: a run trains on);
        a folder that holds no libcem model raises LibcemError."""
        if not path or not str(path).strip():
            raise LibcemError("no model: enter a run folder made by `libcem train` and press Load "
                              "(a small one: libcem train --preset tiny --out RUN)")
        key = str(Path(str(path).strip()).expanduser().resolve())
        if not Path(key).exists():
            raise LibcemError(f"{path}: no such folder")
        if reload or key not in self.loaded:
            self.loaded[key] = Pipeline.from_pretrained(key, self.device)
        return self.loaded[key]


def describe(pipe: Pipeline, path: str) -> str:
    """One line about a loaded model."""
    side = pipe.tokenizer.image_size
    return (f"Loaded **{path}**: {side}×{side} images, text encoder "
            f"'{pipe.encoder.name}', {pipe.diffusion.steps} sampling steps and guidance "
            f"{pipe.diffusion.guidance:g}{interval_words(pipe.diffusion.guidance_interval)} by default.")


def enlarge(image: np.ndarray) -> np.ndarray:
    """Nearest-neighbour enlargement of a small (H, W[, C]) uint8 image, so pixels stay sharp."""
    factor = max(1, SHOWN_SIDE // max(image.shape[:2]))
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


@dataclass
class GenerateTab:
    """Event handlers of the tab."""

    models: Models

    @shown
    def load(self, path: str):
        """(Re)load the model in `path`: its description, example prompts, default steps and guidance."""
        pipe = self.models.get(path, reload=True)
        return (describe(pipe, path.strip()), gr.Dataset(samples=[[p] for p in pipe.prompts]),
                pipe.diffusion.steps, pipe.diffusion.guidance)

    @shown
    def generate(self, path: str, prompt: str, n: float, seed: float | None, steps: float, guidance: float,
                 progress=gr.Progress(track_tqdm=True)):  # noqa: B008 (how Gradio passes a progress bar)
        """`n` images of `prompt` by the model in `path` (loaded on first use), as (image, caption) pairs."""
        pipe = self.models.get(path)
        if seed is None or seed < 0:
            raise LibcemError("the seed is a whole number >= 0")
        n, seed = int(n), int(seed)
        progress(0, desc=f"sampling {n} images")
        images = pipe(prompt or "", n=n, steps=int(steps), guidance=float(guidance), seed=seed,
                      batch_size=BATCH, progress=True)
        return [(enlarge(to_uint8(img)), f"seed {seed}, image {i}") for i, img in enumerate(images)]


def build(model: str | Path | None, device: str, lock_paths: bool, run: str | Path | None = None) -> None:
    """Lay out the Generate tab (inside a gr.Blocks). `model` is loaded now, so a bad one fails at start;
    without one, the folder box holds `run` (a run still training), loaded on the first Load or Generate."""
    tab = GenerateTab(Models(device))
    pipe = tab.models.get(model) if model else None
    path = str(model or run or "")
    with gr.Row():
        folder = gr.Textbox(path, label="Model: a run folder (libcem train) or a prior checkpoint folder",
                            interactive=not lock_paths, scale=4, elem_id="model-path")
        load = gr.Button("Load", scale=1, interactive=not lock_paths, elem_id="load-model")
    about = gr.Markdown(describe(pipe, path) if pipe else "No model loaded yet: enter a run folder and press Load.",
                        elem_id="model-info")
    with gr.Row():
        with gr.Column(scale=2):
            prompt = gr.Textbox(label="Prompt", lines=2, elem_id="prompt",
                                placeholder=pipe.prompts[0] if pipe and pipe.prompts else "a red fern fractal")
            examples = gr.Dataset(components=[prompt], samples=[[p] for p in (pipe.prompts if pipe else [])],
                                  label="Example prompts from the training captions: click one")
            n = gr.Slider(1, MAX_IMAGES, value=4, step=1, label="Images", elem_id="count")
            seed = gr.Number(0, precision=0, minimum=0, label="Seed: the same seed gives the same images",
                             elem_id="seed")
            steps = gr.Slider(1, 200, value=pipe.diffusion.steps if pipe else 20, step=1, label="Sampling steps")
            guidance = gr.Slider(1, 15, value=pipe.diffusion.guidance if pipe else 3, step=0.5,
                                 label="Guidance (1 = none; higher follows the prompt more closely)")
            go = gr.Button("Generate", variant="primary", elem_id="generate-button")
        with gr.Column(scale=3):
            gallery = gr.Gallery(label="Results", columns=4, format="png", object_fit="contain", height="auto",
                                 elem_id="gallery")
    load.click(tab.load, folder, [about, examples, steps, guidance])
    folder.submit(tab.load, folder, [about, examples, steps, guidance])
    examples.click(lambda sample: sample[0], examples, prompt)
    go.click(tab.generate, [folder, prompt, n, seed, steps, guidance], gallery)
    prompt.submit(tab.generate, [folder, prompt, n, seed, steps, guidance], gallery)
